package model

import (
	"errors"
	"fmt"
	"math"
)

// Seq is one sequence to score. Targets are IDs[1:]; position p predicts
// IDs[p+1]. Completion tokens are IDs[Start:]; only they are scored
// (Start >= 1).
type Seq struct {
	IDs   []int32
	Start int
}

// Scores are the results of scoring a batch of sequences.
type Scores struct {
	Logp       []float64   // per seq: sum of log p(IDs[t] | IDs[:t]) over t in [Start, len)
	Tokens     []int       // per seq: number of completion tokens
	TokenLogps [][]float32 // per seq: per-token log-probs of the completion tokens
	LogitSum   []float64   // per seq: sum of raw logits over completion positions and the vocabulary
	// TokenLogSumSq holds, per seq and completion token, log Σᵥ pᵥ² of the
	// predicted distribution (TRL's logsumexp(2·log_softmax(logits)), the
	// per-token term of WPO's weight). Nil unless SetLogSumSq(true).
	TokenLogSumSq [][]float32
}

// headChunk is the number of token rows whose logits are materialised at once.
const headChunk = 128

// attBlock is the row block of the blocked causal attention.
const attBlock = 64

// layerActs are the activations of one layer that backward needs.
type layerActs struct {
	xn, r, q, k, v, ao, x2, xn2, r2, h1, h3, g, att []float32
}

// Runner holds the activation arena for a model. Buffers are sized for the
// largest batch seen and reused, so steady-state steps do not allocate.
//
// Sequences are packed back to back without padding (equivalent to
// right-padding with masked positions, without computing the padding), so
// a sequence's scores do not depend on the batch it is in.
//
// A Runner is not safe for concurrent use; different Runners (even of the
// same model) are.
type Runner struct {
	m *Model

	// batch
	nseq     int
	offs     []int // row offset of each sequence, len nseq+1
	attOffs  []int // offset of each sequence's attention probabilities
	pos      []int32
	ids      []int32
	headRow  []int32 // rows that predict a completion token
	headTgt  []int32
	headSeq  []int32
	headTok  []int32 // index of the token within its sequence's completion
	n        int
	attN     int
	kept     bool // last pass kept activations for Backward
	nlayers  int  // layers with kept activations
	scoresTL [][]float32
	logSumSq bool // also report Scores.TokenLogSumSq

	// arena
	rowCap, attCap int
	resid          [][]float32 // L+1 residual streams [N, D]
	acts           []layerActs
	xnf, rf        []float32
	rope           ropeTable

	// backward scratch
	dx, dxn, dq, dk, dv, dao, dh1, dh3 []float32
	// per-worker scratch
	logits, xc, dxc [][]float32
	expBuf          [][]float32
	dS              [][]float32
	dwRMS           [][]float32
	dWcls           [][]float32
	dTok            []float32
	rowLogitSum     []float64
	rowLogp         []float64
	rowLse          []float32
	probs           []float32 // kept LM-head logits of every head row, when within keepLogitsMax
	xh, dxh         []float32 // gathered final-norm rows at head rows, and their gradient
	logitsKept      bool

	// arguments of the pooled kernels, set before each pool call, and the
	// kernels as function values made once, so that steps do not allocate
	cur kargs
	fn  kfuncs
}

type kargs struct {
	a                        *layerActs
	w                        weights
	rmsOut, rmsR, rmsX       []float32
	rmsW, rmsDy, rmsDx       []float32
	sc                       Scores
	dTok                     [][]float32
	dq, dk, dv, dao, dg, dh1 []float32
}

type kfuncs struct {
	rms, qkv, swiglu, rmsBack, swigluBack, ropeBack, headGrad func(part, lo, hi int)
	attF, headF, attB                                         func(worker, i int)
	headB                                                     func(part, lo, hi int)
}

