package model

import (
	"errors"
	"fmt"
)

// RopeStyle selects how rotary position embeddings pair up the dimensions of
// each attention head.
type RopeStyle int

const (
	// RopeAdjacent rotates adjacent pairs (2i, 2i+1), as llama2.c does.
	RopeAdjacent RopeStyle = iota
	// RopeHalf rotates pairs (i, i+headSize/2), as Hugging Face's rotate_half.
	RopeHalf
)

func (r RopeStyle) String() string {
	switch r {
	case RopeAdjacent:
		return "adjacent"
	case RopeHalf:
		return "half"
	}
	return fmt.Sprintf("RopeStyle(%d)", int(r))
}

// Config describes a Llama-family decoder.
type Config struct {
	Dim, HiddenDim, NLayers, NHeads, NKVHeads, VocabSize, SeqLen int

	NormEps        float32   // RMSNorm eps (1e-5 for llama2.c)
	RopeTheta      float32   // RoPE base, 10000 by default
	Rope           RopeStyle // pairing of rotary dimensions
	TiedEmbeddings bool      // LM head shares the token embedding
	QKVBias        bool      // Qwen2-style q/k/v biases
	BOS, EOS       int32     // token ids, -1 when unknown (llama2.c: 1 and 2)
}

// HeadSize is Dim/NHeads.
func (c Config) HeadSize() int { return c.Dim / c.NHeads }

// KVDim is the width of the key and value projections.
func (c Config) KVDim() int { return c.NKVHeads * c.HeadSize() }

// maxDim bounds every dimension so that size computations cannot overflow.
const maxDim = 1 << 24

// Validate reports whether the configuration describes a model we can build.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"dim", c.Dim}, {"hidden_dim", c.HiddenDim}, {"n_layers", c.NLayers}, {"n_heads", c.NHeads},
		{"n_kv_heads", c.NKVHeads}, {"vocab_size", c.VocabSize}, {"seq_len", c.SeqLen}} {
		if f.v <= 0 {
			return fmt.Errorf("model config: %s must be positive, got %d", f.name, f.v)
		}
		if f.v > maxDim {
			return fmt.Errorf("model config: %s = %d is too large", f.name, f.v)
		}
	}
	if c.Dim%c.NHeads != 0 {
		return fmt.Errorf("model config: dim %d is not a multiple of n_heads %d", c.Dim, c.NHeads)
	}
	if c.NKVHeads > c.NHeads || c.NHeads%c.NKVHeads != 0 {
		return fmt.Errorf("model config: n_heads %d is not a multiple of n_kv_heads %d", c.NHeads, c.NKVHeads)
	}
	if c.HeadSize()%2 != 0 {
		return fmt.Errorf("model config: head size %d must be even for RoPE", c.HeadSize())
	}
	if c.Rope != RopeAdjacent && c.Rope != RopeHalf {
		return fmt.Errorf("model config: unknown rope style %d", int(c.Rope))
	}
	if !(c.NormEps > 0) {
		return errors.New("model config: norm eps must be positive")
	}
	if !(c.RopeTheta > 0) {
		return errors.New("model config: rope theta must be positive")
	}
	if int64(c.NumParams()) > 1<<40 {
		return errors.New("model config: too many parameters")
	}
	if c.BOS >= int32(c.VocabSize) || c.EOS >= int32(c.VocabSize) {
		return fmt.Errorf("model config: BOS %d / EOS %d outside vocabulary of %d", c.BOS, c.EOS, c.VocabSize)
	}
	return nil
}

// NumParams is the number of float32 values in the flat parameter buffer.
func (c Config) NumParams() int {
	return newLayout(c).total
}

// layout gives the offset of every tensor in the flat parameter buffer. The
// order is: token embedding, then for every tensor kind all layers stacked
// (as llama2.c does), then the final norm and, when untied, the classifier.
type layout struct {
	tokEmb                  int // [V, D]
	rmsAtt                  int // [L, D]
	wq, wk, wv, wo          int // [L, D, D], [L, KVD, D], [L, KVD, D], [L, D, D]
	bq, bk, bv              int // [L, D], [L, KVD], [L, KVD] (only with QKVBias)
	rmsFFN                  int // [L, D]
	w1, w2, w3              int // [L, F, D], [L, D, F], [L, F, D]
	rmsFinal                int // [D]
	wcls                    int // [V, D]; equals tokEmb when tied
	total                   int
	d, kvd, f, v, nl        int
	sizeWq, sizeWkv, sizeW1 int
}

func newLayout(c Config) layout {
	var l layout
	d, f, v, nl := c.Dim, c.HiddenDim, c.VocabSize, c.NLayers
	kvd := 0
	if c.NHeads > 0 {
		kvd = c.NKVHeads * (c.Dim / c.NHeads)
	}
	l.d, l.kvd, l.f, l.v, l.nl = d, kvd, f, v, nl
	l.sizeWq, l.sizeWkv, l.sizeW1 = d*d, kvd*d, f*d
	off := 0
	take := func(n int) int { o := off; off += n; return o }
	l.tokEmb = take(v * d)
	l.rmsAtt = take(nl * d)
	l.wq = take(nl * d * d)
	l.wk = take(nl * kvd * d)
	l.wv = take(nl * kvd * d)
	l.wo = take(nl * d * d)
	if c.QKVBias {
		l.bq = take(nl * d)
		l.bk = take(nl * kvd)
		l.bv = take(nl * kvd)
	} else {
		l.bq, l.bk, l.bv = -1, -1, -1
	}
	l.rmsFFN = take(nl * d)
	l.w1 = take(nl * f * d)
	l.w2 = take(nl * d * f)
	l.w3 = take(nl * f * d)
	l.rmsFinal = take(d)
	if c.TiedEmbeddings {
		l.wcls = l.tokEmb
	} else {
		l.wcls = take(v * d)
	}
	l.total = off
	return l
}
