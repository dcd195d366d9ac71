// Package train implements the dpo and sft stages: one optimisation loop
// (AdamW, learning-rate schedules with warmup, gradient accumulation,
// global-norm clipping, seeded shuffling, a NaN/Inf guard and atomic,
// bit-identically resumable checkpoints) over the model package's kernels,
// with the DPO-family losses of the loss package or a token NLL.
//
// Outputs, in the stage's artifact directory: model/ (HF safetensors and
// config.json, plus a copy of the tokenizer), metrics.jsonl and
// train_summary.json. Checkpoints go to the run directory's
// checkpoints/step-N/. See metrics.go for how metrics are defined and
// checkpoint.go for the checkpoint format.
//
// The dpo stage trains on split == "train" rows; each pair's weight
// multiplies its loss. The sft stage minimises the mean token NLL pooled
// over every completion token of a step (row weights are not used).
//
// The sft stage also trains on text datasets: the tokenize stage turns a
// load stage's text rows into chosen-only rows (prompt_ids [BOS],
// chosen_ids the document and EOS, rejected_ids empty). target = "chosen"
// learns the documents; target = "both" skips the empty rejected
// completions (it learns each pair's non-empty ones). The dpo stage refuses
// a table whose rejected completions are all empty: there is nothing to
// prefer.
// Micro-batches enter a step's gradient with their share of the step's
// pairs (1/gradient_accumulation_steps when they are full), so accumulation
// equals one large batch for every loss that is a mean over pairs.
//
// A seed fixes the data order and every update: a run is bit-reproducible
// on one machine as long as the model's kernels reduce in a fixed order.
//
// Test hooks (environment): DPOPIPE_TRAIN_STOP_AFTER_STEP=k makes the
// stage fail right after step k (and its checkpoint, if one is due), as a
// killed run would; DPOPIPE_TRAIN_INJECT_NAN_STEP=s poisons the loss of
// step s.
package train

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/internal/jsonfile"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/modelref"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// Hook environment variables.
const (
	EnvStopAfterStep = "DPOPIPE_TRAIN_STOP_AFTER_STEP"
	EnvInjectNaNStep = "DPOPIPE_TRAIN_INJECT_NAN_STEP"
)

// Version of both stages' implementation (part of the cache key).
const Version = "1"

type stage struct{ kind string }

// NewDPO returns the dpo stage.
func NewDPO() sdk.Stage { return &stage{kind: "dpo"} }

// NewSFT returns the sft stage.
func NewSFT() sdk.Stage { return &stage{kind: "sft"} }

func (s *stage) Spec() sdk.Spec {
	in := []sdk.Column{
		{Name: pairs.ColRow, Type: "int64"},
		{Name: pairs.ColPromptIDs, Type: "list<int32>"},
		{Name: pairs.ColChosenIDs, Type: "list<int32>"},
		{Name: pairs.ColRejectedIDs, Type: "list<int32>"},
		{Name: pairs.ColWeight, Type: "float32", Optional: true},
		{Name: pairs.ColSplit, Type: "utf8", Optional: true},
	}
	if s.kind == "dpo" {
		in = append(in,
			sdk.Column{Name: pairs.ColRefChosen, Type: "float64"},
			sdk.Column{Name: pairs.ColRefRejected, Type: "float64"},
			sdk.Column{Name: pairs.ColChosenTokens, Type: "int32"},
			sdk.Column{Name: pairs.ColRejectedTokens, Type: "int32"},
		)
		return sdk.Spec{Type: "dpo", Version: Version, Config: attrs("dpo"), Input: in,
			Description: "Trains a policy with DPO or another preference loss (or a weighted mix) on the train split of pairs with reference log-probs; writes model/, metrics.jsonl and train_summary.json. " +
				"A table without rejected completions (a text dataset) is refused: use sft for it."}
	}
	return sdk.Spec{Type: "sft", Version: Version, Config: attrs("sft"), Input: in,
		Description: "Fine-tunes a model (or one built from scratch with init) on the chosen completions, or on both completions, of the train split by token NLL; writes model/, metrics.jsonl and train_summary.json. " +
			"Also trains on text datasets (load prompt_format = \"text\", then tokenize): their rows are chosen-only, and target = \"both\" skips empty rejected completions."}
}

func (s *stage) Configure(c sdk.Config) error {
	_, err := decodeConfig(s.kind, c)
	return err
}