// keepLogitsMax bounds (in floats) the LM-head logits Forward keeps for
// Backward; larger batches recompute them chunk by chunk.
var keepLogitsMax = 64 << 20

func (r *Runner) initFuncs() {
	if r.fn.rms != nil {
		return
	}
	r.fn = kfuncs{
		rms: r.rmsRows, qkv: r.qkvRows, swiglu: r.swigluRows, rmsBack: r.rmsBackRows,
		swigluBack: r.swigluBackRows, ropeBack: r.ropeBackRows, headGrad: r.headGradRows,
		attF: r.attentionForwardTask, headF: r.headForwardChunk, attB: r.attentionBackwardTask, headB: r.headBackwardChunk,
	}
}

// NewRunner returns a runner for m.
func NewRunner(m *Model) *Runner {
	return &Runner{m: m}
}

// SetLogSumSq turns on (or off) the per-token log Σᵥ pᵥ² of Forward and
// Score (Scores.TokenLogSumSq). It costs one more pass over each row's
// probabilities, and changes no other output.
func (r *Runner) SetLogSumSq(on bool) { r.logSumSq = on }

// Score runs the forward pass and returns the scores, keeping only what is
// needed for the next layer.
func (r *Runner) Score(seqs []Seq) (Scores, error) { return r.forward(seqs, false) }

// Forward runs the forward pass keeping the activations Backward needs.
func (r *Runner) Forward(seqs []Seq) (Scores, error) { return r.forward(seqs, true) }

