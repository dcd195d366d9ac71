package train

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

func TestStepZeroPolicyEqualsReference(t *testing.T) {
	ps := randomPairs(8, 3, 4, 32, 1)
	scoreRef(t, tinyModel(t), ps)
	out := runStage(t, NewDPO(), baseCfg(map[string]any{"batch_size": 8, "max_steps": 1}), ps, true, "", "")
	if out.err != nil {
		t.Fatal(out.err)
	}
	ms := readMetrics(t, out.dir)
	if len(ms) != 1 {
		t.Fatalf("%d metrics lines, want 1", len(ms))
	}
	m := ms[0]
	t.Logf("step 1: %v", m)
	if math.Abs(m["loss"]-math.Ln2) > 1e-12 {
		t.Errorf("loss %v, want ln 2 = %v", m["loss"], math.Ln2)
	}
	for _, k := range []string{"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} {
		if m[k] != 0 {
			t.Errorf("%s = %v, want 0", k, m[k])
		}
	}
	var refC, refR float64
	for _, p := range ps {
		refC += p.RefChosen
		refR += p.RefRejected
	}
	if d := math.Abs(m["logps/chosen"] - refC/8); d > 1e-12 {
		t.Errorf("logps/chosen %v, reference mean %v", m["logps/chosen"], refC/8)
	}
	if d := math.Abs(m["logps/rejected"] - refR/8); d > 1e-12 {
		t.Errorf("logps/rejected %v, reference mean %v", m["logps/rejected"], refR/8)
	}
	for _, k := range []string{"grad_norm", "learning_rate", "epoch", "step", "num_input_tokens_seen", "logits/chosen", "logits/rejected"} {
		if _, ok := m[k]; !ok {
			t.Errorf("metrics line lacks %s", k)
		}
	}
	if m["epoch"] != 1 || m["step"] != 1 || m["learning_rate"] != 0 { // linear decay to 0 after the only step
		t.Errorf("epoch %v step %v learning_rate %v", m["epoch"], m["step"], m["learning_rate"])
	}
	if _, err := os.Stat(filepath.Join(out.dir, "train_summary.json")); err != nil {
		t.Error(err)
	}
	if len(out.res.Output) != 0 {
		t.Errorf("the stage wrote %d tables, want none", len(out.res.Output))
	}
}

// The policy's log-probs of the first batch, from the training forward pass,
// equal the reference stage's (model Score) pair by pair, bit for bit.
func TestFirstBatchLogpsMatchScore(t *testing.T) {
	m := tinyModel(t)
	ps := randomPairs(6, 3, 4, 32, 2)
	scoreRef(t, m, ps)
	tr := newTestTrainer(t, "dpo", baseCfg(map[string]any{"batch_size": 6}), m, ps)
	tr.nextStep()
	mb := tr.mbs[0]
	var seqs []model.Seq
	for _, j := range mb {
		seqs = append(seqs, tr.chosen[j])
	}
	for _, j := range mb {
		seqs = append(seqs, tr.rejected[j])
	}
	sc, err := tr.r.Forward(seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range mb {
		p := ps[j]
		if sc.Logp[i] != p.RefChosen || sc.Logp[len(mb)+i] != p.RefRejected {
			t.Errorf("row %d: policy %v %v, reference %v %v", p.Row, sc.Logp[i], sc.Logp[len(mb)+i], p.RefChosen, p.RefRejected)
		}
		for k, v := range sc.TokenLogps[i] {
			if v != p.RefChosenTokenLogps[k] {
				t.Errorf("row %d token %d: %v vs %v", p.Row, k, v, p.RefChosenTokenLogps[k])
			}
		}
	}
}

func maxAbsDiff(a, b []float32) (d, scale float64) {
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
		scale = math.Max(scale, math.Abs(float64(a[i])))
	}
	return d, scale
}

