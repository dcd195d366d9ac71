package loss

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// expCap bounds exponents fed to exp in the f-divergence logits, like TRL's
// cap_exp (log of the largest float64 is ≈709.78).
const expCap = 709.0

// exoDefaultEps is the ε exo_pair uses when LabelSmoothing is 0 (TRL).
const exoDefaultEps = 1e-3

// maxCached bounds the number of cached graphs.
const maxCached = 64

var (
	cacheMu sync.Mutex
	cache   = map[string]*compiled{}
)

func cacheKey(b int, o Options) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d|%v|%v|%v|%v|%v|%v|%v", b, o.Beta, o.LabelSmoothing, o.Gamma, o.DiscopopTau, o.Alpha, o.BCODelta != nil, o.UseWeighting)
	for _, k := range sortedKeys(o.Losses) {
		fmt.Fprintf(&sb, "|%s=%v", k, o.Losses[k])
	}
	return sb.String()
}

func getGraph(b int, o Options) (*compiled, error) {
	key := cacheKey(b, o)
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if cg, ok := cache[key]; ok {
		return cg, nil
	}
	cg, err := build(b, o)
	if err != nil {
		return nil, err
	}
	if len(cache) >= maxCached {
		for k := range cache { // evict an arbitrary entry
			delete(cache, k)
			break
		}
	}
	cache[key] = cg
	return cg, nil
}

// input is a graph input vector (or scalar) with its backing storage and the
// function filling it from a batch.
type input struct {
	node *G.Node
	data []float64
	t    *tensor.Dense
	fill func(cg *compiled, batch []Pair, o Options, data []float64)
}

// wrt is a differentiated policy input; scatter adds its gradient into res.
type wrt struct {
	node    *G.Node
	grad    G.Value
	scatter func(cg *compiled, g []float64, res *Result)
}

type component struct {
	name   string
	lambda float64
	val    G.Value
}

type compiled struct {
	mu     sync.Mutex
	b      int
	g      *G.ExprGraph
	m      G.VM
	inputs map[string]*input
	order  []string // deterministic fill order
	wrts   []*wrt
	comps  []*component
	comb   G.Value
	// batch permutations for the sorted losses: slot i holds pair perm[i].
	permP, permQ, permU, permV []int
	delta                      *G.Node
	deltaVal                   float64
	w                          []float64
}

// builder wraps graph construction; gorgonia errors panic and are recovered
// in build.
type builder struct {
	cg   *compiled
	o    Options
	memo map[string]*G.Node
}

func must(n *G.Node, err error) *G.Node {
	if err != nil {
		panic(err)
	}
	return n
}

func (bd *builder) in(name string, fill func(cg *compiled, batch []Pair, o Options, data []float64)) *G.Node {
	if in, ok := bd.cg.inputs[name]; ok {
		return in.node
	}
	data := make([]float64, bd.cg.b)
	t := tensor.New(tensor.WithShape(bd.cg.b), tensor.WithBacking(data))
	n := G.NewVector(bd.cg.g, tensor.Float64, G.WithShape(bd.cg.b), G.WithName(name), G.WithValue(t))
	bd.cg.inputs[name] = &input{node: n, data: data, t: t, fill: fill}
	bd.cg.order = append(bd.cg.order, name)
	return n
}

// policy registers a differentiated input.
func (bd *builder) policy(name string, fill func(cg *compiled, batch []Pair, o Options, data []float64), scatter func(cg *compiled, g []float64, res *Result)) *G.Node {
	if in, ok := bd.cg.inputs[name]; ok {
		return in.node
	}
	n := bd.in(name, fill)
	bd.cg.wrts = append(bd.cg.wrts, &wrt{node: n, scatter: scatter})
	return n
}

func field(f func(p Pair) float64) func(*compiled, []Pair, Options, []float64) {
	return func(_ *compiled, batch []Pair, _ Options, d []float64) {
		for i, p := range batch {
			d[i] = f(p)
		}
	}
}

