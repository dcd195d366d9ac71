package loss

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

var anchorPair = Pair{Chosen: -10, Rejected: -12, RefChosen: -11, RefRejected: -11.5, ChosenTokens: 5, RejectedTokens: 6}

func ptr(x float64) *float64 { return &x }

func TestAnchors(t *testing.T) {
	const beta, eps, tau = 0.1, 0.1, 0.05
	cases := []struct {
		label string
		name  string
		eps   float64
		delta *float64
		want  float64
	}{
		{"sigmoid", "sigmoid", 0, nil, 0.620957},
		{"cDPO", "sigmoid", eps, nil, 0.635957},
		{"hinge", "hinge", 0, nil, 0.85},
		{"ipo", "ipo", 0, nil, 22.246944},
		{"ipo_sum", "ipo_sum", 0, nil, 12.25},
		{"exo_pair", "exo_pair", eps, nil, 0.431388},
		{"nca_pair", "nca_pair", 0, nil, 1.350825},
		{"robust", "robust", eps, nil, 0.602207},
		// The published anchor 1.312856 is bco_pair with δ = 0. TRL updates
		// its running mean with the batch before using it, so its first
		// batch uses δ = mean(β·cl, β·rl) = 0.025, giving 1.312700.
		{"bco_pair δ=0", "bco_pair", 0, ptr(0), 1.312856},
		{"bco_pair TRL first batch", "bco_pair", 0, nil, 1.312700},
		{"sppo_hard", "sppo_hard", 0, nil, 36.25},
		{"apo_zero", "apo_zero", 0, nil, 0.962523},
		{"apo_down", "apo_down", 0, nil, 0.987549},
		{"discopop", "discopop", 0, nil, 0.849338},
		{"sigmoid_norm", "sigmoid_norm", 0, nil, 0.679081},
		{"reverse_kl", "reverse_kl", 0, nil, 0.620957},
		{"sft", "sft", 0, nil, 2},
	}
	for _, tc := range cases {
		t.Run(tc.label, func(t *testing.T) {
			o := Options{Beta: beta, LabelSmoothing: tc.eps, DiscopopTau: tau, BCODelta: tc.delta, Losses: map[string]float64{tc.name: 1}}
			res, err := Compute([]Pair{anchorPair}, o)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(res.Loss-tc.want) > 1e-5 {
				t.Fatalf("%s = %.7f, want %.6f", tc.label, res.Loss, tc.want)
			}
		})
	}
}

// gradient-test inputs: batches with spread-out values, uneven lengths and weights.
func gradBatches() [][]Pair {
	rng := rand.New(rand.NewPCG(7, 11))
	out := [][]Pair{{anchorPair}}
	for _, n := range []int{2, 5} {
		b := make([]Pair, n)
		for i := range b {
			b[i] = Pair{
				Chosen:         -5 - 30*rng.Float64(),
				Rejected:       -5 - 30*rng.Float64(),
				ChosenTokens:   3 + rng.IntN(40),
				RejectedTokens: 3 + rng.IntN(40),
				Weight:         0.5 + rng.Float64(),
			}
			b[i].RefChosen = b[i].Chosen + 4*rng.NormFloat64()
			b[i].RefRejected = b[i].Rejected + 4*rng.NormFloat64()
		}
		out = append(out, b)
	}
	return out
}

func gradOptions() []Options {
	return []Options{
		{Beta: 0.1, LabelSmoothing: 0, Gamma: 0.5, DiscopopTau: 0.05, Alpha: 0.5},
		{Beta: 0.3, LabelSmoothing: 0.2, Gamma: 1.2, DiscopopTau: 0.5, Alpha: 1.5},
	}
}

func approx(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*(1+math.Max(math.Abs(a), math.Abs(b)))
}

