// Package loss implements the DPO family of preference losses (the loss
// types of Hugging Face TRL's DPOTrainer, plus ORPO, SimPO and the
// f-divergence variants of "Beyond Reverse KL") on per-pair summed
// completion log-probabilities.
//
// Values and the gradients dLoss/d(policy chosen logp) and
// dLoss/d(policy rejected logp) come from a gorgonia (float64) graph and its
// symbolic gradient. Graphs are cached per batch size and option set, so the
// steady-state cost of Compute is a single tape-machine run.
//
// # Notation
//
// For one pair: c, r are the policy's summed log-probs of the chosen and
// rejected completions, c₀, r₀ the reference's, |y+|, |y−| the completion
// token counts, β = Options.Beta, ε = Options.LabelSmoothing,
// σ the logistic function, sp(x) = log(1+eˣ) (so −logσ(x) = sp(−x)).
//
//	cl = c − c₀              (chosen log-ratio)
//	rl = r − r₀              (rejected log-ratio)
//	d  = cl − rl             (TRL "logits")
//	dn = (c−c₀)/|y+| − (r−r₀)/|y−|   (per-token-averaged logits)
//	S(z) = (1−ε)·sp(−z) + ε·sp(z)    (cDPO label-smoothed sigmoid loss)
//
// # Losses (per pair)
//
//	sigmoid, reverse_kl  S(β·d)                              (DPO; cDPO when ε>0)
//	forward_kl           S(β·(e^{−rl} − e^{−cl}))            (f-DPO, f(u) = −log u; = alpha_divergence with α=1)
//	js_divergence        S(β·(d − sp(cl) + sp(rl)))           (f-DPO, Jensen-Shannon; TRL JS_DIVERGENCE)
//	alpha_divergence     S(β·(e^{−α·rl} − e^{−α·cl})/α)       (f-DPO α-divergence; TRL ALPHA_DIVERGENCE, α = Options.Alpha; exponent capped at 709 like TRL's cap_exp)
//	hinge                relu(1 − β·d)                         (SLiC)
//	ipo                  (dn − 1/(2β))²                        (TRL: IPO on per-token-averaged log-probs, policy and reference)
//	ipo_sum              (d − 1/(2β))²                         (IPO paper, Eq. 17, summed log-probs)
//	exo_pair             σ(βd)(logσ(βd) − log(1−ε)) + σ(−βd)(logσ(−βd) − log ε)   (EXO Eq. 16; ε = 1e-3 when LabelSmoothing is 0, as TRL)
//	nca_pair             sp(−β·cl) + ½·sp(β·cl) + ½·sp(β·rl)
//	robust               ((1−ε)·sp(−βd) − ε·sp(βd)) / (1−2ε)   (rDPO; needs ε < ½)
//	bco_pair             sp(−(β·cl − δ)) + sp(β·rl − δ)        (δ = Options.BCODelta, or the mean of the batch's 2B rewards β·cl, β·rl — what TRL's running mean holds after its first update; detached)
//	sppo_hard            (cl − 1/(2β))² + (rl + 1/(2β))²
//	aot                  S(β·(sort(c−r)ᵢ − sort(c₀−r₀)ᵢ))       (per sorted position i)
//	aot_unpaired         S(β·(sort(cl)ᵢ − sort(rl)ᵢ))           (per sorted position i)
//	apo_zero             1 − σ(β·cl) + σ(β·rl)
//	apo_down             σ(β·cl) + 1 − σ(β·d)
//	discopop             sp(−z)·(1−σ(z/τ)) + e^{−z}·σ(z/τ),  z = β·d, τ = Options.DiscopopTau
//	sigmoid_norm         sp(−β·dn)                             (length-normalised DPO, no label smoothing)
//	sft                  −c/|y+|                               (mean token NLL of the chosen completion)
//	orpo                 −c/|y+| + β·sp(−o),  o = (c̄ − r̄) − (log(1−e^{c̄}) − log(1−e^{r̄})), c̄ = c/|y+|, r̄ = r/|y−|   (ORPO, TRL ORPOTrainer with λ = β)
//	simpo                S(β·(c/|y+| − r/|y−|) − γ)            (SimPO as TRL CPOTrainer loss_type="simpo", γ = Options.Gamma; reference-free)
//
// # Differences from TRL worth knowing
//
//   - sft (and the NLL term of orpo) is the per-pair mean token NLL,
//     averaged over pairs. TRL pools all chosen tokens of the batch into one
//     cross-entropy; the two agree when all chosen completions have the same
//     length. RPO (rpo_alpha) is {"sigmoid": 1, "sft": rpo_alpha}.
//   - ipo averages log-probs only inside the ipo component; TRL divides the
//     log-probs it hands to every component (and to the reward metrics) when
//     "ipo" is among the loss types.
//   - aot / aot_unpaired sort within the batch. The sort is done in Go; the
//     permuted values are fed to dedicated graph inputs and their gradients
//     are scattered back through the permutation (the gradient of a sort is
//     the permutation of the upstream gradient). Their per-position losses
//     belong to sorted ranks, not pairs; row weights multiply them by
//     position, exactly as TRL's element-wise multiplication does.
//   - Metrics are always the DPO rewards β·cl and β·rl (summed log-probs).
//   - Numerics follow gorgonia's float64 kernels: sigmoid returns exactly
//     0/1 beyond |x| > 19 (so apo_* gradients vanish there) and softplus
//     returns x for x > 16 (absolute error ≤ 1.2e-7).
package loss

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Pair is one preference pair.
type Pair struct {
	Chosen, Rejected             float64 // policy summed logp over completion tokens
	RefChosen, RefRejected       float64 // reference summed logp
	ChosenTokens, RejectedTokens int     // completion token counts (needed by sft, orpo, simpo, ipo, sigmoid_norm)
	// Weight is a per-row weight; 0 means absent and counts as 1. Must be >= 0.
	Weight float64
	// WPOWeight is the detached WPO weight of this pair (see WPOWeight),
	// used only when Options.UseWeighting is set; it must then be in (0, 1].
	WPOWeight float64
}

