package train

import (
	"math/rand/v2"
	"testing"

	"github.com/dpopipe/dpopipe/internal/testassets"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// heldOutAccuracy is rewards/accuracies on ps under policy m: the share of
// pairs whose implicit reward β(π_c − ref_c) beats β(π_r − ref_r), with the
// mean margin.
func heldOutAccuracy(t *testing.T, m *model.Model, ps []pairs.Pair, beta float64) (acc, margin float64) {
	t.Helper()
	r := model.NewRunner(m)
	for _, p := range ps {
		c, cs := p.ChosenSeq()
		rj, rs := p.RejectedSeq()
		sc, err := r.Score([]model.Seq{{IDs: c, Start: cs}, {IDs: rj, Start: rs}})
		if err != nil {
			t.Fatal(err)
		}
		rc, rr := beta*(sc.Logp[0]-p.RefChosen), beta*(sc.Logp[1]-p.RefRejected)
		if rc > rr {
			acc++
		}
		margin += rc - rr
	}
	return acc / float64(len(ps)), margin / float64(len(ps))
}

// 50 DPO steps on stories260K, on pairs whose chosen completions are the
// model's own samples and whose rejected ones are the same tokens shuffled,
// raise the implicit-reward accuracy on held-out pairs.
func TestLearningStories260K(t *testing.T) {
	path := testassets.Path(t, "models/stories260K/stories260K.bin")
	ref, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const nTrain, nEval, plen, clen = 96, 48, 4, 16
	var ps []pairs.Pair
	for i := 0; i < nTrain+nEval; i++ {
		// a short prompt: BOS and a few sampled tokens, then the model's own
		// continuation at temperature 0.8
		pr, err := ref.Generate([]int32{1}, model.GenOptions{MaxTokens: plen - 1, Temperature: 1, Seed: rng.Uint64()})
		if err != nil {
			t.Fatal(err)
		}
		prompt := append([]int32{1}, pr...)
		chosen, err := ref.Generate(prompt, model.GenOptions{MaxTokens: clen, Temperature: 0.8, Seed: rng.Uint64()})
		if err != nil {
			t.Fatal(err)
		}
		rejected := append([]int32(nil), chosen...)
		rng.Shuffle(len(rejected), func(a, b int) { rejected[a], rejected[b] = rejected[b], rejected[a] })
		split := pairs.SplitTrain
		if i >= nTrain {
			split = pairs.SplitEval
		}
		ps = append(ps, pairs.Pair{Row: int64(i), Prompt: prompt, Chosen: chosen, Rejected: rejected, Weight: 1, Split: split})
	}
	scoreRef(t, ref, ps)
	eval := ps[nTrain:]
	const beta = 0.1
	before, mBefore := heldOutAccuracy(t, ref, eval, beta)
	out := runStage(t, NewDPO(), map[string]any{"model": path, "beta": beta, "learning_rate": 1e-3, "batch_size": 8,
		"max_steps": 50, "logging_steps": 10, "warmup_steps": 5, "seed": 1}, ps, true, "", "")
	if out.err != nil {
		t.Fatal(out.err)
	}
	ms := readMetrics(t, out.dir)
	for _, m := range ms {
		t.Logf("train step %2.0f: loss %.4f rewards/accuracies %.3f margins %.4f grad_norm %.3f", m["step"], m["loss"], m["rewards/accuracies"], m["rewards/margins"], m["grad_norm"])
	}
	after, mAfter := heldOutAccuracy(t, loadOut(t, out.dir), eval, beta)
	t.Logf("held-out rewards/accuracies %.3f → %.3f, rewards/margins %.4f → %.4f (%d pairs)", before, after, mBefore, mAfter, nEval)
	if !(after >= before+0.5 && after >= 0.75) {
		t.Errorf("held-out accuracy %.3f → %.3f: want a rise of at least 0.5, to at least 0.75", before, after)
	}
	if !(mAfter > mBefore+0.05) {
		t.Errorf("held-out margin %.4f → %.4f did not rise", mBefore, mAfter)
	}
}