func TestGradients(t *testing.T) {
	const h = 1e-5
	for _, name := range Names() {
		for oi, base := range gradOptions() {
			for bi, batch := range gradBatches() {
				t.Run(fmt.Sprintf("%s/o%d/b%d", name, oi, bi), func(t *testing.T) {
					o := base
					o.Losses = map[string]float64{name: 1}
					if name == "bco_pair" { // δ is detached: freeze it for finite differences
						o.BCODelta = ptr(BatchDelta(batch, o.Beta))
					}
					res, err := Compute(batch, o)
					if err != nil {
						t.Fatal(err)
					}
					if want := refLoss(batch, o); !approx(res.Loss, want, 1e-9) {
						t.Fatalf("loss %v, reference %v", res.Loss, want)
					}
					closed := refGrads(batch, o)
					for i := range batch {
						// graph vs hand-derived closed form
						if !approx(res.DChosen[i], closed[i].c, 1e-8) || !approx(res.DRejected[i], closed[i].r, 1e-8) {
							t.Fatalf("pair %d: graph (%v, %v), closed form (%v, %v)", i, res.DChosen[i], res.DRejected[i], closed[i].c, closed[i].r)
						}
						// closed form vs central differences of the plain-Go loss, all four inputs
						fields := []struct {
							ptr  *float64
							want float64
							what string
						}{
							{&batch[i].Chosen, closed[i].c, "chosen"},
							{&batch[i].Rejected, closed[i].r, "rejected"},
							{&batch[i].RefChosen, closed[i].cref, "ref chosen"},
							{&batch[i].RefRejected, closed[i].rref, "ref rejected"},
						}
						for _, f := range fields {
							x := *f.ptr
							*f.ptr = x + h
							up := refLoss(batch, o)
							*f.ptr = x - h
							down := refLoss(batch, o)
							*f.ptr = x
							fd := (up - down) / (2 * h)
							if !approx(fd, f.want, 1e-5) {
								t.Fatalf("pair %d d/d(%s): finite difference %v, closed form %v", i, f.what, fd, f.want)
							}
						}
						// graph gradient vs central differences of Compute itself
						for _, f := range []struct {
							ptr  *float64
							want float64
						}{{&batch[i].Chosen, res.DChosen[i]}, {&batch[i].Rejected, res.DRejected[i]}} {
							x := *f.ptr
							*f.ptr = x + h
							up, err1 := Compute(batch, o)
							*f.ptr = x - h
							down, err2 := Compute(batch, o)
							*f.ptr = x
							if err1 != nil || err2 != nil {
								t.Fatal(err1, err2)
							}
							if fd := (up.Loss - down.Loss) / (2 * h); !approx(fd, f.want, 1e-5) {
								t.Fatalf("pair %d: Compute finite difference %v, graph gradient %v", i, fd, f.want)
							}
						}
					}
				})
			}
		}
	}
}

func TestStepZero(t *testing.T) {
	batch := []Pair{
		{Chosen: -10, Rejected: -12, RefChosen: -10, RefRejected: -12},
		{Chosen: -3, Rejected: -40, RefChosen: -3, RefRejected: -40},
	}
	res, err := Compute(batch, Options{Beta: 0.1, Losses: map[string]float64{"sigmoid": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.Loss-math.Ln2) > 1e-12 {
		t.Fatalf("loss %v, want ln 2", res.Loss)
	}
	if res.RewardsChosen != 0 || res.RewardsRejected != 0 || res.RewardsMargin != 0 || res.RewardsAccuracy != 0 {
		t.Fatalf("metrics %+v, want zeros", res)
	}
	for i := range batch {
		if math.Abs(res.DChosen[i]+0.1*0.5/2) > 1e-12 || math.Abs(res.DRejected[i]-0.1*0.5/2) > 1e-12 {
			t.Fatalf("gradient (%v, %v), want ∓β/4", res.DChosen[i], res.DRejected[i])
		}
	}
}

func TestMetrics(t *testing.T) {
	batch := []Pair{anchorPair, {Chosen: -5, Rejected: -4, RefChosen: -5, RefRejected: -5}}
	res, err := Compute(batch, Options{Beta: 0.1, Losses: map[string]float64{"sigmoid": 1}})
	if err != nil {
		t.Fatal(err)
	}
	// rewards: pair 0 (0.1, −0.05), pair 1 (0, 0.1)
	want := []float64{0.05, 0.025, 0.5, (0.15 - 0.1) / 2}
	got := []float64{res.RewardsChosen, res.RewardsRejected, res.RewardsAccuracy, res.RewardsMargin}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("metrics %v, want %v", got, want)
		}
	}
}

