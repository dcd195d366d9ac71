package model

import (
	"math"
	"testing"
)

// directLogSumSq computes, with the one-token decoder, the full logits at
// every completion position of s and returns log Σᵥ pᵥ² and log p(target)
// per completion token, in float64 straight from the definition.
func directLogSumSq(m *Model, s Seq) (lss, logp []float64) {
	dec := newDecoder(m)
	for p := 0; p < len(s.IDs)-1; p++ {
		dec.step(s.IDs[p], p)
		if p+1 < s.Start {
			continue
		}
		mx := math.Inf(-1)
		for _, z := range dec.logits {
			mx = math.Max(mx, float64(z))
		}
		var sum float64
		for _, z := range dec.logits {
			sum += math.Exp(float64(z) - mx)
		}
		var sq float64
		for _, z := range dec.logits {
			q := math.Exp(float64(z)-mx) / sum
			sq += q * q
		}
		lss = append(lss, math.Log(sq))
		logp = append(logp, float64(dec.logits[s.IDs[p+1]])-mx-math.Log(sum))
	}
	return lss, logp
}

func logSumSqBatch() []Seq {
	seqs, _ := gradTestBatch()
	return append(seqs,
		Seq{IDs: []int32{1, 9, 9, 9, 9, 9, 9, 9, 9, 4, 2}, Start: 5},
		Seq{IDs: []int32{3, 0, 10, 7, 6, 5, 4, 3, 2, 1, 0, 8, 8, 8, 1, 2}, Start: 2},
	)
}

// TestTokenLogSumSq checks Scores.TokenLogSumSq against log Σ p² computed
// from the full logits of a one-token-at-a-time decode, for Forward and
// Score, with the logits kept for Backward or not.
func TestTokenLogSumSq(t *testing.T) {
	for _, tied := range []bool{true, false} {
		m, err := New(tinyConfig(RopeHalf, true, tied), 4)
		if err != nil {
			t.Fatal(err)
		}
		randomizeForTest(m, 21)
		seqs := logSumSqBatch()
		r := NewRunner(m)
		r.SetLogSumSq(true)
		for _, keep := range []int{keepLogitsMax, 0} {
			save := keepLogitsMax
			keepLogitsMax = keep
			fw, err := r.Forward(seqs)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := r.Score(seqs)
			keepLogitsMax = save
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range seqs {
				lss, logp := directLogSumSq(m, s)
				if len(fw.TokenLogSumSq[i]) != len(lss) || len(sc.TokenLogSumSq[i]) != len(lss) {
					t.Fatalf("seq %d: %d and %d values, want %d", i, len(fw.TokenLogSumSq[i]), len(sc.TokenLogSumSq[i]), len(lss))
				}
				for j, want := range lss {
					got := float64(fw.TokenLogSumSq[i][j])
					if math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
						t.Errorf("tied=%v keep=%d seq %d token %d: log Σp² %.8g, direct %.8g", tied, keep, i, j, got, want)
					}
					if !(got <= 0 && got >= -math.Log(float64(m.Config.VocabSize))-1e-5) {
						t.Errorf("seq %d token %d: log Σp² %g outside [-log V, 0]", i, j, got)
					}
					if math.Float32bits(fw.TokenLogSumSq[i][j]) != math.Float32bits(sc.TokenLogSumSq[i][j]) {
						t.Errorf("seq %d token %d: Forward %v, Score %v", i, j, fw.TokenLogSumSq[i][j], sc.TokenLogSumSq[i][j])
					}
					if d := math.Abs(float64(fw.TokenLogps[i][j]) - logp[j]); d > 1e-5*math.Max(1, math.Abs(logp[j])) {
						t.Errorf("seq %d token %d: logp %v, direct %v", i, j, fw.TokenLogps[i][j], logp[j])
					}
				}
			}
		}
	}
}

