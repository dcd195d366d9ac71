package model

import (
	"errors"
	"fmt"
	"math"
)

// UniformTokenGrads spreads per-sequence gradients dL/d(Logp[i]) over the
// completion tokens of each sequence, giving the argument of Backward for a
// loss on summed log-probs.
func UniformTokenGrads(s Scores, dLogp []float64) [][]float32 {
	out := make([][]float32, len(s.Tokens))
	for i, t := range s.Tokens {
		g := make([]float32, t)
		var v float32
		if i < len(dLogp) {
			v = float32(dLogp[i])
		}
		for j := range g {
			g[j] = v
		}
		out[i] = g
	}
	return out
}

// Backward takes dL/d(token logp) for each completion token of each sequence
// of the last Forward (shaped like Scores.TokenLogps) and accumulates the
// parameter gradients into the model's Grads.
func (r *Runner) Backward(dTokenLogps [][]float32) error {
	if !r.kept {
		return errors.New("model: Backward needs a preceding Forward (Score keeps no activations)")
	}
	if len(dTokenLogps) != r.nseq {
		return fmt.Errorf("model: Backward got gradients for %d sequences, the last Forward had %d", len(dTokenLogps), r.nseq)
	}
	// count completion tokens per sequence from the head rows
	idx := 0
	for s := 0; s < r.nseq; s++ {
		t := 0
		for idx+t < len(r.headSeq) && int(r.headSeq[idx+t]) == s {
			t++
		}
		if len(dTokenLogps[s]) != t {
			return fmt.Errorf("model: Backward got %d token gradients for sequence %d, it has %d completion tokens", len(dTokenLogps[s]), s, t)
		}
		idx += t
	}
	r.ensureBackward()
	cfg := &r.m.Config
	lay := &r.m.lay
	P, G := r.m.Params, r.m.Grads
	d, n, nl := cfg.Dim, r.n, cfg.NLayers

	// LM head → d(xnf) in dxn
	dxnf := r.dxn[:n*d]
	clear(dxnf)
	r.headBackward(dTokenLogps, dxnf)

	// final norm
	dx := r.dx[:n*d]
	clear(dx)
	r.rmsBack(dx, lay.rmsFinalView(G), dxnf, r.resid[nl], r.rf, lay.rmsFinalView(P))

	for l := nl - 1; l >= 0; l-- {
		r.layerBackward(&r.acts[l], lay.layer(P, l), lay.layer(G, l), r.resid[l], dx)
	}

	// embedding
	gEmb := lay.tokEmbView(G)
	for i := 0; i < n; i++ {
		id := int(r.ids[i])
		addTo(gEmb[id*d:id*d+d], dx[i*d:i*d+d])
	}
	return nil
}

// rmsBack accumulates into dx the gradient of a row-wise RMSNorm and into dw
// the gradient of its weight. The weight gradient is summed per part and
// the parts are added in order, so the result does not depend on
// scheduling.
func (r *Runner) rmsBack(dx, dw, dy, x, inv, w []float32) {
	nw := workers.n
	for i := 0; i < nw; i++ {
		clear(r.dwRMS[i])
	}
	c := &r.cur
	c.rmsDx, c.rmsDy, c.rmsX, c.rmsR, c.rmsW = dx, dy, x, inv, w
	workers.rows(r.n, rowsPerPart, r.fn.rmsBack)
	for i := 0; i < nw; i++ {
		addTo(dw, r.dwRMS[i])
	}
}

func (r *Runner) rmsBackRows(part, lo, hi int) {
	c := &r.cur
	rmsnormBackRows(c.rmsDx, r.dwRMS[part], c.rmsDy, c.rmsX, c.rmsR, c.rmsW, r.m.Config.Dim, lo, hi)
}

func (r *Runner) headBackward(dTok [][]float32, dxnf []float32) {
	cfg := &r.m.Config
	d, v := cfg.Dim, cfg.VocabSize
	lay := &r.m.lay
	wcls := lay.wclsView(r.m.Params)
	gw := lay.wclsView(r.m.Grads)
	nh := len(r.headRow)
	r.dxh = grow(r.dxh, nh*d)
	r.cur.dTok = dTok
	if r.logitsKept {
		// the kept logits become their gradient: a second Backward of the
		// same Forward recomputes them
		r.logitsKept = false
		// d(logits) in place of the kept logits, then two whole products
		workers.rows(nh, 8, r.fn.headGrad)
		gemm(false, false, nh, d, v, 1, r.probs, v, wcls, d, 0, r.dxh, d)
		gemm(true, false, v, d, nh, 1, r.probs, v, r.xh, d, 1, gw, d)
	} else {
		for w := range r.dWcls {
			clear(r.dWcls[w])
		}
		chunks := (nh + headChunk - 1) / headChunk
		workers.rows(chunks, 1, r.fn.headB)
		for w := 0; w < min(workers.n, chunks); w++ {
			addTo(gw, r.dWcls[w])
		}
	}
	r.cur.dTok = nil
	for k := 0; k < nh; k++ {
		row := int(r.headRow[k])
		copy(dxnf[row*d:row*d+d], r.dxh[k*d:k*d+d])
	}
}