func TestAccumulationEqualsLargeBatch(t *testing.T) {
	ps := randomPairs(8, 3, 4, 32, 3)
	scoreRef(t, tinyModel(t), ps)
	for _, loss := range []any{"sigmoid", map[string]any{"ipo": 1, "sft": 0.1}} {
		var grads, params [2][]float32
		for k, shape := range [][2]int{{2, 4}, {8, 1}} {
			m := tinyModel(t)
			// perturb the policy so that the gradients are not those of policy == reference
			for i := range m.Params {
				m.Params[i] *= 1 + 0.05*float32(math.Sin(float64(i)))
			}
			tr := newTestTrainer(t, "dpo", baseCfg(map[string]any{"batch_size": shape[0], "gradient_accumulation_steps": shape[1],
				"loss": loss, "max_grad_norm": 0, "learning_rate": 1e-3, "lr_scheduler": "constant"}), m, ps)
			tr.nextStep()
			if len(tr.mbs) != shape[1] {
				t.Fatalf("%d micro-batches, want %d", len(tr.mbs), shape[1])
			}
			if err := tr.trainStep(false); err != nil {
				t.Fatal(err)
			}
			grads[k] = append([]float32(nil), m.Grads...)
			params[k] = append([]float32(nil), m.Params...)
		}
		dg, sg := maxAbsDiff(grads[0], grads[1])
		dp, _ := maxAbsDiff(params[0], params[1])
		t.Logf("loss %v: max |Δgrad| %.3g (max |grad| %.3g), max |Δparam| %.3g", loss, dg, sg, dp)
		if dg > 1e-6*math.Max(1, sg) || dp > 1e-6 {
			t.Errorf("loss %v: 4×2 accumulation differs from a batch of 8: grads by %g, params by %g", loss, dg, dp)
		}
	}
}

func TestSchedules(t *testing.T) {
	const base = 1.0
	cases := []struct {
		kind   string
		warmup int
		total  int
		want   map[int]float64
	}{
		{"constant", 0, 10, map[int]float64{0: 1, 5: 1, 10: 1}},
		{"constant", 4, 10, map[int]float64{0: 0, 2: 0.5, 4: 1, 9: 1}},
		{"linear", 0, 10, map[int]float64{0: 1, 5: 0.5, 9: 0.1, 10: 0}},
		{"linear", 2, 10, map[int]float64{0: 0, 1: 0.5, 2: 1, 6: 0.5, 10: 0, 12: 0}},
		{"cosine", 0, 10, map[int]float64{0: 1, 5: 0.5, 10: 0}},
		{"cosine", 2, 10, map[int]float64{1: 0.5, 2: 1, 4: 0.5 * (1 + math.Cos(math.Pi/4)), 6: 0.5, 10: 0}},
	}
	for _, c := range cases {
		s := schedule{kind: c.kind, base: base, warmup: c.warmup, total: c.total}
		for k, want := range c.want {
			if got := s.at(k); math.Abs(got-want) > 1e-12 {
				t.Errorf("%s warmup %d: lr(%d) = %v, want %v", c.kind, c.warmup, k, got, want)
			}
		}
	}
	if w := warmupSteps(0, 0.1, 95); w != 10 {
		t.Errorf("warmup_ratio 0.1 of 95 steps: %d, want 10 (ceil)", w)
	}
	if w := warmupSteps(3, 0.5, 95); w != 3 {
		t.Errorf("warmup_steps wins over warmup_ratio: %d", w)
	}
}

// The stage's logged learning rates follow the schedule: step s logs lr(s).
func TestLoggedLearningRate(t *testing.T) {
	ps := randomPairs(8, 3, 4, 32, 4)
	scoreRef(t, tinyModel(t), ps)
	out := runStage(t, NewDPO(), baseCfg(map[string]any{"max_steps": 4, "warmup_steps": 2, "lr_scheduler": "cosine", "learning_rate": 0.01}), ps, true, "", "")
	if out.err != nil {
		t.Fatal(out.err)
	}
	want := []float64{0.005, 0.01, 0.005, 0}
	for i, m := range readMetrics(t, out.dir) {
		if math.Abs(m["learning_rate"]-want[i]) > 1e-15 {
			t.Errorf("step %v: learning_rate %v, want %v", m["step"], m["learning_rate"], want[i])
		}
	}
}

func TestClipping(t *testing.T) {
	ps := randomPairs(4, 3, 4, 32, 5)
	scoreRef(t, tinyModel(t), ps)
	for _, maxNorm := range []float64{0, 1e-4, 1e3} {
		m := tinyModel(t)
		for i := range m.Params {
			m.Params[i] *= 1 + 0.05*float32(math.Cos(float64(i)))
		}
		tr := newTestTrainer(t, "dpo", baseCfg(map[string]any{"batch_size": 4, "max_grad_norm": maxNorm}), m, ps)
		tr.nextStep()
		if err := tr.trainStep(false); err != nil {
			t.Fatal(err)
		}
		pre, post := tr.gradNorm, model.GradNorm(m.Grads)
		t.Logf("max_grad_norm %v: norm %.6g before, %.6g after", maxNorm, pre, post)
		switch {
		case maxNorm > 0 && pre > maxNorm:
			if math.Abs(post-maxNorm) > 1e-3*maxNorm {
				t.Errorf("max_grad_norm %v: clipped norm %v", maxNorm, post)
			}
		default:
			if math.Abs(post-pre) > 1e-6*pre {
				t.Errorf("max_grad_norm %v: norm changed from %v to %v without clipping", maxNorm, pre, post)
			}
		}
	}
}