func permField(perm func(cg *compiled) []int, f func(p Pair) float64) func(*compiled, []Pair, Options, []float64) {
	return func(cg *compiled, batch []Pair, _ Options, d []float64) {
		for i, j := range perm(cg) {
			d[i] = f(batch[j])
		}
	}
}

func addDirect(dst func(*Result) []float64) func(*compiled, []float64, *Result) {
	return func(_ *compiled, g []float64, res *Result) {
		d := dst(res)
		for i, v := range g {
			d[i] += v
		}
	}
}

func addPerm(perm func(cg *compiled) []int, dst func(*Result) []float64) func(*compiled, []float64, *Result) {
	return func(cg *compiled, g []float64, res *Result) {
		d := dst(res)
		for i, j := range perm(cg) {
			d[j] += g[i]
		}
	}
}

var (
	dstC = func(r *Result) []float64 { return r.DChosen }
	dstR = func(r *Result) []float64 { return r.DRejected }
	getP = func(cg *compiled) []int { return cg.permP }
	getQ = func(cg *compiled) []int { return cg.permQ }
	getU = func(cg *compiled) []int { return cg.permU }
	getV = func(cg *compiled) []int { return cg.permV }
)

// ---- inputs ----

func (bd *builder) c() *G.Node {
	return bd.policy("c", field(func(p Pair) float64 { return p.Chosen }), addDirect(dstC))
}
func (bd *builder) r() *G.Node {
	return bd.policy("r", field(func(p Pair) float64 { return p.Rejected }), addDirect(dstR))
}
func (bd *builder) cref() *G.Node {
	return bd.in("cref", field(func(p Pair) float64 { return p.RefChosen }))
}
func (bd *builder) rref() *G.Node {
	return bd.in("rref", field(func(p Pair) float64 { return p.RefRejected }))
}
func (bd *builder) invNc() *G.Node {
	return bd.in("inc", field(func(p Pair) float64 { return 1 / float64(p.ChosenTokens) }))
}
func (bd *builder) invNr() *G.Node {
	return bd.in("inr", field(func(p Pair) float64 { return 1 / float64(p.RejectedTokens) }))
}

// ---- elementary ops ----

func (bd *builder) k(v float64) *G.Node { return G.NewConstant(v) }
func add(a, b *G.Node) *G.Node          { return must(G.Add(a, b)) }
func sub(a, b *G.Node) *G.Node          { return must(G.Sub(a, b)) }
func mul(a, b *G.Node) *G.Node          { return must(G.HadamardProd(a, b)) }
func (bd *builder) scale(a float64, x *G.Node) *G.Node {
	if a == 1 {
		return x
	}
	return must(G.HadamardProd(x, bd.k(a)))
}
func (bd *builder) addc(x *G.Node, a float64) *G.Node { return must(G.Add(x, bd.k(a))) }
func neg(x *G.Node) *G.Node                           { return must(G.Neg(x)) }
func softplus(x *G.Node) *G.Node                      { return must(G.Softplus(x)) }
func sigmoid(x *G.Node) *G.Node                       { return must(G.Sigmoid(x)) }
func exp(x *G.Node) *G.Node                           { return must(G.Exp(x)) }
func square(x *G.Node) *G.Node                        { return must(G.Square(x)) }

// nls is −logσ(x) = softplus(−x), the stable form.
func nls(x *G.Node) *G.Node { return softplus(neg(x)) }

// smoothed is S(z) = (1−ε)·sp(−z) + ε·sp(z).
func (bd *builder) smoothed(z *G.Node) *G.Node {
	eps := bd.o.LabelSmoothing
	if eps == 0 {
		return nls(z)
	}
	return add(bd.scale(1-eps, nls(z)), bd.scale(eps, softplus(z)))
}

// ---- shared sub-expressions ----

func (bd *builder) memoize(name string, f func() *G.Node) *G.Node {
	if n, ok := bd.memo[name]; ok {
		return n
	}
	n := f()
	bd.memo[name] = n
	return n
}

