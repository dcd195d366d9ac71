package train

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/dpopipe/dpopipe/stages/loss"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// trainer runs the optimisation loop shared by the dpo and sft stages.
type trainer struct {
	cfg  *config
	m    *model.Model
	r    *model.Runner
	opt  *model.AdamW
	data []pairs.Pair
	// sequences of every pair, built once
	chosen, rejected []model.Seq
	seqTokens        [][2]int // completion tokens of chosen and rejected (0 when not trained on)
	seqLen           [][2]int // full lengths (0 when not trained on)
	hasRej           []bool   // the rejected completion is trained on (dpo; sft with target "both" and a non-empty one)
	noRejected       int      // sft "both": pairs whose empty rejected completion is skipped

	sched         schedule
	totalSteps    int
	mbPerEpoch    int
	stepsPerEpoch int
	names         []string

	// loop state (checkpointed)
	step      int
	epoch     int // index of the current epoch
	pos       int // next index into perm
	microDone int // micro-batches consumed in the current epoch
	permEpoch int // epoch perm was drawn for; -1 before the first
	tokens    int64
	lossTotal float64
	gradNorm  float64
	win       window
	perm      []int32
	pcg       *rand.PCG
	rng       *rand.Rand
	lines     [][]byte

	// scratch, reused every step
	mbs   [][]int32
	seqs  []model.Seq
	lp    []loss.Pair
	dTok  [][]float32
	dBuf  []float32
	sm    stepMetrics
	ldOn  bool
	ldA   float64
	wpo   [4][]float64 // WPO: per-token logps and log Σp² of chosen and rejected
	stepT int          // completion tokens of the current sft step

	// time spent outside the model's kernels (benchmarks): the loss graph
	// and the gradient and metric bookkeeping, and clipping
	lossTime, clipTime time.Duration
}

func newTrainer(cfg *config, m *model.Model, data []pairs.Pair) (*trainer, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("the input has no pairs in the %q split to train on", pairs.SplitTrain)
	}
	t := &trainer{cfg: cfg, m: m, data: data, permEpoch: -1}
	t.r = model.NewRunner(m)
	t.opt = model.NewAdamW(len(m.Params), cfg.AdamBeta1, cfg.AdamBeta2, cfg.AdamEpsilon, cfg.WeightDecay)
	t.ldA, t.ldOn = cfg.ldAlpha()
	if cfg.kind == "dpo" && cfg.UseWeighting {
		t.r.SetLogSumSq(true) // WPO weights need the per-token log Σp²
	}
	switch {
	case cfg.kind == "dpo":
		t.names = dpoMetricNames
	case cfg.Target == "both":
		t.names = sftBothNames
	default:
		t.names = sftChosenNames
	}
	t.chosen = make([]model.Seq, len(data))
	t.rejected = make([]model.Seq, len(data))
	t.seqTokens = make([][2]int, len(data))
	t.seqLen = make([][2]int, len(data))
	t.hasRej = make([]bool, len(data))
	empty := func(s model.Seq) bool { return len(s.IDs) < 2 || s.Start >= len(s.IDs) }
	for i := range data {
		p := &data[i]
		ids, start := p.ChosenSeq()
		t.chosen[i] = model.Seq{IDs: ids, Start: start}
		ids, start = p.RejectedSeq()
		t.rejected[i] = model.Seq{IDs: ids, Start: start}
		// sft learns chosen completions, and with target "both" the
		// rejected ones that exist: text datasets have none.
		switch {
		case cfg.kind == "dpo":
			t.hasRej[i] = true
		case cfg.Target == "both":
			t.hasRej[i] = !empty(t.rejected[i])
			if !t.hasRej[i] {
				t.noRejected++
			}
		}
		for j, s := range []model.Seq{t.chosen[i], t.rejected[i]} {
			if j == 1 && !t.hasRej[i] {
				continue
			}
			if empty(s) {
				return nil, fmt.Errorf("row %d: the %s completion is empty; there is nothing to score", p.Row, [2]string{"chosen", "rejected"}[j])
			}
			if len(s.IDs) > m.Config.SeqLen {
				return nil, fmt.Errorf("row %d: prompt + %s completion is %d tokens, more than the model's context of %d; set max_length in the tokenize stage", p.Row, [2]string{"chosen", "rejected"}[j], len(s.IDs), m.Config.SeqLen)
			}
			t.seqTokens[i][j] = len(s.IDs) - s.Start
			t.seqLen[i][j] = len(s.IDs)
		}
		if cfg.kind == "dpo" {
			if !p.HasRef {
				return nil, fmt.Errorf("the input has no reference log-probs (%s, %s, ...); use a reference_logprobs stage as the dpo stage's input", pairs.ColRefChosen, pairs.ColRefRejected)
			}
			if int(p.ChosenTokens) != t.seqTokens[i][0] || int(p.RejectedTokens) != t.seqTokens[i][1] {
				return nil, fmt.Errorf("row %d: the reference scored %d chosen and %d rejected tokens, the policy scores %d and %d: the reference_logprobs input does not match these pairs", p.Row, p.ChosenTokens, p.RejectedTokens, t.seqTokens[i][0], t.seqTokens[i][1])
			}
		}
	}
	bs, acc := cfg.BatchSize, cfg.GradAccum
	t.mbPerEpoch = (len(data) + bs - 1) / bs
	t.stepsPerEpoch = (t.mbPerEpoch + acc - 1) / acc
	if cfg.MaxSteps > 0 {
		t.totalSteps = cfg.MaxSteps
	} else {
		t.totalSteps = max(1, int(math.Ceil(cfg.Epochs*float64(t.stepsPerEpoch))))
	}
	t.sched = schedule{kind: cfg.LRScheduler, base: cfg.LearningRate,
		warmup: warmupSteps(cfg.WarmupSteps, cfg.WarmupRatio, t.totalSteps), total: t.totalSteps}
	t.pcg = rand.NewPCG(cfg.Seed, 0x6470_6f70_6970_65) // "dpopipe"
	t.rng = rand.New(t.pcg)
	t.win.reset(len(t.names))
	t.sm.reset(len(t.names))
	t.mbs = make([][]int32, 0, acc)
	return t, nil
}

