package model

import (
	"math"
	"testing"
)

func lossOf(t *testing.T, r *Runner, seqs []Seq, dTok [][]float32) float64 {
	sc, err := r.Score(seqs)
	if err != nil {
		t.Fatal(err)
	}
	var l float64
	for i := range dTok {
		for j, g := range dTok[i] {
			l += float64(g) * float64(sc.TokenLogps[i][j])
		}
	}
	return l
}

func TestFiniteDifferences(t *testing.T) {
	for _, tied := range []bool{true, false} {
		m, err := New(tinyConfig(RopeHalf, true, tied), 2)
		if err != nil {
			t.Fatal(err)
		}
		randomizeForTest(m, 5)
		seqs, dTok := gradTestBatch()
		r := NewRunner(m)
		if _, err := r.Forward(seqs); err != nil {
			t.Fatal(err)
		}
		if err := r.Backward(dTok); err != nil {
			t.Fatal(err)
		}
		const h = 1e-2
		bad := 0
		for i := 0; i < len(m.Params); i += 7 {
			old := m.Params[i]
			m.Params[i] = old + h
			lp := lossOf(t, r, seqs, dTok)
			m.Params[i] = old - h
			lm := lossOf(t, r, seqs, dTok)
			m.Params[i] = old
			fd := (lp - lm) / (2 * h)
			g := float64(m.Grads[i])
			if math.Abs(fd-g) > 2e-2*math.Max(1, math.Abs(g)) {
				bad++
				t.Errorf("tied=%v param %d: backward %.6g, finite difference %.6g", tied, i, g, fd)
				if bad > 5 {
					return
				}
			}
		}
	}
}

func TestBatchedEqualsUnbatched(t *testing.T) {
	m, err := New(Config{Dim: 32, HiddenDim: 40, NLayers: 2, NHeads: 4, NKVHeads: 2, VocabSize: 50, SeqLen: 200,
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeHalf, BOS: 1, EOS: 2}, 9)
	if err != nil {
		t.Fatal(err)
	}
	randomizeForTest(m, 3)
	mk := func(n, start int, seed int32) Seq {
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = (int32(i)*7 + seed) % 50
		}
		return Seq{IDs: ids, Start: start}
	}
	short := mk(9, 4, 3)
	batch := []Seq{mk(150, 20, 1), short, mk(70, 1, 5)}
	r := NewRunner(m)
	alone, err := r.Score([]Seq{short})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]float32(nil), alone.TokenLogps[0]...)
	for _, keep := range []bool{false, true} {
		var sc Scores
		if keep {
			sc, err = r.Forward(batch)
		} else {
			sc, err = r.Score(batch)
		}
		if err != nil {
			t.Fatal(err)
		}
		if sc.Tokens[1] != len(want) {
			t.Fatalf("tokens %d, want %d", sc.Tokens[1], len(want))
		}
		var sum float64
		for j, w := range want {
			if d := math.Abs(float64(sc.TokenLogps[1][j] - w)); d > 1e-5 {
				t.Errorf("keep=%v token %d: batched %.7f, alone %.7f", keep, j, sc.TokenLogps[1][j], w)
			}
			sum += float64(sc.TokenLogps[1][j])
		}
		if math.Abs(sum-sc.Logp[1]) > 1e-5 || math.Abs(sc.Logp[1]-alone.Logp[0]) > 1e-5 {
			t.Errorf("Logp %.7f, sum of tokens %.7f, alone %.7f", sc.Logp[1], sum, alone.Logp[0])
		}
		if math.Abs(sc.LogitSum[1]-alone.LogitSum[0]) > 1e-3 {
			t.Errorf("LogitSum %.6f, alone %.6f", sc.LogitSum[1], alone.LogitSum[0])
		}
	}
}

func TestAdamWTwoSteps(t *testing.T) {
	// Hand-computed with lr=0.1, β=(0.9,0.999), eps=1e-8, wd=0.01 on one
	// parameter p0=1 with gradients 0.5 then -0.25.
	// step 1: p=1·(1-0.001)=0.999; m=0.05, v=0.00025; m̂=0.5, v̂=0.25;
	//         p = 0.999 - 0.1·0.5/(0.5+1e-8) = 0.899
	// step 2: p=0.899·0.999=0.898101; m=0.045-0.025=0.02, v=0.00024975+0.0000625=0.00031225
	//         m̂=0.02/0.19=0.105263158, v̂=0.00031225/0.001999=0.156203102
	//         p = 0.898101 - 0.1·0.105263158/(0.395225381+1e-8) = 0.871467...
	o := NewAdamW(1, 0.9, 0.999, 1e-8, 0.01)
	p := []float32{1}
	o.Update(p, []float32{0.5}, 0.1)
	if math.Abs(float64(p[0])-0.899) > 1e-6 {
		t.Fatalf("step 1: p=%.8f, want 0.899", p[0])
	}
	o.Update(p, []float32{-0.25}, 0.1)
	want := 0.898101 - 0.1*(0.02/0.19)/(math.Sqrt(0.00031225/(1-0.999*0.999))+1e-8)
	if math.Abs(float64(p[0])-want) > 1e-6 {
		t.Fatalf("step 2: p=%.8f, want %.8f", p[0], want)
	}
	b, err := o.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var o2 AdamW
	if err := o2.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if o2.Step != 2 || o2.M[0] != o.M[0] || o2.V[0] != o.V[0] || o2.Beta2 != 0.999 || o2.WeightDecay != 0.01 {
		t.Fatalf("round trip mismatch: %+v vs %+v", o2, *o)
	}
	if err := o2.UnmarshalBinary(b[:len(b)-1]); err == nil {
		t.Fatal("truncated state accepted")
	}
}

func TestClipGradNorm(t *testing.T) {
	g := []float32{3, 4}
	if n := ClipGradNorm(g, 10); n != 5 || g[0] != 3 {
		t.Fatalf("no-op clip changed things: %v %v", n, g)
	}
	n := ClipGradNorm(g, 1)
	if n != 5 || math.Abs(GradNorm(g)-1) > 1e-5 || math.Abs(float64(g[0])-0.6) > 1e-5 {
		t.Fatalf("clip: norm %v grads %v", n, g)
	}
}

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := -87.0; x < 88; x += 0.0137 {
		got := float64(expf(float32(x)))
		want := math.Exp(float64(float32(x)))
		if rel := math.Abs(got-want) / want; rel > worst {
			worst = rel
		}
	}
	if worst > 1e-6 {
		t.Fatalf("expf worst relative error %.3g", worst)
	}
	if expf(-100) > 2e-38 || expf(0) != 1 {
		t.Fatalf("expf edge cases: %v %v", expf(-100), expf(0))
	}
}