// Options selects the loss (or weighted combination of losses) and its
// hyper-parameters. Zero values are taken literally; DefaultOptions returns
// TRL's defaults.
type Options struct {
	Beta           float64
	LabelSmoothing float64 // ε: cDPO / robust / exo_pair / aot / simpo / f-divergences
	Gamma          float64 // SimPO target margin γ (TRL CPOConfig.simpo_gamma)
	DiscopopTau    float64 // τ of discopop
	Alpha          float64 // α of alpha_divergence (TRL f_alpha_divergence_coef)
	// BCODelta, when non-nil, is the δ of bco_pair (e.g. the value of a
	// RunningMoments kept across batches). When nil, δ is the mean of this
	// batch's rewards.
	BCODelta *float64
	// UseWeighting multiplies each pair's combined loss by Pair.WPOWeight
	// (TRL use_weighting / WPO).
	UseWeighting bool
	// Losses maps a loss name to its weight in the combination,
	// e.g. {"sigmoid": 1} or {"sigmoid": 1, "sft": 0.1}.
	Losses map[string]float64
}

// DefaultOptions returns TRL's defaults: β=0.1, ε=0, γ=0.5, τ=0.05, α=1 and
// the sigmoid loss.
func DefaultOptions() Options {
	return Options{Beta: 0.1, Gamma: 0.5, DiscopopTau: 0.05, Alpha: 1, Losses: map[string]float64{"sigmoid": 1}}
}

