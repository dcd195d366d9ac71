package evaluate

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/loss"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/modelref"
	"github.com/dpopipe/dpopipe/stages/pairs"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

func tinyConfig() model.Config {
	return model.Config{Dim: 16, HiddenDim: 32, NLayers: 1, NHeads: 2, NKVHeads: 2, VocabSize: 259, SeqLen: 48,
		NormEps: 1e-5, RopeTheta: 10000, Rope: model.RopeHalf, BOS: 256, EOS: 257}
}

// fixture writes a reference model, a policy artifact (model/ with the
// byte tokenizer, as the dpo stage writes it) and tokenized pairs with the
// reference's log-probs.
func fixture(t *testing.T) (refDir, policyDir string, ps []pairs.Pair) {
	t.Helper()
	dir := t.TempDir()
	ref, err := model.New(tinyConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := model.New(tinyConfig(), 2)
	if err != nil {
		t.Fatal(err)
	}
	refDir = filepath.Join(dir, "ref")
	policyDir = filepath.Join(dir, "dpo")
	if err := ref.SaveHF(refDir); err != nil {
		t.Fatal(err)
	}
	if err := pol.SaveHF(filepath.Join(policyDir, modelref.ModelDir)); err != nil {
		t.Fatal(err)
	}
	if err := modelref.CopyTokenizer("bytes", filepath.Join(policyDir, modelref.ModelDir)); err != nil {
		t.Fatal(err)
	}
	tok := tokenizer.NewBytes()
	words := []string{"abc", "hello", "xy", "dpo", "tiny", "model", "arrow", "go", "plot", "judge", "eval", "bytes"}
	r := model.NewRunner(ref)
	for i, w := range words {
		p := pairs.Pair{Row: int64(100 - i), Prompt: append([]int32{256}, tok.Encode("rev "+w+"=")...),
			Chosen: append(tok.Encode(rev(w)), 257), Rejected: append(tok.Encode(w+"!"), 257), Weight: 1, Split: "eval"}
		if i%3 == 0 {
			p.Split = "train"
		}
		c, cs := p.ChosenSeq()
		rj, rs := p.RejectedSeq()
		sc, err := r.Score([]model.Seq{{IDs: c, Start: cs}, {IDs: rj, Start: rs}})
		if err != nil {
			t.Fatal(err)
		}
		p.HasRef = true
		p.RefChosen, p.RefRejected = sc.Logp[0], sc.Logp[1]
		p.ChosenTokens, p.RejectedTokens = int32(sc.Tokens[0]), int32(sc.Tokens[1])
		p.RefChosenTokenLogps, p.RefRejectedTokenLogps = sc.TokenLogps[0], sc.TokenLogps[1]
		ps = append(ps, p)
	}
	return refDir, policyDir, ps
}

func rev(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

func TestSummaryMatchesPairsArrow(t *testing.T) {
	refDir, policyDir, ps := fixture(t)
	in := pairs.ToRecord(ps, true, nil)
	defer in.Release()
	out := t.TempDir()
	const beta = 0.2
	losses := []string{"sigmoid", "ipo", "hinge", "sft"}
	res, err := sdk.RunLocal(context.Background(), New(), map[string]any{
		"model": policyDir, "reference_model": refDir, "beta": beta, "losses": losses, "samples": 3, "batch_size": 3,
	}, sdk.LocalOptions{Input: []arrow.RecordBatch{in}, Dir: out})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()

	// pairs.arrow, read back with arrow's IPC reader directly
	f, err := os.Open(filepath.Join(out, PairsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fr, err := ipc.NewFileReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	wantCols := []string{"row", "policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp",
		"chosen_tokens", "rejected_tokens", "reward_chosen", "reward_rejected", "correct"}
	for i, name := range wantCols {
		if got := fr.Schema().Field(i).Name; got != name {
			t.Fatalf("column %d is %q, want %q", i, got, name)
		}
	}
	type row struct {
		row                    int64
		pc, pr, rc, rr, wc, wr float64
		nc, nr                 int32
		correct                bool
	}
	var rows []row
	for i := 0; i < fr.NumRecords(); i++ {
		rec, err := fr.RecordBatchAt(i)
		if err != nil {
			t.Fatal(err)
		}
		col := func(name string) arrow.Array { return rec.Column(rec.Schema().FieldIndices(name)[0]) }
		f64 := func(name string, k int) float64 { return col(name).(*array.Float64).Value(k) }
		for k := 0; k < int(rec.NumRows()); k++ {
			rows = append(rows, row{
				row: col("row").(*array.Int64).Value(k),
				pc:  f64("policy_chosen_logp", k), pr: f64("policy_rejected_logp", k),
				rc: f64("ref_chosen_logp", k), rr: f64("ref_rejected_logp", k),
				wc: f64("reward_chosen", k), wr: f64("reward_rejected", k),
				nc: col("chosen_tokens").(*array.Int32).Value(k), nr: col("rejected_tokens").(*array.Int32).Value(k),
				correct: col("correct").(*array.Boolean).Value(k),
			})
		}
		rec.Release()
	}
	evalRows := map[int64]pairs.Pair{}
	for _, p := range ps {
		if p.Split == "eval" {
			evalRows[p.Row] = p
		}
	}
	if len(rows) != len(evalRows) {
		t.Fatalf("pairs.arrow has %d rows, want the %d eval pairs", len(rows), len(evalRows))
	}
	// the policy's log-probs, recomputed one sequence at a time
	pol, err := modelref.Load(policyDir)
	if err != nil {
		t.Fatal(err)
	}
	runner := model.NewRunner(pol)
	var batch []loss.Pair
	var sums [6]float64
	acc := 0.0
	for i, r := range rows {
		if i > 0 && rows[i-1].row >= r.row {
			t.Fatalf("rows not sorted: %d after %d", r.row, rows[i-1].row)
		}
		p, ok := evalRows[r.row]
		if !ok {
			t.Fatalf("row %d is not an eval pair", r.row)
		}
		c, cs := p.ChosenSeq()
		sc, err := runner.Score([]model.Seq{{IDs: c, Start: cs}})
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(sc.Logp[0]-r.pc) > 1e-4 {
			t.Errorf("row %d: policy chosen logp %v, recomputed %v", r.row, r.pc, sc.Logp[0])
		}
		if r.rc != p.RefChosen || r.rr != p.RefRejected || r.nc != p.ChosenTokens || r.nr != p.RejectedTokens {
			t.Errorf("row %d: reference columns not carried over", r.row)
		}
		if math.Abs(r.wc-beta*(r.pc-r.rc)) > 1e-12 || math.Abs(r.wr-beta*(r.pr-r.rr)) > 1e-12 {
			t.Errorf("row %d: rewards %v %v are not beta*(policy-ref)", r.row, r.wc, r.wr)
		}
		if r.correct != (r.wc > r.wr) {
			t.Errorf("row %d: correct = %v with rewards %v, %v", r.row, r.correct, r.wc, r.wr)
		}
		if r.correct {
			acc++
		}
		for j, v := range []float64{r.wc, r.wr, r.wc - r.wr, r.pc, r.pr} {
			sums[j] += v
		}
		batch = append(batch, loss.Pair{Chosen: r.pc, Rejected: r.pr, RefChosen: r.rc, RefRejected: r.rr,
			ChosenTokens: int(r.nc), RejectedTokens: int(r.nr)})
	}
	n := float64(len(rows))
	want := map[string]float64{
		"rewards/chosen": sums[0] / n, "rewards/rejected": sums[1] / n, "rewards/margins": sums[2] / n,
		"logps/chosen": sums[3] / n, "logps/rejected": sums[4] / n, "rewards/accuracies": acc / n,
	}
	for _, name := range losses {
		o := loss.DefaultOptions()
		o.Beta = beta
		o.Losses = map[string]float64{name: 1}
		lr, err := loss.Compute(batch, o)
		if err != nil {
			t.Fatal(err)
		}
		want["loss/"+name] = lr.Loss
		if name == "sigmoid" {
			// the loss package's own metrics agree too
			for k, v := range map[string]float64{"rewards/chosen": lr.RewardsChosen, "rewards/rejected": lr.RewardsRejected,
				"rewards/margins": lr.RewardsMargin, "rewards/accuracies": lr.RewardsAccuracy} {
				if math.Abs(v-want[k]) > 1e-9 {
					t.Errorf("%s: loss package %v, recomputed %v", k, v, want[k])
				}
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(out, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("summary.json has no %q", k)
			continue
		}
		if math.Abs(g-v) > 1e-9*math.Max(1, math.Abs(v)) {
			t.Errorf("%s = %v, recomputed from pairs.arrow %v", k, g, v)
		}
	}

	// the sample table: the first 3 eval rows, with both completions
	if len(res.Output) != 1 || res.Output[0].NumRows() != 3 {
		t.Fatalf("output: %d batches", len(res.Output))
	}
	rec := res.Output[0]
	if !rec.Schema().Equal(SamplesSchema()) {
		t.Fatalf("output schema %v", rec.Schema())
	}
	samples, err := ReadSamples(filepath.Join(out, SamplesFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 3 {
		t.Fatalf("samples.jsonl has %d lines", len(samples))
	}
	refM, err := model.Load(refDir)
	if err != nil {
		t.Fatal(err)
	}
	tok := tokenizer.NewBytes()
	for i, s := range samples {
		if s.Row != rows[i].row || rec.Column(0).(*array.Int64).Value(i) != s.Row {
			t.Errorf("sample %d is row %d, want %d", i, s.Row, rows[i].row)
		}
		p := evalRows[s.Row]
		if s.Prompt != tok.Decode(p.Prompt) || s.Chosen != tok.Decode(p.Chosen) {
			t.Errorf("sample %d: prompt %q chosen %q", i, s.Prompt, s.Chosen)
		}
		if s.ReferenceCompletion == nil || rec.Column(3).IsNull(i) {
			t.Fatalf("sample %d has no reference completion", i)
		}
		ids, err := refM.Generate(p.Prompt, model.GenOptions{MaxTokens: 48 - len(p.Prompt), StopAtEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.ToValidUTF8(tok.Decode(ids), "\uFFFD"); *s.ReferenceCompletion != want {
			t.Errorf("sample %d: reference completion %q, greedy %q", i, *s.ReferenceCompletion, want)
		}
		if rec.Column(4).(*array.String).Value(i) != s.PolicyCompletion {
			t.Errorf("sample %d: table and samples.jsonl differ", i)
		}
	}
}

func TestNoReferenceModelAndErrors(t *testing.T) {
	_, policyDir, ps := fixture(t)
	in := pairs.ToRecord(ps, true, nil)
	defer in.Release()
	res, err := sdk.RunLocal(context.Background(), New(), map[string]any{"model": policyDir, "samples": -1},
		sdk.LocalOptions{Input: []arrow.RecordBatch{in}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rec := res.Output[0]
	if rec.NumRows() != 8 || rec.Column(3).NullN() != 8 {
		t.Fatalf("want 8 samples without reference completions, got %d rows, %d nulls", rec.NumRows(), rec.Column(3).NullN())
	}
	res.Release()

	// no reference columns
	noRef := pairs.ToRecord(ps, false, nil)
	defer noRef.Release()
	if _, err := sdk.RunLocal(context.Background(), New(), map[string]any{"model": policyDir},
		sdk.LocalOptions{Input: []arrow.RecordBatch{noRef}, Dir: t.TempDir()}); err == nil {
		t.Error("input without reference log-probs: no error")
	}
	// no eval rows
	if _, err := sdk.RunLocal(context.Background(), New(), map[string]any{"model": policyDir, "split": "test"},
		sdk.LocalOptions{Input: []arrow.RecordBatch{in}, Dir: t.TempDir()}); err == nil {
		t.Error("empty split: no error")
	}
	for _, cfg := range []map[string]any{
		{"model": policyDir, "losses": []string{"nope"}},
		{"model": policyDir, "beta": 0},
		{"model": policyDir, "top_p": 0},
		{},
	} {
		if _, err := sdk.RunLocal(context.Background(), New(), cfg, sdk.LocalOptions{Input: []arrow.RecordBatch{in}, Dir: t.TempDir()}); err == nil {
			t.Errorf("%v: no error", cfg)
		}
	}
}
