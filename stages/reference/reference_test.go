package reference

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/internal/testassets"
	"github.com/dpopipe/dpopipe/pipeline/cache"
	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

func tinyConfig() model.Config {
	return model.Config{Dim: 16, HiddenDim: 24, NLayers: 2, NHeads: 2, NKVHeads: 1, VocabSize: 40, SeqLen: 64,
		NormEps: 1e-5, RopeTheta: 10000, Rope: model.RopeAdjacent, BOS: 1, EOS: 2}
}

// tinyModel saves a seeded random model as a llama2.c file and returns its
// path and the model.
func tinyModel(t testing.TB, seed uint64) (string, *model.Model) {
	t.Helper()
	m, err := model.New(tinyConfig(), seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tiny.bin")
	if err := m.SaveLlama2c(path); err != nil {
		t.Fatal(err)
	}
	return path, m
}

// randomPairs returns n pairs with ids in [3, vocab), varied lengths, and
// source rows starting at row0.
func randomPairs(n int, vocab int, seed uint64, row0 int64) []pairs.Pair {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := func(lo, hi int) []int32 {
		out := make([]int32, lo+rng.IntN(hi-lo+1))
		for i := range out {
			out[i] = int32(3 + rng.IntN(vocab-3))
		}
		return out
	}
	ps := make([]pairs.Pair, n)
	for i := range ps {
		prompt := append([]int32{1}, ids(0, 12)...)
		ps[i] = pairs.Pair{Row: row0 + int64(i), Prompt: prompt, Chosen: ids(1, 14), Rejected: ids(1, 14),
			Weight: 1, Split: pairs.SplitTrain}
	}
	return ps
}

type result struct {
	pairs  []pairs.Pair
	stats  map[string]int64
	schema *arrow.Schema
}

type runOpts struct {
	cacheDir string
	dir      string
	noCache  bool
	ctx      context.Context
}

func runStage(t testing.TB, cfg map[string]any, input []arrow.RecordBatch, o runOpts) (*result, error) {
	t.Helper()
	ctx := o.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	res, err := sdk.RunLocal(ctx, New(), cfg, sdk.LocalOptions{Input: input, CacheDir: o.cacheDir, Dir: o.dir, NoCache: o.noCache})
	if err != nil {
		return nil, err
	}
	defer res.Release()
	out := &result{stats: res.Stats}
	for _, rec := range res.Output {
		if out.schema == nil {
			out.schema = rec.Schema()
		}
		ps, err := pairs.FromRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		out.pairs = append(out.pairs, ps...)
	}
	return out, nil
}

func mustRun(t testing.TB, cfg map[string]any, ps []pairs.Pair, o runOpts) *result {
	t.Helper()
	rec := pairs.ToRecord(ps, false, nil)
	defer rec.Release()
	r, err := runStage(t, cfg, []arrow.RecordBatch{rec}, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.pairs) != len(ps) {
		t.Fatalf("got %d rows, want %d", len(r.pairs), len(ps))
	}
	return r
}

func approx(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// sameScores compares the reference fields of two outputs exactly.
func sameScores(t *testing.T, what string, a, b []pairs.Pair) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d rows vs %d", what, len(a), len(b))
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Row != y.Row || x.RefChosen != y.RefChosen || x.RefRejected != y.RefRejected ||
			x.ChosenTokens != y.ChosenTokens || x.RejectedTokens != y.RejectedTokens ||
			!equalF32(x.RefChosenTokenLogps, y.RefChosenTokenLogps) || !equalF32(x.RefRejectedTokenLogps, y.RefRejectedTokenLogps) {
			t.Fatalf("%s: row %d differs:\n%+v\n%+v", what, i, *x, *y)
		}
	}
}

func equalF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func cfgFor(path string) map[string]any { return map[string]any{"model": path} }

