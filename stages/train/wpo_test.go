package train

import (
	"math"
	"testing"

	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// sharpen scales the starting model's parameters so that its next-token
// distributions are far from uniform (with a near-uniform policy every WPO
// weight is about 1).
func sharpen(m *model.Model) {
	for i := range m.Params {
		m.Params[i] *= 2.5 + 0.2*float32(math.Sin(float64(i)))
	}
}

// handWPO computes, from the policy's scores of each completion alone and
// straight from the definitions, the WPO weights of ps and the weighted
// sigmoid DPO loss (mean over pairs).
func handWPO(t *testing.T, m *model.Model, ps []pairs.Pair, beta float64) (lossV float64, ws []float64) {
	t.Helper()
	r := model.NewRunner(m)
	r.SetLogSumSq(true)
	for _, p := range ps {
		var lp [2]float64
		var what float64 // ŵ(chosen) + ŵ(rejected)
		for k, seq := range [2]func() ([]int32, int){p.ChosenSeq, p.RejectedSeq} {
			ids, st := seq()
			sc, err := r.Score([]model.Seq{{IDs: ids, Start: st}})
			if err != nil {
				t.Fatal(err)
			}
			lp[k] = sc.Logp[0]
			var s float64
			for j, v := range sc.TokenLogps[0] {
				s += float64(v) - float64(sc.TokenLogSumSq[0][j])
			}
			what += s / float64(sc.Tokens[0])
		}
		w := math.Min(1, math.Exp(what))
		z := beta * ((lp[0] - p.RefChosen) - (lp[1] - p.RefRejected))
		lossV += w * math.Log1p(math.Exp(-z)) // −log σ(z)
		ws = append(ws, w)
	}
	return lossV / float64(len(ps)), ws
}

// With use_weighting, a step's loss is the mean over pairs of the WPO
// weight times the sigmoid loss, the weights computed from the policy's
// own per-token log-probs and log Σp²; and the weight carries no gradient:
// for a single pair the gradient is exactly the unweighted one times w.
func TestWPOLossMatchesHand(t *testing.T) {
	ps := randomPairs(6, 3, 5, 32, 21)
	scoreRef(t, tinyModel(t), ps)
	m := tinyModel(t)
	sharpen(m)
	want, ws := handWPO(t, m, ps, 0.1)
	t.Logf("WPO weights %.4g; weighted loss %.10g", ws, want)
	below := 0
	for _, w := range ws {
		if !(w > 0 && w <= 1) {
			t.Fatalf("weight %v outside (0, 1]", w)
		}
		if w < 0.99 {
			below++
		}
	}
	if below < len(ws)/2 {
		t.Fatalf("the test model gives weights %v, mostly about 1: the test would not see them", ws)
	}
	cfg := baseCfg(map[string]any{"batch_size": 6, "use_weighting": true, "max_grad_norm": 0})
	tr := newTestTrainer(t, "dpo", cfg, m, ps)
	tr.nextStep()
	if err := tr.trainStep(false); err != nil {
		t.Fatal(err)
	}
	if got := tr.sm.loss; math.Abs(got-want) > 1e-6*math.Abs(want) {
		t.Errorf("use_weighting loss %.10g, hand-computed %.10g", got, want)
	}

	// one pair: gradient with the weight = w × gradient without
	one := ps[:1]
	grads := func(weighting bool) []float32 {
		m := tinyModel(t)
		sharpen(m)
		tr := newTestTrainer(t, "dpo", baseCfg(map[string]any{"batch_size": 1, "use_weighting": weighting, "max_grad_norm": 0, "learning_rate": 0}), m, one)
		tr.nextStep()
		if err := tr.trainStep(false); err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), m.Grads...)
	}
	gw, g := grads(true), grads(false)
	var num, den float64
	for i := range g {
		d := float64(gw[i]) - ws[0]*float64(g[i])
		num += d * d
		den += float64(gw[i]) * float64(gw[i])
	}
	if den == 0 || math.Sqrt(num/den) > 1e-6 {
		t.Errorf("weighted gradient is not w = %v times the unweighted one: relative difference %.3g", ws[0], math.Sqrt(num/den))
	}
}

// A run with use_weighting (with gradient accumulation and LD-DPO too)
// logs finite metrics, its loss differs from the unweighted run's, and a
// rerun is bit-identical.
func TestWPORun(t *testing.T) {
	ps := randomPairs(8, 3, 5, 32, 22)
	scoreRef(t, tinyModel(t), ps)
	run := func(weighting bool) []map[string]float64 {
		out := runStage(t, NewDPO(), baseCfg(map[string]any{"use_weighting": weighting, "ld_alpha": 0.7,
			"gradient_accumulation_steps": 2, "max_steps": 4, "learning_rate": 1e-2}), ps, true, "", "")
		if out.err != nil {
			t.Fatal(out.err)
		}
		return readMetrics(t, out.dir)
	}
	a, b, plain := run(true), run(true), run(false)
	if len(a) != 4 {
		t.Fatalf("%d metrics lines, want 4", len(a))
	}
	for s, m := range a {
		for k, v := range m {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Errorf("step %d: %s = %v", s+1, k, v)
			}
			if math.Float64bits(v) != math.Float64bits(b[s][k]) {
				t.Errorf("step %d: %s is %v, on a rerun %v", s+1, k, v, b[s][k])
			}
		}
	}
	if a[0]["loss"] >= plain[0]["loss"] {
		t.Errorf("step 1: weighted loss %v is not below the unweighted %v (weights are ≤ 1)", a[0]["loss"], plain[0]["loss"])
	}
}
