package model

import (
	"math"
	"testing"
)

// TestBackwardIsDeterministic: the DPO stage promises bit-identical reruns
// with the same seed, so gradients must not depend on how the worker pool
// schedules work. Partial sums must be combined in a fixed order.
func TestBackwardIsDeterministic(t *testing.T) {
	cfg := Config{Dim: 64, HiddenDim: 172, NLayers: 2, NHeads: 8, NKVHeads: 4, VocabSize: 512, SeqLen: 128,
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeAdjacent, TiedEmbeddings: true, BOS: 1, EOS: 2}
	m, err := New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]Seq, 16)
	for i := range seqs {
		ids := make([]int32, 96)
		for j := range ids {
			ids[j] = int32((i*131 + j*17) % cfg.VocabSize)
		}
		seqs[i] = Seq{IDs: ids, Start: 8}
	}
	var first []float32
	for run := 0; run < 6; run++ {
		r := NewRunner(m)
		m.ZeroGrad()
		s, err := r.Forward(seqs)
		if err != nil {
			t.Fatal(err)
		}
		d := make([]float64, len(seqs))
		for i := range d {
			d[i] = float64(i%3) - 1
		}
		if err := r.Backward(UniformTokenGrads(s, d)); err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = append([]float32(nil), m.Grads...)
			continue
		}
		for i, g := range m.Grads {
			if math.Float32bits(g) != math.Float32bits(first[i]) {
				t.Fatalf("run %d: gradient %d is %v, first run gave %v: backward depends on scheduling", run, i, g, first[i])
			}
		}
	}
}

// TestScoreEqualsForward: the reference stage scores with Score and the DPO
// stage trains with Forward; at step 0 the policy's log-probs must equal the
// cached reference ones exactly, so both paths must compute bit for bit the
// same values, whatever the batch.
func TestScoreEqualsForward(t *testing.T) {
	cfg := Config{Dim: 64, HiddenDim: 172, NLayers: 2, NHeads: 8, NKVHeads: 4, VocabSize: 512, SeqLen: 128,
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeAdjacent, TiedEmbeddings: true, BOS: 1, EOS: 2}
	m, err := New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]Seq, 12)
	for i := range seqs {
		ids := make([]int32, 20+i*7)
		for j := range ids {
			ids[j] = int32((i*37 + j*11) % cfg.VocabSize)
		}
		seqs[i] = Seq{IDs: ids, Start: 3 + i%5}
	}
	a, err := NewRunner(m).Score(seqs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRunner(m).Forward(seqs)
	if err != nil {
		t.Fatal(err)
	}
	// Scoring in other batches (as bucketing does) must not change a value.
	c, err := NewRunner(m).Score(seqs[5:7])
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		if math.Float64bits(a.Logp[i]) != math.Float64bits(b.Logp[i]) {
			t.Fatalf("seq %d: Score %v, Forward %v", i, a.Logp[i], b.Logp[i])
		}
		for j := range a.TokenLogps[i] {
			if math.Float32bits(a.TokenLogps[i][j]) != math.Float32bits(b.TokenLogps[i][j]) {
				t.Fatalf("seq %d token %d: Score %v, Forward %v", i, j, a.TokenLogps[i][j], b.TokenLogps[i][j])
			}
		}
	}
	for i := 0; i < 2; i++ {
		if math.Float64bits(c.Logp[i]) != math.Float64bits(a.Logp[5+i]) {
			t.Fatalf("seq %d alone in a smaller batch: %v, in the full batch %v", 5+i, c.Logp[i], a.Logp[5+i])
		}
	}
}

// TestTinyBatchesAreBatchInvariant: a short sequence scored alone and in a
// batch must give bit-identical log-probs, with either BLAS. (OpenBLAS picks
// other kernels for small matrices, so row blocks must not depend on the
// batch.)
func TestTinyBatchesAreBatchInvariant(t *testing.T) {
	cfg := Config{Dim: 16, HiddenDim: 40, NLayers: 2, NHeads: 4, NKVHeads: 2, VocabSize: 40, SeqLen: 64,
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeAdjacent, TiedEmbeddings: true, BOS: 1, EOS: 2}
	m, err := New(cfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]Seq, 16)
	for i := range seqs {
		ids := make([]int32, 5+i%3)
		for j := range ids {
			ids[j] = int32((i*7 + j*5) % cfg.VocabSize)
		}
		seqs[i] = Seq{IDs: ids, Start: 3}
	}
	all, err := NewRunner(m).Forward(seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		one, err := NewRunner(m).Score(seqs[i : i+1])
		if err != nil {
			t.Fatal(err)
		}
		if math.Float64bits(one.Logp[0]) != math.Float64bits(all.Logp[i]) {
			t.Fatalf("seq %d: alone %v, in a batch of 16 %v", i, one.Logp[0], all.Logp[i])
		}
	}
}