func TestStories260K(t *testing.T) {
	bin := testassets.Path(t, "models/stories260K/stories260K.bin")
	refs := testassets.ReferenceLogprobs(t)
	prompt := []int32{1, 403, 407, 261, 378}
	var long []testassets.ReferenceText
	for _, r := range refs {
		if len(r.IDs) > len(prompt) {
			for i, id := range prompt {
				if r.IDs[i] != id {
					t.Fatalf("reference text %v does not start with the prompt", r.IDs)
				}
			}
			long = append(long, r)
		}
	}
	if len(long) < 2 {
		t.Fatalf("need two texts longer than the prompt, found %d", len(long))
	}
	p := pairs.Pair{Row: 0, Prompt: prompt, Chosen: long[0].IDs[len(prompt):], Rejected: long[1].IDs[len(prompt):],
		Weight: 1, Split: pairs.SplitTrain}
	res := mustRun(t, cfgFor(bin), []pairs.Pair{p}, runOpts{cacheDir: t.TempDir()})
	got := res.pairs[0]
	for k, side := range []struct {
		ref  testassets.ReferenceText
		logp float64
		n    int32
		tok  []float32
	}{{long[0], got.RefChosen, got.ChosenTokens, got.RefChosenTokenLogps},
		{long[1], got.RefRejected, got.RejectedTokens, got.RefRejectedTokenLogps}} {
		// pos p predicts ids[p+1]; the completion is ids[len(prompt):].
		want := side.ref.Logps[len(prompt)-1:]
		var sum float64
		for _, v := range want {
			sum += v
		}
		if int(side.n) != len(want) || len(side.tok) != len(want) {
			t.Fatalf("side %d: %d tokens (%d logps), want %d", k, side.n, len(side.tok), len(want))
		}
		if !approx(side.logp, sum, 1e-4) {
			t.Errorf("side %d: logp %.6f, reference %.6f", k, side.logp, sum)
		}
		for i, v := range want {
			if !approx(float64(side.tok[i]), v, 1e-4) {
				t.Errorf("side %d token %d: logp %.6f, reference %.6f", k, i, side.tok[i], v)
			}
		}
	}
}

func TestBatchedEqualsAlone(t *testing.T) {
	path, m := tinyModel(t, 1)
	ps := randomPairs(23, 40, 2, 0)
	// An empty prompt scores from the second token; a one-token completion
	// with an empty prompt has nothing to score.
	ps[3].Prompt = nil
	ps[4].Prompt, ps[4].Chosen = nil, []int32{5}
	batched := mustRun(t, map[string]any{"model": path, "batch_size": 5}, ps, runOpts{})
	unbucketed := mustRun(t, map[string]any{"model": path, "batch_size": 1, "bucket": false}, ps, runOpts{})

	r := model.NewRunner(m)
	alone := func(ids []int32, start int) (float64, []float32) {
		if len(ids)-start <= 0 {
			return 0, []float32{}
		}
		sc, err := r.Score([]model.Seq{{IDs: ids, Start: start}})
		if err != nil {
			t.Fatal(err)
		}
		return sc.Logp[0], sc.TokenLogps[0]
	}
	for _, out := range []*result{batched, unbucketed} {
		for i := range ps {
			got := &out.pairs[i]
			cl, ct := alone(ps[i].ChosenSeq())
			rl, rt := alone(ps[i].RejectedSeq())
			if !approx(got.RefChosen, cl, 1e-5) || !approx(got.RefRejected, rl, 1e-5) {
				t.Fatalf("pair %d: batched (%.7f, %.7f), alone (%.7f, %.7f)", i, got.RefChosen, got.RefRejected, cl, rl)
			}
			if int(got.ChosenTokens) != len(ct) || int(got.RejectedTokens) != len(rt) {
				t.Fatalf("pair %d: tokens (%d, %d), want (%d, %d)", i, got.ChosenTokens, got.RejectedTokens, len(ct), len(rt))
			}
			for j := range ct {
				if !approx(float64(got.RefChosenTokenLogps[j]), float64(ct[j]), 1e-5) {
					t.Fatalf("pair %d chosen token %d: %g vs %g", i, j, got.RefChosenTokenLogps[j], ct[j])
				}
			}
			for j := range rt {
				if !approx(float64(got.RefRejectedTokenLogps[j]), float64(rt[j]), 1e-5) {
					t.Fatalf("pair %d rejected token %d: %g vs %g", i, j, got.RefRejectedTokenLogps[j], rt[j])
				}
			}
		}
	}
	if n := batched.pairs[4].ChosenTokens; n != 0 || batched.pairs[4].RefChosen != 0 {
		t.Errorf("empty-prompt one-token completion: %d tokens, logp %g; want 0, 0", n, batched.pairs[4].RefChosen)
	}
	if n, want := batched.pairs[3].ChosenTokens, int32(len(ps[3].Chosen)-1); n != want {
		t.Errorf("empty prompt: %d tokens scored, want %d", n, want)
	}
}