func TestNaNGuard(t *testing.T) {
	ps := randomPairs(12, 3, 4, 32, 6)
	scoreRef(t, tinyModel(t), ps)
	t.Setenv(EnvInjectNaNStep, "5")
	out := runStage(t, NewDPO(), baseCfg(map[string]any{"max_steps": 8, "save_steps": 2}), ps, true, "", "")
	if out.err == nil {
		t.Fatal("a NaN loss did not stop the run")
	}
	msg := out.err.Error()
	t.Log(msg)
	if !strings.Contains(msg, "step 5:") || !strings.Contains(msg, "rows [") || !strings.Contains(msg, "step-4") {
		t.Errorf("error does not name the step, the rows and the last good checkpoint: %s", msg)
	}
	// the rows named are the step's batch: two rows of the data
	i := strings.Index(msg, "rows [")
	rows := strings.Fields(strings.TrimSuffix(strings.SplitN(msg[i+6:], "]", 2)[0], "]"))
	if len(rows) != 2 {
		t.Errorf("rows %v, want the 2 rows of the batch", rows)
	}
	for _, r := range rows {
		if !strings.HasPrefix(r, "10") {
			t.Errorf("row %q is not one of the data's rows", r)
		}
	}
	ck, err := loadCheckpoint(filepath.Join(out.runDir, "checkpoints", "step-4"))
	if err != nil {
		t.Fatalf("the last good checkpoint: %v", err)
	}
	if ck.state.Step != 4 {
		t.Errorf("checkpoint at step %d", ck.state.Step)
	}
	for _, v := range ck.params {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("the checkpoint holds non-finite parameters")
		}
	}
	if _, err := os.Stat(filepath.Join(out.runDir, "checkpoints", "step-6")); err == nil {
		t.Error("a checkpoint past the failure exists")
	}
}

func TestConfigure(t *testing.T) {
	ok := []map[string]any{
		{"model": "m.bin"},
		{"model": "m.bin", "loss": map[string]any{"sigmoid": 1, "sft": 0.1}},
		{"init": tinyInit.attr(), "loss": "simpo", "ld_alpha": 0.5},
		{"model": "m.bin", "use_weighting": true},
	}
	bad := map[string]map[string]any{
		"model":      {},
		"init":       {"model": "m.bin", "init": tinyInit.attr()},
		"loss":       {"model": "m.bin", "loss": "nope"},
		"beta":       {"model": "m.bin", "beta": 0},
		"batch_size": {"model": "m.bin", "batch_size": 0},
		"ld_alpha":   {"model": "m.bin", "ld_alpha": 2},
	}
	st := NewDPO().(*stage)
	check := func(c map[string]any) error {
		_, err := runConfigure(st, c)
		return err
	}
	for _, c := range ok {
		if err := check(c); err != nil {
			t.Errorf("%v: %v", c, err)
		}
	}
	for attr, c := range bad {
		err := check(c)
		if err == nil || !strings.Contains(err.Error(), attr) {
			t.Errorf("%v: error %v does not name %s", c, err, attr)
		}
	}
	if _, err := runConfigure(NewSFT().(*stage), map[string]any{"model": "m", "target": "prompt"}); err == nil {
		t.Error("sft accepted target = prompt")
	}
	if _, err := runConfigure(st, map[string]any{"init": map[string]any{"dim": 16}}); err == nil {
		t.Error("an incomplete init was accepted")
	}
}

