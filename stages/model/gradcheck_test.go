package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func tinyConfig(rope RopeStyle, bias, tied bool) Config {
	return Config{Dim: 8, HiddenDim: 12, NLayers: 2, NHeads: 2, NKVHeads: 1, VocabSize: 11, SeqLen: 16,
		NormEps: 1e-5, RopeTheta: 10000, Rope: rope, TiedEmbeddings: tied, QKVBias: bias, BOS: 1, EOS: 2}
}

// randomizeForTest gives every parameter an O(0.3) random value (norm weights
// near one) so that all gradients are well away from zero.
func randomizeForTest(m *Model, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range m.Params {
		m.Params[i] = float32(rng.NormFloat64() * 0.3)
	}
	l := &m.lay
	for _, seg := range [][2]int{{l.rmsAtt, l.nl * l.d}, {l.rmsFFN, l.nl * l.d}, {l.rmsFinal, l.d}} {
		for i := seg[0]; i < seg[0]+seg[1]; i++ {
			m.Params[i] = 1 + float32(rng.NormFloat64()*0.2)
		}
	}
}

func gradTestBatch() ([]Seq, [][]float32) {
	seqs := []Seq{
		{IDs: []int32{1, 4, 7, 3, 9, 10, 2}, Start: 3},
		{IDs: []int32{1, 5, 5, 0, 8}, Start: 1},
		{IDs: []int32{1, 6, 2}, Start: 2},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var d [][]float32
	for _, s := range seqs {
		g := make([]float32, len(s.IDs)-s.Start)
		for i := range g {
			g[i] = float32(rng.NormFloat64())
		}
		d = append(d, g)
	}
	return seqs, d
}

// gorgoniaRef builds the same model in float64 with gorgonia and returns the
// loss Σ dTok·logp and the gradient of every parameter in our flat layout.
func gorgoniaRef(t *testing.T, m *Model, seqs []Seq, dTok [][]float32) (float64, []float64) {
	t.Helper()
	c := m.Config
	l := &m.lay
	d, kvd, f, v, hs := c.Dim, c.KVDim(), c.HiddenDim, c.VocabSize, c.HeadSize()
	g := G.NewGraph()
	mat := func(name string, r, cc int, data []float64) *G.Node {
		return G.NewMatrix(g, tensor.Float64, G.WithShape(r, cc), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(r, cc), tensor.WithBacking(data))))
	}
	constN := 0
	cst := func(r, cc int, fn func(i, j int) float64) *G.Node {
		data := make([]float64, r*cc)
		for i := 0; i < r; i++ {
			for j := 0; j < cc; j++ {
				data[i*cc+j] = fn(i, j)
			}
		}
		constN++
		return mat(fmt.Sprintf("c%d", constN), r, cc, data)
	}
	fill := func(x float64) func(int, int) float64 { return func(int, int) float64 { return x } }
	// parameters: weights [out,in] are held transposed ([in,out]) so that
	// y = x·Wᵀ is a plain product.
	type param struct {
		node      *G.Node
		off, r, c int
		transpose bool
	}
	var params []param
	newParam := func(name string, off, out, in int, transpose bool) *G.Node {
		data := make([]float64, out*in)
		for i := 0; i < out; i++ {
			for j := 0; j < in; j++ {
				val := float64(m.Params[off+i*in+j])
				if transpose {
					data[j*out+i] = val
				} else {
					data[i*in+j] = val
				}
			}
		}
		r, cc := out, in
		if transpose {
			r, cc = in, out
		}
		n := mat(name, r, cc, data)
		params = append(params, param{n, off, out, in, transpose})
		return n
	}
	emb := newParam("emb", l.tokEmb, v, d, false)
	type lw struct{ rmsAtt, wq, wk, wv, wo, bq, bk, bv, rmsFFN, w1, w2, w3 *G.Node }
	var lws []lw
	for i := 0; i < c.NLayers; i++ {
		var w lw
		w.rmsAtt = newParam(fmt.Sprintf("rmsatt%d", i), l.rmsAtt+i*d, 1, d, false)
		w.wq = newParam(fmt.Sprintf("wq%d", i), l.wq+i*d*d, d, d, true)
		w.wk = newParam(fmt.Sprintf("wk%d", i), l.wk+i*kvd*d, kvd, d, true)
		w.wv = newParam(fmt.Sprintf("wv%d", i), l.wv+i*kvd*d, kvd, d, true)
		w.wo = newParam(fmt.Sprintf("wo%d", i), l.wo+i*d*d, d, d, true)
		if c.QKVBias {
			w.bq = newParam(fmt.Sprintf("bq%d", i), l.bq+i*d, 1, d, false)
			w.bk = newParam(fmt.Sprintf("bk%d", i), l.bk+i*kvd, 1, kvd, false)
			w.bv = newParam(fmt.Sprintf("bv%d", i), l.bv+i*kvd, 1, kvd, false)
		}
		w.rmsFFN = newParam(fmt.Sprintf("rmsffn%d", i), l.rmsFFN+i*d, 1, d, false)
		w.w1 = newParam(fmt.Sprintf("w1%d", i), l.w1+i*f*d, f, d, true)
		w.w2 = newParam(fmt.Sprintf("w2%d", i), l.w2+i*d*f, d, f, true)
		w.w3 = newParam(fmt.Sprintf("w3%d", i), l.w3+i*f*d, f, d, true)
		lws = append(lws, w)
	}
	rmsFinal := newParam("rmsfinal", l.rmsFinal, 1, d, false)
	var wclsT *G.Node
	if c.TiedEmbeddings {
		wclsT = G.Must(G.Transpose(emb))
	} else {
		wclsT = newParam("wcls", l.wcls, v, d, true)
	}

	var cost *G.Node
	for si, s := range seqs {
		T := len(s.IDs) - 1
		ones := func(r, cc int) *G.Node { return cst(r, cc, fill(1)) }
		bcastRows := func(row *G.Node) *G.Node { return G.Must(G.Mul(ones(T, 1), row)) }
		rms := func(x, w *G.Node) *G.Node {
			ms := G.Must(G.Mul(G.Must(G.HadamardProd(x, x)), cst(d, 1, fill(1/float64(d)))))
			s := G.Must(G.Sqrt(G.Must(G.Add(ms, cst(T, 1, fill(float64(c.NormEps)))))))
			inv := G.Must(G.HadamardDiv(ones(T, 1), s))
			return G.Must(G.HadamardProd(G.Must(G.HadamardProd(x, G.Must(G.Mul(inv, ones(1, d))))), bcastRows(w)))
		}
		rope := func(x *G.Node, nh int) *G.Node {
			width := nh * hs
			half := hs / 2
			pairOf := func(j int) (i int, first bool) { // frequency index within head, and whether j is the first of its pair
				jj := j % hs
				if c.Rope == RopeAdjacent {
					return jj / 2, jj%2 == 0
				}
				return jj % half, jj < half
			}
			ang := func(p, j int) float64 {
				i, _ := pairOf(j)
				return float64(p) * math.Pow(float64(c.RopeTheta), -float64(2*i)/float64(hs))
			}
			cosN := cst(T, width, func(p, j int) float64 { return math.Cos(ang(p, j)) })
			sinN := cst(T, width, func(p, j int) float64 { return math.Sin(ang(p, j)) })
			// (x·R)[first] = -x[second], (x·R)[second] = x[first]
			R := cst(width, width, func(a, b int) float64 {
				hb := b / hs * hs
				_, firstB := pairOf(b)
				var partner int
				if c.Rope == RopeAdjacent {
					partner = b ^ 1
				} else if firstB {
					partner = b + half
				} else {
					partner = b - half
				}
				if a != partner || a/hs*hs != hb {
					return 0
				}
				if firstB {
					return -1
				}
				return 1
			})
			return G.Must(G.Add(G.Must(G.HadamardProd(x, cosN)), G.Must(G.HadamardProd(G.Must(G.Mul(x, R)), sinN))))
		}
		x := G.Must(G.Mul(cst(T, v, func(i, j int) float64 {
			if int(s.IDs[i]) == j {
				return 1
			}
			return 0
		}), emb))
		for li := 0; li < c.NLayers; li++ {
			w := lws[li]
			xn := rms(x, w.rmsAtt)
			q := G.Must(G.Mul(xn, w.wq))
			k := G.Must(G.Mul(xn, w.wk))
			vv := G.Must(G.Mul(xn, w.wv))
			if c.QKVBias {
				q = G.Must(G.Add(q, bcastRows(w.bq)))
				k = G.Must(G.Add(k, bcastRows(w.bk)))
				vv = G.Must(G.Add(vv, bcastRows(w.bv)))
			}
			q = rope(q, c.NHeads)
			k = rope(k, c.NKVHeads)
			var ao *G.Node
			for h := 0; h < c.NHeads; h++ {
				kh := h / (c.NHeads / c.NKVHeads)
				selQ := func(a, b int) float64 {
					if a == h*hs+b {
						return 1
					}
					return 0
				}
				selK := func(a, b int) float64 {
					if a == kh*hs+b {
						return 1
					}
					return 0
				}
				qh := G.Must(G.Mul(q, cst(d, hs, selQ)))
				khn := G.Must(G.Mul(k, cst(kvd, hs, selK)))
				vh := G.Must(G.Mul(vv, cst(kvd, hs, selK)))
				sc := G.Must(G.HadamardProd(G.Must(G.Mul(qh, G.Must(G.Transpose(khn)))), cst(T, T, fill(1/math.Sqrt(float64(hs))))))
				e := G.Must(G.HadamardProd(G.Must(G.Exp(sc)), cst(T, T, func(i, j int) float64 {
					if j <= i {
						return 1
					}
					return 0
				})))
				rs := G.Must(G.Mul(G.Must(G.Mul(e, ones(T, 1))), ones(1, T)))
				p := G.Must(G.HadamardDiv(e, rs))
				oh := G.Must(G.Mul(G.Must(G.Mul(p, vh)), cst(hs, d, func(a, b int) float64 { return selQ(b, a) })))
				if ao == nil {
					ao = oh
				} else {
					ao = G.Must(G.Add(ao, oh))
				}
			}
			x = G.Must(G.Add(x, G.Must(G.Mul(ao, w.wo))))
			xn2 := rms(x, w.rmsFFN)
			h1 := G.Must(G.Mul(xn2, w.w1))
			gg := G.Must(G.HadamardProd(G.Must(G.HadamardProd(h1, G.Must(G.Sigmoid(h1)))), G.Must(G.Mul(xn2, w.w3))))
			x = G.Must(G.Add(x, G.Must(G.Mul(gg, w.w2))))
		}
		xnf := rms(x, rmsFinal)
		M := len(s.IDs) - s.Start
		sel := cst(M, T, func(i, j int) float64 {
			if j == s.Start-1+i {
				return 1
			}
			return 0
		})
		z := G.Must(G.Mul(G.Must(G.Mul(sel, xnf)), wclsT))
		lse := G.Must(G.Log(G.Must(G.Mul(G.Must(G.Exp(z)), ones(v, 1)))))
		logp := G.Must(G.Sub(z, G.Must(G.Mul(lse, ones(1, v)))))
		wt := cst(M, v, func(i, j int) float64 {
			if j == int(s.IDs[s.Start+i]) {
				return float64(dTok[si][i])
			}
			return 0
		})
		ci := G.Must(G.Sum(G.Must(G.HadamardProd(logp, wt))))
		if cost == nil {
			cost = ci
		} else {
			cost = G.Must(G.Add(cost, ci))
		}
	}
	var nodes G.Nodes
	for _, p := range params {
		nodes = append(nodes, p.node)
	}
	var costVal G.Value
	G.Read(cost, &costVal)
	if _, err := G.Grad(cost, nodes...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(nodes...))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	grads := make([]float64, len(m.Params))
	for _, p := range params {
		gv, err := p.node.Grad()
		if err != nil {
			t.Fatal(err)
		}
		data := gv.Data().([]float64)
		for i := 0; i < p.r; i++ {
			for j := 0; j < p.c; j++ {
				if p.transpose {
					grads[p.off+i*p.c+j] += data[j*p.r+i]
				} else {
					grads[p.off+i*p.c+j] += data[i*p.c+j]
				}
			}
		}
	}
	return costVal.Data().(float64), grads
}