func (r *Runner) setBatch(seqs []Seq) error {
	cfg := &r.m.Config
	if len(seqs) == 0 {
		return errors.New("model: empty batch")
	}
	r.nseq = len(seqs)
	r.offs = r.offs[:0]
	r.attOffs = r.attOffs[:0]
	n, attN, nh := 0, 0, 0
	for i, s := range seqs {
		if len(s.IDs) < 2 {
			return fmt.Errorf("model: seq %d has %d tokens, need at least 2", i, len(s.IDs))
		}
		if s.Start < 1 || s.Start > len(s.IDs) {
			return fmt.Errorf("model: seq %d has Start %d outside [1, %d]", i, s.Start, len(s.IDs))
		}
		if len(s.IDs) > cfg.SeqLen {
			return fmt.Errorf("model: seq %d has %d tokens, more than the model's SeqLen %d", i, len(s.IDs), cfg.SeqLen)
		}
		for j, id := range s.IDs {
			if id < 0 || int(id) >= cfg.VocabSize {
				return fmt.Errorf("model: seq %d token %d is id %d, outside vocabulary of %d", i, j, id, cfg.VocabSize)
			}
		}
		r.offs = append(r.offs, n)
		r.attOffs = append(r.attOffs, attN)
		t := len(s.IDs) - 1 // the last token predicts nothing
		n += t
		attN += cfg.NHeads * t * t
		nh += len(s.IDs) - s.Start
	}
	r.offs = append(r.offs, n)
	r.attOffs = append(r.attOffs, attN)
	r.n, r.attN = n, attN
	r.pos = grow(r.pos, n)
	r.ids = grow(r.ids, n)
	r.headRow = r.headRow[:0]
	r.headTgt = r.headTgt[:0]
	r.headSeq = r.headSeq[:0]
	r.headTok = r.headTok[:0]
	for i, s := range seqs {
		o := r.offs[i]
		for p := 0; p < len(s.IDs)-1; p++ {
			r.pos[o+p] = int32(p)
			r.ids[o+p] = s.IDs[p]
		}
		for t := s.Start; t < len(s.IDs); t++ {
			r.headRow = append(r.headRow, int32(o+t-1))
			r.headTgt = append(r.headTgt, s.IDs[t])
			r.headSeq = append(r.headSeq, int32(i))
			r.headTok = append(r.headTok, int32(t-s.Start))
		}
	}
	return nil
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// ensure sizes the arena for the current batch; layers is how many layers
// keep activations.
func (r *Runner) ensure(layers int) {
	cfg := &r.m.Config
	d, kvd, f, v := cfg.Dim, cfg.KVDim(), cfg.HiddenDim, cfg.VocabSize
	nw := workers.n
	if r.n > r.rowCap || r.attN > r.attCap {
		r.rowCap = max(r.rowCap, r.n)
		r.attCap = max(r.attCap, r.attN)
		// drop everything; it is reallocated below at the new size
		r.resid = nil
		r.acts = nil
		r.dx = nil
	}
	nc, ac := r.rowCap, r.attCap
	if r.resid == nil {
		r.resid = make([][]float32, cfg.NLayers+1)
		for i := range r.resid {
			r.resid[i] = make([]float32, nc*d)
		}
		r.xnf = make([]float32, nc*d)
		r.rf = make([]float32, nc)
		r.acts = make([]layerActs, cfg.NLayers)
	}
	for i := 0; i < layers; i++ {
		a := &r.acts[i]
		if a.xn != nil {
			continue
		}
		a.xn = make([]float32, nc*d)
		a.r = make([]float32, nc)
		a.q = make([]float32, nc*d)
		a.k = make([]float32, nc*kvd)
		a.v = make([]float32, nc*kvd)
		a.ao = make([]float32, nc*d)
		a.x2 = make([]float32, nc*d)
		a.xn2 = make([]float32, nc*d)
		a.r2 = make([]float32, nc)
		a.h1 = make([]float32, nc*f)
		a.h3 = make([]float32, nc*f)
		a.g = make([]float32, nc*f)
		a.att = make([]float32, ac)
	}
	if r.logits == nil {
		r.logits = make([][]float32, nw)
		r.xc = make([][]float32, nw)
		r.dxc = make([][]float32, nw)
		r.dS = make([][]float32, nw)
		r.dwRMS = make([][]float32, nw)
		r.expBuf = make([][]float32, nw)
		for w := 0; w < nw; w++ {
			r.logits[w] = make([]float32, headChunk*v)
			r.xc[w] = make([]float32, headChunk*d)
			r.dxc[w] = make([]float32, headChunk*d)
			r.dwRMS[w] = make([]float32, d)
			r.expBuf[w] = make([]float32, v)
		}
	}
	r.xh = grow(r.xh, len(r.headRow)*d)
	r.rope.ensure(cfg.SeqLen, cfg.HeadSize(), cfg.RopeTheta)
	r.initFuncs()
}

func (r *Runner) ensureBackward() {
	cfg := &r.m.Config
	d, kvd, f, v := cfg.Dim, cfg.KVDim(), cfg.HiddenDim, cfg.VocabSize
	nc := r.rowCap
	if r.dx == nil {
		r.dx = make([]float32, nc*d)
		r.dxn = make([]float32, nc*d)
		r.dq = make([]float32, nc*d)
		r.dk = make([]float32, nc*kvd)
		r.dv = make([]float32, nc*kvd)
		r.dao = make([]float32, nc*d)
		r.dh1 = make([]float32, nc*f)
		r.dh3 = make([]float32, nc*f)
	}
	maxT := 0
	for i := 0; i < r.nseq; i++ {
		maxT = max(maxT, r.offs[i+1]-r.offs[i])
	}
	for w := range r.dS {
		if len(r.dS[w]) < attBlock*maxT {
			r.dS[w] = make([]float32, attBlock*cfg.SeqLen)
		}
	}
	if r.dWcls == nil {
		r.dWcls = make([][]float32, workers.n)
		for w := range r.dWcls {
			r.dWcls[w] = make([]float32, v*d)
		}
	}
}

func (r *Runner) forward(seqs []Seq, keep bool) (Scores, error) {
	r.kept = false
	if err := r.setBatch(seqs); err != nil {
		return Scores{}, err
	}
	cfg := &r.m.Config
	nl := cfg.NLayers
	layers := 1
	if keep {
		layers = nl
	}
	r.ensure(layers)
	d := cfg.Dim
	n := r.n
	lay := &r.m.lay
	P := r.m.Params

	// embedding
	emb := lay.tokEmbView(P)
	x := r.resid[0][:n*d]
	for i := 0; i < n; i++ {
		id := int(r.ids[i])
		copy(x[i*d:i*d+d], emb[id*d:id*d+d])
	}
	for l := 0; l < nl; l++ {
		a := &r.acts[0]
		if keep {
			a = &r.acts[l]
		}
		w := lay.layer(P, l)
		r.layerForward(a, w, r.resid[l], r.resid[l+1])
	}
	r.rmsnorm(r.xnf, r.rf, r.resid[nl], lay.rmsFinalView(P))
	sc := r.newScores(seqs)
	r.headForward(sc, keep)
	r.kept = keep
	return sc, nil
}

func (r *Runner) newScores(seqs []Seq) Scores {
	ns := len(seqs)
	sc := Scores{
		Logp:     make([]float64, ns),
		Tokens:   make([]int, ns),
		LogitSum: make([]float64, ns),
	}
	total := 0
	for _, s := range seqs {
		total += len(s.IDs) - s.Start
	}
	// with TokenLogSumSq, it shares the allocations of TokenLogps (the
	// second half of each), so that the Scores stay five allocations
	nb := 1
	if r.logSumSq {
		nb = 2
	}
	rows := make([][]float32, nb*ns)
	buf := make([]float32, nb*total)
	sc.TokenLogps = rows[:ns:ns]
	if r.logSumSq {
		sc.TokenLogSumSq = rows[ns:]
	}
	for i, s := range seqs {
		t := len(s.IDs) - s.Start
		sc.Tokens[i] = t
		sc.TokenLogps[i] = buf[:t:t]
		buf = buf[t:]
	}
	for i := range sc.TokenLogSumSq {
		t := sc.Tokens[i]
		sc.TokenLogSumSq[i] = buf[:t:t]
		buf = buf[t:]
	}
	return sc
}

// rowsPerPart is the smallest row range worth a pool part for row-wise
// kernels of width about Dim.
const rowsPerPart = 16

// rmsnorm normalises the n rows of x into out (inverse RMS into inv).
func (r *Runner) rmsnorm(out, inv, x, w []float32) {
	r.cur.rmsOut, r.cur.rmsR, r.cur.rmsX, r.cur.rmsW = out, inv, x, w
	workers.rows(r.n, rowsPerPart, r.fn.rms)
}

func (r *Runner) rmsRows(_, lo, hi int) {
	c := &r.cur
	rmsnormRows(c.rmsOut, c.rmsR, c.rmsX, c.rmsW, r.m.Config.Dim, lo, hi, r.m.Config.NormEps)
}

// qkvRows adds the biases and applies RoPE to q and k.
func (r *Runner) qkvRows(_, lo, hi int) {
	cfg := &r.m.Config
	d, kvd, hs := cfg.Dim, cfg.KVDim(), cfg.HeadSize()
	a, w := r.cur.a, &r.cur.w
	for i := lo; i < hi; i++ {
		q := a.q[i*d : i*d+d]
		k := a.k[i*kvd : i*kvd+kvd]
		if w.bq != nil {
			addTo(q, w.bq)
			addTo(k, w.bk)
			addTo(a.v[i*kvd:i*kvd+kvd], w.bv)
		}
		p := int(r.pos[i])
		r.rope.rotate(q, cfg.NHeads, hs, p, cfg.Rope, false)
		r.rope.rotate(k, cfg.NKVHeads, hs, p, cfg.Rope, false)
	}
}

func (r *Runner) swigluRows(_, lo, hi int) {
	a := r.cur.a
	h1, h3, g := a.h1[lo:hi], a.h3[lo:hi], a.g[lo:hi]
	expAffine(g, h1, -1, 0) // exp(-h1)
	for i, v := range h1 {
		g[i] = v * (1 / (1 + g[i])) * h3[i]
	}
}

func (r *Runner) layerForward(a *layerActs, w weights, x, xout []float32) {
	cfg := &r.m.Config
	d, kvd, f := cfg.Dim, cfg.KVDim(), cfg.HiddenDim
	n := r.n
	r.cur.a, r.cur.w = a, w
	r.rmsnorm(a.xn, a.r, x, w.rmsAtt)
	rowGemm(n, d, d, a.xn, d, w.wq, d, 0, a.q, d)
	rowGemm(n, kvd, d, a.xn, d, w.wk, d, 0, a.k, kvd)
	rowGemm(n, kvd, d, a.xn, d, w.wv, d, 0, a.v, kvd)
	workers.rows(n, rowsPerPart, r.fn.qkv)
	workers.run(r.nseq*cfg.NKVHeads, r.fn.attF)
	copy(a.x2[:n*d], x[:n*d])
	rowGemm(n, d, d, a.ao, d, w.wo, d, 1, a.x2, d)
	r.rmsnorm(a.xn2, a.r2, a.x2, w.rmsFFN)
	rowGemm(n, f, d, a.xn2, d, w.w1, d, 0, a.h1, f)
	rowGemm(n, f, d, a.xn2, d, w.w3, d, 0, a.h3, f)
	workers.rows(n*f, 4096, r.fn.swiglu)
	copy(xout[:n*d], a.x2[:n*d])
	rowGemm(n, d, f, a.g, f, w.w2, f, 1, xout, d)
}

func addTo(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

// attentionForwardTask computes softmax(QKᵀ/√hs)V with a causal mask for
// one sequence and KV head (all the query heads of its group), in row
// blocks that only touch the causal part.
func (r *Runner) attentionForwardTask(_, task int) {
	cfg := &r.m.Config
	a := r.cur.a
	d, kvd, hs := cfg.Dim, cfg.KVDim(), cfg.HeadSize()
	group := cfg.NHeads / cfg.NKVHeads
	scale := float32(1 / math.Sqrt(float64(hs)))
	s, g := task/cfg.NKVHeads, task%cfg.NKVHeads
	o := r.offs[s]
	T := r.offs[s+1] - o
	K := a.k[o*kvd+g*hs:]
	V := a.v[o*kvd+g*hs:]
	for h := g * group; h < (g+1)*group; h++ {
		Q := a.q[o*d+h*hs:]
		O := a.ao[o*d+h*hs:]
		P := a.att[r.attOffs[s]+h*T*T:]
		for r0 := 0; r0 < T; r0 += attBlock {
			r1 := min(r0+attBlock, T)
			sgemm(false, true, r1-r0, r1, hs, scale, Q[r0*d:], d, K, kvd, 0, P[r0*T:], T)
			for i := r0; i < r1; i++ {
				softmaxCausal(P[i*T:i*T+r1], i+1)
			}
			sgemm(false, false, r1-r0, hs, r1, 1, P[r0*T:], T, V, kvd, 0, O[r0*d:], d)
		}
	}
}

// softmaxCausal replaces row[:n] by its softmax and zeroes row[n:].
func softmaxCausal(row []float32, n int) {
	z := row[:n]
	mx := z[0]
	for _, v := range z[1:] {
		if v > mx {
			mx = v
		}
	}
	sum := expAffine(z, z, 1, -mx)
	inv := 1 / sum
	for j := range z {
		z[j] *= inv
	}
	clear(row[n:])
}

// headForward computes log-softmax of the LM head at the rows that predict a
// completion token, headChunk rows at a time. With keep and a small enough
// batch the logits are kept for Backward.
func (r *Runner) headForward(sc Scores, keep bool) {
	cfg := &r.m.Config
	d, v := cfg.Dim, cfg.VocabSize
	nh := len(r.headRow)
	r.rowLogitSum = grow(r.rowLogitSum, nh)
	r.rowLogp = grow(r.rowLogp, nh)
	r.rowLse = grow(r.rowLse, nh)
	r.logitsKept = keep && nh*v <= keepLogitsMax
	if r.logitsKept {
		r.probs = grow(r.probs, nh*v)
	}
	for k := 0; k < nh; k++ {
		row := int(r.headRow[k])
		copy(r.xh[k*d:k*d+d], r.xnf[row*d:row*d+d])
	}
	r.cur.sc = sc
	workers.run((nh+headChunk-1)/headChunk, r.fn.headF)
	rls, rlp := r.rowLogitSum, r.rowLogp
	for k := 0; k < nh; k++ {
		s := r.headSeq[k]
		sc.Logp[s] += rlp[k]
		sc.LogitSum[s] += rls[k]
	}
	r.cur.sc = Scores{}
}

func (r *Runner) headForwardChunk(w, c int) {
	cfg := &r.m.Config
	d, v := cfg.Dim, cfg.VocabSize
	wcls := r.m.lay.wclsView(r.m.Params)
	nh := len(r.headRow)
	r0 := c * headChunk
	r1 := min(r0+headChunk, nh)
	m := r1 - r0
	// every chunk is a full headChunk rows (the last one padded), so that a
	// row's logits do not depend on the batch
	lg := r.logits[w]
	xc := r.xh[r0*d:]
	if m < headChunk {
		xc = r.xc[w]
		copy(xc, r.xh[r0*d:r1*d])
		clear(xc[m*d:])
	}
	if r.logitsKept && m == headChunk {
		lg = r.probs[r0*v:]
	}
	sgemm(false, true, headChunk, v, d, 1, xc, d, wcls, d, 0, lg, v)
	if r.logitsKept && m < headChunk {
		copy(r.probs[r0*v:r1*v], lg)
	}
	sc := &r.cur.sc
	for i := 0; i < m; i++ {
		z := lg[i*v : i*v+v]
		mx, s, sum := expSums(z, r.expBuf[w])
		lse := float64(mx) + math.Log(s)
		k := r0 + i
		lp := float64(z[r.headTgt[k]]) - lse
		sc.TokenLogps[r.headSeq[k]][r.headTok[k]] = float32(lp)
		if sc.TokenLogSumSq != nil {
			sc.TokenLogSumSq[r.headSeq[k]][r.headTok[k]] = float32(logSumSquares(r.expBuf[w][:v], s))
		}
		r.rowLogitSum[k] = sum
		r.rowLogp[k] = lp
		r.rowLse[k] = float32(lse)
	}
}

// expSums sets buf[i] = exp(z[i] − mx) for mx = max(z) and returns mx,
// s = Σ buf (so that log Σ exp(z) = mx + log s) and Σ z, the sums in
// float64 and in index order.
func expSums(z, buf []float32) (mx float32, s, sum float64) {
	mx = z[0]
	for _, x := range z[1:] {
		if x > mx {
			mx = x
		}
	}
	buf = buf[:len(z)]
	expAffine(buf, z, 1, -mx)
	for i, x := range z {
		s += float64(buf[i])
		sum += float64(x)
	}
	return mx, s, sum
}

// logSumSquares returns log Σᵥ pᵥ² of p = softmax(z), given e = exp(z − max z)
// and s = Σ e from expSums: Σ p² = Σ e² / s². Every e is in (0, 1] and one
// is 1, so Σ e² is in [1, len(z)] and neither sum can overflow or vanish.
// The sum is in float64 and in index order.
func logSumSquares(e []float32, s float64) float64 {
	var q float64
	for _, x := range e {
		q += float64(x) * float64(x)
	}
	return math.Log(q) - 2*math.Log(s)
}
