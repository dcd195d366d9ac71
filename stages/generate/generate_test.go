package generate

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

func runRows(t *testing.T, cfg map[string]any) []Row {
	t.Helper()
	res, err := sdk.RunLocal(context.Background(), New(), cfg, sdk.LocalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	var out []Row
	for _, rec := range res.Output {
		if !rec.Schema().Equal(Schema()) {
			t.Fatalf("schema %v", rec.Schema())
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			if w := rec.Column(4).(*array.Float32).Value(i); w != 1 {
				t.Fatalf("weight %v", w)
			}
			out = append(out, Row{
				Row:      rec.Column(0).(*array.Int64).Value(i),
				Prompt:   rec.Column(1).(*array.String).Value(i),
				Chosen:   rec.Column(2).(*array.String).Value(i),
				Rejected: rec.Column(3).(*array.String).Value(i),
				Split:    rec.Column(5).(*array.String).Value(i),
			})
		}
	}
	return out
}

func TestDeterministicBySeed(t *testing.T) {
	for _, task := range TaskNames() {
		a := runRows(t, map[string]any{"task": task, "n": 200, "seed": 3})
		b := runRows(t, map[string]any{"task": task, "n": 200, "seed": 3})
		c := runRows(t, map[string]any{"task": task, "n": 200, "seed": 4})
		if len(a) != 200 {
			t.Fatalf("%s: %d rows", task, len(a))
		}
		same := true
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s: row %d differs between runs with the same seed: %+v vs %+v", task, i, a[i], b[i])
			}
			if a[i] != c[i] {
				same = false
			}
		}
		if same {
			t.Fatalf("%s: seeds 3 and 4 gave the same rows", task)
		}
	}
}

func TestSplitAndAnswers(t *testing.T) {
	for _, task := range TaskNames() {
		for _, frac := range []float64{0, 0.1, 0.25, 1} {
			rows := runRows(t, map[string]any{"task": task, "n": 400, "seed": 1, "eval_fraction": frac})
			nEval := 0
			prompts := map[string]bool{}
			for i, r := range rows {
				if r.Row != int64(i) {
					t.Fatalf("row %d numbered %d", i, r.Row)
				}
				switch r.Split {
				case "eval":
					nEval++
				case "train":
				default:
					t.Fatalf("split %q", r.Split)
				}
				if r.Chosen == r.Rejected {
					t.Fatalf("%s: chosen == rejected in %+v", task, r)
				}
				if prompts[r.Prompt] {
					t.Fatalf("%s: repeated prompt %q", task, r.Prompt)
				}
				prompts[r.Prompt] = true
				if got := solve(task, r.Prompt); got != r.Chosen {
					t.Fatalf("%s: %q: chosen %q, want %q", task, r.Prompt, r.Chosen, got)
				}
			}
			if want := int(math.Round(400 * frac)); nEval != want {
				t.Fatalf("%s: eval_fraction %v gave %d eval rows, want %d", task, frac, nEval, want)
			}
		}
	}
}

// solve computes the correct answer independently of the generator.
func solve(task, prompt string) string {
	body := strings.TrimSuffix(prompt, "=")
	switch task {
	case "reverse":
		w := strings.TrimPrefix(body, "rev ")
		r := []rune(w)
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return string(r)
	case "sort":
		w := []byte(strings.TrimPrefix(body, "sort "))
		for i := range w {
			for j := i + 1; j < len(w); j++ {
				if w[j] < w[i] {
					w[i], w[j] = w[j], w[i]
				}
			}
		}
		return string(w)
	case "upper":
		return strings.ToUpper(strings.TrimPrefix(body, "up "))
	case "add":
		var a, b int
		parts := strings.Split(body, "+")
		for _, c := range parts[0] {
			a = a*10 + int(c-'0')
		}
		for _, c := range parts[1] {
			b = b*10 + int(c-'0')
		}
		s := a + b
		if s == 0 {
			return "0"
		}
		var d []byte
		for ; s > 0; s /= 10 {
			d = append([]byte{byte('0' + s%10)}, d...)
		}
		return string(d)
	}
	return ""
}

func TestSystematicWrongAnswer(t *testing.T) {
	rows := runRows(t, map[string]any{"task": "reverse", "n": 50})
	for _, r := range rows {
		if "rev "+r.Rejected+"=" != r.Prompt {
			t.Fatalf("reverse: rejected %q is not the unreversed input of %q", r.Rejected, r.Prompt)
		}
	}
	rows = runRows(t, map[string]any{"task": "add", "n": 50})
	for _, r := range rows {
		var c, w int
		for _, ch := range r.Chosen {
			c = c*10 + int(ch-'0')
		}
		for _, ch := range r.Rejected {
			w = w*10 + int(ch-'0')
		}
		if w != c+1 {
			t.Fatalf("add: rejected %q is not chosen+1 (%q)", r.Rejected, r.Chosen)
		}
	}
}

func TestSFTMix(t *testing.T) {
	rows := runRows(t, map[string]any{"task": "reverse", "n": 300, "sft_correct_fraction": 0.3})
	correct := 0
	for _, r := range rows {
		if solve("reverse", r.Prompt) == r.Chosen {
			correct++
		} else if solve("reverse", r.Prompt) != r.Rejected {
			t.Fatalf("neither answer is correct in %+v", r)
		}
	}
	if correct != 90 {
		t.Fatalf("%d correct chosen answers, want 90", correct)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []map[string]any{
		{"task": "nope"},
		{"n": 0},
		{"n": 2.5},
		{"eval_fraction": 1.5},
		{"min_len": 5, "max_len": 4},
		{"alphabet": "a"},
		{"sft_correct_fraction": -1},
	} {
		if _, err := sdk.RunLocal(context.Background(), New(), cfg, sdk.LocalOptions{}); err == nil {
			t.Errorf("%v: no error", cfg)
		}
	}
	// too few distinct prompts
	if _, err := sdk.RunLocal(context.Background(), New(), map[string]any{"task": "add", "digits": 1, "n": 500}, sdk.LocalOptions{}); err == nil {
		t.Error("500 distinct one-digit sums: no error")
	}
}
