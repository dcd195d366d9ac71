package train

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Metrics follow TRL's DPOTrainer and the transformers Trainer:
//
//   - loss is the mean, over the optimizer steps of the logging window, of
//     each step's loss (the Trainer's tr_loss / steps since the last log);
//     a step's loss is the mean over its pairs (the micro-batch losses,
//     each a mean over its pairs, weighted by their share of the step).
//   - rewards/*, logps/* and logits/* are computed per micro-batch, as TRL's
//     store_metrics does on every forward, and averaged over the window's
//     micro-batches when logged. An sft micro-batch with target "both"
//     whose rejected completions are all empty (text rows) has no
//     logps/rejected or logits/rejected: those average over the other
//     micro-batches (0 when there are none).
//   - grad_norm is the pre-clipping global norm of the window's last step,
//     as the Trainer logs it.
//   - learning_rate is the scheduler's rate after the window's last step,
//     i.e. the rate the next step will use (the Trainer's _get_learning_rate
//     after lr_scheduler.step()).
//   - epoch is fractional: epochs done plus the share of this epoch's
//     micro-batches consumed.
//   - num_input_tokens_seen counts every token fed to the model (prompts
//     and completions of both sequences of a pair).
//
// The last, possibly partial, window is logged too. Wall-clock rates
// (tokens/s) are printed on the console and written to train_summary.json
// but not to metrics.jsonl, so that a resumed run's metrics.jsonl is
// bit-identical to an uninterrupted one.

var (
	dpoMetricNames = []string{"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
		"logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"}
	sftChosenNames = []string{"logps/chosen", "logits/chosen"}
	sftBothNames   = []string{"logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"}
)

// window accumulates the metrics of one logging window. It is part of the
// checkpoint, so that a checkpoint in the middle of a window resumes it.
type window struct {
	Steps   int       `json:"steps"`
	LossSum float64   `json:"loss_sum"`
	Micro   int       `json:"micro"`
	Sums    []float64 `json:"sums"`
	// NoRej counts the micro-batches without a rejected completion (sft,
	// target "both", on text rows): they have no */rejected metrics.
	NoRej int `json:"no_rej,omitempty"`
}

func (w *window) reset(n int) {
	w.Steps, w.LossSum, w.Micro, w.NoRej = 0, 0, 0, 0
	if len(w.Sums) != n {
		w.Sums = make([]float64, n)
	}
	clear(w.Sums)
}

// stepMetrics are one optimizer step's values before they join the window.
type stepMetrics struct {
	loss     float64
	micro    int
	noRej    int
	sums     []float64
	gradNorm float64
	tokens   int64
	rows     []int64
}

func (s *stepMetrics) reset(n int) {
	s.loss, s.micro, s.noRej, s.gradNorm, s.tokens = 0, 0, 0, 0, 0
	if len(s.sums) != n {
		s.sums = make([]float64, n)
	}
	clear(s.sums)
	s.rows = s.rows[:0]
}

// mean is the window's mean of metric i, named name.
func (w *window) mean(i int, name string) float64 {
	n := w.Micro
	if strings.HasSuffix(name, "/rejected") {
		n -= w.NoRej
	}
	return w.Sums[i] / float64(max(1, n))
}

// metricLine renders one metrics.jsonl line with a fixed key order.
func metricLine(step int, epoch float64, w *window, names []string, gradNorm, lr float64, tokens int64) []byte {
	var b strings.Builder
	num := func(v float64) string {
		j, err := json.Marshal(v)
		if err != nil { // not finite: never happens after the guard
			return strconv.Quote(fmt.Sprint(v))
		}
		return string(j)
	}
	fmt.Fprintf(&b, `{"step":%d,"epoch":%s,"loss":%s`, step, num(epoch), num(w.LossSum/float64(max(1, w.Steps))))
	for i, n := range names {
		fmt.Fprintf(&b, `,%q:%s`, n, num(w.mean(i, n)))
	}
	fmt.Fprintf(&b, `,"grad_norm":%s,"learning_rate":%s,"num_input_tokens_seen":%d}`, num(gradNorm), num(lr), tokens)
	return []byte(b.String())
}
