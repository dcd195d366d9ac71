package loss

// Plain-Go reference of every loss, written from the published formulas
// independently of the gorgonia graph, with hand-derived derivatives.

import (
	"math"
	"sort"
)

func rsig(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
func rsp(x float64) float64 { // log(1+e^x), stable
	if x > 0 {
		return x + math.Log1p(math.Exp(-x))
	}
	return math.Log1p(math.Exp(x))
}
func rls(x float64) float64 { return -rsp(-x) } // log σ(x)

// smooth is S(z) = −(1−ε)logσ(z) − ε logσ(−z) and its derivative.
func smooth(z, eps float64) (float64, float64) {
	return -(1-eps)*rls(z) - eps*rls(-z), -(1-eps)*rsig(-z) + eps*rsig(z)
}

// grads4 holds ∂L/∂c, ∂L/∂r, ∂L/∂c₀, ∂L/∂r₀ of one per-pair (or per-slot) loss.
type grads4 struct{ c, r, cref, rref float64 }

// refPair returns the per-pair loss of a non-sorted loss and its hand-derived
// gradient. delta is bco_pair's δ.
func refPair(name string, p Pair, o Options, delta float64) (float64, grads4) {
	b, eps := o.Beta, o.LabelSmoothing
	c, r, c0, r0 := p.Chosen, p.Rejected, p.RefChosen, p.RefRejected
	nc, nr := float64(p.ChosenTokens), float64(p.RejectedTokens)
	cl, rl := c-c0, r-r0
	d := cl - rl
	z := b * d
	// withRef turns (dL/dc, dL/dr) into the four gradients for losses that
	// depend on c, c₀ only through c − c₀ (and likewise for r).
	withRef := func(gc, gr float64) grads4 { return grads4{gc, gr, -gc, -gr} }
	switch name {
	case "sigmoid", "reverse_kl":
		v, s := smooth(z, eps)
		return v, withRef(b*s, -b*s)
	case "forward_kl", "alpha_divergence":
		a := 1.0
		if name == "alpha_divergence" {
			a = o.Alpha
		}
		ec, er := math.Exp(-a*cl), math.Exp(-a*rl)
		v, s := smooth(b*(er-ec)/a, eps)
		return v, withRef(b*s*ec, -b*s*er)
	case "js_divergence":
		v, s := smooth(b*(d-rsp(cl)+rsp(rl)), eps)
		return v, withRef(b*s*(1-rsig(cl)), -b*s*(1-rsig(rl)))
	case "hinge":
		if 1-z > 0 {
			return 1 - z, withRef(-b, b)
		}
		return 0, grads4{}
	case "ipo":
		dn := cl/nc - rl/nr
		e := dn - 1/(2*b)
		return e * e, withRef(2*e/nc, -2*e/nr)
	case "ipo_sum":
		e := d - 1/(2*b)
		return e * e, withRef(2*e, -2*e)
	case "exo_pair":
		if eps == 0 {
			eps = 1e-3
		}
		v := rsig(z)*(rls(z)-math.Log(1-eps)) + rsig(-z)*(rls(-z)-math.Log(eps))
		// dL/dz = σ(z)σ(−z)·(z − log((1−ε)/ε)), using logσ(z) − logσ(−z) = z.
		g := rsig(z) * rsig(-z) * (z - math.Log((1-eps)/eps))
		return v, withRef(b*g, -b*g)
	case "nca_pair":
		a, bb := b*cl, b*rl
		v := -rls(a) - 0.5*rls(-a) - 0.5*rls(-bb)
		return v, withRef(b*(-rsig(-a)+0.5*rsig(a)), b*0.5*rsig(bb))
	case "robust":
		v := (-(1-eps)*rls(z) + eps*rls(-z)) / (1 - 2*eps)
		g := (-(1-eps)*rsig(-z) - eps*rsig(z)) / (1 - 2*eps)
		return v, withRef(b*g, -b*g)
	case "bco_pair":
		a, bb := b*cl-delta, b*rl-delta
		v := -rls(a) - rls(-bb)
		return v, withRef(-b*rsig(-a), b*rsig(bb))
	case "sppo_hard":
		h := 0.5 / b
		v := (cl-h)*(cl-h) + (rl+h)*(rl+h)
		return v, withRef(2*(cl-h), 2*(rl+h))
	case "apo_zero":
		a, bb := b*cl, b*rl
		return 1 - rsig(a) + rsig(bb), withRef(-b*rsig(a)*rsig(-a), b*rsig(bb)*rsig(-bb))
	case "apo_down":
		a := b * cl
		v := rsig(a) + 1 - rsig(z)
		return v, withRef(b*rsig(a)*rsig(-a)-b*rsig(z)*rsig(-z), b*rsig(z)*rsig(-z))
	case "discopop":
		tau := o.DiscopopTau
		m := rsig(z / tau)
		dm := m * (1 - m) / tau
		v := -rls(z)*(1-m) + math.Exp(-z)*m
		g := -rsig(-z)*(1-m) + rls(z)*dm - math.Exp(-z)*m + math.Exp(-z)*dm
		return v, withRef(b*g, -b*g)
	case "sigmoid_norm":
		dn := cl/nc - rl/nr
		g := -b * rsig(-b*dn)
		return -rls(b * dn), withRef(g/nc, -g/nr)
	case "sft":
		return -c / nc, grads4{c: -1 / nc}
	case "orpo":
		cb, rb := c/nc, r/nr
		od := cb - rb - (math.Log(1-math.Exp(cb)) - math.Log(1-math.Exp(rb)))
		v := -cb - b*rls(od)
		gc := -1 - b*rsig(-od)/(1-math.Exp(cb))
		gr := b * rsig(-od) / (1 - math.Exp(rb))
		return v, grads4{c: gc / nc, r: gr / nr}
	case "simpo":
		zz := b*(c/nc-r/nr) - o.Gamma
		v, s := smooth(zz, eps)
		return v, grads4{c: b * s / nc, r: -b * s / nr}
	}
	panic("refPair: " + name)
}

func refArgsort(x []float64) []int {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	return idx
}

// refRowWeights mirrors the documented row-weight rule.
func refRowWeights(batch []Pair, o Options) []float64 {
	w := make([]float64, len(batch))
	for i, p := range batch {
		w[i] = p.Weight
		if w[i] == 0 {
			w[i] = 1
		}
		if o.UseWeighting {
			w[i] *= p.WPOWeight
		}
	}
	return w
}

// refComponent returns one component's per-slot losses and the gradient of
// mean_i(w_i·L_i) w.r.t. every pair's four log-probs.
func refComponent(name string, batch []Pair, o Options) (per []float64, g []grads4) {
	n := len(batch)
	w := refRowWeights(batch, o)
	per = make([]float64, n)
	g = make([]grads4, n)
	fn := float64(n)
	switch name {
	case "aot", "aot_unpaired":
		x := make([]float64, n) // sorted-by quantity of the "policy" side
		y := make([]float64, n)
		for i, p := range batch {
			if name == "aot" {
				x[i], y[i] = p.Chosen-p.Rejected, p.RefChosen-p.RefRejected
			} else {
				x[i], y[i] = p.Chosen-p.RefChosen, p.Rejected-p.RefRejected
			}
		}
		px, py := refArgsort(x), refArgsort(y)
		for i := range n {
			v, s := smooth(o.Beta*(x[px[i]]-y[py[i]]), o.LabelSmoothing)
			per[i] = v
			k := w[i] * o.Beta * s / fn
			if name == "aot" {
				g[px[i]].c += k
				g[px[i]].r -= k
				g[py[i]].cref -= k
				g[py[i]].rref += k
			} else {
				g[px[i]].c += k
				g[px[i]].cref -= k
				g[py[i]].r -= k
				g[py[i]].rref += k
			}
		}
		return per, g
	}
	delta := 0.0
	if name == "bco_pair" {
		if o.BCODelta != nil {
			delta = *o.BCODelta
		} else {
			s := 0.0
			for _, p := range batch {
				s += o.Beta * (p.Chosen - p.RefChosen + p.Rejected - p.RefRejected)
			}
			delta = s / (2 * fn)
		}
	}
	for i, p := range batch {
		v, gi := refPair(name, p, o, delta)
		per[i] = v
		k := w[i] / fn
		g[i] = grads4{gi.c * k, gi.r * k, gi.cref * k, gi.rref * k}
	}
	return per, g
}

// refLoss is the plain-Go batch loss (δ of bco_pair held fixed as detached).
func refLoss(batch []Pair, o Options) float64 {
	w := refRowWeights(batch, o)
	total := 0.0
	for name, lam := range o.Losses {
		per, _ := refComponent(name, batch, o)
		for i, v := range per {
			total += lam * w[i] * v
		}
	}
	return total / float64(len(batch))
}

func refGrads(batch []Pair, o Options) []grads4 {
	out := make([]grads4, len(batch))
	for name, lam := range o.Losses {
		_, g := refComponent(name, batch, o)
		for i := range g {
			out[i].c += lam * g[i].c
			out[i].r += lam * g[i].r
			out[i].cref += lam * g[i].cref
			out[i].rref += lam * g[i].rref
		}
	}
	return out
}
