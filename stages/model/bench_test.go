package model

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Benchmarks of a training step (Forward + Backward + AdamW) and of
// forward-only scoring at two model sizes. Every sequence is scored from
// token 1 on, so each of the B·(T−1) positions is a predicted token.
//
// FLOPs counted (matrix products only, the usual "6·N·tokens" convention):
//
//	P       = L·(2·D² + 2·KVD·D + 3·D·F) + V·D   (projection and LM-head weights)
//	n       = B·(T−1)                              (predicted tokens = rows)
//	attnFwd = L·B·2·D·t·(t+1), t = T−1             (QKᵀ and PV over the causal half: 2·2·D per (i, j≤i) pair)
//	forward  = 2·P·n + attnFwd
//	training = 6·P·n + 3·attnFwd
//
// The backward's recomputation of the LM-head logits (2·V·D·n) is not
// counted. Reported metrics: tokens/s (n per step), gflops, sgemm_gflops
// (the rate of the same BLAS on this step's product shapes, measured in the
// same process and weighted by their FLOPs), ratio = gflops/sgemm_gflops,
// and peak_rss_mb (VmHWM). With BENCH_JSON=path each case also appends one
// JSON object per line to that file.

type benchCase struct {
	name string
	cfg  Config
	B, T int
}

var (
	benchA = benchCase{"A", Config{Dim: 64, HiddenDim: 172, NLayers: 5, NHeads: 8, NKVHeads: 4, VocabSize: 512, SeqLen: 512,
		NormEps: 1e-5, RopeTheta: 10000, TiedEmbeddings: true, BOS: 1, EOS: 2}, 16, 128}
	benchB = benchCase{"B", Config{Dim: 256, HiddenDim: 704, NLayers: 4, NHeads: 8, NKVHeads: 8, VocabSize: 4096, SeqLen: 512,
		NormEps: 1e-5, RopeTheta: 10000, TiedEmbeddings: true, BOS: 1, EOS: 2}, 16, 256}
)

func (bc benchCase) flops(train bool) (total, attn float64) {
	c := bc.cfg
	d, kvd, f, v, l := float64(c.Dim), float64(c.KVDim()), float64(c.HiddenDim), float64(c.VocabSize), float64(c.NLayers)
	p := l*(2*d*d+2*kvd*d+3*d*f) + v*d
	t := float64(bc.T - 1)
	n := float64(bc.B) * t
	attn = l * float64(bc.B) * 2 * d * t * (t + 1)
	if train {
		return 6*p*n + 3*attn, 3 * attn
	}
	return 2*p*n + attn, attn
}

func (bc benchCase) seqs() []Seq {
	rng := rand.New(rand.NewPCG(1, 2))
	s := make([]Seq, bc.B)
	for i := range s {
		ids := make([]int32, bc.T)
		for j := range ids {
			ids[j] = int32(rng.IntN(bc.cfg.VocabSize))
		}
		s[i] = Seq{IDs: ids, Start: 1}
	}
	return s
}

// gemmShape is one matrix product of a step, with how many FLOPs of the
// step it stands for.
type gemmShape struct {
	tA, tB  bool
	m, n, k int
	flops   float64
	perTask bool // run as independent single-threaded products, one per worker
}

func (bc benchCase) shapes(train bool) []gemmShape {
	c := bc.cfg
	d, kvd, f, v, l := c.Dim, c.KVDim(), c.HiddenDim, c.VocabSize, float64(c.NLayers)
	n := bc.B * (bc.T - 1)
	fl := func(m, nn, k int) float64 { return 2 * float64(m) * float64(nn) * float64(k) }
	_, attn := bc.flops(train)
	sh := []gemmShape{
		{false, true, n, d, d, 2 * l * fl(n, d, d), false},
		{false, true, n, kvd, d, 2 * l * fl(n, kvd, d), false},
		{false, true, n, f, d, 2 * l * fl(n, f, d), false},
		{false, true, n, d, f, l * fl(n, d, f), false},
		{false, true, headChunk, v, d, fl(n, v, d), true},
		{false, true, attBlock, bc.T / 2, c.HeadSize(), attn, true},
	}
	if train {
		sh = append(sh,
			gemmShape{false, false, n, d, d, 2 * l * fl(n, d, d), false},
			gemmShape{true, false, d, d, n, 2 * l * fl(n, d, d), false},
			gemmShape{false, false, n, d, kvd, 2 * l * fl(n, kvd, d), false},
			gemmShape{true, false, kvd, d, n, 2 * l * fl(n, kvd, d), false},
			gemmShape{false, false, n, f, d, l * fl(n, d, f), false},
			gemmShape{true, false, d, f, n, l * fl(n, d, f), false},
			gemmShape{false, false, n, d, f, 2 * l * fl(n, d, f), false},
			gemmShape{true, false, f, d, n, 2 * l * fl(n, d, f), false},
			gemmShape{false, false, headChunk, d, v, fl(n, v, d), true},
			gemmShape{true, false, v, d, headChunk, fl(n, v, d), true},
		)
	}
	return sh
}

