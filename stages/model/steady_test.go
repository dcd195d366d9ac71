package model

import (
	"math"
	"testing"
)

// trainStepGrads runs Forward and Backward on a fresh copy of m's
// parameters and returns the gradients.
func trainStepGrads(t *testing.T, m *Model, seqs []Seq, dTok [][]float32) []float32 {
	t.Helper()
	m.ZeroGrad()
	r := NewRunner(m)
	if _, err := r.Forward(seqs); err != nil {
		t.Fatal(err)
	}
	if err := r.Backward(dTok); err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), m.Grads...)
}

// TestLMHeadPaths checks that Backward gives the same gradients whether the
// LM-head logits were kept by Forward or are recomputed chunk by chunk, and
// that reruns are bit-identical.
func TestLMHeadPaths(t *testing.T) {
	m, err := New(tinyConfig(RopeHalf, true, false), 1)
	if err != nil {
		t.Fatal(err)
	}
	randomizeForTest(m, 11)
	seqs, dTok := gradTestBatch()
	kept := trainStepGrads(t, m, seqs, dTok)
	again := trainStepGrads(t, m, seqs, dTok)
	for i := range kept {
		if math.Float32bits(kept[i]) != math.Float32bits(again[i]) {
			t.Fatalf("rerun differs at %d: %g vs %g", i, kept[i], again[i])
		}
	}
	save := keepLogitsMax
	keepLogitsMax = 0
	defer func() { keepLogitsMax = save }()
	re := trainStepGrads(t, m, seqs, dTok)
	var num, den float64
	for i := range kept {
		d := float64(kept[i] - re[i])
		num += d * d
		den += float64(kept[i]) * float64(kept[i])
	}
	if rel := math.Sqrt(num / den); rel > 1e-6 {
		t.Fatalf("kept and recomputed LM-head gradients differ: relative %.3g", rel)
	}
}

// TestSecondBackward checks that a second Backward of the same Forward
// accumulates the same gradients again.
func TestSecondBackward(t *testing.T) {
	m, err := New(tinyConfig(RopeAdjacent, false, true), 2)
	if err != nil {
		t.Fatal(err)
	}
	randomizeForTest(m, 5)
	seqs, dTok := gradTestBatch()
	once := trainStepGrads(t, m, seqs, dTok)
	m.ZeroGrad()
	r := NewRunner(m)
	if _, err := r.Forward(seqs); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 2; k++ {
		if err := r.Backward(dTok); err != nil {
			t.Fatal(err)
		}
	}
	for i, g := range once {
		if d := math.Abs(float64(m.Grads[i] - 2*g)); d > 1e-5*math.Max(1, math.Abs(float64(g))) {
			t.Fatalf("grad %d: twice %g, once %g", i, m.Grads[i], g)
		}
	}
}

// TestStepAllocs checks that after warm-up a training step allocates only
// the Scores it returns (five slices).
func TestStepAllocs(t *testing.T) {
	if BLASName != "openblas" {
		t.Skip("the pure-Go gonum sgemm allocates internally")
	}
	cfg := benchA.cfg
	m, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	bc := benchA
	bc.B, bc.T = 4, 64
	seqs := bc.seqs()
	r := NewRunner(m)
	opt := NewAdamW(len(m.Params), 0.9, 0.999, 1e-8, 0.01)
	sc, err := r.Forward(seqs)
	if err != nil {
		t.Fatal(err)
	}
	dTok := UniformTokenGrads(sc, []float64{1, -1, 0.5, 2})
	step := func() {
		if _, err := r.Forward(seqs); err != nil {
			t.Fatal(err)
		}
		if err := r.Backward(dTok); err != nil {
			t.Fatal(err)
		}
		opt.Update(m.Params, m.Grads, 1e-4)
		m.ZeroGrad()
	}
	step()
	if a := testing.AllocsPerRun(5, step); a > 5 {
		t.Errorf("training step: %v allocations, want at most 5 (the returned Scores)", a)
	}
	score := func() {
		if _, err := r.Score(seqs); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(5, score); a > 5 {
		t.Errorf("Score: %v allocations, want at most 5 (the returned Scores)", a)
	}
}

func TestExpAffine(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 64, 133} {
		src := make([]float32, n)
		for i := range src {
			src[i] = float32(i%37)*2.9 - 60
		}
		dst := make([]float32, n)
		for _, ab := range [][2]float32{{1, -3}, {-1, 0}, {1, 0}} {
			sum := expAffine(dst, src, ab[0], ab[1])
			var want float64
			for i, x := range src {
				w := math.Exp(float64(ab[0]*x + ab[1]))
				want += w
				if rel := math.Abs(float64(dst[i])-w) / w; rel > 1e-6 && w > 1e-37 {
					t.Fatalf("n=%d a,b=%v: exp(%g) = %g, want %g", n, ab, ab[0]*x+ab[1], dst[i], w)
				}
			}
			if rel := math.Abs(float64(sum)-want) / want; rel > 1e-5 {
				t.Fatalf("n=%d a,b=%v: sum %g, want %g", n, ab, sum, want)
			}
		}
	}
	// in place
	z := []float32{0, 1, 2, 3, 4, 5, 6, 7, 8}
	expAffine(z, z, 1, -8)
	if math.Abs(float64(z[8])-1) > 1e-7 || math.Abs(float64(z[0])-math.Exp(-8)) > 1e-9 {
		t.Fatalf("in place: %v", z)
	}
}