func TestRowReuse(t *testing.T) {
	path, _ := tinyModel(t, 3)
	cacheDir := t.TempDir()
	cfg := cfgFor(path)
	ps := randomPairs(40, 40, 4, 0)
	stats := func(r *result) (int64, int64) { return r.stats[StatRowsReused], r.stats[StatRowsComputed] }

	first := mustRun(t, cfg, ps, runOpts{cacheDir: cacheDir})
	if u, c := stats(first); u != 0 || c != 40 {
		t.Fatalf("run 1: reused %d computed %d, want 0 and 40", u, c)
	}
	second := mustRun(t, cfg, ps, runOpts{cacheDir: cacheDir})
	if u, c := stats(second); u != 40 || c != 0 {
		t.Fatalf("run 2: reused %d computed %d, want 40 and 0", u, c)
	}
	sameScores(t, "run 2", first.pairs, second.pairs)

	// Append 10 pairs.
	more := append(append([]pairs.Pair(nil), ps...), randomPairs(10, 40, 5, 40)...)
	third := mustRun(t, cfg, more, runOpts{cacheDir: cacheDir})
	if u, c := stats(third); u != 40 || c != 10 {
		t.Fatalf("append: reused %d computed %d, want 40 and 10", u, c)
	}
	sameScores(t, "append", first.pairs, third.pairs[:40])

	// Edit one pair (and remove another): only the edited one is scored.
	edited := append([]pairs.Pair(nil), more[:len(more)-1]...)
	edited[7].Rejected = append(append([]int32(nil), edited[7].Rejected...), 9)
	fourth := mustRun(t, cfg, edited, runOpts{cacheDir: cacheDir})
	if u, c := stats(fourth); u != 48 || c != 1 {
		t.Fatalf("edit: reused %d computed %d, want 48 and 1", u, c)
	}
	if fourth.pairs[7].RejectedTokens != int32(len(edited[7].Rejected)) {
		t.Errorf("edited pair has %d rejected tokens, want %d", fourth.pairs[7].RejectedTokens, len(edited[7].Rejected))
	}
	// Moving a token from the prompt to the completion is another pair.
	moved := append([]pairs.Pair(nil), ps[:1]...)
	moved[0].Chosen = append([]int32{moved[0].Prompt[len(moved[0].Prompt)-1]}, moved[0].Chosen...)
	moved[0].Rejected = append([]int32{moved[0].Prompt[len(moved[0].Prompt)-1]}, moved[0].Rejected...)
	moved[0].Prompt = moved[0].Prompt[:len(moved[0].Prompt)-1]
	if u, c := stats(mustRun(t, cfg, moved, runOpts{cacheDir: cacheDir})); u != 0 || c != 1 {
		t.Fatalf("moved boundary: reused %d computed %d, want 0 and 1", u, c)
	}

	// NoCache reads nothing.
	fresh := mustRun(t, cfg, ps, runOpts{cacheDir: cacheDir, noCache: true})
	if u, c := stats(fresh); u != 0 || c != 40 {
		t.Fatalf("no-cache: reused %d computed %d, want 0 and 40", u, c)
	}
	sameScores(t, "no-cache", first.pairs, fresh.pairs)
}

