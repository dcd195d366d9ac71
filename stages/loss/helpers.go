package loss

import (
	"errors"
	"fmt"
	"math"
)

// LDWeights returns the per-token weights of LD-DPO (TRL ld_alpha): the
// first min(chosenTokens, rejectedTokens) tokens of each completion (the
// "public" length) weigh 1 and every token beyond it weighs alpha.
//
// The caller forms the policy's summed log-prob as Σₜ w[t]·logp[t] (see
// LDSum) and passes that as Pair.Chosen / Pair.Rejected; the gradient of
// the loss w.r.t. token t's log-prob is then w[t]·DChosen[i]. As in TRL, the
// reference log-probs stay plain sums.
func LDWeights(chosenTokens, rejectedTokens int, alpha float64) (wc, wr []float32) {
	public := min(chosenTokens, rejectedTokens)
	mk := func(n int) []float32 {
		w := make([]float32, max(n, 0))
		for t := range w {
			w[t] = 1
			if t >= public {
				w[t] = float32(alpha)
			}
		}
		return w
	}
	return mk(chosenTokens), mk(rejectedTokens)
}

// LDSum returns Σₜ w[t]·logps[t] (weights from LDWeights).
func LDSum(logps []float64, w []float32) float64 {
	s := 0.0
	for t, lp := range logps {
		s += float64(w[t]) * lp
	}
	return s
}

// LogSumSquaredProbs returns log Σᵥ pᵥ² for p = softmax(logits), i.e. TRL's
// logsumexp(2·log_softmax(logits)), computed stably as
// LSE(2·logits) − 2·LSE(logits).
func LogSumSquaredProbs(logits []float64) float64 {
	lse := func(scale float64) float64 {
		m := math.Inf(-1)
		for _, z := range logits {
			m = math.Max(m, scale*z)
		}
		s := 0.0
		for _, z := range logits {
			s += math.Exp(scale*z - m)
		}
		return m + math.Log(s)
	}
	return lse(2) - 2*lse(1)
}

// WPOWeight returns the detached WPO weight of a pair as TRL computes it
// with use_weighting (WPO paper Eq. 2):
//
//	ŵ(y) = meanₜ( logp_t − log Σᵥ p_{t,v}² )    over the completion's tokens
//	w    = min(1, exp(ŵ(y+) + ŵ(y−)))
//
// chosenLogps[t] is the policy's log-prob of chosen token t and
// chosenLogSumSq[t] = LogSumSquaredProbs(policy logits at that position);
// likewise for the rejected completion. Put the result in Pair.WPOWeight
// and set Options.UseWeighting. It carries no gradient.
func WPOWeight(chosenLogps, chosenLogSumSq, rejectedLogps, rejectedLogSumSq []float64) (float64, error) {
	mean := func(lp, lss []float64) (float64, error) {
		if len(lp) == 0 || len(lp) != len(lss) {
			return 0, fmt.Errorf("loss: WPOWeight needs equal, non-empty per-token slices (got %d and %d)", len(lp), len(lss))
		}
		s := 0.0
		for t := range lp {
			s += lp[t] - lss[t]
		}
		return s / float64(len(lp)), nil
	}
	wc, err := mean(chosenLogps, chosenLogSumSq)
	if err != nil {
		return 0, err
	}
	wr, err := mean(rejectedLogps, rejectedLogSumSq)
	if err != nil {
		return 0, err
	}
	w := math.Min(1, math.Exp(wc+wr))
	if math.IsNaN(w) {
		return 0, errors.New("loss: WPOWeight is NaN")
	}
	return w, nil
}

// RunningMoments keeps a running mean and variance the way TRL's
// RunningMoments does (initial mean 0, variance 1, count 1e-24). For
// bco_pair across batches: rm.Update(BatchDelta(batch, beta)), then set
// Options.BCODelta to rm.Mean() — TRL updates before using the mean.
type RunningMoments struct {
	mean, vari, count float64
	init              bool
}

func (m *RunningMoments) ensure() {
	if !m.init {
		m.mean, m.vari, m.count, m.init = 0, 1, 1e-24, true
	}
}

// Update merges the values xs into the moments.
func (m *RunningMoments) Update(xs ...float64) {
	m.ensure()
	if len(xs) == 0 {
		return
	}
	n := float64(len(xs))
	mu := 0.0
	for _, x := range xs {
		mu += x
	}
	mu /= n
	v := 0.0
	for _, x := range xs {
		v += (x - mu) * (x - mu)
	}
	v /= n
	delta := mu - m.mean
	tot := m.count + n
	sum := m.vari*m.count + delta*delta*m.count*n/tot + v*n
	m.mean += delta * n / tot
	m.vari = sum / tot
	m.count = tot
}

// Mean returns the running mean (0 before any update).
func (m *RunningMoments) Mean() float64 { m.ensure(); return m.mean }
