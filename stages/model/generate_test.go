package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
)

// genTrace runs generate and returns the new tokens and a copy of the logits
// each of them was chosen from.
func genTrace(t *testing.T, m *Model, prompt []int32, opt GenOptions) ([]int32, [][]float32) {
	t.Helper()
	var steps [][]float32
	out, err := m.generate(prompt, opt, func(lg []float32) { steps = append(steps, slices.Clone(lg)) })
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != len(out) {
		t.Fatalf("%d logit rows for %d tokens", len(steps), len(out))
	}
	return out, steps
}

func logSoftmax(lg []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range lg {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range lg {
		s += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(s)
	out := make([]float64, len(lg))
	for i, v := range lg {
		out[i] = float64(v) - lse
	}
	return out
}

// softmaxT is softmax(lg/T) in float64.
func softmaxT(lg []float32, T float64) []float64 {
	ls := make([]float64, len(lg))
	mx := math.Inf(-1)
	for _, v := range lg {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for i, v := range lg {
		ls[i] = math.Exp((float64(v) - mx) / T)
		s += ls[i]
	}
	for i := range ls {
		ls[i] /= s
	}
	return ls
}

// nucleus is the smallest set of most likely tokens (ties towards the lower
// id) whose mass reaches p.
func nucleus(probs []float64, p float64) map[int]bool {
	ix := make([]int, len(probs))
	for i := range ix {
		ix[i] = i
	}
	sort.SliceStable(ix, func(a, b int) bool { return probs[ix[a]] > probs[ix[b]] })
	set := map[int]bool{}
	var mass float64
	for _, j := range ix {
		set[j] = true
		mass += probs[j]
		if mass >= p {
			break
		}
	}
	return set
}

// chiSquare compares counts with the distribution want, pooling the bins
// whose expected count is below 5. It returns the statistic and a bound
// that a correct sampler exceeds with probability far below 1e-6 (df plus
// eight standard deviations of the chi-square distribution, plus a margin
// for small df).
func chiSquare(counts []int, want []float64) (stat, bound float64) {
	n := 0
	for _, c := range counts {
		n += c
	}
	var poolE, poolO float64
	bins := 0
	for i, p := range want {
		e := p * float64(n)
		o := float64(counts[i])
		if e < 5 {
			poolE += e
			poolO += o
			continue
		}
		stat += (o - e) * (o - e) / e
		bins++
	}
	if poolE > 0 {
		if poolE < 1 {
			poolE = 1 // counts in bins that should be all but empty still weigh
		}
		stat += (poolO - poolE) * (poolO - poolE) / poolE
		bins++
	}
	df := float64(max(bins-1, 1))
	return stat, df + 8*math.Sqrt(2*df) + 10
}

// sampledModel is a tiny model whose next-token distribution after
// samplePrompt is neither flat nor peaked, so that temperature and top-p
// change it visibly.
func sampledModel(t *testing.T) *Model {
	t.Helper()
	cfg := Config{Dim: 16, HiddenDim: 24, NLayers: 2, NHeads: 4, NKVHeads: 2, VocabSize: 24, SeqLen: 32,
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeAdjacent, TiedEmbeddings: false, BOS: 1, EOS: 2}
	m, err := New(cfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	randomizeForTest(m, 12)
	return m
}

var samplePrompt = []int32{1, 5, 9, 3}

// firstTokens samples the first new token for seeds [0, n) and counts them.
func firstTokens(t *testing.T, m *Model, opt GenOptions, n int) []int {
	t.Helper()
	counts := make([]int, m.Config.VocabSize)
	opt.MaxTokens = 1
	for s := 0; s < n; s++ {
		opt.Seed = uint64(s)
		out, err := m.Generate(samplePrompt, opt)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 {
			t.Fatalf("seed %d: %d tokens, want 1", s, len(out))
		}
		counts[out[0]]++
	}
	return counts
}

func firstLogits(t *testing.T, m *Model) []float32 {
	t.Helper()
	_, steps := genTrace(t, m, samplePrompt, GenOptions{MaxTokens: 1})
	return steps[0]
}

// The logits the KV-cache decoder samples from are those of the full
// forward: the log-softmax at every generated position matches Runner.Score.
func TestGenerateMatchesScore(t *testing.T) {
	mk := func(c Config, f func(*Config)) Config { f(&c); return c }
	base := tinyConfig(RopeAdjacent, false, true)
	cases := []struct {
		name   string
		cfg    Config
		random bool
		prompt []int32
		opt    GenOptions
	}{
		{"gqa-adjacent-tied-greedy", base, true, []int32{1, 4, 7}, GenOptions{MaxTokens: 10}},
		{"gqa-adjacent-tied-sampled", base, true, []int32{1, 4, 7}, GenOptions{MaxTokens: 100, Temperature: 1, Seed: 3}},
		{"half-bias-untied", tinyConfig(RopeHalf, true, false), true, []int32{1}, GenOptions{MaxTokens: 100, Temperature: 1.3, Seed: 4}},
		{"mha", mk(base, func(c *Config) { c.NKVHeads = 2 }), true, []int32{1, 2, 3, 4, 5}, GenOptions{MaxTokens: 100, Temperature: 0.9, TopP: 0.9, Seed: 5}},
		{"initial-weights", mk(base, func(c *Config) { c.NKVHeads = 2 }), false, []int32{1, 8}, GenOptions{MaxTokens: 100, Temperature: 1, Seed: 6}},
		// longer than the runner's attention block, so that its blocked
		// causal attention is compared too
		{"long", Config{Dim: 32, HiddenDim: 40, NLayers: 2, NHeads: 4, NKVHeads: 2, VocabSize: 50, SeqLen: 150,
			NormEps: 1e-5, RopeTheta: 10000, Rope: RopeHalf, BOS: 1, EOS: 2}, true, []int32{1, 20, 30}, GenOptions{MaxTokens: 1000, Temperature: 1, Seed: 7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.cfg, 1)
			if err != nil {
				t.Fatal(err)
			}
			if tc.random {
				randomizeForTest(m, 2)
			}
			out, steps := genTrace(t, m, tc.prompt, tc.opt)
			want := min(tc.opt.MaxTokens, tc.cfg.SeqLen-len(tc.prompt))
			if len(out) != want {
				t.Fatalf("generated %d tokens, want %d", len(out), want)
			}
			// every vocabulary entry at the first steps, then at every 16th
			// and the last: one scored sequence per (step, candidate), the
			// candidate being the last token
			full := append(slices.Clone(tc.prompt), out...)
			var seqs []Seq
			var checked []int
			for i := range out {
				if i >= 8 && i%16 != 0 && i != len(out)-1 {
					continue
				}
				checked = append(checked, i)
				pre := full[:len(tc.prompt)+i]
				for v := 0; v < tc.cfg.VocabSize; v++ {
					ids := append(slices.Clone(pre), int32(v))
					seqs = append(seqs, Seq{IDs: ids, Start: len(ids) - 1})
				}
			}
			// and the generated sequence itself, as one scored completion
			seqs = append(seqs, Seq{IDs: full, Start: len(tc.prompt)})
			sc, err := NewRunner(m).Score(seqs)
			if err != nil {
				t.Fatal(err)
			}
			gen := sc.TokenLogps[len(seqs)-1]
			bad := 0
			for i, lg := range steps {
				ls := logSoftmax(lg)
				if d := math.Abs(ls[out[i]] - float64(gen[i])); d > 1e-5 {
					bad++
					t.Errorf("step %d token %d: decoder logp %.7f, Score %.7f", i, out[i], ls[out[i]], gen[i])
				}
				if k, ok := slices.BinarySearch(checked, i); ok {
					for v := range ls {
						got := float64(sc.TokenLogps[k*tc.cfg.VocabSize+v][0])
						if d := math.Abs(ls[v] - got); d > 1e-5 {
							bad++
							t.Errorf("step %d candidate %d: decoder logp %.7f, Score %.7f", i, v, ls[v], got)
						}
					}
				}
				if bad > 10 {
					t.FailNow()
				}
			}
		})
	}
}

func TestStories260KGenerateMatchesScore(t *testing.T) {
	m, _ := loadStories(t)
	prompt := []int32{1, 403, 407, 261, 378}
	for _, opt := range []GenOptions{
		{MaxTokens: 200},
		{MaxTokens: 200, Temperature: 1, Seed: 1},
		{MaxTokens: 1000, Temperature: 0.8, TopP: 0.9, Seed: 2}, // up to SeqLen
	} {
		t.Run(fmt.Sprintf("T=%v,p=%v", opt.Temperature, opt.TopP), func(t *testing.T) {
			out, steps := genTrace(t, m, prompt, opt)
			if want := min(opt.MaxTokens, m.Config.SeqLen-len(prompt)); len(out) != want {
				t.Fatalf("generated %d tokens, want %d", len(out), want)
			}
			sc, err := NewRunner(m).Score([]Seq{{IDs: append(slices.Clone(prompt), out...), Start: len(prompt)}})
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			for i, lg := range steps {
				got := float64(sc.TokenLogps[0][i])
				want := logSoftmax(lg)[out[i]]
				d := math.Abs(got - want)
				worst = max(worst, d)
				if d > 1e-5 {
					t.Errorf("step %d token %d: decoder logp %.7f, Score %.7f", i, out[i], want, got)
				}
			}
			t.Logf("%d tokens, largest logp difference %.2g", len(out), worst)
		})
	}
}

func TestGenerateSeeds(t *testing.T) {
	cfg := Config{Dim: 16, HiddenDim: 24, NLayers: 2, NHeads: 4, NKVHeads: 2, VocabSize: 40, SeqLen: 64,
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeHalf, TiedEmbeddings: true, BOS: 1, EOS: 2}
	// initial weights (std 0.02): a nearly flat next-token distribution
	m, err := New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int32{1, 7}
	gen := func(seed uint64, opt GenOptions) []int32 {
		opt.Seed, opt.MaxTokens = seed, 20
		out, err := m.Generate(prompt, opt)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, opt := range []GenOptions{{Temperature: 1}, {Temperature: 0.7, TopP: 0.9}} {
		name := fmt.Sprintf("T=%v,p=%v", opt.Temperature, opt.TopP)
		const nseeds = 16
		first := make([][]int32, nseeds)
		for s := range first {
			first[s] = gen(uint64(s), opt)
		}
		// same seed, same tokens, whatever ran before; different seeds,
		// different tokens
		for s := nseeds - 1; s >= 0; s-- {
			if again := gen(uint64(s), opt); !slices.Equal(again, first[s]) {
				t.Errorf("%s seed %d: %v, then %v", name, s, first[s], again)
			}
			for u := 0; u < s; u++ {
				if slices.Equal(first[s], first[u]) {
					t.Errorf("%s seeds %d and %d both give %v", name, s, u, first[s])
				}
			}
		}
		// concurrent calls share no state either
		var wg sync.WaitGroup
		conc := make([][]int32, nseeds)
		for s := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := opt
				o.Seed, o.MaxTokens = uint64(s), 20
				conc[s], _ = m.Generate(prompt, o)
			}()
		}
		wg.Wait()
		for s := range conc {
			if !slices.Equal(conc[s], first[s]) {
				t.Errorf("%s seed %d: concurrent call gave %v, sequential %v", name, s, conc[s], first[s])
			}
		}
	}
	// greedy ignores the seed
	if a, b := gen(1, GenOptions{}), gen(2, GenOptions{}); !slices.Equal(a, b) {
		t.Errorf("greedy depends on the seed: %v vs %v", a, b)
	}
}

func TestGenerateTemperature(t *testing.T) {
	m := sampledModel(t)
	lg := firstLogits(t, m)
	const n = 20000
	for _, T := range []float64{0.5, 1, 2} {
		counts := firstTokens(t, m, GenOptions{Temperature: T}, n)
		stat, bound := chiSquare(counts, softmaxT(lg, T))
		t.Logf("T=%v: chi-square %.1f (bound %.1f)", T, stat, bound)
		if stat > bound {
			t.Errorf("T=%v: empirical distribution %v does not match softmax(logits/T): chi-square %.1f > %.1f", T, counts, stat, bound)
		}
		// the test has the power to see T ignored or applied twice
		if T != 1 {
			for _, alt := range []struct {
				what string
				T    float64
			}{{"ignored", 1}, {"applied twice", T * T}} {
				if s, b := chiSquare(counts, softmaxT(lg, alt.T)); s < 4*b {
					t.Errorf("T=%v: cannot tell T %s apart (chi-square %.1f, bound %.1f)", T, alt.what, s, b)
				}
			}
		}
	}
}

// A small enough temperature is greedy decoding, for any seed.
func TestGenerateSmallTemperatureIsGreedy(t *testing.T) {
	type tc struct {
		name   string
		m      *Model
		prompt []int32
		n      int
	}
	cases := []tc{{"tiny", sampledModel(t), samplePrompt, 28}}
	t.Run("stories260K", func(t *testing.T) {
		m, _ := loadStories(t)
		cases = append(cases, tc{"stories260K", m, []int32{1, 403, 407, 261, 378}, 200})
	})
	for _, c := range cases {
		greedy, steps := genTrace(t, c.m, c.prompt, GenOptions{MaxTokens: c.n})
		// the smallest gap between the two largest logits along the way
		gap := math.Inf(1)
		for _, lg := range steps {
			s := slices.Clone(lg)
			slices.Sort(s)
			gap = math.Min(gap, float64(s[len(s)-1]-s[len(s)-2]))
		}
		if gap == 0 {
			t.Fatalf("%s: tied logits; pick another prompt", c.name)
		}
		// the runner-up has probability below exp(-60)
		T := gap / 60
		for seed := uint64(0); seed < 20; seed++ {
			out, err := c.m.Generate(c.prompt, GenOptions{MaxTokens: c.n, Temperature: T, Seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(out, greedy) {
				t.Fatalf("%s T=%.3g seed %d: %v, greedy %v", c.name, T, seed, out, greedy)
			}
		}
	}
}

func TestGenerateTopP(t *testing.T) {
	m := sampledModel(t)
	lg := firstLogits(t, m)
	const n = 20000
	for _, T := range []float64{1, 0.7} {
		probs := softmaxT(lg, T)
		for _, p := range []float64{0, 0.2, 0.5, 0.8, 0.95, 1} {
			counts := firstTokens(t, m, GenOptions{Temperature: T, TopP: p}, n)
			want := slices.Clone(probs)
			if p > 0 && p < 1 {
				set := nucleus(probs, p)
				var mass float64
				for i := range want {
					if set[i] {
						mass += want[i]
					} else {
						want[i] = 0
					}
				}
				for i := range want {
					want[i] /= mass
					if !set[i] && counts[i] > 0 {
						t.Errorf("T=%v top-p %v: token %d (p=%.4f) outside the nucleus %v sampled %d times", T, p, i, probs[i], set, counts[i])
					}
				}
				if len(set) == len(probs) {
					t.Fatalf("T=%v top-p %v: nucleus is the whole vocabulary; the test is too weak", T, p)
				}
			}
			stat, bound := chiSquare(counts, want)
			t.Logf("T=%v top-p %v: chi-square %.1f (bound %.1f)", T, p, stat, bound)
			if stat > bound {
				t.Errorf("T=%v top-p %v: frequencies %v do not match %v: chi-square %.1f > %.1f", T, p, counts, want, stat, bound)
			}
		}
	}
}

// sample on hand-made distributions whose sums are exact in binary, with the
// nucleus boundary hit exactly and tied probabilities.
func TestSampleNucleus(t *testing.T) {
	probs := []float64{0.125, 0.5, 0.125, 0.25}
	cases := []struct {
		topP float64
		want []float64
	}{
		{0, []float64{0.125, 0.5, 0.125, 0.25}},
		{1, []float64{0.125, 0.5, 0.125, 0.25}},
		{0.3, []float64{0, 1, 0, 0}},
		{0.5, []float64{0, 1, 0, 0}}, // 0.5 reaches 0.5
		{0.6, []float64{0, 2.0 / 3, 0, 1.0 / 3}},
		{0.75, []float64{0, 2.0 / 3, 0, 1.0 / 3}},                     // 0.75 reaches 0.75
		{0.8, []float64{0.125 / 0.875, 0.5 / 0.875, 0, 0.25 / 0.875}}, // tie: lower id first
		{0.999, []float64{0.125, 0.5, 0.125, 0.25}},
	}
	for _, c := range cases {
		rng := rand.New(rand.NewPCG(1, 2))
		var idx []int
		const n = 40000
		counts := make([]int, len(probs))
		for i := 0; i < n; i++ {
			counts[sample(probs, c.topP, rng, &idx)]++
		}
		for i, w := range c.want {
			if w == 0 && counts[i] != 0 {
				t.Errorf("top-p %v: token %d sampled %d times, outside the nucleus", c.topP, i, counts[i])
			}
		}
		if stat, bound := chiSquare(counts, c.want); stat > bound {
			t.Errorf("top-p %v: counts %v, want proportions %v (chi-square %.1f > %.1f)", c.topP, counts, c.want, stat, bound)
		}
	}
}

func TestGenerateStopsAndBounds(t *testing.T) {
	m := sampledModel(t)
	c := m.Config
	opt := GenOptions{MaxTokens: 100, Temperature: 1, Seed: 9}
	all, err := m.Generate(samplePrompt, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != c.SeqLen-len(samplePrompt) {
		t.Fatalf("generated %d tokens, want %d (up to SeqLen)", len(all), c.SeqLen-len(samplePrompt))
	}
	// pick as EOS a token that first appears mid-way
	k := -1
	for i := 3; i < len(all); i++ {
		if !slices.Contains(all[:i], all[i]) {
			k = i
			break
		}
	}
	if k < 0 {
		t.Fatal("no fresh token mid-way; pick another seed")
	}
	withEOS := m.Clone()
	withEOS.Config.EOS = all[k]
	noEOS := m.Clone()
	noEOS.Config.EOS = -1
	cases := []struct {
		name   string
		m      *Model
		prompt []int32
		opt    GenOptions
		want   []int32
		err    bool
	}{
		{"stop at EOS, EOS returned", withEOS, samplePrompt, GenOptions{MaxTokens: 100, Temperature: 1, Seed: 9, StopAtEOS: true}, all[:k+1], false},
		{"EOS ignored without StopAtEOS", withEOS, samplePrompt, opt, all, false},
		{"unknown EOS", noEOS, samplePrompt, GenOptions{MaxTokens: 100, Temperature: 1, Seed: 9, StopAtEOS: true}, all, false},
		{"MaxTokens bounds", m, samplePrompt, GenOptions{MaxTokens: 5, Temperature: 1, Seed: 9}, all[:5], false},
		{"MaxTokens before EOS", withEOS, samplePrompt, GenOptions{MaxTokens: k, Temperature: 1, Seed: 9, StopAtEOS: true}, all[:k], false},
		{"MaxTokens 1", m, samplePrompt, GenOptions{MaxTokens: 1, Temperature: 1, Seed: 9}, all[:1], false},
		{"MaxTokens 0", m, samplePrompt, GenOptions{MaxTokens: 0, Temperature: 1, Seed: 9}, nil, false},
		{"MaxTokens negative", m, samplePrompt, GenOptions{MaxTokens: -3}, nil, false},
		{"empty prompt", m, nil, GenOptions{MaxTokens: 3}, nil, true},
		{"token out of vocabulary", m, []int32{1, int32(c.VocabSize)}, GenOptions{MaxTokens: 3}, nil, true},
		{"negative token", m, []int32{-1}, GenOptions{MaxTokens: 3}, nil, true},
		{"negative temperature", m, samplePrompt, GenOptions{MaxTokens: 3, Temperature: -1}, nil, true},
		{"NaN temperature", m, samplePrompt, GenOptions{MaxTokens: 3, Temperature: math.NaN()}, nil, true},
		{"negative top-p", m, samplePrompt, GenOptions{MaxTokens: 3, Temperature: 1, TopP: -0.5}, nil, true},
		{"top-p above 1", m, samplePrompt, GenOptions{MaxTokens: 3, Temperature: 1, TopP: 1.5}, nil, true},
		{"NaN top-p", m, samplePrompt, GenOptions{MaxTokens: 3, Temperature: 1, TopP: math.NaN()}, nil, true},
	}
	for _, tc := range cases {
		got, err := tc.m.Generate(tc.prompt, tc.opt)
		if tc.err {
			if err == nil {
				t.Errorf("%s: no error, got %v", tc.name, got)
			} else {
				t.Logf("%s: %v", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	// every prompt length up to and past SeqLen: an error past SeqLen,
	// otherwise prompt and output together never exceed SeqLen (and can be
	// scored)
	r := NewRunner(m)
	for plen := 1; plen <= c.SeqLen+2; plen++ {
		prompt := make([]int32, plen)
		for i := range prompt {
			prompt[i] = int32(3 + i%(c.VocabSize-3))
		}
		for _, o := range []GenOptions{{MaxTokens: 1 << 20}, {MaxTokens: 1 << 20, Temperature: 1, TopP: 0.9, Seed: uint64(plen)}} {
			out, err := m.Generate(prompt, o)
			if plen > c.SeqLen {
				if err == nil {
					t.Errorf("prompt of %d > SeqLen %d tokens: no error", plen, c.SeqLen)
				}
				continue
			}
			if err != nil {
				t.Fatalf("prompt of %d tokens: %v", plen, err)
			}
			if len(out) != c.SeqLen-plen {
				t.Errorf("prompt of %d tokens: %d new tokens, want %d", plen, len(out), c.SeqLen-plen)
			}
			if len(out) > 0 {
				if _, err := r.Score([]Seq{{IDs: append(slices.Clone(prompt), out...), Start: plen}}); err != nil {
					t.Errorf("prompt of %d tokens: output cannot be scored: %v", plen, err)
				}
			}
		}
	}
}
