package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/loss"
	"github.com/dpopipe/dpopipe/stages/model"
)

// initConfig is the from-scratch model of the init attribute.
type initConfig struct {
	VocabSize      int     `json:"vocab_size"`
	Dim            int     `json:"dim"`
	Layers         int     `json:"layers"`
	Heads          int     `json:"heads"`
	KVHeads        int     `json:"kv_heads"`
	HiddenDim      int     `json:"hidden_dim"`
	SeqLen         int     `json:"seq_len"`
	Seed           *uint64 `json:"seed"`
	TiedEmbeddings bool    `json:"tied_embeddings"`
	BOS            *int32  `json:"bos"`
	EOS            *int32  `json:"eos"`
}

var initKeys = []string{"vocab_size", "dim", "layers", "heads", "kv_heads", "hidden_dim", "seq_len", "seed", "tied_embeddings", "bos", "eos"}

// modelConfig turns the init attribute into a model configuration. Missing
// kv_heads defaults to heads and hidden_dim to the Llama rule
// (multiple of 32 near 8/3·dim).
func (ic *initConfig) modelConfig() model.Config {
	kv := ic.KVHeads
	if kv == 0 {
		kv = ic.Heads
	}
	hid := ic.HiddenDim
	if hid == 0 {
		hid = (8*ic.Dim/3 + 31) / 32 * 32
	}
	c := model.Config{
		Dim: ic.Dim, HiddenDim: hid, NLayers: ic.Layers, NHeads: ic.Heads, NKVHeads: kv,
		VocabSize: ic.VocabSize, SeqLen: ic.SeqLen, NormEps: 1e-5, RopeTheta: 10000,
		Rope: model.RopeHalf, TiedEmbeddings: ic.TiedEmbeddings, BOS: -1, EOS: -1,
	}
	if ic.BOS != nil {
		c.BOS = *ic.BOS
	}
	if ic.EOS != nil {
		c.EOS = *ic.EOS
	}
	return c
}

func (ic *initConfig) seed() uint64 {
	if ic.Seed != nil {
		return *ic.Seed
	}
	return 0
}

// config is the decoded configuration of a dpo or sft stage.
type config struct {
	Model     string          `json:"model"`
	Init      json.RawMessage `json:"init"`
	Tokenizer string          `json:"tokenizer"`
	Loss      json.RawMessage `json:"loss"`
	Target    string          `json:"target"`

	Beta           float64  `json:"beta"`
	LabelSmoothing float64  `json:"label_smoothing"`
	Gamma          float64  `json:"gamma"`
	DiscopopTau    float64  `json:"discopop_tau"`
	Alpha          float64  `json:"alpha"`
	UseWeighting   bool     `json:"use_weighting"`
	LDAlpha        *float64 `json:"ld_alpha"`

	LearningRate float64 `json:"learning_rate"`
	LRScheduler  string  `json:"lr_scheduler"`
	WarmupRatio  float64 `json:"warmup_ratio"`
	WarmupSteps  int     `json:"warmup_steps"`
	AdamBeta1    float64 `json:"adam_beta1"`
	AdamBeta2    float64 `json:"adam_beta2"`
	AdamEpsilon  float64 `json:"adam_epsilon"`
	WeightDecay  float64 `json:"weight_decay"`
	MaxGradNorm  float64 `json:"max_grad_norm"`

	BatchSize      int     `json:"batch_size"`
	GradAccum      int     `json:"gradient_accumulation_steps"`
	Epochs         float64 `json:"epochs"`
	MaxSteps       int     `json:"max_steps"`
	Seed           uint64  `json:"seed"`
	LoggingSteps   int     `json:"logging_steps"`
	SaveSteps      int     `json:"save_steps"`
	SaveTotalLimit int     `json:"save_total_limit"`
	Resume         bool    `json:"resume"`

	// derived
	kind     string // "dpo" or "sft"
	init     *initConfig
	losses   map[string]float64
	lossOpts loss.Options
}

