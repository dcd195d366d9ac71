package train

import (
	"runtime"
	"testing"

	"github.com/dpopipe/dpopipe/stages/model"
)

// Steady-state steps reuse the runner's activations and the trainer's
// buffers: what a step allocates is small and does not grow with the
// number of steps.
func TestStepMemoryIsBounded(t *testing.T) {
	ps := randomPairs(16, 3, 4, 32, 13)
	ic := tinyInit
	ic.Dim, ic.HiddenDim = 64, 128 // params and activations of ~0.4 MB each
	m, err := model.New(ic.modelConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	scoreRef(t, m, ps)
	tr := newTestTrainer(t, "dpo", baseCfg(map[string]any{"batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": 1 << 20}), m, ps)
	step := func() {
		tr.nextStep()
		if err := tr.trainStep(false); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		step()
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 50
	for i := 0; i < n; i++ {
		step()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perStep := float64(after.TotalAlloc-before.TotalAlloc) / n
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%.0f bytes allocated per step (model has %d parameters); live heap grew by %d bytes over %d steps", perStep, len(m.Params), growth, n)
	if perStep > 64<<10 {
		t.Errorf("a step allocates %.0f bytes: buffers sized by the parameters or activations are not reused", perStep)
	}
	if growth > 1<<20 {
		t.Errorf("the live heap grew by %d bytes over %d steps", growth, n)
	}
}
