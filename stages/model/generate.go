package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// GenOptions controls Generate.
type GenOptions struct {
	// MaxTokens bounds the number of new tokens; zero or negative
	// generates none.
	MaxTokens int
	// Temperature divides the logits before the softmax that tokens are
	// sampled from. 0 is greedy decoding (the most likely token, the lowest
	// id on ties), in which case TopP and Seed are ignored. Negative and NaN
	// are errors.
	Temperature float64
	// TopP is the nucleus-sampling threshold: with 0 < TopP < 1 tokens are
	// drawn from the smallest set of most likely tokens (ties broken towards
	// the lower id) whose probability mass at the given temperature reaches
	// TopP, renormalised. 0 (the zero value) and 1 turn it off and sample
	// from the full distribution. Values outside [0, 1] and NaN are errors.
	TopP float64
	// Seed seeds the sampler. Each call has its own generator, so the
	// tokens depend only on the model, the prompt and the options.
	Seed uint64
	// StopAtEOS ends generation after the model emits Config.EOS (when it
	// is known, >= 0). The EOS token is included in the returned tokens.
	StopAtEOS bool
}

// decoder runs one token at a time with a key/value cache.
type decoder struct {
	m                  *Model
	kc, vc             []float32 // [L, SeqLen, KVD]
	x, xn, q, k, v, ao []float32
	h1, h3, att        []float32
	logits             []float32
	rope               ropeTable
}

func newDecoder(m *Model) *decoder {
	c := &m.Config
	d, kvd, f := c.Dim, c.KVDim(), c.HiddenDim
	dec := &decoder{
		m:  m,
		kc: make([]float32, c.NLayers*c.SeqLen*kvd), vc: make([]float32, c.NLayers*c.SeqLen*kvd),
		x: make([]float32, d), xn: make([]float32, d), q: make([]float32, d), k: make([]float32, kvd),
		v: make([]float32, kvd), ao: make([]float32, d), h1: make([]float32, f), h3: make([]float32, f),
		att: make([]float32, c.SeqLen), logits: make([]float32, c.VocabSize),
	}
	dec.rope.ensure(c.SeqLen, c.HeadSize(), c.RopeTheta)
	return dec
}

// step feeds token at position pos and leaves the next-token logits in
// dec.logits.
func (dec *decoder) step(token int32, pos int) {
	c := &dec.m.Config
	lay := &dec.m.lay
	P := dec.m.Params
	d, kvd, f, hs := c.Dim, c.KVDim(), c.HiddenDim, c.HeadSize()
	group := c.NHeads / c.NKVHeads
	scale := float32(1 / math.Sqrt(float64(hs)))
	var rr [1]float32
	copy(dec.x, lay.tokEmbView(P)[int(token)*d:int(token)*d+d])
	for l := 0; l < c.NLayers; l++ {
		w := lay.layer(P, l)
		rmsnormRows(dec.xn, rr[:], dec.x, w.rmsAtt, d, 0, 1, c.NormEps)
		sgemm(false, true, 1, d, d, 1, dec.xn, d, w.wq, d, 0, dec.q, d)
		sgemm(false, true, 1, kvd, d, 1, dec.xn, d, w.wk, d, 0, dec.k, kvd)
		sgemm(false, true, 1, kvd, d, 1, dec.xn, d, w.wv, d, 0, dec.v, kvd)
		if w.bq != nil {
			addTo(dec.q, w.bq)
			addTo(dec.k, w.bk)
			addTo(dec.v, w.bv)
		}
		dec.rope.rotate(dec.q, c.NHeads, hs, pos, c.Rope, false)
		dec.rope.rotate(dec.k, c.NKVHeads, hs, pos, c.Rope, false)
		kc := dec.kc[l*c.SeqLen*kvd:]
		vc := dec.vc[l*c.SeqLen*kvd:]
		copy(kc[pos*kvd:pos*kvd+kvd], dec.k)
		copy(vc[pos*kvd:pos*kvd+kvd], dec.v)
		for h := 0; h < c.NHeads; h++ {
			g := h / group
			q := dec.q[h*hs : h*hs+hs]
			att := dec.att[:pos+1]
			sgemm(false, true, 1, pos+1, hs, scale, q, hs, kc[g*hs:], kvd, 0, att, pos+1)
			mx := att[0]
			for _, v := range att {
				mx = max(mx, v)
			}
			var sum float32
			for t, v := range att {
				e := expf(v - mx)
				att[t] = e
				sum += e
			}
			for t := range att {
				att[t] /= sum
			}
			sgemm(false, false, 1, hs, pos+1, 1, att, pos+1, vc[g*hs:], kvd, 0, dec.ao[h*hs:], hs)
		}
		sgemm(false, true, 1, d, d, 1, dec.ao, d, w.wo, d, 1, dec.x, d)
		rmsnormRows(dec.xn, rr[:], dec.x, w.rmsFFN, d, 0, 1, c.NormEps)
		sgemm(false, true, 1, f, d, 1, dec.xn, d, w.w1, d, 0, dec.h1, f)
		sgemm(false, true, 1, f, d, 1, dec.xn, d, w.w3, d, 0, dec.h3, f)
		for i, v := range dec.h1 {
			dec.h1[i] = v * sigmoid(v) * dec.h3[i]
		}
		sgemm(false, true, 1, d, f, 1, dec.h1, f, w.w2, f, 1, dec.x, d)
	}
	rmsnormRows(dec.xn, rr[:], dec.x, lay.rmsFinalView(P), d, 0, 1, c.NormEps)
	sgemm(false, true, 1, c.VocabSize, d, 1, dec.xn, d, lay.wclsView(P), d, 0, dec.logits, c.VocabSize)
}