// headGradRows turns rows [lo, hi) of logits into d(loss)/d(logits).
func (r *Runner) headGradRows(_, lo, hi int) {
	v := r.m.Config.VocabSize
	for k := lo; k < hi; k++ {
		r.logitGrad(k, r.probs[k*v:k*v+v])
	}
}

func (r *Runner) logitGrad(k int, z []float32) {
	g := r.cur.dTok[r.headSeq[k]][r.headTok[k]]
	if g == 0 {
		clear(z)
		return
	}
	expAffine(z, z, 1, -r.rowLse[k])
	for j, e := range z {
		z[j] = -g * e
	}
	z[r.headTgt[k]] += g
}

// headBackwardChunk recomputes the logits of chunks [lo, hi) and
// accumulates their gradients; the LM-head weight gradient goes into the
// part's own buffer.
func (r *Runner) headBackwardChunk(part, lo, hi int) {
	cfg := &r.m.Config
	d, v := cfg.Dim, cfg.VocabSize
	wcls := r.m.lay.wclsView(r.m.Params)
	nh := len(r.headRow)
	for c := lo; c < hi; c++ {
		r0 := c * headChunk
		r1 := min(r0+headChunk, nh)
		m := r1 - r0
		xc := r.xh[r0*d:]
		lg := r.logits[part]
		sgemm(false, true, m, v, d, 1, xc, d, wcls, d, 0, lg, v)
		for i := 0; i < m; i++ {
			r.logitGrad(r0+i, lg[i*v:i*v+v])
		}
		sgemm(false, false, m, d, v, 1, lg, v, wcls, d, 0, r.dxh[r0*d:], d)
		sgemm(true, false, v, d, m, 1, lg, v, xc, d, 1, r.dWcls[part], d)
	}
}

func (r *Runner) swigluBackRows(_, lo, hi int) {
	a, dg, dh1 := r.cur.a, r.cur.dg, r.cur.dh1
	expAffine(dh1[lo:hi], a.h1[lo:hi], -1, 0) // exp(-h1)
	for i := lo; i < hi; i++ {
		h1 := a.h1[i]
		s := 1 / (1 + dh1[i])
		silu := h1 * s
		gg := dg[i]
		dh1[i] = gg * a.h3[i] * s * (1 + h1*(1-s))
		dg[i] = gg * silu // now d(h3)
	}
}

func (r *Runner) ropeBackRows(_, lo, hi int) {
	cfg := &r.m.Config
	d, kvd, hs := cfg.Dim, cfg.KVDim(), cfg.HeadSize()
	dq, dk := r.cur.dq, r.cur.dk
	for i := lo; i < hi; i++ {
		p := int(r.pos[i])
		r.rope.rotate(dq[i*d:i*d+d], cfg.NHeads, hs, p, cfg.Rope, true)
		r.rope.rotate(dk[i*kvd:i*kvd+kvd], cfg.NKVHeads, hs, p, cfg.Rope, true)
	}
}