// Result holds the batch loss, its gradient w.r.t. the policy log-probs and
// TRL's reward metrics.
type Result struct {
	// Loss is the batch loss: mean over pairs of PerPair[i] × weight[i],
	// where weight[i] = Pair.Weight (× Pair.WPOWeight with UseWeighting).
	Loss float64
	// PerPair is the combined (Σ λₖ·Lₖ) loss of each pair, before row weights.
	PerPair []float64
	// Components holds, per loss name, mean over pairs of weight[i] × Lₖ,ᵢ
	// (not multiplied by the combination weight λₖ), so that
	// Loss = Σₖ λₖ·Components[k].
	Components map[string]float64
	// DChosen[i], DRejected[i] are dLoss/d(Pair[i].Chosen) and
	// dLoss/d(Pair[i].Rejected).
	DChosen, DRejected []float64
	// TRL metrics: means over pairs of β·(c−c₀), β·(r−r₀), of
	// [β·(c−c₀) > β·(r−r₀)] and of their difference.
	RewardsChosen, RewardsRejected, RewardsAccuracy, RewardsMargin float64
}

type lossInfo struct {
	usesRef, needsTokens, sorted bool
}

var registry = map[string]lossInfo{
	"sigmoid":          {usesRef: true},
	"reverse_kl":       {usesRef: true},
	"forward_kl":       {usesRef: true},
	"js_divergence":    {usesRef: true},
	"alpha_divergence": {usesRef: true},
	"hinge":            {usesRef: true},
	"ipo":              {usesRef: true, needsTokens: true},
	"ipo_sum":          {usesRef: true},
	"exo_pair":         {usesRef: true},
	"nca_pair":         {usesRef: true},
	"robust":           {usesRef: true},
	"bco_pair":         {usesRef: true},
	"sppo_hard":        {usesRef: true},
	"aot":              {usesRef: true, sorted: true},
	"aot_unpaired":     {usesRef: true, sorted: true},
	"apo_zero":         {usesRef: true},
	"apo_down":         {usesRef: true},
	"discopop":         {usesRef: true},
	"sigmoid_norm":     {usesRef: true, needsTokens: true},
	"sft":              {needsTokens: true},
	"orpo":             {needsTokens: true},
	"simpo":            {needsTokens: true},
}