func TestOutputsAndTokenizer(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(tok, []byte(`{"model":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// starting weights from disk, with a tokenizer stored beside them
	start := filepath.Join(dir, "start")
	m := tinyModel(t)
	if err := m.SaveHF(start); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(start, "tokenizer.json"), []byte(`{"model":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ps := randomPairs(4, 3, 4, 32, 8)
	scoreRef(t, m, ps)
	ps = append(ps, pairs.Pair{Row: 5, Prompt: []int32{1}, Chosen: []int32{99, 99}, Rejected: []int32{1}, Split: pairs.SplitEval})
	out := runStage(t, NewDPO(), map[string]any{"model": start, "max_steps": 2, "batch_size": 2, "learning_rate": 1e-3}, ps, true, "", "")
	if out.err != nil {
		t.Fatal(out.err) // the eval row (out of vocabulary, no ref) must be ignored
	}
	for _, f := range []string{"model/config.json", "model/model.safetensors", "model/tokenizer.json", "metrics.jsonl", "train_summary.json"} {
		if _, err := os.Stat(filepath.Join(out.dir, f)); err != nil {
			t.Error(err)
		}
	}
	got := loadOut(t, out.dir)
	if d, _ := maxAbsDiff(got.Params, m.Params); d == 0 {
		t.Error("the saved model equals the starting one")
	}
	// without ref columns the dpo stage refuses, naming the fix
	out = runStage(t, NewDPO(), map[string]any{"model": start, "max_steps": 1}, ps[:4], false, "", "")
	if out.err == nil || !strings.Contains(out.err.Error(), "reference_logprobs") {
		t.Errorf("dpo on pairs without reference columns: %v", out.err)
	}
}

func TestSFT(t *testing.T) {
	// a tiny language: every completion counts up from its prompt's last token
	var ps []pairs.Pair
	for i := 0; i < 16; i++ {
		s := int32(i % 8)
		ps = append(ps, pairs.Pair{Row: int64(i), Prompt: []int32{s, s + 1}, Chosen: []int32{s + 2, s + 3, s + 4},
			Rejected: []int32{s + 9, s + 9}, Weight: 1, Split: pairs.SplitTrain})
	}
	for _, target := range []string{"chosen", "both"} {
		out := runStage(t, NewSFT(), baseCfg(map[string]any{"target": target, "learning_rate": 1e-2, "max_steps": 30,
			"logging_steps": 10, "lr_scheduler": "constant"}), ps, false, "", "")
		if out.err != nil {
			t.Fatal(out.err)
		}
		ms := readMetrics(t, out.dir)
		first, last := ms[0]["loss"], ms[len(ms)-1]["loss"]
		t.Logf("sft target=%s: loss %.4f → %.4f, logps/chosen %.3f → %.3f", target, first, last, ms[0]["logps/chosen"], ms[len(ms)-1]["logps/chosen"])
		if !(last < first-0.5) {
			t.Errorf("target %s: the loss did not fall: %v → %v", target, first, last)
		}
		if _, ok := ms[0]["logps/rejected"]; ok != (target == "both") {
			t.Errorf("target %s: logps/rejected present = %v", target, ok)
		}
	}
}

// At step 1, the SFT loss is the pooled mean token NLL of the batch's
// chosen completions under the starting model.
func TestSFTLossIsMeanTokenNLL(t *testing.T) {
	m := tinyModel(t)
	ps := randomPairs(4, 3, 4, 32, 9)
	out := runStage(t, NewSFT(), baseCfg(map[string]any{"batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 1}), ps, false, "", "")
	if out.err != nil {
		t.Fatal(out.err)
	}
	r := model.NewRunner(m)
	var nll float64
	var n int
	for _, p := range ps {
		ids, st := p.ChosenSeq()
		sc, err := r.Score([]model.Seq{{IDs: ids, Start: st}})
		if err != nil {
			t.Fatal(err)
		}
		nll -= sc.Logp[0]
		n += sc.Tokens[0]
	}
	got := readMetrics(t, out.dir)[0]["loss"]
	if math.Abs(got-nll/float64(n)) > 1e-9 {
		t.Errorf("sft loss %v, mean token NLL %v", got, nll/float64(n))
	}
}

// Every loss and option runs through the stage and writes finite metrics.
func TestLossesRun(t *testing.T) {
	ps := randomPairs(4, 3, 4, 32, 10)
	scoreRef(t, tinyModel(t), ps)
	for _, extra := range []map[string]any{
		{"loss": map[string]any{"sigmoid": 1, "sft": 0.1}},
		{"loss": "ipo", "ld_alpha": 0.5},
		{"loss": "aot"},
		{"loss": "bco_pair"},
		{"loss": "simpo", "gamma": 0.3},
		{"loss": "orpo"},
		{"loss": "alpha_divergence", "alpha": 0.5},
		{"loss": "robust", "label_smoothing": 0.1},
		{"use_weighting": true},
		{"loss": map[string]any{"sigmoid": 1, "sft": 0.1}, "use_weighting": true, "ld_alpha": 0.5},
	} {
		extra["max_steps"] = 2
		out := runStage(t, NewDPO(), baseCfg(extra), ps, true, "", "")
		if out.err != nil {
			t.Errorf("%v: %v", extra, out.err)
			continue
		}
		for _, m := range readMetrics(t, out.dir) {
			for k, v := range m {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Errorf("%v: %s = %v", extra, k, v)
				}
			}
		}
	}
}