func (bd *builder) cl() *G.Node {
	return bd.memoize("cl", func() *G.Node { return sub(bd.c(), bd.cref()) })
}
func (bd *builder) rl() *G.Node {
	return bd.memoize("rl", func() *G.Node { return sub(bd.r(), bd.rref()) })
}
func (bd *builder) d() *G.Node {
	return bd.memoize("d", func() *G.Node { return sub(bd.cl(), bd.rl()) })
}
func (bd *builder) betaD() *G.Node {
	return bd.memoize("betaD", func() *G.Node { return bd.scale(bd.o.Beta, bd.d()) })
}

// cbar, rbar are the per-token-averaged policy log-probs.
func (bd *builder) cbar() *G.Node {
	return bd.memoize("cbar", func() *G.Node { return mul(bd.c(), bd.invNc()) })
}
func (bd *builder) rbar() *G.Node {
	return bd.memoize("rbar", func() *G.Node { return mul(bd.r(), bd.invNr()) })
}

// dn is the per-token-averaged logits.
func (bd *builder) dn() *G.Node {
	return bd.memoize("dn", func() *G.Node {
		return sub(mul(bd.cl(), bd.invNc()), mul(bd.rl(), bd.invNr()))
	})
}

// capExp returns exp(−a·lr) with the exponent capped at expCap; the cap
// decision is made outside the graph (a clamp's gradient is 0 where it
// saturates, which the keep mask reproduces).
func (bd *builder) capExp(which string, lr *G.Node, a float64) *G.Node {
	name := fmt.Sprintf("%s@%v", which, a)
	return bd.memoize("capexp:"+name, func() *G.Node {
		logp := func(p Pair) float64 { return p.Chosen - p.RefChosen }
		if which == "r" {
			logp = func(p Pair) float64 { return p.Rejected - p.RefRejected }
		}
		keepFill := func(_ *compiled, batch []Pair, _ Options, d []float64) {
			for i, p := range batch {
				d[i] = 1
				if -a*logp(p) > expCap {
					d[i] = 0
				}
			}
		}
		capFill := func(_ *compiled, batch []Pair, _ Options, d []float64) {
			for i, p := range batch {
				d[i] = 0
				if -a*logp(p) > expCap {
					d[i] = math.Exp(expCap)
				}
			}
		}
		keep := bd.in("keep:"+name, keepFill)
		capv := bd.in("cap:"+name, capFill)
		x := mul(bd.scale(-a, lr), keep)
		return add(mul(exp(x), keep), capv)
	})
}

// aot builds S(β·(sort(c−r) − sort(c₀−r₀))); the sort permutations are applied outside the graph.
func (bd *builder) aot() *G.Node {
	pc := bd.policy("aot:pc", permField(getP, func(p Pair) float64 { return p.Chosen }), addPerm(getP, dstC))
	pr := bd.policy("aot:pr", permField(getP, func(p Pair) float64 { return p.Rejected }), addPerm(getP, dstR))
	qc := bd.in("aot:qc", permField(getQ, func(p Pair) float64 { return p.RefChosen }))
	qr := bd.in("aot:qr", permField(getQ, func(p Pair) float64 { return p.RefRejected }))
	delta := sub(sub(pc, pr), sub(qc, qr))
	return bd.smoothed(bd.scale(bd.o.Beta, delta))
}

func (bd *builder) aotUnpaired() *G.Node {
	uc := bd.policy("aotu:c", permField(getU, func(p Pair) float64 { return p.Chosen }), addPerm(getU, dstC))
	ucref := bd.in("aotu:cref", permField(getU, func(p Pair) float64 { return p.RefChosen }))
	vr := bd.policy("aotu:r", permField(getV, func(p Pair) float64 { return p.Rejected }), addPerm(getV, dstR))
	vrref := bd.in("aotu:rref", permField(getV, func(p Pair) float64 { return p.RefRejected }))
	delta := sub(sub(uc, ucref), sub(vr, vrref))
	return bd.smoothed(bd.scale(bd.o.Beta, delta))
}