// noRejected reports whether ps has rows and none of them a rejected
// completion: a text dataset's chosen-only rows.
func noRejected(ps []pairs.Pair) bool {
	for i := range ps {
		if len(ps[i].Rejected) > 0 {
			return false
		}
	}
	return len(ps) > 0
}

func envInt(name string) (int, bool) {
	v := os.Getenv(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}

func (s *stage) Run(ctx context.Context, run *sdk.Run) error {
	cfg, err := decodeConfig(s.kind, run.Config)
	if err != nil {
		return err
	}
	if run.Input == nil {
		return fmt.Errorf("the %s stage needs an input table of tokenized pairs", s.kind)
	}
	if run.Dir == "" {
		return fmt.Errorf("the %s stage needs an artifact directory", s.kind)
	}
	all, err := pairs.ReadAll(run.Input)
	if err != nil {
		return err
	}
	if s.kind == "dpo" && noRejected(all) {
		return fmt.Errorf("every rejected completion of the input's %d rows is empty: the input looks like a text dataset (load prompt_format = \"text\"), which has no preference to learn; train on it with the sft stage (target = \"chosen\") instead", len(all))
	}
	var data []pairs.Pair
	for _, p := range all {
		if p.Split == pairs.SplitTrain {
			data = append(data, p)
		}
	}
	// the model
	var m *model.Model
	if cfg.init != nil {
		if m, err = model.New(cfg.init.modelConfig(), cfg.init.seed()); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	} else if m, err = modelref.Load(cfg.Model); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	startDigest := paramsDigest(m.Params)
	t, err := newTrainer(cfg, m, data)
	if err != nil {
		return err
	}
	if t.noRejected > 0 {
		run.Printf("target = \"both\": %d of %d rows have an empty rejected completion (text rows); they train on their chosen completion only", t.noRejected, len(data))
		run.SetStat("rejected/empty", int64(t.noRejected))
	}
	run.SetStat("train_pairs", int64(len(data)))
	run.SetStat("steps", int64(t.totalSteps))

	cfgPrint := cfg.fingerprint()
	dataDigest := t.dataDigest()
	ckRoot := ""
	if run.RunDir != "" {
		ckRoot = filepath.Join(run.RunDir, "checkpoints")
	}
	if ckRoot != "" {
		if cfg.Resume || run.Resume {
			if err := s.resume(run, t, ckRoot, cfgPrint, dataDigest, startDigest); err != nil {
				return err
			}
		} else if err := clearCheckpoints(ckRoot); err != nil {
			return err
		}
	} else if cfg.Resume || run.Resume {
		run.Printf("resume asked, but the stage has no run directory to keep checkpoints in; starting from step 0")
	}

	// metrics.jsonl, rewritten from the checkpoint's lines on resume
	if err := os.MkdirAll(run.Dir, 0o755); err != nil {
		return err
	}
	mf, err := os.Create(filepath.Join(run.Dir, "metrics.jsonl"))
	if err != nil {
		return err
	}
	defer mf.Close()
	for _, l := range t.lines {
		if _, err := mf.Write(append(l, '\n')); err != nil {
			return err
		}
	}

	stopAfter, hasStop := envInt(EnvStopAfterStep)
	nanStep, hasNaN := envInt(EnvInjectNaNStep)
	lastSaved := ""
	if steps, _ := listCheckpoints(ckRoot); ckRoot != "" && len(steps) > 0 {
		lastSaved = filepath.Join(ckRoot, stepDirName(steps[0]))
	}
	save := func() error {
		if ckRoot == "" {
			return nil
		}
		ck, err := t.snapshot(cfgPrint, dataDigest, startDigest)
		if err != nil {
			return err
		}
		dir, err := saveCheckpoint(ckRoot, ck, cfg.SaveTotalLimit)
		if err != nil {
			return fmt.Errorf("saving the checkpoint of step %d: %w", t.step, err)
		}
		lastSaved = dir
		return nil
	}

	started := time.Now()
	winStart, winTokens := time.Now(), t.tokens
	startStep, startTokens := t.step, t.tokens
	run.Progress(int64(t.step), int64(t.totalSteps), "steps")
	for t.step < t.totalSteps {
		if err := ctx.Err(); err != nil {
			return err
		}
		t.nextStep()
		if err := t.trainStep(hasNaN && nanStep == t.step+1); err != nil {
			if _, ok := err.(*guardError); ok {
				if lastSaved != "" {
					return fmt.Errorf("%w; the last good checkpoint is %s", err, lastSaved)
				}
				return fmt.Errorf("%w; no checkpoint was saved before it (set save_steps to keep some)", err)
			}
			return err
		}
		if t.step%cfg.LoggingSteps == 0 || t.step == t.totalSteps {
			lossV, vals := t.windowValues()
			line := t.logLine()
			if _, err := mf.Write(append(line, '\n')); err != nil {
				return err
			}
			el := time.Since(winStart).Seconds()
			tps := float64(t.tokens-winTokens) / math.Max(el, 1e-9)
			winStart, winTokens = time.Now(), t.tokens
			run.Printf("%s", consoleLine(t, lossV, vals, tps))
		}
		if (cfg.SaveSteps > 0 && t.step%cfg.SaveSteps == 0) || t.step == t.totalSteps {
			if err := save(); err != nil {
				return err
			}
		}
		run.Progress(int64(t.step), int64(t.totalSteps), "steps")
		if hasStop && t.step == stopAfter && t.step < t.totalSteps {
			return fmt.Errorf("stopped after step %d (%s)", t.step, EnvStopAfterStep)
		}
	}
	runtime := time.Since(started).Seconds()

	// the model and the summary
	mdir := filepath.Join(run.Dir, modelref.ModelDir)
	if err := t.m.SaveHF(mdir); err != nil {
		return fmt.Errorf("saving the model: %w", err)
	}
	tok := cfg.Tokenizer
	if tok == "" && cfg.Model != "" {
		tok, _ = modelref.Tokenizer(cfg.Model)
	}
	if tok != "" {
		if err := modelref.CopyTokenizer(tok, mdir); err != nil {
			return fmt.Errorf("copying the tokenizer: %w", err)
		}
	}
	if err := mf.Sync(); err != nil {
		return err
	}
	return writeSummary(run.Dir, t, runtime, t.step-startStep, t.tokens-startTokens)
}

func (s *stage) resume(run *sdk.Run, t *trainer, root, cfgPrint, dataDigest, startDigest string) error {
	steps, err := listCheckpoints(root)
	if err != nil {
		return err
	}
	if len(steps) == 0 {
		run.Printf("resume: no checkpoint in %s; starting from step 0", root)
		return nil
	}
	var problems []string
	for _, st := range steps {
		dir := filepath.Join(root, stepDirName(st))
		ck, err := loadCheckpoint(dir)
		if err == nil {
			err = t.restore(ck, cfgPrint, dataDigest, startDigest)
			if err == nil {
				run.Printf("resumed from %s (step %d of %d)", dir, t.step, t.totalSteps)
				return nil
			}
			return fmt.Errorf("cannot resume from %s: %w", dir, err)
		}
		run.Printf("resume: skipping %s: %v", dir, err)
		problems = append(problems, fmt.Sprintf("%s: %v", dir, err))
	}
	return fmt.Errorf("resume: no usable checkpoint in %s: %s", root, strings.Join(problems, "; "))
}

func consoleLine(t *trainer, lossV float64, vals []float64, tps float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "step %d/%d  loss %.4f", t.step, t.totalSteps, lossV)
	if t.cfg.kind == "dpo" {
		fmt.Fprintf(&b, "  acc %.3f  margin %.4f  chosen %.4f  rejected %.4f", vals[2], vals[3], vals[0], vals[1])
	} else {
		fmt.Fprintf(&b, "  logps/chosen %.3f", vals[0])
	}
	fmt.Fprintf(&b, "  gnorm %.3g  lr %.3g  epoch %.2f  %.0f tok/s", t.gradNorm, t.sched.at(t.step), t.epochValue(), tps)
	return b.String()
}

func writeSummary(dir string, t *trainer, runtime float64, steps int, tokens int64) error {
	last := map[string]any{}
	if n := len(t.lines); n > 0 {
		if err := json.Unmarshal(t.lines[n-1], &last); err != nil {
			return err
		}
	}
	rt := math.Max(runtime, 1e-9)
	sum := map[string]any{
		"stage":                    t.cfg.kind,
		"global_step":              t.step,
		"epoch":                    t.epochValue(),
		"train_loss":               t.lossTotal / float64(max(1, t.step)),
		"train_pairs":              len(t.data),
		"num_input_tokens_seen":    t.tokens,
		"train_runtime":            runtime,
		"train_steps_per_second":   float64(steps) / rt,
		"train_tokens_per_second":  float64(tokens) / rt,
		"train_samples_per_second": float64(steps*t.cfg.BatchSize*t.cfg.GradAccum) / rt,
		"final":                    last,
	}
	return jsonfile.Write(filepath.Join(dir, "train_summary.json"), sum)
}