// tensorRanges names the tensors of the flat layout for error messages.
func tensorRanges(m *Model) []struct {
	name   string
	off, n int
} {
	l := &m.lay
	nl := l.nl
	rs := []struct {
		name   string
		off, n int
	}{
		{"tok_emb", l.tokEmb, l.v * l.d}, {"rms_att", l.rmsAtt, nl * l.d}, {"wq", l.wq, nl * l.sizeWq},
		{"wk", l.wk, nl * l.sizeWkv}, {"wv", l.wv, nl * l.sizeWkv}, {"wo", l.wo, nl * l.sizeWq},
		{"rms_ffn", l.rmsFFN, nl * l.d}, {"w1", l.w1, nl * l.sizeW1}, {"w2", l.w2, nl * l.sizeW1},
		{"w3", l.w3, nl * l.sizeW1}, {"rms_final", l.rmsFinal, l.d},
	}
	if l.bq >= 0 {
		rs = append(rs, struct {
			name   string
			off, n int
		}{"bq", l.bq, nl * l.d}, struct {
			name   string
			off, n int
		}{"bk", l.bk, nl * l.kvd}, struct {
			name   string
			off, n int
		}{"bv", l.bv, nl * l.kvd})
	}
	if !m.Config.TiedEmbeddings {
		rs = append(rs, struct {
			name   string
			off, n int
		}{"wcls", l.wcls, l.v * l.d})
	}
	return rs
}