func attrs(kind string) []sdk.Attr {
	a := []sdk.Attr{
		{Name: "model", Type: "string", Path: true, Description: "The policy's starting weights: a llama2.c .bin, an HF directory, or a training stage's artifact. Required unless init is given."},
		{Name: "init", Type: "any", Description: "A model built from scratch instead of loading one: { vocab_size, dim, layers, heads, kv_heads, hidden_dim, seq_len, seed } (kv_heads defaults to heads, hidden_dim to ~8/3·dim; optional tied_embeddings, bos, eos)."},
		{Name: "tokenizer", Type: "string", Path: true, Description: "A tokenizer to copy beside the saved model. By default the one stored with the starting model, if any."},
	}
	if kind == "dpo" {
		a = append(a,
			sdk.Attr{Name: "loss", Type: "any", Default: sdk.Def("sigmoid"), Description: "A loss name, or a map of loss name to weight to combine (e.g. { sigmoid = 1, sft = 0.1 }). Names: " + strings.Join(loss.Names(), ", ") + "."},
			sdk.Attr{Name: "beta", Type: "number", Default: sdk.Def(0.1), Description: "β: the strength of the KL regularisation (and the reward scale)."},
			sdk.Attr{Name: "label_smoothing", Type: "number", Default: sdk.Def(0), Description: "ε: label smoothing (cDPO, robust, exo_pair, ...), in [0, 0.5)."},
			sdk.Attr{Name: "gamma", Type: "number", Default: sdk.Def(0.5), Description: "SimPO's target margin γ."},
			sdk.Attr{Name: "discopop_tau", Type: "number", Default: sdk.Def(0.05), Description: "τ of the discopop loss."},
			sdk.Attr{Name: "alpha", Type: "number", Default: sdk.Def(1), Description: "α of alpha_divergence."},
			sdk.Attr{Name: "use_weighting", Type: "bool", Default: sdk.Def(false), Description: "WPO (TRL use_weighting): multiply each pair's loss by the detached weight min(1, exp(ŵ(chosen) + ŵ(rejected))), where ŵ is the policy's mean over the completion's tokens of log p(token) − log Σᵥ pᵥ² (no gradient flows through the weight)."},
			sdk.Attr{Name: "ld_alpha", Type: "number", Description: "LD-DPO: weight of the policy's completion tokens beyond the shorter completion's length (null or 1 = off)."},
		)
	} else {
		a = append(a, sdk.Attr{Name: "target", Type: "string", Default: sdk.Def("chosen"), Enum: []string{"chosen", "both"},
			Description: `What to learn: "chosen" completions (the documents of a text dataset), or "both" chosen and rejected completions as separate examples (empty rejected completions are skipped).`})
	}
	a = append(a,
		sdk.Attr{Name: "learning_rate", Type: "number", Default: sdk.Def(1e-6), Description: "Peak learning rate of AdamW."},
		sdk.Attr{Name: "lr_scheduler", Type: "string", Default: sdk.Def("linear"), Enum: []string{"linear", "constant", "cosine"}, Description: "Learning-rate schedule after warmup."},
		sdk.Attr{Name: "warmup_ratio", Type: "number", Default: sdk.Def(0), Description: "Warmup as a fraction of the total steps (used when warmup_steps is 0)."},
		sdk.Attr{Name: "warmup_steps", Type: "number", Default: sdk.Def(0), Description: "Linear warmup steps from 0 to learning_rate."},
		sdk.Attr{Name: "adam_beta1", Type: "number", Default: sdk.Def(0.9)},
		sdk.Attr{Name: "adam_beta2", Type: "number", Default: sdk.Def(0.999)},
		sdk.Attr{Name: "adam_epsilon", Type: "number", Default: sdk.Def(1e-8)},
		sdk.Attr{Name: "weight_decay", Type: "number", Default: sdk.Def(0), Description: "Decoupled (AdamW) weight decay."},
		sdk.Attr{Name: "max_grad_norm", Type: "number", Default: sdk.Def(1.0), Description: "Global gradient-norm clipping threshold; 0 turns clipping off."},
		sdk.Attr{Name: "batch_size", Type: "number", Default: sdk.Def(8), Description: "Pairs per micro-batch."},
		sdk.Attr{Name: "gradient_accumulation_steps", Type: "number", Default: sdk.Def(1), Description: "Micro-batches per optimizer step."},
		sdk.Attr{Name: "epochs", Type: "number", Default: sdk.Def(1), Description: "Passes over the train split (may be fractional); ignored when max_steps > 0."},
		sdk.Attr{Name: "max_steps", Type: "number", Default: sdk.Def(-1), Description: "Optimizer steps to run; -1 derives them from epochs."},
		sdk.Attr{Name: "seed", Type: "number", Default: sdk.Def(42), Description: "Seed of the data shuffling."},
		sdk.Attr{Name: "logging_steps", Type: "number", Default: sdk.Def(10), Description: "Steps per metrics line."},
		sdk.Attr{Name: "save_steps", Type: "number", Default: sdk.Def(0), Description: "Steps between checkpoints; 0 saves only at the end."},
		sdk.Attr{Name: "save_total_limit", Type: "number", Default: sdk.Def(2), Description: "Checkpoints kept (the newest); 0 keeps all."},
		sdk.Attr{Name: "resume", Type: "bool", Default: sdk.Def(false), Description: "Continue from the newest checkpoint in the run directory (as dpopipe run --resume)."},
		sdk.Attr{Name: "eval_split", Type: "any", Description: "Accepted for compatibility and ignored: evaluation is the evaluate stage's job."},
	)
	return a
}

