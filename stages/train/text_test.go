package train

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/load"
	"github.com/dpopipe/dpopipe/stages/pairs"
	"github.com/dpopipe/dpopipe/stages/reference"
	"github.com/dpopipe/dpopipe/stages/tokenize"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

// textFixture is the load stage's JSON Lines text dataset.
const textFixture = "../load/testdata/text.jsonl"

// runChain runs stages in process, each on the previous one's output.
func runChain(t *testing.T, first []arrow.RecordBatch, steps ...struct {
	st  sdk.Stage
	cfg map[string]any
}) []arrow.RecordBatch {
	t.Helper()
	in := first
	for _, s := range steps {
		res, err := sdk.RunLocal(context.Background(), s.st, s.cfg, sdk.LocalOptions{Input: in, Dir: t.TempDir(), CacheDir: t.TempDir()})
		if err != nil {
			t.Fatalf("%s: %v", s.st.Spec().Type, err)
		}
		t.Cleanup(res.Release)
		in = res.Output
	}
	return in
}

func stageCfg(st sdk.Stage, cfg map[string]any) struct {
	st  sdk.Stage
	cfg map[string]any
} {
	return struct {
		st  sdk.Stage
		cfg map[string]any
	}{st, cfg}
}

// loadTokenizeText runs load and tokenize on the text fixture.
func loadTokenizeText(t *testing.T, tokCfg map[string]any) []pairs.Pair {
	t.Helper()
	out := runChain(t, nil,
		stageCfg(load.New(), map[string]any{"path": textFixture}),
		stageCfg(tokenize.New(), tokCfg))
	var ps []pairs.Pair
	for _, rec := range out {
		got, err := pairs.FromRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, got...)
	}
	return ps
}

// textInit is a tiny from-scratch model for vocab tokens.
func textInit(vocab int) map[string]any {
	return map[string]any{"vocab_size": vocab, "dim": 32, "layers": 2, "heads": 2, "kv_heads": 1, "hidden_dim": 64, "seq_len": 64, "seed": 3}
}

// Text JSONL → load → tokenize → sft on a tiny model from scratch: the
// rows are chosen-only (BOS once, EOS once, no rejected) and the loss
// falls; target = "both" gives the same run, skipping the empty rejected
// completions.
func TestSFTOnTextDataset(t *testing.T) {
	tiny, err := tokenizer.Load("../tokenizer/testdata/tiny-llama2c.bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tokCfg map[string]any
		tok    tokenizer.Tokenizer
	}{
		{"bytes", map[string]any{"builtin_tokenizer": "bytes"}, tokenizer.NewBytes()},
		{"llama2c", map[string]any{"tokenizer": "../tokenizer/testdata/tiny-llama2c.bin"}, tiny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.tokCfg["max_length"] = 32
			tc.tokCfg["max_prompt_length"] = 8
			ps := loadTokenizeText(t, tc.tokCfg)
			if len(ps) != 4 {
				t.Fatalf("%d rows, want 4", len(ps))
			}
			bos, eos := tc.tok.BOS(), tc.tok.EOS()
			texts := []string{"Once upon a time there was a little cat.", "The cat liked to sit in the sun.", "One day the cat saw a bird.", "Über the hill, the bird sang."}
			for i, p := range ps {
				full := append(tc.tok.Encode(texts[i]), eos)
				want := full[:min(len(full), 31)]
				if !reflect.DeepEqual(p.Prompt, []int32{bos}) || !reflect.DeepEqual(p.Chosen, want) || len(p.Rejected) != 0 {
					t.Errorf("row %d: prompt %v chosen %v rejected %v; want [%d], %v, []", p.Row, p.Prompt, p.Chosen, p.Rejected, bos, want)
				}
			}
			cfg := map[string]any{"init": textInit(tc.tok.VocabSize()), "learning_rate": 1e-2, "batch_size": 4,
				"max_steps": 40, "logging_steps": 5, "lr_scheduler": "constant", "seed": 1}
			out := runStage(t, NewSFT(), cfg, ps, false, "", "")
			if out.err != nil {
				t.Fatal(out.err)
			}
			ms := readMetrics(t, out.dir)
			first, last := ms[0]["loss"], ms[len(ms)-1]["loss"]
			t.Logf("loss %.3f → %.3f over %d steps (ln V = %.3f)", first, last, len(ms)*5, math.Log(float64(tc.tok.VocabSize())))
			if !(last < 0.6*first) {
				t.Errorf("loss %.3f → %.3f: did not fall by 40%%", first, last)
			}
			// Every step sees the 4 rows: prompt + chosen tokens.
			var perStep int64
			for _, p := range ps {
				perStep += int64(len(p.Prompt) + len(p.Chosen))
			}
			if got := int64(ms[len(ms)-1]["num_input_tokens_seen"]); got != 40*perStep {
				t.Errorf("num_input_tokens_seen %d, want %d", got, 40*perStep)
			}
			if out.res.Stats["train_pairs"] != 4 {
				t.Errorf("stats %v", out.res.Stats)
			}

			cfg["target"] = "both"
			both := runStage(t, NewSFT(), cfg, ps, false, "", "")
			if both.err != nil {
				t.Fatal(both.err)
			}
			bm := readMetrics(t, both.dir)
			for i := range ms {
				if math.Abs(bm[i]["loss"]-ms[i]["loss"]) > 1e-6*ms[i]["loss"] || bm[i]["logps/rejected"] != 0 || bm[i]["num_input_tokens_seen"] != ms[i]["num_input_tokens_seen"] {
					t.Errorf("target both, line %d: %v; target chosen: %v", i, bm[i], ms[i])
				}
			}
			if both.res.Stats["rejected/empty"] != 4 || !strings.Contains(strings.Join(both.res.Prints, "\n"), "4 of 4 rows have an empty rejected completion") {
				t.Errorf("target both: stats %v prints %q", both.res.Stats, both.res.Prints)
			}
		})
	}
}