func TestGradientsMatchGorgonia(t *testing.T) {
	for _, rope := range []RopeStyle{RopeAdjacent, RopeHalf} {
		for _, bias := range []bool{false, true} {
			for _, tied := range []bool{true, false} {
				name := fmt.Sprintf("rope=%v/bias=%v/tied=%v", rope, bias, tied)
				t.Run(name, func(t *testing.T) {
					m, err := New(tinyConfig(rope, bias, tied), 1)
					if err != nil {
						t.Fatal(err)
					}
					randomizeForTest(m, 11)
					seqs, dTok := gradTestBatch()
					r := NewRunner(m)
					sc, err := r.Forward(seqs)
					if err != nil {
						t.Fatal(err)
					}
					if err := r.Backward(dTok); err != nil {
						t.Fatal(err)
					}
					var loss float64
					for i := range dTok {
						for j, g := range dTok[i] {
							loss += float64(g) * float64(sc.TokenLogps[i][j])
						}
					}
					refLoss, ref := gorgoniaRef(t, m, seqs, dTok)
					if math.Abs(loss-refLoss) > 1e-4*math.Max(1, math.Abs(refLoss)) {
						t.Errorf("loss %.8f, gorgonia %.8f", loss, refLoss)
					}
					for _, tr := range tensorRanges(m) {
						var num, den, gmax float64
						for i := tr.off; i < tr.off+tr.n; i++ {
							diff := float64(m.Grads[i]) - ref[i]
							num += diff * diff
							den += ref[i] * ref[i]
							gmax = math.Max(gmax, math.Abs(ref[i]))
						}
						if den == 0 {
							t.Errorf("%s: reference gradient is all zero", tr.name)
							continue
						}
						if rel := math.Sqrt(num / den); rel > 1e-4 {
							t.Errorf("%s: norm-relative gradient error %.3g", tr.name, rel)
						}
						for i := tr.off; i < tr.off+tr.n; i++ {
							got, want := float64(m.Grads[i]), ref[i]
							if math.Abs(got-want) > 1e-4*math.Max(math.Abs(want), 1e-2*gmax) {
								t.Errorf("%s[%d]: gradient %.8g, gorgonia %.8g", tr.name, i-tr.off, got, want)
								break
							}
						}
					}
				})
			}
		}
	}
}
