package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// AdamW is Adam with decoupled weight decay over a flat buffer, with PyTorch
// semantics: p -= lr·wd·p; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
// p -= lr·(m/(1-β1^t)) / (sqrt(v/(1-β2^t)) + eps).
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	Step                           int
	M, V                           []float32
}

// NewAdamW returns an optimizer for n parameters.
func NewAdamW(n int, beta1, beta2, eps, wd float64) *AdamW {
	return &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: wd, M: make([]float32, n), V: make([]float32, n)}
}

// Update applies one step with learning rate lr.
func (o *AdamW) Update(params, grads []float32, lr float64) {
	if len(params) != len(o.M) || len(grads) != len(o.M) {
		panic(fmt.Sprintf("model: AdamW for %d parameters got %d params and %d grads", len(o.M), len(params), len(grads)))
	}
	o.Step++
	bc1 := 1 - math.Pow(o.Beta1, float64(o.Step))
	bc2 := 1 - math.Pow(o.Beta2, float64(o.Step))
	b1, b2 := float32(o.Beta1), float32(o.Beta2)
	decay := float32(1 - lr*o.WeightDecay)
	stepSize := float32(lr / bc1)
	sqrtBC2 := float32(math.Sqrt(bc2))
	eps := float32(o.Eps)
	t := getAdamTask()
	*t = adamTask{p: params, g: grads, m: o.M, v: o.V, b1: b1, b2: b2, decay: decay, stepSize: stepSize,
		sqrtBC2: sqrtBC2, eps: eps, fn: t.fn}
	workers.rows(len(params), 1<<14, t.fn)
	putAdamTask(t)
}

// adamTask is the argument set of one Update's row kernel, recycled so that
// Update does not allocate.
type adamTask struct {
	p, g, m, v                            []float32
	b1, b2, decay, stepSize, sqrtBC2, eps float32
	fn                                    func(part, lo, hi int)
}

var adamFree = freeList[adamTask]{init: func(t *adamTask) { t.fn = t.rows }}

func getAdamTask() *adamTask { return adamFree.get() }

func putAdamTask(t *adamTask) {
	t.p, t.g, t.m, t.v = nil, nil, nil, nil
	adamFree.put(t)
}

func (t *adamTask) rows(_, lo, hi int) {
	p, g, m, v := t.p[lo:hi], t.g[lo:hi], t.m[lo:hi], t.v[lo:hi]
	b1, b2, decay, stepSize, sqrtBC2, eps := t.b1, t.b2, t.decay, t.stepSize, t.sqrtBC2, t.eps
	for i := range p {
		gi := g[i]
		mi := b1*m[i] + (1-b1)*gi
		vi := b2*v[i] + (1-b2)*gi*gi
		m[i], v[i] = mi, vi
		denom := float32(math.Sqrt(float64(vi)))/sqrtBC2 + eps
		p[i] = p[i]*decay - stepSize*mi/denom
	}
}

const adamMagic = "dpoAdamW1"

// MarshalBinary encodes the optimizer state.
func (o *AdamW) MarshalBinary() ([]byte, error) {
	n := len(o.M)
	if len(o.V) != n {
		return nil, errors.New("model: AdamW moment buffers differ in length")
	}
	b := make([]byte, 0, len(adamMagic)+5*8+8*n)
	b = append(b, adamMagic...)
	le := binary.LittleEndian
	for _, f := range []float64{o.Beta1, o.Beta2, o.Eps, o.WeightDecay} {
		b = le.AppendUint64(b, math.Float64bits(f))
	}
	b = le.AppendUint64(b, uint64(o.Step))
	b = le.AppendUint64(b, uint64(n))
	for _, s := range [][]float32{o.M, o.V} {
		for _, v := range s {
			b = le.AppendUint32(b, math.Float32bits(v))
		}
	}
	return b, nil
}

// UnmarshalBinary decodes state written by MarshalBinary.
func (o *AdamW) UnmarshalBinary(b []byte) error {
	hdr := len(adamMagic) + 6*8
	if len(b) < hdr || string(b[:len(adamMagic)]) != adamMagic {
		return errors.New("model: not an AdamW state (bad magic or too short)")
	}
	le := binary.LittleEndian
	p := b[len(adamMagic):]
	f := func() float64 { v := math.Float64frombits(le.Uint64(p)); p = p[8:]; return v }
	beta1, beta2, eps, wd := f(), f(), f(), f()
	step := le.Uint64(p)
	n := le.Uint64(p[8:])
	p = p[16:]
	if step > math.MaxInt32 {
		return fmt.Errorf("model: AdamW state has implausible step %d", step)
	}
	if n > uint64(len(p))/8 || uint64(len(p)) != 8*n {
		return fmt.Errorf("model: AdamW state for %d parameters needs %d bytes of moments, has %d", n, 8*n, len(p))
	}
	o.Beta1, o.Beta2, o.Eps, o.WeightDecay, o.Step = beta1, beta2, eps, wd, int(step)
	o.M = make([]float32, n)
	o.V = make([]float32, n)
	for i := range o.M {
		o.M[i] = math.Float32frombits(le.Uint32(p[4*i:]))
	}
	p = p[4*n:]
	for i := range o.V {
		o.V[i] = math.Float32frombits(le.Uint32(p[4*i:]))
	}
	return nil
}

// GradNorm is the global L2 norm of grads.
func GradNorm(grads []float32) float64 {
	var s float64
	for _, g := range grads {
		s += float64(g) * float64(g)
	}
	return math.Sqrt(s)
}

// ClipGradNorm scales grads so that their global L2 norm is at most maxNorm
// (as torch.nn.utils.clip_grad_norm_, with its 1e-6 guard) and returns the
// norm before clipping.
func ClipGradNorm(grads []float32, maxNorm float64) (norm float64) {
	norm = GradNorm(grads)
	if maxNorm > 0 && norm > maxNorm {
		s := float32(maxNorm / (norm + 1e-6))
		for i := range grads {
			grads[i] *= s
		}
	}
	return norm
}