// decodeConfig decodes and checks a configuration, collecting every error.
func decodeConfig(kind string, c sdk.Config) (*config, error) {
	cfg := &config{kind: kind}
	if err := c.Decode(cfg); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	var es sdk.Errors
	add := func(attr, summary, format string, args ...any) {
		es = append(es, sdk.Errorf(attr, summary, format, args...))
	}
	// model / init
	if len(cfg.Init) > 0 && string(cfg.Init) != "null" {
		ic, err := decodeInit(cfg.Init)
		if err != nil {
			add("init", "Invalid init", "%v", err)
		} else {
			cfg.init = ic
			if cfg.Model != "" {
				add("init", "Both model and init", "Give either model (starting weights) or init (a model from scratch), not both.")
			}
		}
	} else if cfg.Model == "" {
		add("model", "Missing model", "Set model to the policy's starting weights, or init to build a model from scratch.")
	}
	// loss
	if kind == "dpo" {
		ls, err := decodeLoss(cfg.Loss)
		if err != nil {
			add("loss", "Invalid loss", "%v", err)
		}
		cfg.losses = ls
		cfg.lossOpts = loss.Options{Beta: cfg.Beta, LabelSmoothing: cfg.LabelSmoothing, Gamma: cfg.Gamma,
			DiscopopTau: cfg.DiscopopTau, Alpha: cfg.Alpha, UseWeighting: cfg.UseWeighting, Losses: ls}
		if err == nil {
			if err := cfg.lossOpts.Validate(); err != nil {
				add(lossAttr(err.Error()), "Invalid loss options", "%s", strings.TrimPrefix(err.Error(), "loss: "))
			}
		}
		if cfg.LDAlpha != nil && !(*cfg.LDAlpha >= 0 && *cfg.LDAlpha <= 1) {
			add("ld_alpha", "Out of range", "ld_alpha must be in [0, 1] (1 turns LD-DPO off); got %v.", *cfg.LDAlpha)
		}
	} else if cfg.Target != "chosen" && cfg.Target != "both" {
		add("target", "Invalid target", `target must be "chosen" or "both"; got %q.`, cfg.Target)
	}
	// optimizer and loop
	pos := func(attr string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			add(attr, "Must be positive", "%s must be a positive number; got %v.", attr, v)
		}
	}
	nonneg := func(attr string, v float64) {
		if !(v >= 0) || math.IsInf(v, 0) {
			add(attr, "Must not be negative", "%s must be a finite number >= 0; got %v.", attr, v)
		}
	}
	nonneg("learning_rate", cfg.LearningRate)
	if !(cfg.WarmupRatio >= 0 && cfg.WarmupRatio <= 1) {
		add("warmup_ratio", "Out of range", "warmup_ratio must be in [0, 1]; got %v.", cfg.WarmupRatio)
	}
	nonneg("warmup_steps", float64(cfg.WarmupSteps))
	if !(cfg.AdamBeta1 >= 0 && cfg.AdamBeta1 < 1) {
		add("adam_beta1", "Out of range", "adam_beta1 must be in [0, 1); got %v.", cfg.AdamBeta1)
	}
	if !(cfg.AdamBeta2 >= 0 && cfg.AdamBeta2 < 1) {
		add("adam_beta2", "Out of range", "adam_beta2 must be in [0, 1); got %v.", cfg.AdamBeta2)
	}
	pos("adam_epsilon", cfg.AdamEpsilon)
	nonneg("weight_decay", cfg.WeightDecay)
	nonneg("max_grad_norm", cfg.MaxGradNorm)
	pos("batch_size", float64(cfg.BatchSize))
	pos("gradient_accumulation_steps", float64(cfg.GradAccum))
	if cfg.MaxSteps <= 0 {
		if cfg.MaxSteps != -1 && cfg.MaxSteps != 0 {
			add("max_steps", "Invalid max_steps", "max_steps must be positive, or -1 to derive the steps from epochs; got %d.", cfg.MaxSteps)
		}
		pos("epochs", cfg.Epochs)
	}
	pos("logging_steps", float64(cfg.LoggingSteps))
	nonneg("save_steps", float64(cfg.SaveSteps))
	nonneg("save_total_limit", float64(cfg.SaveTotalLimit))
	if len(es) > 0 {
		return nil, es
	}
	return cfg, nil
}

