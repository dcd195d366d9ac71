package model

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dpopipe/dpopipe/internal/testassets"
)

func decodeTok512(t *testing.T, path string, ids []int32) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := 4
	var vocab []string
	for off < len(b) {
		off += 4 // score
		n := int(binary.LittleEndian.Uint32(b[off:]))
		off += 4
		vocab = append(vocab, string(b[off:off+n]))
		off += n
	}
	var sb strings.Builder
	prev := int32(1)
	for _, id := range ids {
		piece := vocab[id]
		if prev == 1 && strings.HasPrefix(piece, " ") {
			piece = piece[1:]
		}
		var bv byte
		if len(piece) == 6 && strings.HasPrefix(piece, "<0x") && piece[5] == '>' {
			if v, err := strconv.ParseUint(piece[3:5], 16, 8); err == nil {
				bv = byte(v)
				piece = string([]byte{bv})
			}
		}
		sb.WriteString(piece)
		prev = id
	}
	return sb.String()
}

func loadStories(t *testing.T) (*Model, string) {
	p := testassets.Path(t, "models/stories260K/stories260K.bin")
	m, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return m, filepath.Dir(p)
}

func TestStories260KLogprobs(t *testing.T) {
	m, _ := loadStories(t)
	c := m.Config
	if c.Dim != 64 || c.NKVHeads != 4 || !c.TiedEmbeddings || c.Rope != RopeAdjacent {
		t.Fatalf("unexpected config %+v", c)
	}
	refs := testassets.ReferenceLogprobs(t)
	var seqs []Seq
	for _, r := range refs {
		if len(r.Logps) != len(r.IDs)-1 {
			t.Fatalf("reference has %d logps for %d ids", len(r.Logps), len(r.IDs))
		}
		seqs = append(seqs, Seq{IDs: r.IDs, Start: 1})
	}
	run := NewRunner(m)
	for _, batched := range []bool{true, false} {
		var got [][]float32
		if batched {
			sc, err := run.Score(seqs)
			if err != nil {
				t.Fatal(err)
			}
			got = sc.TokenLogps
		} else {
			for _, s := range seqs {
				sc, err := run.Forward([]Seq{s})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, sc.TokenLogps[0])
			}
		}
		for i, r := range refs {
			for p, want := range r.Logps {
				if d := math.Abs(float64(got[i][p]) - want); d > 1e-4 {
					t.Errorf("batched=%v text %d pos %d: logp %.6f, reference %.6f", batched, i, p, got[i][p], want)
				}
			}
		}
	}
}

func TestStories260KGreedy(t *testing.T) {
	m, dir := loadStories(t)
	want, err := os.ReadFile(filepath.Join(dir, "reference_greedy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int32{1, 403, 407, 261, 378}
	out, err := m.Generate(prompt, GenOptions{MaxTokens: 256})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 256 {
		t.Fatalf("generated %d tokens, want 256", len(out))
	}
	// llama2.c prints the prompt after BOS, then the continuation; the
	// reference run stopped after 256 positions, so it is a prefix of ours.
	got := decodeTok512(t, filepath.Join(dir, "tok512.bin"), append(append([]int32(nil), prompt[1:]...), out...))
	ws := strings.TrimRight(string(want), "\n")
	if len(ws) < 200 {
		t.Fatalf("reference text unexpectedly short: %q", ws)
	}
	if !strings.HasPrefix(got, ws) {
		n := 0
		for n < len(got) && n < len(ws) && got[n] == ws[n] {
			n++
		}
		t.Fatalf("greedy text diverges at byte %d:\n got: %q\nwant: %q", n, got, ws)
	}
}
