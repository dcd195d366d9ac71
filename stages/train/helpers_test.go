package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// tinyInit is a from-scratch model small enough that every micro-batch of
// the tests (at most 2 pairs of ≤ 8 tokens: < 32 rows, < 128 scored tokens)
// runs each of the model's reductions in a single part, so results are
// bit-reproducible even though the model's multi-worker reductions are not.
var tinyInit = initConfig{VocabSize: 32, Dim: 16, Layers: 2, Heads: 2, KVHeads: 1, HiddenDim: 32, SeqLen: 32, Seed: ptr[uint64](7)}

func ptr[T any](v T) *T { return &v }

func (ic initConfig) attr() map[string]any {
	return map[string]any{"vocab_size": ic.VocabSize, "dim": ic.Dim, "layers": ic.Layers, "heads": ic.Heads,
		"kv_heads": ic.KVHeads, "hidden_dim": ic.HiddenDim, "seq_len": ic.SeqLen, "seed": *ic.Seed}
}

func tinyModel(t testing.TB) *model.Model {
	t.Helper()
	m, err := model.New(tinyInit.modelConfig(), tinyInit.seed())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// randomPairs builds n pairs of random tokens: prompts of plen tokens and
// completions of 2..maxc tokens. Rows are 1000+i.
func randomPairs(n, plen, maxc, vocab int, seed uint64) []pairs.Pair {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := func(k int) []int32 {
		out := make([]int32, k)
		for i := range out {
			out[i] = int32(rng.IntN(vocab))
		}
		return out
	}
	ps := make([]pairs.Pair, n)
	for i := range ps {
		ps[i] = pairs.Pair{Row: int64(1000 + i), Prompt: ids(plen), Chosen: ids(2 + rng.IntN(maxc-1)),
			Rejected: ids(2 + rng.IntN(maxc-1)), Weight: 1, Split: pairs.SplitTrain}
	}
	return ps
}

// scoreRef fills the reference columns of ps with m's scores, as the
// reference_logprobs stage does.
func scoreRef(t testing.TB, m *model.Model, ps []pairs.Pair) {
	t.Helper()
	r := model.NewRunner(m)
	for i := range ps {
		p := &ps[i]
		c, cs := p.ChosenSeq()
		rj, rs := p.RejectedSeq()
		sc, err := r.Score([]model.Seq{{IDs: c, Start: cs}, {IDs: rj, Start: rs}})
		if err != nil {
			t.Fatal(err)
		}
		p.HasRef = true
		p.RefChosen, p.RefRejected = sc.Logp[0], sc.Logp[1]
		p.ChosenTokens, p.RejectedTokens = int32(sc.Tokens[0]), int32(sc.Tokens[1])
		p.RefChosenTokenLogps = append([]float32(nil), sc.TokenLogps[0]...)
		p.RefRejectedTokenLogps = append([]float32(nil), sc.TokenLogps[1]...)
	}
}

type runOut struct {
	dir, runDir string
	res         *sdk.LocalResult
	err         error
}

// runStage runs st in process on ps with cfg; dir and runDir are created
// under t.TempDir() when empty.
func runStage(t testing.TB, st sdk.Stage, cfg map[string]any, ps []pairs.Pair, withRef bool, dir, runDir string) runOut {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if runDir == "" {
		runDir = t.TempDir()
	}
	rec := pairs.ToRecord(ps, withRef, nil)
	defer rec.Release()
	res, err := sdk.RunLocal(context.Background(), st, cfg, sdk.LocalOptions{Input: []arrow.RecordBatch{rec}, Dir: dir, RunDir: runDir})
	return runOut{dir: dir, runDir: runDir, res: res, err: err}
}

func readMetrics(t testing.TB, dir string) []map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]float64
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]float64
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("metrics line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func loadOut(t testing.TB, dir string) *model.Model {
	t.Helper()
	m, err := model.Load(filepath.Join(dir, "model"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func baseCfg(extra map[string]any) map[string]any {
	c := map[string]any{"init": tinyInit.attr(), "learning_rate": 1e-3, "batch_size": 2, "logging_steps": 1}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// newTestTrainer builds a trainer directly (for step-level tests).
func newTestTrainer(t testing.TB, kind string, cfgMap map[string]any, m *model.Model, ps []pairs.Pair) *trainer {
	t.Helper()
	st := &stage{kind: kind}
	raw, _ := json.Marshal(cfgMap)
	c, err := sdk.NewConfig(st.Spec(), raw)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeConfig(kind, c)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newTrainer(cfg, m, ps)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// runConfigure runs the stage's Configure as the host does.
func runConfigure(st *stage, cfgMap map[string]any) (*config, error) {
	raw, _ := json.Marshal(cfgMap)
	c, err := sdk.NewConfig(st.Spec(), raw)
	if err != nil {
		return nil, err
	}
	return decodeConfig(st.kind, c)
}
