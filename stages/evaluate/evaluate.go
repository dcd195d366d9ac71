// Package evaluate is the evaluate stage. It scores the held-out split of
// pairs with the trained policy against the reference log-probs cached by
// the reference_logprobs stage, and writes:
//
//   - pairs.arrow: one row per pair with the policy's and the reference's
//     summed log-probs, the token counts, the rewards β(π−ref) and whether
//     the chosen reward is strictly larger;
//   - summary.json: TRL's metric names (rewards/chosen, rewards/rejected,
//     rewards/accuracies, rewards/margins, logps/chosen, logps/rejected,
//     logits/chosen, logits/rejected) and loss/<name> for each loss listed
//     in losses, all computed with the loss package;
//   - samples.jsonl and the stage's output table: for the first samples
//     held-out prompts (by row), the completions of the reference model and
//     of the policy side by side, decoded, next to the expected answer.
package evaluate

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/internal/jsonfile"
	"github.com/dpopipe/dpopipe/stages/loss"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/modelref"
	"github.com/dpopipe/dpopipe/stages/pairs"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

// Version is the stage version (part of the cache key).
const Version = "1"

// File names in the artifact directory.
const (
	PairsFile   = "pairs.arrow"
	SummaryFile = "summary.json"
	SamplesFile = "samples.jsonl"
)

// Stage is the evaluate stage.
type Stage struct{}

// New returns the stage.
func New() sdk.Stage { return &Stage{} }

type options struct {
	Model          string   `json:"model"`
	ReferenceModel string   `json:"reference_model"`
	Tokenizer      string   `json:"tokenizer"`
	Beta           float64  `json:"beta"`
	Losses         []string `json:"losses"`
	LabelSmoothing float64  `json:"label_smoothing"`
	Gamma          float64  `json:"gamma"`
	Split          string   `json:"split"`
	BatchSize      int      `json:"batch_size"`
	Samples        int      `json:"samples"`
	MaxNewTokens   int      `json:"max_new_tokens"`
	Temperature    float64  `json:"temperature"`
	TopP           float64  `json:"top_p"`
	Seed           uint64   `json:"seed"`
}

// Spec describes the stage.
func (*Stage) Spec() sdk.Spec {
	return sdk.Spec{
		Type:    "evaluate",
		Version: Version,
		Description: "Scores the held-out split with the trained policy against the cached reference log-probs (pairs.arrow, summary.json with TRL's metric names), " +
			"and writes the reference's and the policy's completions of held-out prompts side by side as its output table (and samples.jsonl), for a judge stage.",
		Config: []sdk.Attr{
			{Name: "model", Type: "string", Required: true, Path: true,
				Description: "The trained policy: a training stage's artifact (stage.dpo.NAME), an HF directory or a llama2.c .bin."},
			{Name: "reference_model", Type: "string", Path: true,
				Description: "The reference model whose completions are shown beside the policy's (e.g. stage.sft.NAME or the .bin DPO started from). Without it only the policy's completions are generated."},
			{Name: "tokenizer", Type: "string", Path: true,
				Description: `The tokenizer to decode completions with ("bytes" for the built-in one). By default the one stored with model.`},
			{Name: "beta", Type: "number", Default: sdk.Def(0.1), Description: "β of the rewards β(π−ref) and of the losses; use the value DPO trained with."},
			{Name: "losses", Type: "list(string)", Default: sdk.Def([]string{"sigmoid"}),
				Description: "Losses to report as loss/<name> (the loss package's names: " + strings.Join(loss.Names(), ", ") + ")."},
			{Name: "label_smoothing", Type: "number", Default: sdk.Def(0), Description: "ε of the losses that use it."},
			{Name: "gamma", Type: "number", Default: sdk.Def(0.5), Description: "SimPO's γ, for loss/simpo."},
			{Name: "split", Type: "string", Default: sdk.Def(pairs.SplitEval), Description: "The split to score."},
			{Name: "batch_size", Type: "number", Default: sdk.Def(16), Description: "Pairs per forward pass."},
			{Name: "samples", Type: "number", Default: sdk.Def(16), Description: "Held-out prompts (the first by row) to generate completions for; 0 for none, -1 for all."},
			{Name: "max_new_tokens", Type: "number", Default: sdk.Def(64), Description: "Longest completion generated."},
			{Name: "temperature", Type: "number", Default: sdk.Def(0), Description: "Sampling temperature; 0 is greedy."},
			{Name: "top_p", Type: "number", Default: sdk.Def(1), Description: "Nucleus sampling mass when temperature > 0."},
			{Name: "seed", Type: "number", Default: sdk.Def(0), Description: "Seed of sampling (each prompt uses seed + row); the reference and the policy share it."},
		},
		Input: []sdk.Column{
			{Name: pairs.ColRow, Type: "int64"},
			{Name: pairs.ColPromptIDs, Type: "list<int32>"},
			{Name: pairs.ColChosenIDs, Type: "list<int32>"},
			{Name: pairs.ColRejectedIDs, Type: "list<int32>"},
			{Name: pairs.ColSplit, Type: "utf8", Optional: true},
			{Name: pairs.ColRefChosen, Type: "float64"},
			{Name: pairs.ColRefRejected, Type: "float64"},
			{Name: pairs.ColChosenTokens, Type: "int32"},
			{Name: pairs.ColRejectedTokens, Type: "int32"},
		},
		Output: SampleColumns(),
	}
}