// component builds the per-pair loss vector of one named loss.
func (bd *builder) component(name string) *G.Node {
	o := bd.o
	beta, eps := o.Beta, o.LabelSmoothing
	switch name {
	case "sigmoid", "reverse_kl":
		return bd.smoothed(bd.betaD())
	case "forward_kl", "alpha_divergence":
		a := 1.0
		if name == "alpha_divergence" {
			a = o.Alpha
		}
		logits := bd.scale(1/a, sub(bd.capExp("r", bd.rl(), a), bd.capExp("c", bd.cl(), a)))
		return bd.smoothed(bd.scale(beta, logits))
	case "js_divergence":
		logits := sub(bd.d(), sub(softplus(bd.cl()), softplus(bd.rl())))
		return bd.smoothed(bd.scale(beta, logits))
	case "hinge":
		return must(G.Rectify(neg(bd.addc(bd.betaD(), -1))))
	case "ipo":
		return square(bd.addc(bd.dn(), -1/(2*beta)))
	case "ipo_sum":
		return square(bd.addc(bd.d(), -1/(2*beta)))
	case "exo_pair":
		e := eps
		if e == 0 {
			e = exoDefaultEps
		}
		z := bd.betaD()
		a := mul(sigmoid(z), bd.addc(neg(nls(z)), -math.Log1p(-e)))
		nz := neg(z)
		b := mul(sigmoid(nz), bd.addc(neg(nls(nz)), -math.Log(e)))
		return add(a, b)
	case "nca_pair":
		cr := bd.scale(beta, bd.cl())
		rr := bd.scale(beta, bd.rl())
		return add(nls(cr), bd.scale(0.5, add(softplus(cr), softplus(rr))))
	case "robust":
		z := bd.betaD()
		return bd.scale(1/(1-2*eps), sub(bd.scale(1-eps, nls(z)), bd.scale(eps, softplus(z))))
	case "bco_pair":
		if bd.cg.delta == nil {
			bd.cg.delta = G.NewScalar(bd.cg.g, tensor.Float64, G.WithName("bco_delta"), G.WithValue(0.0))
		}
		cr := bd.scale(beta, bd.cl())
		rr := bd.scale(beta, bd.rl())
		return add(nls(sub(cr, bd.cg.delta)), softplus(sub(rr, bd.cg.delta)))
	case "sppo_hard":
		h := 1 / (2 * beta)
		return add(square(bd.addc(bd.cl(), -h)), square(bd.addc(bd.rl(), h)))
	case "aot":
		return bd.aot()
	case "aot_unpaired":
		return bd.aotUnpaired()
	case "apo_zero":
		return add(sigmoid(bd.scale(-beta, bd.cl())), sigmoid(bd.scale(beta, bd.rl())))
	case "apo_down":
		return add(sigmoid(bd.scale(beta, bd.cl())), sigmoid(neg(bd.betaD())))
	case "discopop":
		z := bd.betaD()
		m := sigmoid(bd.scale(1/o.DiscopopTau, z))
		one := bd.k(1.0)
		return add(mul(nls(z), sub(one, m)), mul(exp(neg(z)), m))
	case "sigmoid_norm":
		return nls(bd.scale(beta, bd.dn()))
	case "sft":
		return neg(bd.cbar())
	case "orpo":
		cb, rb := bd.cbar(), bd.rbar()
		// log(1 − e^x) = log(−expm1(x)), accurate near x = 0.
		l1m := func(x *G.Node) *G.Node { return must(G.Log(neg(must(G.Expm1(x))))) }
		odds := sub(sub(cb, rb), sub(l1m(cb), l1m(rb)))
		return add(neg(cb), bd.scale(beta, nls(odds)))
	case "simpo":
		z := bd.addc(bd.scale(beta, sub(bd.cbar(), bd.rbar())), -o.Gamma)
		return bd.smoothed(z)
	}
	panic(fmt.Errorf("loss: no graph for %q", name))
}