// Generate continues prompt with up to MaxTokens new tokens and returns only
// the new tokens. Generation also stops when prompt and output together fill
// the model's context (SeqLen tokens), so that the whole sequence can be
// scored by a Runner; a prompt of exactly SeqLen tokens thus yields no
// tokens, and a longer one is an error. The result is deterministic: it
// depends only on the model, the prompt and opt.
func (m *Model) Generate(prompt []int32, opt GenOptions) ([]int32, error) {
	return m.generate(prompt, opt, nil)
}

// generate is Generate; when onStep is not nil it is called with the logits
// each new token is chosen from (a buffer that is overwritten afterwards).
func (m *Model) generate(prompt []int32, opt GenOptions, onStep func(logits []float32)) ([]int32, error) {
	c := &m.Config
	if len(prompt) == 0 {
		return nil, errors.New("model: Generate needs a non-empty prompt")
	}
	if len(prompt) > c.SeqLen {
		return nil, fmt.Errorf("model: prompt of %d tokens exceeds SeqLen %d", len(prompt), c.SeqLen)
	}
	for i, id := range prompt {
		if id < 0 || int(id) >= c.VocabSize {
			return nil, fmt.Errorf("model: prompt token %d is id %d, outside vocabulary of %d", i, id, c.VocabSize)
		}
	}
	if opt.Temperature < 0 || math.IsNaN(opt.Temperature) {
		return nil, fmt.Errorf("model: invalid temperature %v: use 0 (greedy) or a positive number", opt.Temperature)
	}
	if !(opt.TopP >= 0 && opt.TopP <= 1) {
		return nil, fmt.Errorf("model: invalid top-p %v: use a number in [0, 1] (0 and 1 turn it off)", opt.TopP)
	}
	n := min(opt.MaxTokens, c.SeqLen-len(prompt))
	if n <= 0 {
		return nil, nil
	}
	dec := newDecoder(m)
	for p, id := range prompt {
		dec.step(id, p)
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x853c49e6748fea9b))
	out := make([]int32, 0, n)
	probs := make([]float64, c.VocabSize)
	var idx []int
	pos := len(prompt)
	for {
		if onStep != nil {
			onStep(dec.logits)
		}
		var next int32
		if opt.Temperature == 0 {
			best := 0
			for i, v := range dec.logits {
				if v > dec.logits[best] {
					best = i
				}
			}
			next = int32(best)
		} else {
			mx := math.Inf(-1)
			for _, v := range dec.logits {
				mx = math.Max(mx, float64(v))
			}
			var sum float64
			for i, v := range dec.logits {
				e := math.Exp((float64(v) - mx) / opt.Temperature)
				probs[i] = e
				sum += e
			}
			for i := range probs {
				probs[i] /= sum
			}
			next = int32(sample(probs, opt.TopP, rng, &idx))
		}
		out = append(out, next)
		if opt.StopAtEOS && c.EOS >= 0 && next == c.EOS {
			break
		}
		if len(out) >= n {
			break
		}
		dec.step(next, pos)
		pos++
	}
	return out, nil
}

// sample draws from probs, restricted to the smallest set of most likely
// tokens whose mass reaches topP when 0 < topP < 1.
func sample(probs []float64, topP float64, rng *rand.Rand, idx *[]int) int {
	u := rng.Float64()
	if topP <= 0 || topP >= 1 {
		var cdf float64
		for i, p := range probs {
			cdf += p
			if u < cdf {
				return i
			}
		}
		return len(probs) - 1
	}
	ix := (*idx)[:0]
	for i := range probs {
		ix = append(ix, i)
	}
	sort.Slice(ix, func(a, b int) bool {
		if probs[ix[a]] != probs[ix[b]] {
			return probs[ix[a]] > probs[ix[b]]
		}
		return ix[a] < ix[b]
	})
	*idx = ix
	var mass float64
	last := len(ix) - 1
	for i, j := range ix {
		mass += probs[j]
		if mass >= topP {
			last = i
			break
		}
	}
	u *= mass
	var cdf float64
	for _, j := range ix[:last+1] {
		cdf += probs[j]
		if u < cdf {
			return j
		}
	}
	return ix[last]
}
