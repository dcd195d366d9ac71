package train

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// BenchmarkDPOStep times one full DPO optimizer step (forward of 8 pairs =
// 16 sequences, the gorgonia loss graph, backward, clipping, the NaN guard
// and AdamW) and, in the same run, a plain training step of the model on
// the same 16 sequences (forward, backward with uniform token gradients,
// AdamW). It reports pairs/s of the DPO step and dpo/train_step, the ratio
// of the two step times: what the loss graph and the loop add to the
// model's own step. The wall-clock ratio is noisy on a shared machine;
// loss+clip_% is the time the step spends in the loss graph, its
// bookkeeping and clipping, as a percentage of the plain step.
//
//	A: V512, D64, L5, 8 heads, 4 kv heads, F172; sequences of 128 tokens
//	B: V4096, D256, L4, 8 heads, F704; sequences of 256 tokens
func BenchmarkDPOStep(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  model.Config
		seq  int
	}{
		{"A", model.Config{VocabSize: 512, Dim: 64, NLayers: 5, NHeads: 8, NKVHeads: 4, HiddenDim: 172, SeqLen: 512}, 128},
		{"B", model.Config{VocabSize: 4096, Dim: 256, NLayers: 4, NHeads: 8, NKVHeads: 8, HiddenDim: 704, SeqLen: 512}, 256},
	} {
		b.Run(c.name, func(b *testing.B) {
			cfg := c.cfg
			cfg.NormEps, cfg.RopeTheta, cfg.Rope, cfg.BOS, cfg.EOS = 1e-5, 10000, model.RopeHalf, -1, -1
			m, err := model.New(cfg, 1)
			if err != nil {
				b.Fatal(err)
			}
			plainM := m.Clone()
			rng := rand.New(rand.NewPCG(1, 2))
			ids := func(n int) []int32 {
				out := make([]int32, n)
				for i := range out {
					out[i] = int32(rng.IntN(cfg.VocabSize))
				}
				return out
			}
			half := c.seq / 2
			ps := make([]pairs.Pair, 8)
			for i := range ps {
				ps[i] = pairs.Pair{Row: int64(i), Prompt: ids(half), Chosen: ids(half), Rejected: ids(half), Weight: 1,
					Split: pairs.SplitTrain, HasRef: true, RefChosen: -float64(half) * 6, RefRejected: -float64(half) * 6.1,
					ChosenTokens: int32(half), RejectedTokens: int32(half)}
			}
			tr := newTestTrainer(b, "dpo", map[string]any{"model": "in-memory", "batch_size": 8, "learning_rate": 1e-5,
				"max_steps": 1 << 30}, m, ps)

			// the plain step on the same sequences
			var seqs []model.Seq
			for i := range ps {
				seqs = append(seqs, tr.chosen[i])
			}
			for i := range ps {
				seqs = append(seqs, tr.rejected[i])
			}
			pr := model.NewRunner(plainM)
			popt := model.NewAdamW(len(plainM.Params), 0.9, 0.999, 1e-8, 0)
			dTok := make([][]float32, len(seqs))
			for i, s := range seqs {
				dTok[i] = make([]float32, len(s.IDs)-s.Start)
				for k := range dTok[i] {
					dTok[i][k] = -1e-3
				}
			}
			plain := func() {
				plainM.ZeroGrad()
				if _, err := pr.Forward(seqs); err != nil {
					b.Fatal(err)
				}
				if err := pr.Backward(dTok); err != nil {
					b.Fatal(err)
				}
				popt.Update(plainM.Params, plainM.Grads, 1e-5)
			}
			dpo := func() {
				tr.nextStep()
				if err := tr.trainStep(false); err != nil {
					b.Fatal(err)
				}
			}
			// warm both arenas and the loss graph cache
			plain()
			dpo()
			b.ResetTimer()
			tr.lossTime, tr.clipTime = 0, 0
			var tDPO, tPlain time.Duration
			for i := 0; i < b.N; i++ {
				// alternate the order so that neither step always runs first
				if i%2 == 0 {
					t0 := time.Now()
					dpo()
					tDPO += time.Since(t0)
				}
				t0 := time.Now()
				plain()
				tPlain += time.Since(t0)
				if i%2 == 1 {
					t0 := time.Now()
					dpo()
					tDPO += time.Since(t0)
				}
			}
			b.StopTimer()
			// What the DPO step adds to the model's work, measured inside
			// the step (robust to the noise of a shared machine): the loss
			// graph with its bookkeeping, and clipping.
			b.ReportMetric(100*(tr.lossTime+tr.clipTime).Seconds()/tPlain.Seconds(), "loss+clip_%")
			b.ReportMetric(float64(8*b.N)/tDPO.Seconds(), "pairs/s")
			b.ReportMetric(tDPO.Seconds()/tPlain.Seconds(), "dpo/train_step")
			b.ReportMetric(float64(tDPO.Nanoseconds())/float64(b.N), "ns/dpo_step")
		})
	}
}
