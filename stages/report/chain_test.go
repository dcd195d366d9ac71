package report

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/evaluate"
	"github.com/dpopipe/dpopipe/stages/generate"
	"github.com/dpopipe/dpopipe/stages/judge"
	"github.com/dpopipe/dpopipe/stages/reference"
	"github.com/dpopipe/dpopipe/stages/tokenize"
	"github.com/dpopipe/dpopipe/stages/train"
)

// chainConfig sizes the quickstart chain.
type chainConfig struct {
	N                  int
	Dim, Layers, Heads int
	SFTSteps, DPOSteps int
	SFTLR, DPOLR       float64
	BatchSize          int
	Beta               float64
	Loss               any
	MinLen, MaxLen     int
}

// quickstartChain mirrors examples/quickstart/train.hcl.
var quickstartChain = chainConfig{N: 2000, Dim: 64, Layers: 2, Heads: 4, SFTSteps: 1500, DPOSteps: 150,
	SFTLR: 5e-3, DPOLR: 3e-4, BatchSize: 32, Beta: 0.1, Loss: map[string]float64{"sigmoid": 1, "sft": 1}, MinLen: 2, MaxLen: 4}

// reducedChain is small enough for a unit test on two cores.
var reducedChain = chainConfig{N: 1000, Dim: 64, Layers: 2, Heads: 4, SFTSteps: 700, DPOSteps: 100,
	SFTLR: 5e-3, DPOLR: 3e-4, BatchSize: 32, Beta: 0.1, Loss: map[string]float64{"sigmoid": 1, "sft": 1}, MinLen: 2, MaxLen: 3}

type stageRun struct {
	out  []arrow.RecordBatch
	dir  string
	took time.Duration
}

// runChain runs generate → tokenize → sft → reference_logprobs → dpo →
// evaluate → judge → report in this process and returns the report's
// artifact directory.
func runChain(t *testing.T, c chainConfig) string {
	t.Helper()
	root := t.TempDir()
	ctx := context.Background()
	step := func(name string, st sdk.Stage, cfg any, in []arrow.RecordBatch) stageRun {
		t.Helper()
		dir := filepath.Join(root, name)
		start := time.Now()
		res, err := sdk.RunLocal(ctx, st, cfg, sdk.LocalOptions{Input: in, Dir: dir, RunDir: filepath.Join(root, "run", name)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(res.Release)
		r := stageRun{out: res.Output, dir: dir, took: time.Since(start)}
		t.Logf("%-9s %6.1fs", name, r.took.Seconds())
		for _, p := range res.Prints {
			t.Logf("  %s", p)
		}
		return r
	}
	gen := step("generate", generate.New(), map[string]any{"task": "reverse", "n": c.N, "seed": 1, "eval_fraction": 0.1,
		"min_len": c.MinLen, "max_len": c.MaxLen}, nil)
	tok := step("tokenize", tokenize.New(), map[string]any{"builtin_tokenizer": "bytes", "max_length": 32, "max_prompt_length": 16}, gen.out)
	sft := step("sft", train.NewSFT(), map[string]any{
		"init":   map[string]any{"vocab_size": 259, "dim": c.Dim, "layers": c.Layers, "heads": c.Heads, "hidden_dim": 2 * c.Dim, "seq_len": 32, "seed": 1, "bos": 256, "eos": 257},
		"target": "both", "learning_rate": c.SFTLR, "lr_scheduler": "cosine", "warmup_steps": 30,
		"batch_size": c.BatchSize, "max_steps": c.SFTSteps, "logging_steps": 50, "seed": 1,
	}, tok.out)
	ref := step("reference", reference.New(), map[string]any{"model": sft.dir, "batch_size": 64}, tok.out)
	dpo := step("dpo", train.NewDPO(), map[string]any{
		"model": sft.dir, "loss": c.Loss, "beta": c.Beta, "learning_rate": c.DPOLR, "lr_scheduler": "constant",
		"batch_size": c.BatchSize, "max_steps": c.DPOSteps, "logging_steps": 10, "seed": 1,
	}, ref.out)
	ev := step("evaluate", evaluate.New(), map[string]any{"model": dpo.dir, "reference_model": sft.dir, "tokenizer": "bytes",
		"beta": c.Beta, "losses": []string{"sigmoid", "ipo"}, "samples": -1, "max_new_tokens": 16}, ref.out)
	jd := step("judge", judge.New(), map[string]any{"rule": "exact"}, ev.out)
	rep := step("report", New(), map[string]any{"train": dpo.dir, "sft": sft.dir, "eval": ev.dir, "judge": jd.dir,
		"title": "quickstart: string reversal"}, nil)
	return rep.dir
}

func readSummary(t *testing.T, dir string) Summary {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestQuickstartChain runs the whole quickstart chain in-process on a
// reduced size and checks that DPO improves the exact-answer accuracy of
// greedy generations on held-out prompts.
func TestQuickstartChain(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two models (~40 s on two cores)")
	}
	c := reducedChain
	if os.Getenv("DPOPIPE_QUICKSTART_FULL") != "" {
		c = quickstartChain
	}
	start := time.Now()
	dir := runChain(t, c)
	s := readSummary(t, dir)
	txt, _ := os.ReadFile(filepath.Join(dir, TextFile))
	t.Logf("chain took %.1fs\n%s", time.Since(start).Seconds(), txt)
	if s.ExactBefore == nil || s.ExactAfter == nil {
		t.Fatalf("summary without exact accuracies: %+v", s)
	}
	if *s.ExactAfter < *s.ExactBefore+0.1 {
		t.Errorf("exact-answer accuracy after DPO %.3f does not beat the SFT model's %.3f by 0.1", *s.ExactAfter, *s.ExactBefore)
	}
	if s.PreferenceAccuracy == nil || *s.PreferenceAccuracy < 0.9 {
		t.Errorf("held-out preference accuracy %v < 0.9", deref(s.PreferenceAccuracy))
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