func TestCombinationAndWeights(t *testing.T) {
	batch := gradBatches()[2]
	o := Options{Beta: 0.1, Losses: map[string]float64{"sigmoid": 1, "sft": 0.1}}
	comb, err := Compute(batch, o)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := Compute(batch, Options{Beta: 0.1, Losses: map[string]float64{"sigmoid": 1}})
	sft, _ := Compute(batch, Options{Beta: 0.1, Losses: map[string]float64{"sft": 1}})
	if !approx(comb.Loss, sig.Loss+0.1*sft.Loss, 1e-12) {
		t.Fatalf("combined %v, want %v", comb.Loss, sig.Loss+0.1*sft.Loss)
	}
	if !approx(comb.Components["sigmoid"], sig.Loss, 1e-12) || !approx(comb.Components["sft"], sft.Loss, 1e-12) {
		t.Fatalf("components %v", comb.Components)
	}
	wsum := 0.0
	for i, p := range batch {
		if !approx(comb.DChosen[i], sig.DChosen[i]+0.1*sft.DChosen[i], 1e-12) || !approx(comb.DRejected[i], sig.DRejected[i], 1e-12) {
			t.Fatalf("pair %d gradient not additive", i)
		}
		if !approx(comb.PerPair[i], sig.PerPair[i]+0.1*sft.PerPair[i], 1e-12) {
			t.Fatalf("pair %d per-pair loss not additive", i)
		}
		wsum += p.Weight * comb.PerPair[i]
	}
	if !approx(comb.Loss, wsum/float64(len(batch)), 1e-12) {
		t.Fatalf("loss %v is not the weighted mean %v", comb.Loss, wsum/float64(len(batch)))
	}
	// Weight 0 means absent (1); doubling a row's weight doubles its share.
	unw := slices.Clone(batch)
	for i := range unw {
		unw[i].Weight = 0
	}
	u, _ := Compute(unw, o)
	unw[0].Weight = 2
	d, _ := Compute(unw, o)
	if !approx(d.Loss-u.Loss, u.PerPair[0]/float64(len(batch)), 1e-12) || !approx(d.DChosen[0], 2*u.DChosen[0], 1e-12) {
		t.Fatalf("row weight not applied: %v vs %v", d.Loss-u.Loss, u.PerPair[0]/float64(len(batch)))
	}
	// WPO weighting multiplies in.
	wpo := slices.Clone(unw)
	for i := range wpo {
		wpo[i].WPOWeight = 0.5
	}
	ow := o
	ow.UseWeighting = true
	wr, err := Compute(wpo, ow)
	if err != nil {
		t.Fatal(err)
	}
	if !approx(wr.Loss, d.Loss/2, 1e-12) {
		t.Fatalf("WPO-weighted %v, want %v", wr.Loss, d.Loss/2)
	}
}

func TestValidate(t *testing.T) {
	_, err := Compute([]Pair{anchorPair}, Options{Beta: 0.1, Losses: map[string]float64{"sigmod": 1}})
	if err == nil || !strings.Contains(err.Error(), "sigmoid_norm") || !strings.Contains(err.Error(), "sigmod") {
		t.Fatalf("unknown loss error %v should name it and list valid names", err)
	}
	bad := []Options{
		{Beta: 0, Losses: map[string]float64{"sigmoid": 1}},
		{Beta: -1, Losses: map[string]float64{"ipo": 1}},
		{Beta: 0.1},
		{Beta: 0.1, LabelSmoothing: 0.5, Losses: map[string]float64{"robust": 1}},
		{Beta: 0.1, Losses: map[string]float64{"discopop": 1}},
		{Beta: 0.1, Losses: map[string]float64{"alpha_divergence": 1}},
		{Beta: 0.1, Losses: map[string]float64{"sigmoid": math.NaN()}},
	}
	for i, o := range bad {
		if o.Validate() == nil {
			t.Errorf("case %d: %+v validated", i, o)
		}
	}
	if err := (Options{Losses: map[string]float64{"sft": 1}}).Validate(); err != nil {
		t.Errorf("sft alone needs no beta: %v", err)
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Error(err)
	}
	if _, err := Compute([]Pair{{Chosen: -1, Rejected: -1}}, Options{Beta: 0.1, Losses: map[string]float64{"sft": 1}}); err == nil {
		t.Error("sft without token counts accepted")
	}
	if _, err := Compute([]Pair{anchorPair}, Options{Beta: 0.1, UseWeighting: true, Losses: map[string]float64{"sigmoid": 1}}); err == nil {
		t.Error("UseWeighting without WPOWeight accepted")
	}
	if _, err := Compute(nil, DefaultOptions()); err == nil {
		t.Error("empty batch accepted")
	}
	if !slices.IsSorted(Names()) || len(Names()) != 22 {
		t.Errorf("Names() = %v", Names())
	}
}

