// Package model is a Llama-family causal language model written as explicit
// forward and backward kernels over flat float32 buffers.
//
// All parameters live in one flat buffer (Model.Params) with a matching
// gradient buffer (Model.Grads). A Runner owns the activation arena and runs
// batched forward passes that return per-token log-probabilities of the
// completion tokens, and backward passes that accumulate parameter gradients
// from d(loss)/d(token log-prob). Matrix products go through BLAS sgemm
// (gonum.org/v1/gonum/blas/blas32): the pure-Go gonum implementation by
// default, or OpenBLAS through gonum.org/v1/netlib with the build tag
// "openblas".
//
// # Selecting OpenBLAS
//
// Build with -tags openblas. The tagged file blas_openblas.go carries
// "#cgo LDFLAGS: -lopenblas", so nothing else is needed when libopenblas is
// on the default linker path (Debian: apt-get install libopenblas-dev). For
// another location pass CGO_LDFLAGS="-L/path/to/lib" as usual. OpenBLAS is
// set to a single thread at init; this package splits large products across
// GOMAXPROCS goroutines itself, so no BLAS threads spin between calls.
package model

import (
	"math"
	"math/rand/v2"
)

// Model holds a configuration and its parameters.
type Model struct {
	Config Config
	Params []float32 // all parameters in one flat buffer
	Grads  []float32 // same layout; gradients accumulate here

	lay layout
}

func newModel(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lay := newLayout(cfg)
	return &Model{Config: cfg, Params: make([]float32, lay.total), Grads: make([]float32, lay.total), lay: lay}, nil
}

// New builds a model with seeded random weights: normal with std 0.02, the
// residual output projections (wo, w2) scaled by 1/sqrt(2·NLayers) as in
// GPT-2, biases zero and norm weights one.
func New(cfg Config, seed uint64) (*Model, error) {
	m, err := newModel(cfg)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	l := m.lay
	fill := func(off, n int, std float64) {
		p := m.Params[off : off+n]
		for i := range p {
			p[i] = float32(rng.NormFloat64() * std)
		}
	}
	ones := func(off, n int) {
		p := m.Params[off : off+n]
		for i := range p {
			p[i] = 1
		}
	}
	nl := cfg.NLayers
	resid := 0.02 / math.Sqrt(2*float64(nl))
	fill(l.tokEmb, l.v*l.d, 0.02)
	ones(l.rmsAtt, nl*l.d)
	fill(l.wq, nl*l.sizeWq, 0.02)
	fill(l.wk, nl*l.sizeWkv, 0.02)
	fill(l.wv, nl*l.sizeWkv, 0.02)
	fill(l.wo, nl*l.sizeWq, resid)
	ones(l.rmsFFN, nl*l.d)
	fill(l.w1, nl*l.sizeW1, 0.02)
	fill(l.w2, nl*l.sizeW1, resid)
	fill(l.w3, nl*l.sizeW1, 0.02)
	ones(l.rmsFinal, l.d)
	if !cfg.TiedEmbeddings {
		fill(l.wcls, l.v*l.d, 0.02)
	}
	return m, nil
}

// Clone returns a deep copy of the model (parameters and gradients).
func (m *Model) Clone() *Model {
	c := *m
	c.Params = append([]float32(nil), m.Params...)
	c.Grads = append([]float32(nil), m.Grads...)
	return &c
}

// ZeroGrad clears the gradient buffer.
func (m *Model) ZeroGrad() { clear(m.Grads) }

// weights are views of one layer's tensors in a flat buffer (parameters or
// gradients).
type weights struct {
	rmsAtt, wq, wk, wv, wo, bq, bk, bv, rmsFFN, w1, w2, w3 []float32
}

func (l *layout) layer(buf []float32, i int) weights {
	d, kvd, f := l.d, l.kvd, l.f
	w := weights{
		rmsAtt: buf[l.rmsAtt+i*d : l.rmsAtt+(i+1)*d],
		wq:     buf[l.wq+i*l.sizeWq : l.wq+(i+1)*l.sizeWq],
		wk:     buf[l.wk+i*l.sizeWkv : l.wk+(i+1)*l.sizeWkv],
		wv:     buf[l.wv+i*l.sizeWkv : l.wv+(i+1)*l.sizeWkv],
		wo:     buf[l.wo+i*l.sizeWq : l.wo+(i+1)*l.sizeWq],
		rmsFFN: buf[l.rmsFFN+i*d : l.rmsFFN+(i+1)*d],
		w1:     buf[l.w1+i*l.sizeW1 : l.w1+(i+1)*l.sizeW1],
		w2:     buf[l.w2+i*l.sizeW1 : l.w2+(i+1)*l.sizeW1],
		w3:     buf[l.w3+i*l.sizeW1 : l.w3+(i+1)*l.sizeW1],
	}
	if l.bq >= 0 {
		w.bq = buf[l.bq+i*d : l.bq+(i+1)*d]
		w.bk = buf[l.bk+i*kvd : l.bk+(i+1)*kvd]
		w.bv = buf[l.bv+i*kvd : l.bv+(i+1)*kvd]
	}
	_ = f
	return w
}

func (l *layout) tokEmbView(buf []float32) []float32 { return buf[l.tokEmb : l.tokEmb+l.v*l.d] }
func (l *layout) wclsView(buf []float32) []float32   { return buf[l.wcls : l.wcls+l.v*l.d] }
func (l *layout) rmsFinalView(buf []float32) []float32 {
	return buf[l.rmsFinal : l.rmsFinal+l.d]
}