func TestDuplicatePairsScoredOnce(t *testing.T) {
	path, _ := tinyModel(t, 3)
	ps := randomPairs(6, 40, 6, 0)
	ps = append(ps, ps[2], ps[2])
	ps[6].Row, ps[7].Row = 100, 101
	cacheDir := t.TempDir()
	res := mustRun(t, cfgFor(path), ps, runOpts{cacheDir: cacheDir})
	if c := res.stats[StatRowsComputed]; c != 8 {
		t.Errorf("rows_computed %d, want 8 (every row not in the cache)", c)
	}
	sameScores(t, "duplicates", []pairs.Pair{res.pairs[2], res.pairs[2]}, withRow(2, res.pairs[6], res.pairs[7]))
	again := mustRun(t, cfgFor(path), ps, runOpts{cacheDir: cacheDir})
	if u := again.stats[StatRowsReused]; u != 8 {
		t.Errorf("second run reused %d, want 8", u)
	}
}

// withRow returns ps with their rows set to row, for comparing the scores
// of duplicates.
func withRow(row int64, ps ...pairs.Pair) []pairs.Pair {
	for i := range ps {
		ps[i].Row = row
	}
	return ps
}

func TestModelDigestIsContent(t *testing.T) {
	path, _ := tinyModel(t, 7)
	cacheDir := t.TempDir()
	ps := randomPairs(12, 40, 8, 0)
	first := mustRun(t, cfgFor(path), ps, runOpts{cacheDir: cacheDir})

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "elsewhere", "renamed.bin")
	if err := os.MkdirAll(filepath.Dir(copyPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	copied := mustRun(t, cfgFor(copyPath), ps, runOpts{cacheDir: cacheDir})
	if copied.stats[StatRowsReused] != 12 || copied.stats[StatRowsComputed] != 0 {
		t.Fatalf("copied model: stats %v, want all reused", copied.stats)
	}
	if d0, d1 := first.schema.Metadata().Values(), copied.schema.Metadata().Values(); d0[0] != d1[0] {
		t.Fatalf("copied model has digest %s, original %s", d1[0], d0[0])
	}

	// Flip one byte of the weights (past the 256-byte header).
	b[len(b)-4] ^= 0x01
	flipped := filepath.Join(t.TempDir(), "flipped.bin")
	if err := os.WriteFile(flipped, b, 0o644); err != nil {
		t.Fatal(err)
	}
	changed := mustRun(t, cfgFor(flipped), ps, runOpts{cacheDir: cacheDir})
	if changed.stats[StatRowsReused] != 0 || changed.stats[StatRowsComputed] != 12 {
		t.Fatalf("flipped model: stats %v, want all computed", changed.stats)
	}
	if digestOf(t, changed.schema) == digestOf(t, first.schema) {
		t.Fatal("flipping a weight byte did not change the model digest")
	}
}

func digestOf(t *testing.T, s *arrow.Schema) string {
	t.Helper()
	v, ok := s.Metadata().GetValue(MetaModelDigest)
	if !ok || len(v) != 64 {
		t.Fatalf("schema metadata has no model digest: %v", s.Metadata())
	}
	return v
}

func TestHFModelAndArtifactDir(t *testing.T) {
	m, err := model.New(tinyConfig(), 9)
	if err != nil {
		t.Fatal(err)
	}
	// An upstream training stage's artifact keeps its model in model/.
	art := t.TempDir()
	if err := m.SaveHF(filepath.Join(art, "model")); err != nil {
		t.Fatal(err)
	}
	ps := randomPairs(5, 40, 10, 0)
	res := mustRun(t, cfgFor(art), ps, runOpts{cacheDir: t.TempDir()})
	r := model.NewRunner(m)
	ids, start := ps[0].ChosenSeq()
	sc, err := r.Score([]model.Seq{{IDs: ids, Start: start}})
	if err != nil {
		t.Fatal(err)
	}
	if !approx(res.pairs[0].RefChosen, sc.Logp[0], 1e-5) {
		t.Fatalf("HF artifact: logp %g, want %g", res.pairs[0].RefChosen, sc.Logp[0])
	}
}

func TestOrderSchemaAndInfo(t *testing.T) {
	path, _ := tinyModel(t, 11)
	ps := randomPairs(30, 40, 12, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range ps {
		ps[i].Row = int64(rng.IntN(1000))
		if i%3 == 0 {
			ps[i].Split = pairs.SplitEval
			ps[i].Weight = 0.5
		}
	}
	// Input in three batches, without weight and split columns in the last
	// (as pre-tokenized load output may be).
	var input []arrow.RecordBatch
	for _, part := range [][]pairs.Pair{ps[:10], ps[10:20]} {
		input = append(input, pairs.ToRecord(part, false, nil))
	}
	input = append(input, idsOnly(ps[20:]))
	defer func() {
		for _, r := range input {
			r.Release()
		}
	}()
	for i := 20; i < 30; i++ {
		ps[i].Weight, ps[i].Split = 1, pairs.SplitTrain
	}
	dir := t.TempDir()
	// Different schemas per input batch are not allowed by the reader, so
	// run the first two and the last separately.
	res, err := runStage(t, map[string]any{"model": path, "batch_size": 4}, input[:2], runOpts{cacheDir: t.TempDir(), dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	res2, err := runStage(t, cfgFor(path), input[2:], runOpts{})
	if err != nil {
		t.Fatal(err)
	}
	out := append(res.pairs, res2.pairs...)
	for i := range ps {
		g := &out[i]
		if g.Row != ps[i].Row || g.Weight != ps[i].Weight || g.Split != ps[i].Split ||
			!equalI32(g.Prompt, ps[i].Prompt) || !equalI32(g.Chosen, ps[i].Chosen) || !equalI32(g.Rejected, ps[i].Rejected) {
			t.Fatalf("row %d: got %+v, want %+v", i, *g, ps[i])
		}
		if !g.HasRef || int(g.ChosenTokens) != len(ps[i].Chosen) || int(g.RejectedTokens) != len(ps[i].Rejected) {
			t.Fatalf("row %d: reference columns %+v", i, *g)
		}
	}
	for _, s := range []*arrow.Schema{res.schema, res2.schema} {
		want := pairs.Schema(true, nil)
		if len(s.Fields()) != len(want.Fields()) {
			t.Fatalf("schema %v, want %v", s, want)
		}
		for i, f := range want.Fields() {
			if !arrow.TypeEqual(f.Type, s.Field(i).Type) || f.Name != s.Field(i).Name {
				t.Fatalf("field %d is %v, want %v", i, s.Field(i), f)
			}
		}
		digestOf(t, s)
		if v, _ := s.Metadata().GetValue(MetaStageVersion); v != Version {
			t.Errorf("stage version metadata %q", v)
		}
		if v, _ := s.Metadata().GetValue(MetaDType); v != "float32" {
			t.Errorf("dtype metadata %q", v)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, InfoFile))
	if err != nil {
		t.Fatal(err)
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.ModelDigest != digestOf(t, res.schema) || info.RowsComputed != 20 || info.RowsReused != 0 {
		t.Errorf("reference.json: %s", b)
	}
}

func equalI32(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// idsOnly builds a batch with just row and the three id columns.
func idsOnly(ps []pairs.Pair) arrow.RecordBatch {
	schema := arrow.NewSchema(pairs.TokenFields()[:4], nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, p := range ps {
		b.Field(0).(*array.Int64Builder).Append(p.Row)
		for j, ids := range [][]int32{p.Prompt, p.Chosen, p.Rejected} {
			lb := b.Field(1 + j).(*array.ListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.Int32Builder).AppendValues(ids, nil)
		}
	}
	return b.NewRecordBatch()
}

func TestEmptyInput(t *testing.T) {
	path, _ := tinyModel(t, 13)
	rec := pairs.ToRecord(nil, false, nil)
	defer rec.Release()
	res, err := runStage(t, cfgFor(path), []arrow.RecordBatch{rec}, runOpts{cacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.pairs) != 0 || res.schema == nil || res.stats[StatRowsComputed] != 0 {
		t.Fatalf("empty input: %d rows, schema %v, stats %v", len(res.pairs), res.schema, res.stats)
	}
}

func TestConfigure(t *testing.T) {
	for _, c := range []struct {
		cfg  map[string]any
		attr string
	}{
		{map[string]any{"model": "m.bin", "dtype": "bfloat16"}, "dtype"},
		{map[string]any{"model": "m.bin", "batch_size": 0}, "batch_size"},
		{map[string]any{"model": "m.bin", "batch_size": 2.5}, "batch_size"},
		{map[string]any{"model": ""}, "model"},
	} {
		b, _ := json.Marshal(c.cfg)
		res := sdk.Configure(New(), b)
		if len(res.Errors) != 1 || res.Errors[0].Attr != c.attr {
			t.Errorf("%v: errors %+v, want one on %s", c.cfg, res.Errors, c.attr)
		}
	}
	b, _ := json.Marshal(map[string]any{"model": "m.bin"})
	if res := sdk.Configure(New(), b); len(res.Errors) != 0 {
		t.Errorf("defaults rejected: %+v", res.Errors)
	}
}

func TestBadPairsNameTheRow(t *testing.T) {
	path, _ := tinyModel(t, 14)
	ps := randomPairs(3, 40, 15, 10)
	ps[1].Chosen[0] = 40
	rec := pairs.ToRecord(ps, false, nil)
	defer rec.Release()
	_, err := runStage(t, cfgFor(path), []arrow.RecordBatch{rec}, runOpts{})
	if err == nil || !strings.Contains(err.Error(), "row 11") || !strings.Contains(err.Error(), "vocabulary") {
		t.Fatalf("out-of-vocabulary id: error %v", err)
	}
	ps = randomPairs(3, 40, 15, 10)
	ps[2].Rejected = make([]int32, 70)
	rec2 := pairs.ToRecord(ps, false, nil)
	defer rec2.Release()
	_, err = runStage(t, cfgFor(path), []arrow.RecordBatch{rec2}, runOpts{})
	if err == nil || !strings.Contains(err.Error(), "row 12") || !strings.Contains(err.Error(), "context") {
		t.Fatalf("too long: error %v", err)
	}
	_, err = runStage(t, cfgFor(filepath.Join(t.TempDir(), "missing.bin")), []arrow.RecordBatch{rec2}, runOpts{})
	if err == nil || !strings.Contains(err.Error(), "model") {
		t.Fatalf("missing model: error %v", err)
	}
}

// A cancelled run writes no row segment and no output.
func TestCancelledRunStoresNothing(t *testing.T) {
	path, _ := tinyModel(t, 16)
	cacheDir := t.TempDir()
	ps := randomPairs(10, 40, 17, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := pairs.ToRecord(ps, false, nil)
	defer rec.Release()
	_, err := runStage(t, cfgFor(path), []arrow.RecordBatch{rec}, runOpts{cacheDir: cacheDir, ctx: ctx})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: error %v", err)
	}
	res := mustRun(t, cfgFor(path), ps, runOpts{cacheDir: cacheDir})
	if res.stats[StatRowsReused] != 0 {
		t.Fatalf("a cancelled run left %d reusable rows", res.stats[StatRowsReused])
	}
}

func TestRowKeyEncoding(t *testing.T) {
	p := pairs.Pair{Prompt: []int32{1, 2}, Chosen: []int32{3}, Rejected: []int32{4}}
	q := pairs.Pair{Prompt: []int32{1}, Chosen: []int32{2, 3}, Rejected: []int32{2, 4}}
	if RowKey("d", "float32", &p) == RowKey("d", "float32", &q) {
		t.Fatal("moving the prompt boundary kept the row key")
	}
	if RowKey("d", "float32", &p) == RowKey("e", "float32", &p) {
		t.Fatal("the model digest does not change the row key")
	}
	if k := RowKey("d", "float32", &p); k != RowKey("d", "float32", &p) || len(k) != 64 {
		t.Fatalf("row key %q is not a stable hex sha256", k)
	}
}

func BenchmarkReferenceScoring(b *testing.B) {
	// The shape of stories260K (dim 64, 5 layers, vocab 512) at 16 pairs of
	// 128 tokens each side.
	cfg := model.Config{Dim: 64, HiddenDim: 172, NLayers: 5, NHeads: 8, NKVHeads: 4, VocabSize: 512, SeqLen: 512,
		NormEps: 1e-5, RopeTheta: 10000, Rope: model.RopeAdjacent, BOS: 1, EOS: 2}
	m, err := model.New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "bench.bin")
	if err := m.SaveLlama2c(path); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 16
	ps := make([]pairs.Pair, n)
	ids := func(k int) []int32 {
		out := make([]int32, k)
		for i := range out {
			out[i] = int32(3 + rng.IntN(cfg.VocabSize-3))
		}
		return out
	}
	for i := range ps {
		ps[i] = pairs.Pair{Row: int64(i), Prompt: ids(64), Chosen: ids(64), Rejected: ids(64), Weight: 1, Split: pairs.SplitTrain}
	}
	rec := pairs.ToRecord(ps, false, nil)
	defer rec.Release()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := runStage(b, map[string]any{"model": path, "batch_size": 16}, []arrow.RecordBatch{rec}, runOpts{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// A stored row that does not fit its pair (a corrupted or foreign segment
// whose digest is intact) is scored again rather than trusted.
func TestMisfitStoredRowIsRescored(t *testing.T) {
	path, _ := tinyModel(t, 18)
	cacheDir := t.TempDir()
	ps := randomPairs(4, 40, 19, 0)
	digest, err := cache.HashTree(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.Open(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]pairs.Pair(nil), ps...)
	keys := make([]string, len(bad))
	for i := range bad {
		keys[i] = RowKey(digest, "float32", &bad[i])
		bad[i].ChosenTokens = int32(len(bad[i].Chosen))
		bad[i].RefChosenTokenLogps = make([]float32, len(bad[i].Chosen))
		bad[i].RejectedTokens = int32(len(bad[i].Rejected))
		bad[i].RefRejectedTokenLogps = make([]float32, len(bad[i].Rejected))
		bad[i].RefChosen, bad[i].RefRejected = -1, -2
	}
	bad[1].ChosenTokens++                                           // count does not fit the pair
	bad[2].RefRejectedTokenLogps = bad[2].RefRejectedTokenLogps[1:] // list does not fit
	store := c.Rows(Namespace(digest))
	rec := segmentRecord(bad, []int{0, 1, 2}, keys)
	err = store.Append(rec)
	rec.Release()
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	res := mustRun(t, cfgFor(path), ps, runOpts{cacheDir: cacheDir})
	if u, n := res.stats[StatRowsReused], res.stats[StatRowsComputed]; u != 1 || n != 3 {
		t.Fatalf("reused %d computed %d, want 1 (the well-formed row) and 3", u, n)
	}
	if res.pairs[0].RefChosen != -1 || res.pairs[1].RefChosen == -1 || res.pairs[2].RefRejected == -2 {
		t.Fatalf("stored values used wrongly: %+v", res.pairs[:3])
	}
}