// target = "both" on pairs mixed with text rows trains on every non-empty
// completion; the rejected metrics average over the micro-batches that
// have one.
func TestSFTBothSkipsEmptyRejected(t *testing.T) {
	ps := randomPairs(6, 2, 5, tinyInit.VocabSize, 9)
	for i := range ps {
		if i%2 == 1 {
			ps[i].Rejected = []int32{}
		}
	}
	tr := newTestTrainer(t, "sft", baseCfg(map[string]any{"target": "both", "batch_size": 1, "max_steps": 6}), tinyModel(t), ps)
	if tr.noRejected != 3 {
		t.Errorf("noRejected %d, want 3", tr.noRejected)
	}
	var wantTok int
	for i, p := range ps {
		wantTok += len(p.Prompt) + len(p.Chosen)
		if i%2 == 0 {
			wantTok += len(p.Prompt) + len(p.Rejected)
		}
	}
	for tr.step < tr.totalSteps {
		tr.nextStep()
		if err := tr.trainStep(false); err != nil {
			t.Fatal(err)
		}
	}
	if tr.tokens != int64(wantTok) {
		t.Errorf("tokens %d, want %d", tr.tokens, wantTok)
	}
	if tr.win.Micro != 6 || tr.win.NoRej != 3 {
		t.Errorf("window: %d micro-batches, %d without rejected; want 6 and 3", tr.win.Micro, tr.win.NoRej)
	}
	_, vals := tr.windowValues()
	if want := tr.win.Sums[1] / 3; vals[1] != want || !(vals[1] < 0) {
		t.Errorf("logps/rejected %v, want the mean over the 3 micro-batches with one, %v", vals[1], want)
	}
	// An empty chosen completion is still an error.
	ps[0].Chosen = nil
	st := &stage{kind: "sft"}
	cfg, err := runConfigure(st, baseCfg(map[string]any{"target": "both"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newTrainer(cfg, tinyModel(t), ps); err == nil || !strings.Contains(err.Error(), "row 1000: the chosen completion is empty") {
		t.Errorf("empty chosen: err = %v", err)
	}
}

// The dpo stage refuses a text dataset, also after reference_logprobs
// (which scores the chosen completions and leaves the empty rejected ones
// at 0 tokens).
func TestDPORefusesTextDataset(t *testing.T) {
	ps := loadTokenizeText(t, map[string]any{"builtin_tokenizer": "bytes", "max_length": 48, "max_prompt_length": 8})
	sft := runStage(t, NewSFT(), map[string]any{"init": textInit(259), "max_steps": 1}, ps, false, "", "")
	if sft.err != nil {
		t.Fatal(sft.err)
	}
	tokRec := pairs.ToRecord(ps, false, nil)
	defer tokRec.Release()
	refOut := runChain(t, []arrow.RecordBatch{tokRec}, stageCfg(reference.New(), map[string]any{"model": sft.dir}))
	var scored []pairs.Pair
	for _, rec := range refOut {
		got, err := pairs.FromRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		scored = append(scored, got...)
	}
	if len(scored) != len(ps) {
		t.Fatalf("reference_logprobs: %d rows, want %d", len(scored), len(ps))
	}
	for i, p := range scored {
		if !p.HasRef || int(p.ChosenTokens) != len(ps[i].Chosen) || p.RejectedTokens != 0 || p.RefRejected != 0 || !(p.RefChosen < 0) {
			t.Errorf("reference_logprobs row %d: chosen %d tokens logp %v, rejected %d tokens logp %v", p.Row, p.ChosenTokens, p.RefChosen, p.RejectedTokens, p.RefRejected)
		}
	}
	cfg := map[string]any{"model": sft.dir, "max_steps": 1}
	for name, in := range map[string]struct {
		ps      []pairs.Pair
		withRef bool
	}{"reference output": {scored, true}, "tokenize output": {ps, false}} {
		out := runStage(t, NewDPO(), cfg, in.ps, in.withRef, "", "")
		if out.err == nil {
			t.Fatalf("%s: dpo trained on a text dataset", name)
		}
		for _, w := range []string{"rejected completion", "is empty", "text dataset", "sft stage"} {
			if !strings.Contains(out.err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", name, out.err, w)
			}
		}
	}
}