// Names returns every supported loss name, sorted.
func Names() []string {
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Validate checks the options.
func (o Options) Validate() error {
	if len(o.Losses) == 0 {
		return fmt.Errorf("loss: no loss selected; valid names: %s", strings.Join(Names(), ", "))
	}
	needBeta := false
	for _, name := range sortedKeys(o.Losses) {
		if _, ok := registry[name]; !ok {
			return fmt.Errorf("loss: unknown loss %q; valid names: %s", name, strings.Join(Names(), ", "))
		}
		if w := o.Losses[name]; !finite(w) {
			return fmt.Errorf("loss: weight of %q is %v", name, w)
		}
		if name != "sft" {
			needBeta = true
		}
	}
	if needBeta && !(o.Beta > 0 && finite(o.Beta)) {
		return fmt.Errorf("loss: beta must be > 0, got %v", o.Beta)
	}
	if !(o.LabelSmoothing >= 0 && o.LabelSmoothing < 1) {
		return fmt.Errorf("loss: label_smoothing must be in [0, 1), got %v", o.LabelSmoothing)
	}
	if _, ok := o.Losses["robust"]; ok && !(o.LabelSmoothing < 0.5) {
		return fmt.Errorf("loss: robust needs label_smoothing < 0.5, got %v", o.LabelSmoothing)
	}
	if _, ok := o.Losses["discopop"]; ok && !(o.DiscopopTau > 0 && finite(o.DiscopopTau)) {
		return fmt.Errorf("loss: discopop needs discopop_tau > 0, got %v", o.DiscopopTau)
	}
	if _, ok := o.Losses["alpha_divergence"]; ok && (o.Alpha == 0 || !finite(o.Alpha)) {
		return fmt.Errorf("loss: alpha_divergence needs a finite non-zero alpha (TRL default 1.0), got %v", o.Alpha)
	}
	if !finite(o.Gamma) {
		return fmt.Errorf("loss: gamma is %v", o.Gamma)
	}
	if o.BCODelta != nil && !finite(*o.BCODelta) {
		return fmt.Errorf("loss: bco delta is %v", *o.BCODelta)
	}
	return nil
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ErrEmptyBatch is returned by Compute for an empty batch.
var ErrEmptyBatch = errors.New("loss: empty batch")

func checkBatch(batch []Pair, o Options) error {
	needTok, orpo := false, false
	for name := range o.Losses {
		if registry[name].needsTokens {
			needTok = true
		}
		if name == "orpo" {
			orpo = true
		}
	}
	for i, p := range batch {
		for _, v := range [...]float64{p.Chosen, p.Rejected, p.RefChosen, p.RefRejected} {
			if !finite(v) {
				return fmt.Errorf("loss: pair %d: non-finite log-prob %v", i, v)
			}
		}
		if !(p.Weight >= 0 && finite(p.Weight)) {
			return fmt.Errorf("loss: pair %d: weight must be finite and >= 0, got %v", i, p.Weight)
		}
		if o.UseWeighting && !(p.WPOWeight > 0 && p.WPOWeight <= 1) {
			return fmt.Errorf("loss: pair %d: UseWeighting needs WPOWeight in (0, 1], got %v", i, p.WPOWeight)
		}
		if needTok && (p.ChosenTokens <= 0 || p.RejectedTokens <= 0) {
			return fmt.Errorf("loss: pair %d: token counts must be > 0 (got %d, %d)", i, p.ChosenTokens, p.RejectedTokens)
		}
		if orpo && (p.Chosen >= 0 || p.Rejected >= 0) {
			return fmt.Errorf("loss: pair %d: orpo needs log-probs < 0 (log(1−p) is undefined at p = 1)", i)
		}
	}
	return nil
}

// Compute evaluates the selected loss(es) on the batch and returns the
// loss, per-pair losses, components, gradients and metrics. It builds (or
// reuses) a gorgonia graph for the batch size and options. It is safe for
// concurrent use.
func Compute(batch []Pair, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	if len(batch) == 0 {
		return Result{}, ErrEmptyBatch
	}
	if err := checkBatch(batch, o); err != nil {
		return Result{}, err
	}
	cg, err := getGraph(len(batch), o)
	if err != nil {
		return Result{}, err
	}
	res := Result{
		PerPair:    make([]float64, len(batch)),
		Components: make(map[string]float64, len(o.Losses)),
		DChosen:    make([]float64, len(batch)),
		DRejected:  make([]float64, len(batch)),
	}
	if err := cg.run(batch, o, &res); err != nil {
		return Result{}, err
	}
	metrics(batch, o.Beta, &res)
	return res, nil
}

func metrics(batch []Pair, beta float64, res *Result) {
	n := float64(len(batch))
	for _, p := range batch {
		rc := beta * (p.Chosen - p.RefChosen)
		rr := beta * (p.Rejected - p.RefRejected)
		res.RewardsChosen += rc
		res.RewardsRejected += rr
		res.RewardsMargin += rc - rr
		if rc > rr {
			res.RewardsAccuracy++
		}
	}
	res.RewardsChosen /= n
	res.RewardsRejected /= n
	res.RewardsMargin /= n
	res.RewardsAccuracy /= n
}

// rowWeights returns the weight each pair's combined loss is multiplied by.
func rowWeights(batch []Pair, o Options, w []float64) {
	for i, p := range batch {
		w[i] = p.Weight
		if w[i] == 0 {
			w[i] = 1
		}
		if o.UseWeighting {
			w[i] *= p.WPOWeight
		}
	}
}

// BatchDelta returns the bco_pair δ used when Options.BCODelta is nil: the
// mean of the 2B rewards β·(c−c₀) and β·(r−r₀).
func BatchDelta(batch []Pair, beta float64) float64 {
	s := 0.0
	for _, p := range batch {
		s += beta*(p.Chosen-p.RefChosen) + beta*(p.Rejected-p.RefRejected)
	}
	return s / float64(2*len(batch))
}
