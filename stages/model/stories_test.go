package model

import (
	"bufio"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dpopipe/dpopipe/internal/testassets"
)

type refText struct {
	ids   []int32
	logps []float64
}

func parseReference(t *testing.T, path string) []refText {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []refText
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		switch fs[0] {
		case "n_tokens":
			var r refText
			for _, s := range fs[3:] {
				v, err := strconv.Atoi(s)
				if err != nil {
					t.Fatalf("bad id %q", s)
				}
				r.ids = append(r.ids, int32(v))
			}
			out = append(out, r)
		case "pos":
			// pos P next ID logp V
			v, err := strconv.ParseFloat(fs[5], 64)
			if err != nil {
				t.Fatalf("bad logp line %q", sc.Text())
			}
			r := &out[len(out)-1]
			p, _ := strconv.Atoi(fs[1])
			if p != len(r.logps) {
				t.Fatalf("unexpected position in %q", sc.Text())
			}
			r.logps = append(r.logps, v)
		}
	}
	if len(out) == 0 {
		t.Fatal("no reference texts parsed")
	}
	return out
}

// decodeTok512 reads a llama2.c tokenizer file and decodes ids the way
// llama2.c prints them: the leading space after BOS is dropped and
// <0xXX> pieces become raw bytes.
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
	m, dir := loadStories(t)
	c := m.Config
	if c.Dim != 64 || c.NKVHeads != 4 || !c.TiedEmbeddings || c.Rope != RopeAdjacent {
		t.Fatalf("unexpected config %+v", c)
	}
	refs := parseReference(t, filepath.Join(dir, "reference_logprobs.txt"))
	var seqs []Seq
	for _, r := range refs {
		if len(r.logps) != len(r.ids)-1 {
			t.Fatalf("reference has %d logps for %d ids", len(r.logps), len(r.ids))
		}
		seqs = append(seqs, Seq{IDs: r.ids, Start: 1})
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
			for p, want := range r.logps {
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