func (r *Runner) layerBackward(a *layerActs, w, gw weights, x, dx []float32) {
	cfg := &r.m.Config
	d, kvd, f := cfg.Dim, cfg.KVDim(), cfg.HiddenDim
	n := r.n
	c := &r.cur
	c.a, c.w = a, w

	// MLP: xout = x2 + w2(g), g = silu(h1)·h3
	dg := r.dh3[:n*f]
	gemm(false, false, n, f, d, 1, dx, d, w.w2, f, 0, dg, f)
	gemm(true, false, d, f, n, 1, dx, d, a.g, f, 1, gw.w2, f)
	dh1 := r.dh1[:n*f]
	c.dg, c.dh1 = dg, dh1
	workers.rows(n*f, 4096, r.fn.swigluBack)
	dh3 := dg
	dxn := r.dxn[:n*d]
	gemm(false, false, n, d, f, 1, dh1, f, w.w1, d, 0, dxn, d)
	gemm(false, false, n, d, f, 1, dh3, f, w.w3, d, 1, dxn, d)
	gemm(true, false, f, d, n, 1, dh1, f, a.xn2, d, 1, gw.w1, d)
	gemm(true, false, f, d, n, 1, dh3, f, a.xn2, d, 1, gw.w3, d)
	r.rmsBack(dx, gw.rmsFFN, dxn, a.x2, a.r2, w.rmsFFN)

	// attention: x2 = x + wo(ao)
	dao := r.dao[:n*d]
	gemm(false, false, n, d, d, 1, dx, d, w.wo, d, 0, dao, d)
	gemm(true, false, d, d, n, 1, dx, d, a.ao, d, 1, gw.wo, d)
	dq, dk, dv := r.dq[:n*d], r.dk[:n*kvd], r.dv[:n*kvd]
	c.dq, c.dk, c.dv, c.dao = dq, dk, dv, dao
	workers.run(r.nseq*cfg.NKVHeads, r.fn.attB)
	workers.rows(n, rowsPerPart, r.fn.ropeBack)
	if gw.bq != nil {
		for i := 0; i < n; i++ {
			addTo(gw.bq, dq[i*d:i*d+d])
			addTo(gw.bk, dk[i*kvd:i*kvd+kvd])
			addTo(gw.bv, dv[i*kvd:i*kvd+kvd])
		}
	}
	gemm(false, false, n, d, d, 1, dq, d, w.wq, d, 0, dxn, d)
	gemm(false, false, n, d, kvd, 1, dk, kvd, w.wk, d, 1, dxn, d)
	gemm(false, false, n, d, kvd, 1, dv, kvd, w.wv, d, 1, dxn, d)
	gemm(true, false, d, d, n, 1, dq, d, a.xn, d, 1, gw.wq, d)
	gemm(true, false, kvd, d, n, 1, dk, kvd, a.xn, d, 1, gw.wk, d)
	gemm(true, false, kvd, d, n, 1, dv, kvd, a.xn, d, 1, gw.wv, d)
	r.rmsBack(dx, gw.rmsAtt, dxn, x, a.r, w.rmsAtt)
}

// attentionBackwardTask backpropagates the attention of one sequence and
// KV head (all the query heads of its group).
func (r *Runner) attentionBackwardTask(wk, task int) {
	cfg := &r.m.Config
	a := r.cur.a
	dao, dq, dk, dv := r.cur.dao, r.cur.dq, r.cur.dk, r.cur.dv
	d, kvd, hs := cfg.Dim, cfg.KVDim(), cfg.HeadSize()
	group := cfg.NHeads / cfg.NKVHeads
	scale := float32(1 / math.Sqrt(float64(hs)))
	s, g := task/cfg.NKVHeads, task%cfg.NKVHeads
	o := r.offs[s]
	T := r.offs[s+1] - o
	K := a.k[o*kvd+g*hs:]
	V := a.v[o*kvd+g*hs:]
	dK := dk[o*kvd+g*hs:]
	dV := dv[o*kvd+g*hs:]
	for i := 0; i < T; i++ {
		clear(dK[i*kvd : i*kvd+hs])
		clear(dV[i*kvd : i*kvd+hs])
	}
	dS := r.dS[wk]
	for h := g * group; h < (g+1)*group; h++ {
		Q := a.q[o*d+h*hs:]
		dQ := dq[o*d+h*hs:]
		dO := dao[o*d+h*hs:]
		P := a.att[r.attOffs[s]+h*T*T:]
		for r0 := 0; r0 < T; r0 += attBlock {
			r1 := min(r0+attBlock, T)
			rb := r1 - r0
			// dP = dO Vᵀ
			sgemm(false, true, rb, r1, hs, 1, dO[r0*d:], d, V, kvd, 0, dS, r1)
			// dV += Pᵀ dO
			sgemm(true, false, r1, hs, rb, 1, P[r0*T:], T, dO[r0*d:], d, 1, dV, kvd)
			for i := r0; i < r1; i++ {
				pr := P[i*T : i*T+i+1]
				dr := dS[(i-r0)*r1 : (i-r0)*r1+r1]
				var dot float32
				for j, p := range pr {
					dot += p * dr[j]
				}
				for j, p := range pr {
					dr[j] = p * (dr[j] - dot)
				}
				clear(dr[i+1:])
			}
			// dQ = scale·dS K ; dK += scale·dSᵀ Q
			sgemm(false, false, rb, hs, r1, scale, dS, r1, K, kvd, 0, dQ[r0*d:], d)
			sgemm(true, false, r1, hs, rb, scale, dS, r1, Q[r0*d:], d, 1, dK, kvd)
		}
	}
}