// TestLogSumSqChangesNothingElse: turning the option on must not change a
// bit of the other scores or of the gradients, and is off by default.
func TestLogSumSqChangesNothingElse(t *testing.T) {
	m, err := New(tinyConfig(RopeAdjacent, false, true), 6)
	if err != nil {
		t.Fatal(err)
	}
	randomizeForTest(m, 8)
	seqs := logSumSqBatch()
	run := func(on bool) (Scores, Scores, []float32) {
		r := NewRunner(m)
		r.SetLogSumSq(on)
		sc, err := r.Score(seqs)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		fw, err := r.Forward(seqs)
		if err != nil {
			t.Fatal(err)
		}
		d := make([]float64, len(seqs))
		for i := range d {
			d[i] = float64(i%3) - 0.7
		}
		if err := r.Backward(UniformTokenGrads(fw, d)); err != nil {
			t.Fatal(err)
		}
		return sc, fw, append([]float32(nil), m.Grads...)
	}
	offS, offF, offG := run(false)
	onS, onF, onG := run(true)
	if offS.TokenLogSumSq != nil || offF.TokenLogSumSq != nil {
		t.Fatal("TokenLogSumSq is set without SetLogSumSq")
	}
	if onS.TokenLogSumSq == nil || onF.TokenLogSumSq == nil {
		t.Fatal("TokenLogSumSq is nil with SetLogSumSq(true)")
	}
	same := func(what string, a, b Scores) {
		for i := range seqs {
			if math.Float64bits(a.Logp[i]) != math.Float64bits(b.Logp[i]) || math.Float64bits(a.LogitSum[i]) != math.Float64bits(b.LogitSum[i]) || a.Tokens[i] != b.Tokens[i] {
				t.Fatalf("%s seq %d: Logp %v / %v, LogitSum %v / %v", what, i, a.Logp[i], b.Logp[i], a.LogitSum[i], b.LogitSum[i])
			}
			for j := range a.TokenLogps[i] {
				if math.Float32bits(a.TokenLogps[i][j]) != math.Float32bits(b.TokenLogps[i][j]) {
					t.Fatalf("%s seq %d token %d: %v / %v", what, i, j, a.TokenLogps[i][j], b.TokenLogps[i][j])
				}
			}
		}
	}
	same("Score", offS, onS)
	same("Forward", offF, onF)
	for i := range offG {
		if math.Float32bits(offG[i]) != math.Float32bits(onG[i]) {
			t.Fatalf("gradient %d: %v off, %v on", i, offG[i], onG[i])
		}
	}
	// writing into TokenLogps must not reach TokenLogSumSq (they share a buffer)
	for i := range onF.TokenLogps {
		for j := range onF.TokenLogps[i] {
			onF.TokenLogps[i][j] = 1
		}
	}
	for i := range onF.TokenLogSumSq {
		for j, v := range onF.TokenLogSumSq[i] {
			if v != onS.TokenLogSumSq[i][j] {
				t.Fatalf("seq %d token %d: TokenLogSumSq overlaps TokenLogps", i, j)
			}
		}
	}
}

// TestLogSumSqIsBatchInvariant: a sequence's log Σp² must not depend on the
// batch it is scored in, and reruns must be bit-identical.
func TestLogSumSqIsBatchInvariant(t *testing.T) {
	cfg := Config{Dim: 16, HiddenDim: 40, NLayers: 2, NHeads: 4, NKVHeads: 2, VocabSize: 40, SeqLen: 64,
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeAdjacent, TiedEmbeddings: true, BOS: 1, EOS: 2}
	m, err := New(cfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]Seq, 40)
	for i := range seqs {
		ids := make([]int32, 5+i%9)
		for j := range ids {
			ids[j] = int32((i*7 + j*5) % cfg.VocabSize)
		}
		seqs[i] = Seq{IDs: ids, Start: 2 + i%3}
	}
	r := NewRunner(m)
	r.SetLogSumSq(true)
	all, err := r.Forward(seqs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := NewRunner(m).Score(seqs)
	if err != nil {
		t.Fatal(err)
	}
	if again.TokenLogSumSq != nil {
		t.Fatal("a new Runner reports TokenLogSumSq")
	}
	for i := range seqs {
		one, err := r.Score(seqs[i : i+1])
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range all.TokenLogSumSq[i] {
			if math.Float32bits(v) != math.Float32bits(one.TokenLogSumSq[0][j]) {
				t.Fatalf("seq %d token %d: alone %v, in a batch of %d %v", i, j, one.TokenLogSumSq[0][j], len(seqs), v)
			}
		}
	}
}

// TestStepAllocsLogSumSq: with the option on, a step still allocates only
// the returned Scores.
func TestStepAllocsLogSumSq(t *testing.T) {
	if BLASName != "openblas" {
		t.Skip("the pure-Go gonum sgemm allocates internally")
	}
	m, err := New(benchA.cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	bc := benchA
	bc.B, bc.T = 4, 64
	seqs := bc.seqs()
	r := NewRunner(m)
	r.SetLogSumSq(true)
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
		m.ZeroGrad()
	}
	step()
	if a := testing.AllocsPerRun(5, step); a > 5 {
		t.Errorf("training step with log Σp²: %v allocations, want at most 5 (the returned Scores)", a)
	}
}