func build(b int, o Options) (cg *compiled, err error) {
	cg = &compiled{b: b, g: G.NewGraph(), inputs: map[string]*input{}, w: make([]float64, b)}
	bd := &builder{cg: cg, o: o, memo: map[string]*G.Node{}}
	defer func() {
		if r := recover(); r != nil {
			cg, err = nil, fmt.Errorf("loss: building graph: %v", r)
		}
	}()
	var combined *G.Node
	for _, name := range sortedKeys(o.Losses) {
		l := bd.component(name)
		comp := &component{name: name, lambda: o.Losses[name]}
		G.Read(l, &comp.val)
		cg.comps = append(cg.comps, comp)
		term := bd.scale(comp.lambda, l)
		if combined == nil {
			combined = term
		} else {
			combined = add(combined, term)
		}
	}
	G.Read(combined, &cg.comb)
	w := bd.in("w", nil) // filled from cg.w
	cost := bd.scale(1/float64(b), must(G.Sum(mul(combined, w))))
	nodes := make(G.Nodes, len(cg.wrts))
	for i, x := range cg.wrts {
		nodes[i] = x.node
	}
	grads, err := G.Grad(cost, nodes...)
	if err != nil {
		return nil, fmt.Errorf("loss: symbolic gradient: %w", err)
	}
	for i, gn := range grads {
		G.Read(gn, &cg.wrts[i].grad)
	}
	cg.m = G.NewTapeMachine(cg.g)
	return cg, nil
}

func argsort(x []float64) []int {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	return idx
}

func (cg *compiled) run(batch []Pair, o Options, res *Result) error {
	cg.mu.Lock()
	defer cg.mu.Unlock()
	if _, ok := o.Losses["aot"]; ok {
		x := make([]float64, len(batch))
		y := make([]float64, len(batch))
		for i, p := range batch {
			x[i] = p.Chosen - p.Rejected
			y[i] = p.RefChosen - p.RefRejected
		}
		cg.permP, cg.permQ = argsort(x), argsort(y)
	}
	if _, ok := o.Losses["aot_unpaired"]; ok {
		x := make([]float64, len(batch))
		y := make([]float64, len(batch))
		for i, p := range batch {
			x[i] = p.Chosen - p.RefChosen
			y[i] = p.Rejected - p.RefRejected
		}
		cg.permU, cg.permV = argsort(x), argsort(y)
	}
	rowWeights(batch, o, cg.w)
	for _, name := range cg.order {
		in := cg.inputs[name]
		if in.fill == nil {
			copy(in.data, cg.w)
		} else {
			in.fill(cg, batch, o, in.data)
		}
		if err := G.Let(in.node, in.t); err != nil {
			return err
		}
	}
	if cg.delta != nil {
		if o.BCODelta != nil {
			cg.deltaVal = *o.BCODelta
		} else {
			cg.deltaVal = BatchDelta(batch, o.Beta)
		}
		if err := G.Let(cg.delta, cg.deltaVal); err != nil {
			return err
		}
	}
	cg.m.Reset()
	if err := cg.m.RunAll(); err != nil {
		return fmt.Errorf("loss: running graph: %w", err)
	}
	n := float64(len(batch))
	copy(res.PerPair, values(cg.comb))
	for i, v := range res.PerPair {
		res.Loss += v * cg.w[i]
	}
	res.Loss /= n
	for _, c := range cg.comps {
		s := 0.0
		for i, v := range values(c.val) {
			s += v * cg.w[i]
		}
		res.Components[c.name] = s / n
	}
	for _, x := range cg.wrts {
		x.scatter(cg, values(x.grad), res)
	}
	return nil
}

func values(v G.Value) []float64 {
	switch t := v.(type) {
	case *tensor.Dense:
		return t.Float64s()
	case *G.F64:
		return []float64{float64(*t)}
	}
	panic(fmt.Sprintf("loss: unexpected value %T", v))
}
