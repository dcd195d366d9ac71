package train

import "math"

// schedule is a learning-rate schedule as Hugging Face transformers defines
// it (get_scheduler): lr(k) is the rate after k scheduler steps. The
// optimizer step s (1-based) uses lr(s−1), and the learning_rate logged
// after step s is lr(s), as the Trainer logs it after stepping the
// scheduler.
type schedule struct {
	kind   string // linear, constant, cosine
	base   float64
	warmup int
	total  int
}

// warmupSteps is transformers' TrainingArguments.get_warmup_steps.
func warmupSteps(steps int, ratio float64, total int) int {
	if steps > 0 {
		return steps
	}
	return int(math.Ceil(ratio * float64(total)))
}

// at returns lr(k).
func (s schedule) at(k int) float64 {
	return s.base * s.factor(k)
}

func (s schedule) factor(k int) float64 {
	if k < s.warmup {
		return float64(k) / float64(max(1, s.warmup))
	}
	switch s.kind {
	case "constant":
		return 1
	case "cosine":
		progress := float64(k-s.warmup) / float64(max(1, s.total-s.warmup))
		return math.Max(0, 0.5*(1+math.Cos(math.Pi*progress)))
	default: // linear
		return math.Max(0, float64(s.total-k)/float64(max(1, s.total-s.warmup)))
	}
}
