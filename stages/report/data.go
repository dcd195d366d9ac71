package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dpopipe/dpopipe/stages/evaluate"
	"github.com/dpopipe/dpopipe/stages/judge"
)

// metricLine is one line of a training stage's metrics.jsonl.
type metricLine map[string]float64

// readMetrics reads dir/metrics.jsonl, keeping the numeric fields.
func readMetrics(dir string) ([]metricLine, error) {
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []metricLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return nil, fmt.Errorf("%s/metrics.jsonl: %w", dir, err)
		}
		m := metricLine{}
		for k, v := range raw {
			if x, ok := v.(float64); ok {
				m[k] = x
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// series returns the (step, key) points of the lines that have both.
func series(ms []metricLine, key string) (xs, ys []float64) {
	for i, m := range ms {
		y, ok := m[key]
		if !ok {
			continue
		}
		x, ok := m["step"]
		if !ok {
			x = float64(i + 1)
		}
		xs = append(xs, x)
		ys = append(ys, y)
	}
	return xs, ys
}

// inputs is everything the report reads.
type inputs struct {
	train, sft        []metricLine
	trainSummary      map[string]any
	evalSummary       map[string]float64
	pairs             []evaluate.PairResult
	samples           []evaluate.Sample
	judgeSummary      *judge.Summary
	verdicts          []judge.Verdict
	hasEval, hasJudge bool
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func load(o *options) (*inputs, error) {
	in := &inputs{}
	var err error
	if o.Train != "" {
		if in.train, err = readMetrics(o.Train); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		_ = readJSON(filepath.Join(o.Train, "train_summary.json"), &in.trainSummary)
	}
	if o.SFT != "" {
		if in.sft, err = readMetrics(o.SFT); err != nil {
			return nil, fmt.Errorf("sft: %w", err)
		}
	}
	if o.Eval != "" {
		in.hasEval = true
		if err := readJSON(filepath.Join(o.Eval, evaluate.SummaryFile), &in.evalSummary); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		if in.pairs, err = evaluate.ReadPairs(filepath.Join(o.Eval, evaluate.PairsFile)); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		if in.samples, err = evaluate.ReadSamples(filepath.Join(o.Eval, evaluate.SamplesFile)); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("eval: %w", err)
		}
	}
	if o.Judge != "" {
		in.hasJudge = true
		var s judge.Summary
		if err := readJSON(filepath.Join(o.Judge, judge.SummaryFile), &s); err != nil {
			return nil, fmt.Errorf("judge: %w", err)
		}
		in.judgeSummary = &s
		if in.verdicts, err = judge.ReadVerdicts(filepath.Join(o.Judge, judge.VerdictsFile)); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("judge: %w", err)
		}
	}
	return in, nil
}

// Summary is the report's summary.json.
type Summary struct {
	Title string `json:"title"`
	// Held-out preference pairs.
	EvalPairs int `json:"eval_pairs,omitempty"`
	// rewards/accuracies on held-out pairs: β(π−ref) larger for chosen.
	PreferenceAccuracy *float64 `json:"preference_accuracy,omitempty"`
	RewardMargin       *float64 `json:"reward_margin,omitempty"`
	// Fraction of held-out pairs whose chosen completion has the higher
	// log-prob, under the reference (before) and under the policy (after).
	LikelihoodAccuracyBefore *float64 `json:"likelihood_accuracy_before,omitempty"`
	LikelihoodAccuracyAfter  *float64 `json:"likelihood_accuracy_after,omitempty"`
	// Exact-answer accuracy of the generations (greedy unless the evaluate
	// stage sampled) on held-out prompts.
	Samples     int      `json:"samples,omitempty"`
	ExactBefore *float64 `json:"exact_accuracy_before,omitempty"`
	ExactAfter  *float64 `json:"exact_accuracy_after,omitempty"`
	// The judge's verdict, when a judge stage is given.
	JudgeRule string   `json:"judge_rule,omitempty"`
	WinRate   *float64 `json:"win_rate,omitempty"`
	Wins      int      `json:"wins,omitempty"`
	Ties      int      `json:"ties,omitempty"`
	Losses    int      `json:"losses,omitempty"`
	// Training.
	TrainSteps    int      `json:"train_steps,omitempty"`
	TrainLossLast *float64 `json:"train_loss_last,omitempty"`
}

func fp(x float64) *float64 { return &x }

func exactMatch(a, b string) bool { return strings.TrimSpace(a) == strings.TrimSpace(b) }

func summarize(title string, in *inputs) Summary {
	s := Summary{Title: title}
	if in.hasEval {
		s.EvalPairs = len(in.pairs)
		if v, ok := in.evalSummary["rewards/accuracies"]; ok {
			s.PreferenceAccuracy = fp(v)
		}
		if v, ok := in.evalSummary["rewards/margins"]; ok {
			s.RewardMargin = fp(v)
		}
		if n := len(in.pairs); n > 0 {
			before, after := 0, 0
			for _, p := range in.pairs {
				if p.RefChosen > p.RefRejected {
					before++
				}
				if p.PolicyChosen > p.PolicyRejected {
					after++
				}
			}
			s.LikelihoodAccuracyBefore = fp(float64(before) / float64(n))
			s.LikelihoodAccuracyAfter = fp(float64(after) / float64(n))
		}
		if n := len(in.samples); n > 0 {
			s.Samples = n
			ref, refN, pol := 0, 0, 0
			for _, x := range in.samples {
				if exactMatch(x.PolicyCompletion, x.Chosen) {
					pol++
				}
				if x.ReferenceCompletion != nil {
					refN++
					if exactMatch(*x.ReferenceCompletion, x.Chosen) {
						ref++
					}
				}
			}
			s.ExactAfter = fp(float64(pol) / float64(n))
			if refN > 0 {
				s.ExactBefore = fp(float64(ref) / float64(refN))
			}
		}
	}
	if j := in.judgeSummary; j != nil {
		s.JudgeRule = j.Rule
		s.WinRate = j.WinRate
		s.Wins, s.Ties, s.Losses = j.Wins, j.Ties, j.Losses
		if j.Rule == "exact" && j.PolicyAccuracy != nil {
			// the judge's exact rule is the same comparison
			s.ExactAfter = j.PolicyAccuracy
			s.ExactBefore = j.ReferenceAccuracy
			s.Samples = j.Samples
		}
	}
	if n := len(in.train); n > 0 {
		if st, ok := in.train[n-1]["step"]; ok {
			s.TrainSteps = int(st)
		}
		if l, ok := in.train[n-1]["loss"]; ok {
			s.TrainLossLast = fp(l)
		}
	}
	return s
}

// Text is the plain-text summary (summary.txt) that dpopipe prints at the
// end of a run.
func (s Summary) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", s.Title)
	if s.TrainSteps > 0 {
		fmt.Fprintf(&b, "DPO: %d steps", s.TrainSteps)
		if s.TrainLossLast != nil {
			fmt.Fprintf(&b, ", final train loss %.4f", *s.TrainLossLast)
		}
		b.WriteString("\n")
	}
	if s.EvalPairs > 0 {
		fmt.Fprintf(&b, "held-out preference pairs: %d\n", s.EvalPairs)
		if s.PreferenceAccuracy != nil {
			fmt.Fprintf(&b, "  preference accuracy (reward of chosen > rejected): %.3f", *s.PreferenceAccuracy)
			if s.RewardMargin != nil {
				fmt.Fprintf(&b, "  (mean reward margin %.3f)", *s.RewardMargin)
			}
			b.WriteString("\n")
		}
		if s.LikelihoodAccuracyBefore != nil && s.LikelihoodAccuracyAfter != nil {
			fmt.Fprintf(&b, "  chosen more likely than rejected: before DPO %.3f, after DPO %.3f\n", *s.LikelihoodAccuracyBefore, *s.LikelihoodAccuracyAfter)
		}
	}
	if s.Samples > 0 && s.ExactAfter != nil {
		fmt.Fprintf(&b, "exact-answer accuracy of generations on %d held-out prompts:\n", s.Samples)
		if s.ExactBefore != nil {
			fmt.Fprintf(&b, "  before DPO (reference): %.3f\n", *s.ExactBefore)
			fmt.Fprintf(&b, "  after DPO (policy):     %.3f  (%+.3f)\n", *s.ExactAfter, *s.ExactAfter-*s.ExactBefore)
		} else {
			fmt.Fprintf(&b, "  after DPO (policy):     %.3f\n", *s.ExactAfter)
		}
	}
	if s.WinRate != nil {
		fmt.Fprintf(&b, "judge (%s): policy win rate over the reference %.3f (%d wins, %d ties, %d losses)\n", s.JudgeRule, *s.WinRate, s.Wins, s.Ties, s.Losses)
	}
	return b.String()
}
