package testassets

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ReferenceText is one text of models/stories260K/reference_logprobs.txt:
// its token ids (BOS first) and the log-prob of each next token, from an
// independent C implementation of the llama2.c forward pass.
type ReferenceText struct {
	Text  string
	IDs   []int32
	Logps []float64 // Logps[p] = log p(IDs[p+1] | IDs[:p+1])
}

// ReferenceLogprobs parses reference_logprobs.txt, skipping the test when
// the assets are absent and failing it on a malformed file.
func ReferenceLogprobs(t testing.TB) []ReferenceText {
	t.Helper()
	path := Path(t, "models/stories260K/reference_logprobs.txt")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []ReferenceText
	text := ""
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if s, ok := strings.CutPrefix(sc.Text(), "## text: "); ok {
			text = s
			continue
		}
		fs := strings.Fields(sc.Text())
		switch {
		case len(fs) > 3 && fs[0] == "n_tokens" && fs[2] == "ids":
			r := ReferenceText{Text: text}
			for _, s := range fs[3:] {
				v, err := strconv.Atoi(s)
				if err != nil {
					t.Fatalf("%s:%d: bad token id %q", path, line, s)
				}
				r.IDs = append(r.IDs, int32(v))
			}
			out = append(out, r)
		case len(fs) == 6 && fs[0] == "pos" && fs[4] == "logp":
			v, err := strconv.ParseFloat(fs[5], 64)
			if err != nil || len(out) == 0 {
				t.Fatalf("%s:%d: bad log-prob line %q", path, line, sc.Text())
			}
			out[len(out)-1].Logps = append(out[len(out)-1].Logps, v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no texts", path)
	}
	return out
}