// lossAttr names the attribute a loss.Options validation error is about.
func lossAttr(msg string) string {
	for _, a := range []string{"label_smoothing", "discopop_tau", "alpha", "gamma", "beta"} {
		if strings.Contains(msg, a) {
			return a
		}
	}
	return "loss"
}

func decodeInit(raw json.RawMessage) (*initConfig, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, fmt.Errorf("init must be an object { vocab_size, dim, layers, heads, kv_heads, hidden_dim, seq_len, seed }")
	}
	for k := range keys {
		known := false
		for _, n := range initKeys {
			known = known || k == n
		}
		if !known {
			return nil, fmt.Errorf("unknown key %q; valid keys: %s", k, strings.Join(initKeys, ", "))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var ic initConfig
	if err := dec.Decode(&ic); err != nil {
		return nil, err
	}
	for _, k := range []string{"vocab_size", "dim", "layers", "heads", "seq_len"} {
		if v, ok := keys[k]; !ok || string(v) == "null" {
			return nil, fmt.Errorf("%s is required", k)
		}
	}
	if err := ic.modelConfig().Validate(); err != nil {
		return nil, err
	}
	return &ic, nil
}

// decodeLoss accepts "name" or { name = weight, ... }.
func decodeLoss(raw json.RawMessage) (map[string]float64, error) {
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		return map[string]float64{name: 1}, checkLossNames([]string{name})
	}
	var m map[string]float64
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("loss must be a loss name or a map of loss name to weight, e.g. { sigmoid = 1, sft = 0.1 }")
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("the loss map is empty; name at least one loss")
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return m, checkLossNames(names)
}

func checkLossNames(names []string) error {
	valid := loss.Names()
	for _, n := range names {
		i := sort.SearchStrings(valid, n)
		if i >= len(valid) || valid[i] != n {
			return fmt.Errorf("unknown loss %q; valid names: %s", n, strings.Join(valid, ", "))
		}
	}
	return nil
}

// ldAlpha returns the LD-DPO α and whether LD weighting is on.
func (c *config) ldAlpha() (float64, bool) {
	if c.LDAlpha == nil || *c.LDAlpha == 1 {
		return 1, false
	}
	return *c.LDAlpha, true
}

// fingerprint is the part of the configuration a checkpoint must match to
// be resumed: everything that changes the sequence of updates or metrics.
func (c *config) fingerprint() string {
	cp := *c
	cp.Resume = false
	cp.SaveSteps = 0
	cp.SaveTotalLimit = 0
	cp.Tokenizer = ""
	cp.Model = "" // the starting weights are identified by their digest instead
	b, _ := json.Marshal(&cp)
	return string(b)
}