// sgemmRate measures the BLAS at the step's shapes (best of three rounds
// each, so the ratio errs on the low side on a shared machine) and returns
// the FLOP-weighted rate in GFLOP/s.
func sgemmRate(shapes []gemmShape) float64 {
	var total, secs float64
	for _, s := range shapes {
		ar, ac := s.m, s.k
		if s.tA {
			ar, ac = s.k, s.m
		}
		br, bcn := s.k, s.n
		if s.tB {
			br, bcn = s.n, s.k
		}
		nw := workers.n
		if !s.perTask {
			nw = 1
		}
		as, bs, cs := make([][]float32, nw), make([][]float32, nw), make([][]float32, nw)
		for w := 0; w < nw; w++ {
			as[w] = make([]float32, ar*ac)
			bs[w] = make([]float32, br*bcn)
			cs[w] = make([]float32, s.m*s.n)
			for i := range as[w] {
				as[w][i] = float32(i%7) * 0.01
			}
			for i := range bs[w] {
				bs[w][i] = float32(i%5) * 0.01
			}
		}
		one := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		run := func() {
			if s.perTask {
				workers.run(nw, func(w, _ int) {
					sgemm(s.tA, s.tB, s.m, s.n, s.k, 1, as[w], ac, bs[w], bcn, 0, cs[w], s.n)
				})
			} else {
				gemm(s.tA, s.tB, s.m, s.n, s.k, 1, as[0], ac, bs[0], bcn, 0, cs[0], s.n)
			}
		}
		run()
		// best of three timed rounds: the machine may be shared
		var rate float64
		for round := 0; round < 3; round++ {
			reps := 0
			start := time.Now()
			for time.Since(start) < 60*time.Millisecond || reps < 2 {
				run()
				reps++
			}
			rate = max(rate, one*float64(nw)*float64(reps)/time.Since(start).Seconds())
		}
		total += s.flops
		secs += s.flops / rate
	}
	return total / secs / 1e9
}

func peakRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func runBench(b *testing.B, bc benchCase, train bool) {
	m, err := New(bc.cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	seqs := bc.seqs()
	r := NewRunner(m)
	opt := NewAdamW(len(m.Params), 0.9, 0.999, 1e-8, 0.01)
	var dTok [][]float32
	step := func() {
		if !train {
			if _, err := r.Score(seqs); err != nil {
				b.Fatal(err)
			}
			return
		}
		sc, err := r.Forward(seqs)
		if err != nil {
			b.Fatal(err)
		}
		if dTok == nil {
			dTok = UniformTokenGrads(sc, make([]float64, len(seqs)))
			for _, g := range dTok {
				for j := range g {
					g[j] = -1 / float32(len(seqs)*len(g))
				}
			}
		}
		if err := r.Backward(dTok); err != nil {
			b.Fatal(err)
		}
		opt.Update(m.Params, m.Grads, 1e-4)
		m.ZeroGrad()
	}
	step() // warm up the arena
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
	b.StopTimer()
	secs := b.Elapsed().Seconds() / float64(b.N)
	flops, _ := bc.flops(train)
	tokens := float64(bc.B * (bc.T - 1))
	gflops := flops / secs / 1e9
	sg := sgemmRate(bc.shapes(train))
	rss := peakRSSMB()
	b.ReportMetric(tokens/secs, "tokens/s")
	b.ReportMetric(gflops, "gflops")
	b.ReportMetric(sg, "sgemm_gflops")
	b.ReportMetric(gflops/sg, "ratio")
	b.ReportMetric(rss, "peak_rss_mb")
	kind := "forward"
	if train {
		kind = "train"
	}
	name := fmt.Sprintf("%s_%s_%dx%d", kind, bc.name, bc.B, bc.T)
	benchResults[name] = map[string]any{
		"case": name, "blas": BLASName, "steps": b.N,
		"tokens_per_s": tokens / secs, "gflops": gflops, "sgemm_gflops": sg, "ratio": gflops / sg, "peak_rss_mb": rss,
	}
	if !slices.Contains(benchOrder, name) {
		benchOrder = append(benchOrder, name)
	}
}

// benchResults keeps the last (longest) run of each case; TestMain writes
// them to $BENCH_JSON when the benchmarks are done.
var (
	benchResults = map[string]map[string]any{}
	benchOrder   []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if path := os.Getenv("BENCH_JSON"); path != "" && len(benchOrder) > 0 {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "BENCH_JSON:", err)
			os.Exit(1)
		}
		for _, name := range benchOrder {
			line, _ := json.Marshal(benchResults[name])
			f.Write(append(line, '\n'))
		}
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "BENCH_JSON:", err)
			os.Exit(1)
		}
	}
	os.Exit(code)
}

func BenchmarkTrainStepA(b *testing.B) { runBench(b, benchA, true) }
func BenchmarkTrainStepB(b *testing.B) { runBench(b, benchB, true) }
func BenchmarkForwardA(b *testing.B)   { runBench(b, benchA, false) }
func BenchmarkForwardB(b *testing.B)   { runBench(b, benchB, false) }