// SampleColumns are the columns of the output table (and of a judge's
// input).
func SampleColumns() []sdk.Column {
	return []sdk.Column{
		{Name: "row", Type: "int64"},
		{Name: "prompt", Type: "utf8"},
		{Name: "chosen", Type: "utf8"},
		{Name: "reference_completion", Type: "utf8"},
		{Name: "policy_completion", Type: "utf8"},
	}
}

func parse(c sdk.Config) (*options, error) {
	var o options
	if err := c.Decode(&o); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	var errs sdk.Errors
	if o.Model == "" {
		errs = append(errs, sdk.Errorf("model", "Missing model", "set model to the trained policy, e.g. stage.dpo.train"))
	}
	if !(o.Beta > 0) || math.IsInf(o.Beta, 0) {
		errs = append(errs, sdk.Errorf("beta", "Invalid beta", "%v: beta must be positive", o.Beta))
	}
	if len(o.Losses) == 0 {
		errs = append(errs, sdk.Errorf("losses", "No losses", "list at least one loss, e.g. [\"sigmoid\"]"))
	}
	for _, name := range o.Losses {
		lo := loss.DefaultOptions()
		lo.Beta, lo.Losses = math.Max(o.Beta, 1e-9), map[string]float64{name: 1}
		lo.LabelSmoothing, lo.Gamma = o.LabelSmoothing, o.Gamma
		if err := lo.Validate(); err != nil {
			errs = append(errs, sdk.Errorf("losses", "Invalid loss", "%s", strings.TrimPrefix(err.Error(), "loss: ")))
		}
	}
	if o.BatchSize < 1 {
		errs = append(errs, sdk.Errorf("batch_size", "Invalid batch_size", "%d: use a positive number", o.BatchSize))
	}
	if o.Samples < -1 {
		errs = append(errs, sdk.Errorf("samples", "Invalid samples", "%d: use a count, 0 for none or -1 for all", o.Samples))
	}
	if o.MaxNewTokens < 1 {
		errs = append(errs, sdk.Errorf("max_new_tokens", "Invalid max_new_tokens", "%d: use a positive number", o.MaxNewTokens))
	}
	if o.Temperature < 0 || math.IsNaN(o.Temperature) {
		errs = append(errs, sdk.Errorf("temperature", "Invalid temperature", "%v: use 0 (greedy) or a positive number", o.Temperature))
	}
	if !(o.TopP > 0 && o.TopP <= 1) {
		errs = append(errs, sdk.Errorf("top_p", "Invalid top_p", "%v: use a number in (0, 1]", o.TopP))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &o, nil
}

// Configure checks the configuration.
func (*Stage) Configure(c sdk.Config) error {
	_, err := parse(c)
	return err
}

// lossOptions returns the options of one named loss.
func (o *options) lossOptions(name string) loss.Options {
	lo := loss.DefaultOptions()
	lo.Beta, lo.LabelSmoothing, lo.Gamma = o.Beta, o.LabelSmoothing, o.Gamma
	lo.Losses = map[string]float64{name: 1}
	return lo
}

// PairResult is one row of pairs.arrow.
type PairResult struct {
	Row                                  int64
	PolicyChosen, PolicyRejected         float64
	RefChosen, RefRejected               float64
	ChosenTokens, RejectedTokens         int32
	RewardChosen, RewardRejected         float64
	Correct                              bool
	policyLogitChosen, policyLogitReject float64 // sums over completion positions and the vocabulary
}

// Sample is one generation sample.
type Sample struct {
	Row                 int64   `json:"row"`
	Prompt              string  `json:"prompt"`
	Chosen              string  `json:"chosen"`
	ReferenceCompletion *string `json:"reference_completion"`
	PolicyCompletion    string  `json:"policy_completion"`
}

// Run scores the split, writes the artifacts and the sample table.
func (*Stage) Run(ctx context.Context, run *sdk.Run) error {
	o, err := parse(run.Config)
	if err != nil {
		return err
	}
	if run.Input == nil {
		return fmt.Errorf("evaluate needs an input: the reference_logprobs stage's output (input = stage.reference_logprobs.NAME)")
	}
	if run.Dir == "" {
		return fmt.Errorf("evaluate needs an artifact directory")
	}
	all, err := pairs.ReadAll(run.Input)
	if err != nil {
		return err
	}
	var ps []pairs.Pair
	for _, p := range all {
		if p.Split == o.Split {
			if !p.HasRef {
				return fmt.Errorf("the input has no reference log-probs (%s, %s): use the reference_logprobs stage's output as input", pairs.ColRefChosen, pairs.ColRefRejected)
			}
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return fmt.Errorf("no input row has split %q (%d rows in all): give the data an eval split (load: split = { eval = 0.1 }; generate: eval_fraction), or set split", o.Split, len(all))
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Row < ps[j].Row })

	policy, err := modelref.Load(o.Model)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	tokPath := o.Tokenizer
	if tokPath == "" {
		t, ok := modelref.Tokenizer(o.Model)
		if !ok {
			return sdk.Errorf("tokenizer", "No tokenizer", "the model at %s carries no tokenizer; set tokenizer (\"bytes\" for the built-in one)", o.Model)
		}
		tokPath = t
	}
	tok, err := loadTokenizer(tokPath)
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	results, err := score(ctx, run, policy, ps, o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(run.Dir, 0o755); err != nil {
		return err
	}
	if err := WritePairs(filepath.Join(run.Dir, PairsFile), results); err != nil {
		return err
	}
	sum, err := Summarize(results, o.Beta, o.lossOptions, o.Losses)
	if err != nil {
		return err
	}
	lc, lr, nc, nr := 0.0, 0.0, 0, 0
	for _, r := range results {
		lc += r.policyLogitChosen
		lr += r.policyLogitReject
		nc += int(r.ChosenTokens)
		nr += int(r.RejectedTokens)
	}
	v := float64(policy.Config.VocabSize)
	sum["logits/chosen"] = lc / math.Max(1, float64(nc)*v)
	sum["logits/rejected"] = lr / math.Max(1, float64(nr)*v)
	sum["eval/pairs"] = float64(len(results))
	sum["beta"] = o.Beta
	run.Printf("%d %s pairs: rewards/accuracies %.4f  rewards/margins %.4f  rewards/chosen %.4f  rewards/rejected %.4f",
		len(results), o.Split, sum["rewards/accuracies"], sum["rewards/margins"], sum["rewards/chosen"], sum["rewards/rejected"])

	// generation samples
	n := o.Samples
	if n < 0 || n > len(ps) {
		n = len(ps)
	}
	var ref *model.Model
	if o.ReferenceModel != "" && n > 0 {
		if ref, err = modelref.Load(o.ReferenceModel); err != nil {
			return fmt.Errorf("reference_model: %w", err)
		}
	}
	samples, err := generateSamples(ctx, run, ps[:n], policy, ref, tok, o)
	if err != nil {
		return err
	}
	if n > 0 {
		exactP, exactR := 0, 0
		for _, s := range samples {
			if strings.TrimSpace(s.PolicyCompletion) == strings.TrimSpace(s.Chosen) {
				exactP++
			}
			if s.ReferenceCompletion != nil && strings.TrimSpace(*s.ReferenceCompletion) == strings.TrimSpace(s.Chosen) {
				exactR++
			}
		}
		sum["samples/count"] = float64(n)
		sum["samples/policy_exact"] = float64(exactP) / float64(n)
		if ref != nil {
			sum["samples/reference_exact"] = float64(exactR) / float64(n)
			run.Printf("%d samples: completions equal to the chosen answer: reference %d, policy %d", n, exactR, exactP)
		} else {
			run.Printf("%d samples: policy completions equal to the chosen answer: %d", n, exactP)
		}
	}
	if err := writeJSON(filepath.Join(run.Dir, SummaryFile), sum); err != nil {
		return err
	}
	if err := writeSamplesJSONL(filepath.Join(run.Dir, SamplesFile), samples); err != nil {
		return err
	}
	rec := samplesRecord(samples)
	defer rec.Release()
	return run.Write(rec)
}

// loadTokenizer loads path, treating a path attribute that the host
// resolved to "<dir>/bytes" (and that names no file) as the built-in byte
// tokenizer.
func loadTokenizer(path string) (tokenizer.Tokenizer, error) {
	if base := filepath.Base(path); base == "bytes" || base == "byte" {
		if _, err := os.Stat(path); err != nil {
			return tokenizer.NewBytes(), nil
		}
	}
	return tokenizer.Load(path)
}

// score runs the policy over every pair.
func score(ctx context.Context, run *sdk.Run, m *model.Model, ps []pairs.Pair, o *options) ([]PairResult, error) {
	r := model.NewRunner(m)
	out := make([]PairResult, len(ps))
	for lo := 0; lo < len(ps); lo += o.BatchSize {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hi := min(lo+o.BatchSize, len(ps))
		seqs := make([]model.Seq, 0, 2*(hi-lo))
		for i := lo; i < hi; i++ {
			c, cs := ps[i].ChosenSeq()
			rj, rs := ps[i].RejectedSeq()
			seqs = append(seqs, model.Seq{IDs: c, Start: cs}, model.Seq{IDs: rj, Start: rs})
		}
		sc, err := r.Score(seqs)
		if err != nil {
			return nil, fmt.Errorf("scoring rows %d..%d: %w", ps[lo].Row, ps[hi-1].Row, err)
		}
		for i := lo; i < hi; i++ {
			k := 2 * (i - lo)
			p := &ps[i]
			res := PairResult{
				Row: p.Row, PolicyChosen: sc.Logp[k], PolicyRejected: sc.Logp[k+1],
				RefChosen: p.RefChosen, RefRejected: p.RefRejected,
				ChosenTokens: int32(sc.Tokens[k]), RejectedTokens: int32(sc.Tokens[k+1]),
				policyLogitChosen: sc.LogitSum[k], policyLogitReject: sc.LogitSum[k+1],
			}
			if res.ChosenTokens != p.ChosenTokens || res.RejectedTokens != p.RejectedTokens {
				return nil, fmt.Errorf("row %d: the policy scores %d/%d completion tokens, the reference log-probs cover %d/%d: the input was tokenized differently from what the reference scored",
					p.Row, res.ChosenTokens, res.RejectedTokens, p.ChosenTokens, p.RejectedTokens)
			}
			res.RewardChosen = o.Beta * (res.PolicyChosen - res.RefChosen)
			res.RewardRejected = o.Beta * (res.PolicyRejected - res.RefRejected)
			res.Correct = res.RewardChosen > res.RewardRejected
			out[i] = res
		}
		run.Progress(int64(hi), int64(len(ps)), "pairs")
	}
	return out, nil
}

// Summarize computes the summary metrics from the per-pair results: TRL's
// reward and log-prob metrics, and loss/<name> for each name, with the
// loss package (unweighted, as TRL's evaluation).
func Summarize(rs []PairResult, beta float64, opts func(string) loss.Options, names []string) (map[string]float64, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("no pairs to summarize")
	}
	batch := make([]loss.Pair, len(rs))
	n := float64(len(rs))
	sum := map[string]float64{}
	var lc, lr, rc, rr, acc float64
	for i, r := range rs {
		batch[i] = loss.Pair{Chosen: r.PolicyChosen, Rejected: r.PolicyRejected, RefChosen: r.RefChosen, RefRejected: r.RefRejected,
			ChosenTokens: int(r.ChosenTokens), RejectedTokens: int(r.RejectedTokens)}
		lc += r.PolicyChosen
		lr += r.PolicyRejected
		rc += r.RewardChosen
		rr += r.RewardRejected
		if r.Correct {
			acc++
		}
	}
	sum["logps/chosen"] = lc / n
	sum["logps/rejected"] = lr / n
	sum["rewards/chosen"] = rc / n
	sum["rewards/rejected"] = rr / n
	sum["rewards/margins"] = (rc - rr) / n
	sum["rewards/accuracies"] = acc / n
	for _, name := range names {
		res, err := loss.Compute(batch, opts(name))
		if err != nil {
			return nil, fmt.Errorf("loss %s: %w", name, err)
		}
		sum["loss/"+name] = res.Loss
	}
	return sum, nil
}

func writeJSON(path string, v any) error { return jsonfile.Write(path, v) }