// The cached graph must give fresh results on every call (no stale values).
func TestCacheReuse(t *testing.T) {
	o := Options{Beta: 0.2, LabelSmoothing: 0.1, Losses: map[string]float64{"sigmoid": 1, "aot": 0.5, "bco_pair": 0.3}}
	batches := gradBatches()[1:]
	first := map[int]Result{}
	for round := range 3 {
		for bi, batch := range batches {
			res, err := Compute(batch, o)
			if err != nil {
				t.Fatal(err)
			}
			if want := refLoss(batch, withBatchDelta(batch, o)); !approx(res.Loss, want, 1e-12) {
				t.Fatalf("round %d batch %d: %v want %v", round, bi, res.Loss, want)
			}
			if round == 0 {
				first[bi] = res
			} else if !slices.Equal(first[bi].DChosen, res.DChosen) || first[bi].Loss != res.Loss {
				t.Fatalf("round %d batch %d differs from round 0", round, bi)
			}
		}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				res, err := Compute(batches[1], o)
				if err != nil || res.Loss != first[1].Loss {
					t.Errorf("concurrent result %v %v", res.Loss, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func withBatchDelta(batch []Pair, o Options) Options {
	o.BCODelta = ptr(BatchDelta(batch, o.Beta))
	return o
}

// aot gradients must follow the sort: the pair with the smallest policy
// log-ratio meets the smallest reference log-ratio.
func TestAOTPermutation(t *testing.T) {
	batch := []Pair{
		{Chosen: -1, Rejected: -9, RefChosen: -5, RefRejected: -5},  // policy margin 8, ref 0
		{Chosen: -9, Rejected: -1, RefChosen: -1, RefRejected: -10}, // policy margin −8, ref 9
	}
	o := Options{Beta: 0.1, Losses: map[string]float64{"aot": 1}}
	res, err := Compute(batch, o)
	if err != nil {
		t.Fatal(err)
	}
	// slot 0: (−8) − 0 ; slot 1: 8 − 9 → both pairs negative-margin slots
	want0, _ := smooth(0.1*(-8-0), 0)
	want1, _ := smooth(0.1*(8-9), 0)
	if !approx(res.PerPair[0], want0, 1e-12) || !approx(res.PerPair[1], want1, 1e-12) {
		t.Fatalf("per-slot %v want %v %v", res.PerPair, want0, want1)
	}
	_, s1 := smooth(0.1*(-8), 0)
	if !approx(res.DChosen[1], 0.1*s1/2, 1e-12) {
		t.Fatalf("pair 1 (sorted first) gradient %v want %v", res.DChosen[1], 0.1*s1/2)
	}
}

func TestOverflowCap(t *testing.T) {
	p := Pair{Chosen: -2000, Rejected: -10, RefChosen: -10, RefRejected: -10}
	res, err := Compute([]Pair{p}, Options{Beta: 0.1, Losses: map[string]float64{"forward_kl": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if math.IsNaN(res.Loss) || math.IsNaN(res.DChosen[0]) || res.DChosen[0] != 0 {
		t.Fatalf("capped exp: loss %v grad %v", res.Loss, res.DChosen[0])
	}
}

func TestHelpers(t *testing.T) {
	wc, wr := LDWeights(3, 5, 0.25)
	if !slices.Equal(wc, []float32{1, 1, 1}) || !slices.Equal(wr, []float32{1, 1, 1, 0.25, 0.25}) {
		t.Fatalf("LDWeights %v %v", wc, wr)
	}
	if got := LDSum([]float64{-1, -1, -1, -2, -2}, wr); got != -4 {
		t.Fatalf("LDSum %v", got)
	}
	// log Σ p² for a uniform distribution over 4 is log(1/4).
	if got := LogSumSquaredProbs([]float64{3, 3, 3, 3}); math.Abs(got-math.Log(0.25)) > 1e-12 {
		t.Fatalf("LogSumSquaredProbs %v", got)
	}
	logits := []float64{2, 0.5, -1}
	lse := math.Log(math.Exp(2) + math.Exp(0.5) + math.Exp(-1))
	s2 := 0.0
	for _, z := range logits {
		s2 += math.Exp(2 * (z - lse))
	}
	if got := LogSumSquaredProbs(logits); math.Abs(got-math.Log(s2)) > 1e-12 {
		t.Fatalf("LogSumSquaredProbs %v want %v", got, math.Log(s2))
	}
	// Weight = min(1, exp(mean(lp − lss) + mean(lp − lss))).
	w, err := WPOWeight([]float64{-1, -3}, []float64{-1.5, -1.5}, []float64{-2}, []float64{-1})
	if err != nil {
		t.Fatal(err)
	}
	if want := math.Exp((0.5+-1.5)/2 + -1); math.Abs(w-want) > 1e-12 {
		t.Fatalf("WPOWeight %v want %v", w, want)
	}
	if w, _ := WPOWeight([]float64{-0.1}, []float64{-1}, []float64{-0.1}, []float64{-1}); w != 1 {
		t.Fatalf("WPOWeight not clamped: %v", w)
	}
	if _, err := WPOWeight(nil, nil, []float64{-1}, []float64{-1}); err == nil {
		t.Fatal("empty WPO input accepted")
	}
	var rm RunningMoments
	rm.Update(0.025)
	if math.Abs(rm.Mean()-0.025) > 1e-15 {
		t.Fatalf("running mean %v", rm.Mean())
	}
	rm.Update(0.075)
	if math.Abs(rm.Mean()-0.05) > 1e-12 {
		t.Fatalf("running mean %v", rm.Mean())
	}
}

func BenchmarkCompute16(b *testing.B) {
	batch := gradBatches()[2]
	for len(batch) < 16 {
		batch = append(batch, batch...)
	}
	batch = batch[:16]
	o := Options{Beta: 0.1, Losses: map[string]float64{"sigmoid": 1}}
	if _, err := Compute(batch, o); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compute(batch, o); err != nil {
			b.Fatal(err)
		}
	}
}