// dataDigest identifies the training data, so that a checkpoint is only
// resumed on the input it was made from.
func (t *trainer) dataDigest() string {
	h := sha256.New()
	var b [8]byte
	put := func(v uint64) { binary.LittleEndian.PutUint64(b[:], v); h.Write(b[:]) }
	for i := range t.data {
		p := &t.data[i]
		put(uint64(p.Row))
		for _, ids := range [][]int32{p.Prompt, p.Chosen, p.Rejected} {
			put(uint64(len(ids)))
			for _, id := range ids {
				put(uint64(uint32(id)))
			}
		}
		put(uint64(math.Float32bits(p.Weight)))
		put(math.Float64bits(p.RefChosen))
		put(math.Float64bits(p.RefRejected))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// nextStep lays out the micro-batches of the next optimizer step in t.mbs:
// up to gradient_accumulation_steps micro-batches of batch_size pairs,
// without crossing the end of an epoch (the last batch of an epoch may be
// short, as a DataLoader without drop_last gives, and the last step of an
// epoch may have fewer micro-batches).
func (t *trainer) nextStep() {
	n := len(t.data)
	if t.pos >= n {
		t.epoch++
		t.pos = 0
		t.microDone = 0
	}
	if t.permEpoch != t.epoch {
		if t.perm == nil {
			t.perm = make([]int32, n)
		}
		for i := range t.perm {
			t.perm[i] = int32(i)
		}
		t.rng.Shuffle(n, func(i, j int) { t.perm[i], t.perm[j] = t.perm[j], t.perm[i] })
		t.permEpoch = t.epoch
	}
	t.mbs = t.mbs[:0]
	for len(t.mbs) < t.cfg.GradAccum && t.pos < n {
		end := min(t.pos+t.cfg.BatchSize, n)
		t.mbs = append(t.mbs, t.perm[t.pos:end])
		t.pos = end
		t.microDone++
	}
}

func (t *trainer) epochValue() float64 {
	return float64(t.epoch) + float64(t.microDone)/float64(t.mbPerEpoch)
}

// dTokFor shapes the reusable token-gradient buffer like sc.TokenLogps.
func (t *trainer) dTokFor(sc model.Scores) [][]float32 {
	total := 0
	for _, n := range sc.Tokens {
		total += n
	}
	if cap(t.dBuf) < total {
		t.dBuf = make([]float32, total)
	}
	buf := t.dBuf[:total]
	if cap(t.dTok) < len(sc.Tokens) {
		t.dTok = make([][]float32, len(sc.Tokens))
	}
	t.dTok = t.dTok[:len(sc.Tokens)]
	for i, n := range sc.Tokens {
		t.dTok[i] = buf[:n:n]
		buf = buf[n:]
	}
	return t.dTok
}

// ldWeight is the LD-DPO weight of completion token k when the shorter
// completion of the pair has public tokens.
func (t *trainer) ldWeight(k, public int) float64 {
	if k < public {
		return 1
	}
	return t.ldA
}

// wpoWeight returns the WPO weight of the pair whose chosen and rejected
// completions are sequences c and r of sc, from the policy's per-token
// log-probs (unweighted, also with LD-DPO, as TRL) and log Σp². It is a
// plain number: no gradient flows through it.
func (t *trainer) wpoWeight(sc model.Scores, c, r int) (float64, error) {
	fill := func(k int, src []float32) []float64 {
		t.wpo[k] = t.wpo[k][:0]
		for _, v := range src {
			t.wpo[k] = append(t.wpo[k], float64(v))
		}
		return t.wpo[k]
	}
	w, err := loss.WPOWeight(fill(0, sc.TokenLogps[c]), fill(1, sc.TokenLogSumSq[c]), fill(2, sc.TokenLogps[r]), fill(3, sc.TokenLogSumSq[r]))
	if err != nil {
		return 0, err
	}
	if w == 0 { // exp underflowed; loss.Pair needs a weight in (0, 1]
		w = math.SmallestNonzeroFloat64
	}
	return w, nil
}

// guardError is a non-finite loss or gradient.
type guardError struct {
	step int
	what string
	val  float64
	rows []int64
}

func (e *guardError) Error() string {
	return fmt.Sprintf("step %d: %s is %v (not finite) in the batch of rows %v; the update was not applied", e.step, e.what, e.val, e.rows)
}

// trainStep runs one optimizer step: forward and backward over the
// micro-batches of t.mbs, then clipping, the NaN guard and AdamW. injectNaN
// poisons the step's loss (a test hook).
func (t *trainer) trainStep(injectNaN bool) error {
	step := t.step + 1
	t.sm.reset(len(t.names))
	nPairs := 0
	for _, mb := range t.mbs {
		nPairs += len(mb)
		for _, j := range mb {
			t.sm.rows = append(t.sm.rows, t.data[j].Row)
		}
	}
	t.m.ZeroGrad()
	if t.cfg.kind == "sft" {
		t.stepT = 0
		for _, mb := range t.mbs {
			for _, j := range mb {
				t.stepT += t.seqTokens[j][0]
				if t.cfg.Target == "both" {
					t.stepT += t.seqTokens[j][1]
				}
			}
		}
	}
	for _, mb := range t.mbs {
		var err error
		if t.cfg.kind == "dpo" {
			err = t.dpoMicro(mb, float64(len(mb))/float64(nPairs))
		} else {
			err = t.sftMicro(mb)
		}
		if err != nil {
			var ge *guardError
			if asGuard(err, &ge) {
				ge.step, ge.rows = step, t.sm.rows
				return ge
			}
			return fmt.Errorf("step %d: %w", step, err)
		}
	}
	if injectNaN {
		t.sm.loss = math.NaN()
	}
	if !finite(t.sm.loss) {
		return &guardError{step: step, what: "the loss", val: t.sm.loss, rows: t.sm.rows}
	}
	t0 := time.Now()
	t.sm.gradNorm = model.ClipGradNorm(t.m.Grads, t.cfg.MaxGradNorm)
	t.clipTime += time.Since(t0)
	if !finite(t.sm.gradNorm) {
		return &guardError{step: step, what: "the gradient norm", val: t.sm.gradNorm, rows: t.sm.rows}
	}
	t.opt.Update(t.m.Params, t.m.Grads, t.sched.at(step-1))
	// commit the step
	t.step = step
	t.tokens += t.sm.tokens
	t.lossTotal += t.sm.loss
	t.gradNorm = t.sm.gradNorm
	t.win.Steps++
	t.win.LossSum += t.sm.loss
	t.win.Micro += t.sm.micro
	t.win.NoRej += t.sm.noRej
	for i, v := range t.sm.sums {
		t.win.Sums[i] += v
	}
	return nil
}

func asGuard(err error, ge **guardError) bool {
	g, ok := err.(*guardError)
	if ok {
		*ge = g
	}
	return ok
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// dpoMicro runs one DPO micro-batch whose loss enters the step with weight
// scale (its share of the step's pairs).
func (t *trainer) dpoMicro(mb []int32, scale float64) error {
	B := len(mb)
	t.seqs = t.seqs[:0]
	for _, j := range mb {
		t.seqs = append(t.seqs, t.chosen[j])
		t.sm.tokens += int64(t.seqLen[j][0] + t.seqLen[j][1])
	}
	for _, j := range mb {
		t.seqs = append(t.seqs, t.rejected[j])
	}
	sc, err := t.r.Forward(t.seqs)
	if err != nil {
		return err
	}
	t.lp = t.lp[:0]
	for i, j := range mb {
		p := &t.data[j]
		pc, pr := sc.Logp[i], sc.Logp[B+i]
		if t.ldOn {
			public := min(sc.Tokens[i], sc.Tokens[B+i])
			pc, pr = 0, 0
			for k, v := range sc.TokenLogps[i] {
				pc += t.ldWeight(k, public) * float64(v)
			}
			for k, v := range sc.TokenLogps[B+i] {
				pr += t.ldWeight(k, public) * float64(v)
			}
		}
		w := float64(p.Weight)
		if w == 0 { // loss.Pair reads 0 as "no weight"; keep the row inert
			w = math.SmallestNonzeroFloat64
		}
		t.lp = append(t.lp, loss.Pair{Chosen: pc, Rejected: pr, RefChosen: p.RefChosen, RefRejected: p.RefRejected,
			ChosenTokens: sc.Tokens[i], RejectedTokens: sc.Tokens[B+i], Weight: w})
	}
	for _, lp := range t.lp {
		if !finite(lp.Chosen) {
			return &guardError{what: "a policy log-prob", val: lp.Chosen}
		}
		if !finite(lp.Rejected) {
			return &guardError{what: "a policy log-prob", val: lp.Rejected}
		}
	}
	if t.cfg.UseWeighting {
		for i := range t.lp {
			w, err := t.wpoWeight(sc, i, B+i)
			if err != nil {
				return &guardError{what: "a WPO weight", val: math.NaN()}
			}
			t.lp[i].WPOWeight = w
		}
	}
	t0 := time.Now()
	res, err := loss.Compute(t.lp, t.cfg.lossOpts)
	if err != nil {
		return err
	}
	if !finite(res.Loss) {
		return &guardError{what: "the loss", val: res.Loss}
	}
	dTok := t.dTokFor(sc)
	for i := 0; i < B; i++ {
		gc, gr := float32(res.DChosen[i]*scale), float32(res.DRejected[i]*scale)
		public := min(sc.Tokens[i], sc.Tokens[B+i])
		for k := range dTok[i] {
			dTok[i][k] = gc
			if t.ldOn {
				dTok[i][k] = float32(res.DChosen[i] * scale * t.ldWeight(k, public))
			}
		}
		for k := range dTok[B+i] {
			dTok[B+i][k] = gr
			if t.ldOn {
				dTok[B+i][k] = float32(res.DRejected[i] * scale * t.ldWeight(k, public))
			}
		}
	}
	t.lossTime += time.Since(t0)
	if err := t.r.Backward(dTok); err != nil {
		return err
	}
	t0 = time.Now()
	// metrics of this micro-batch (TRL: means over its pairs)
	var lc, lr, gc, gr float64
	var nc, nr int
	for i := 0; i < B; i++ {
		lc += t.lp[i].Chosen
		lr += t.lp[i].Rejected
		gc += sc.LogitSum[i]
		gr += sc.LogitSum[B+i]
		nc += sc.Tokens[i]
		nr += sc.Tokens[B+i]
	}
	v := float64(t.m.Config.VocabSize)
	s := t.sm.sums
	s[0] += res.RewardsChosen
	s[1] += res.RewardsRejected
	s[2] += res.RewardsAccuracy
	s[3] += res.RewardsMargin
	s[4] += lc / float64(B)
	s[5] += lr / float64(B)
	s[6] += gc / (float64(nc) * v)
	s[7] += gr / (float64(nr) * v)
	t.sm.micro++
	t.sm.loss += res.Loss * scale
	t.lossTime += time.Since(t0)
	return nil
}

// sftMicro runs one SFT micro-batch: the mean token NLL over all
// completion tokens of the step (pooled over its micro-batches, so that
// gradient accumulation equals one large batch exactly).
func (t *trainer) sftMicro(mb []int32) error {
	both := t.cfg.Target == "both"
	B := len(mb)
	t.seqs = t.seqs[:0]
	for _, j := range mb {
		t.seqs = append(t.seqs, t.chosen[j])
		t.sm.tokens += int64(t.seqLen[j][0])
	}
	if both {
		for _, j := range mb {
			if t.hasRej[j] {
				t.seqs = append(t.seqs, t.rejected[j])
				t.sm.tokens += int64(t.seqLen[j][1])
			}
		}
	}
	sc, err := t.r.Forward(t.seqs)
	if err != nil {
		return err
	}
	inv := 1 / float64(t.stepT)
	var nll float64
	for _, lp := range sc.Logp {
		nll -= lp
	}
	if !finite(nll) {
		return &guardError{what: "the loss", val: nll * inv}
	}
	dTok := t.dTokFor(sc)
	g := float32(-inv)
	for _, row := range dTok {
		for k := range row {
			row[k] = g
		}
	}
	if err := t.r.Backward(dTok); err != nil {
		return err
	}
	v := float64(t.m.Config.VocabSize)
	var lc, lgc float64
	var nc int
	for i := 0; i < B; i++ {
		lc += sc.Logp[i]
		lgc += sc.LogitSum[i]
		nc += sc.Tokens[i]
	}
	s := t.sm.sums
	if both {
		var lr, lgr float64
		var nr int
		R := len(sc.Logp) - B // the rejected completions trained on
		for i := B; i < B+R; i++ {
			lr += sc.Logp[i]
			lgr += sc.LogitSum[i]
			nr += sc.Tokens[i]
		}
		s[0] += lc / float64(B)
		s[2] += lgc / (float64(nc) * v)
		if R > 0 {
			s[1] += lr / float64(R)
			s[3] += lgr / (float64(nr) * v)
		} else {
			t.sm.noRej++ // the rejected metrics average over the other micro-batches
		}
	} else {
		s[0] += lc / float64(B)
		s[1] += lgc / (float64(nc) * v)
	}
	t.sm.micro++
	t.sm.loss += nll * inv
	return nil
}

// logLine closes the logging window into a metrics line.
func (t *trainer) logLine() []byte {
	line := metricLine(t.step, t.epochValue(), &t.win, t.names, t.gradNorm, t.sched.at(t.step), t.tokens)
	t.lines = append(t.lines, line)
	t.win.reset(len(t.names))
	return line
}

// windowLoss is the mean loss of the open window (for the console).
func (t *trainer) windowValues() (lossV float64, vals []float64) {
	vals = make([]float64, len(t.names))
	for i := range vals {
		vals[i] = t.win.mean(i, t.names[i])
	}
	return t.win.LossSum / float64(max(1, t.win.Steps)), vals
}

// snapshot captures the loop state as a checkpoint.
func (t *trainer) snapshot(cfgPrint, dataDigest, startDigest string) (*checkpoint, error) {
	rngB, err := t.pcg.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var metrics []byte
	for _, l := range t.lines {
		metrics = append(metrics, l...)
		metrics = append(metrics, '\n')
	}
	win := t.win
	win.Sums = append([]float64(nil), t.win.Sums...)
	return &checkpoint{
		state: ckptState{Kind: t.cfg.kind, Step: t.step, Epoch: t.epoch, Pos: t.pos, MicroDone: t.microDone,
			PermEpoch: t.permEpoch, Tokens: t.tokens, LossTotal: t.lossTotal, GradNorm: t.gradNorm, Window: win,
			TotalSteps: t.totalSteps, Config: cfgPrint, DataDigest: dataDigest, StartDigest: startDigest,
			ModelConfig: t.m.Config},
		params: t.m.Params, opt: t.opt, rng: rngB, perm: t.perm, metrics: metrics,
	}, nil
}

// restore loads the loop state from ck, after checking that it belongs to
// this configuration and data.
func (t *trainer) restore(ck *checkpoint, cfgPrint, dataDigest, startDigest string) error {
	st := &ck.state
	switch {
	case st.Kind != t.cfg.kind:
		return fmt.Errorf("it is a %s checkpoint, this is a %s stage", st.Kind, t.cfg.kind)
	case st.Config != cfgPrint:
		return fmt.Errorf("the stage configuration changed since it was written (checkpoint: %s; now: %s)", st.Config, cfgPrint)
	case st.DataDigest != dataDigest:
		return fmt.Errorf("the training data differ from the data it was trained on")
	case st.StartDigest != startDigest:
		return fmt.Errorf("the starting model differs from the one it was trained from")
	case st.ModelConfig != t.m.Config:
		return fmt.Errorf("the model configuration differs (%+v, now %+v)", st.ModelConfig, t.m.Config)
	case len(ck.params) != len(t.m.Params) || len(ck.opt.M) != len(t.m.Params):
		return fmt.Errorf("it has %d parameters, the model %d", len(ck.params), len(t.m.Params))
	case len(ck.perm) != len(t.data) && st.PermEpoch >= 0:
		return fmt.Errorf("its permutation covers %d pairs, the data has %d", len(ck.perm), len(t.data))
	case st.Step > t.totalSteps:
		return fmt.Errorf("it is at step %d, past the run's %d steps", st.Step, t.totalSteps)
	}
	if err := t.pcg.UnmarshalBinary(ck.rng); err != nil {
		return err
	}
	copy(t.m.Params, ck.params)
	t.opt = ck.opt
	t.step, t.epoch, t.pos, t.microDone, t.permEpoch = st.Step, st.Epoch, st.Pos, st.MicroDone, st.PermEpoch
	t.tokens, t.lossTotal, t.gradNorm = st.Tokens, st.LossTotal, st.GradNorm
	t.win = st.Window
	if len(t.win.Sums) != len(t.names) {
		return fmt.Errorf("its metrics window has %d values, want %d", len(t.win.Sums), len(t.names))
	}
	if st.PermEpoch >= 0 {
		t.perm = append(t.perm[:0], ck.perm...)
	}
	t.lines = t.lines[:0]
	for _, l := range splitLines(ck.metrics) {
		t.lines = append(t.lines, l)
	}
	return nil
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if i > 0 {
			out = append(out, append([]byte(nil), b[:i]...))
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}

// paramsDigest identifies a parameter buffer.
func paramsDigest(p []float32) string {
	h := sha256.New()
	var b [4096]byte
	for len(p) > 0 {
		n := min(len(p), len(b)/4)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(p[i]))
		}
		h.Write(b[:4*n])
		p = p[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}
