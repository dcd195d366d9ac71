package train

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A run killed after step k and resumed writes the same metrics.jsonl and
// the same weights, byte for byte, as an uninterrupted run. The data (13
// pairs, batches of 2, accumulation 2) make 7 micro-batches and 4 steps per
// epoch, the last of them short; 3 epochs give 12 steps. Checkpoints every
// 5 steps fall inside a logging window of 3 steps.
func TestResumeBitIdentical(t *testing.T) {
	checkResume(t, nil, []int{5, 7, 2, 10})
}

// The same with WPO weighting (whose weights come from the policy's
// per-token log Σp²).
func TestResumeBitIdenticalWPO(t *testing.T) {
	checkResume(t, map[string]any{"use_weighting": true}, []int{5, 7})
}

func checkResume(t *testing.T, extra map[string]any, stops []int) {
	t.Helper()
	ps := randomPairs(13, 3, 4, 32, 11)
	scoreRef(t, tinyModel(t), ps)
	cfg := baseCfg(map[string]any{"gradient_accumulation_steps": 2, "epochs": 3, "save_steps": 5, "logging_steps": 3,
		"save_total_limit": 0, "lr_scheduler": "cosine", "warmup_ratio": 0.2, "weight_decay": 0.01})
	for k, v := range extra {
		cfg[k] = v
	}
	full := runStage(t, NewDPO(), cfg, ps, true, "", "")
	if full.err != nil {
		t.Fatal(full.err)
	}
	files := []string{"metrics.jsonl", "model/model.safetensors", "model/config.json"}
	read := func(dir, f string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if n := bytes.Count(read(full.dir, "metrics.jsonl"), []byte("\n")); n != 4 {
		t.Fatalf("%d metrics lines, want 4 (steps 3, 6, 9, 12)", n)
	}
	for _, stop := range stops {
		t.Run(strconv.Itoa(stop), func(t *testing.T) {
			runDir := t.TempDir()
			t.Setenv(EnvStopAfterStep, strconv.Itoa(stop))
			killed := runStage(t, NewDPO(), cfg, ps, true, "", runDir)
			if killed.err == nil || !strings.Contains(killed.err.Error(), "stopped after step "+strconv.Itoa(stop)) {
				t.Fatalf("run with %s=%d: %v", EnvStopAfterStep, stop, killed.err)
			}
			os.Unsetenv(EnvStopAfterStep)
			rc := map[string]any{"resume": true}
			for k, v := range cfg {
				rc[k] = v
			}
			resumed := runStage(t, NewDPO(), rc, ps, true, "", runDir)
			if resumed.err != nil {
				t.Fatal(resumed.err)
			}
			want := "resumed from"
			if stop < 5 {
				want = "no checkpoint"
			}
			if !strings.Contains(strings.Join(resumed.res.Prints, "\n"), want) {
				t.Errorf("console lacks %q: %q", want, resumed.res.Prints)
			}
			for _, f := range files {
				if !bytes.Equal(read(full.dir, f), read(resumed.dir, f)) {
					t.Errorf("%s differs after stopping at step %d and resuming", f, stop)
				}
			}
		})
	}
}

func TestResumeRefusesChangedConfig(t *testing.T) {
	ps := randomPairs(8, 3, 4, 32, 12)
	scoreRef(t, tinyModel(t), ps)
	runDir := t.TempDir()
	t.Setenv(EnvStopAfterStep, "2")
	if out := runStage(t, NewDPO(), baseCfg(map[string]any{"max_steps": 4, "save_steps": 2}), ps, true, "", runDir); out.err == nil {
		t.Fatal("the hook did not stop the run")
	}
	os.Unsetenv(EnvStopAfterStep)
	out := runStage(t, NewDPO(), baseCfg(map[string]any{"max_steps": 4, "save_steps": 2, "beta": 0.2, "resume": true}), ps, true, "", runDir)
	if out.err == nil || !strings.Contains(out.err.Error(), "configuration changed") {
		t.Errorf("resume with another beta: %v", out.err)
	}
	// a corrupt newest checkpoint is skipped for the previous one
	t.Setenv(EnvStopAfterStep, "3")
	runDir = t.TempDir()
	if out := runStage(t, NewDPO(), baseCfg(map[string]any{"max_steps": 4, "save_steps": 1, "save_total_limit": 0}), ps, true, "", runDir); out.err == nil {
		t.Fatal("the hook did not stop the run")
	}
	os.Unsetenv(EnvStopAfterStep)
	p := filepath.Join(runDir, "checkpoints", "step-3", "params.bin")
	b, _ := os.ReadFile(p)
	b[0] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out = runStage(t, NewDPO(), baseCfg(map[string]any{"max_steps": 4, "save_steps": 1, "save_total_limit": 0, "resume": true}), ps, true, "", runDir)
	if out.err != nil {
		t.Fatal(out.err)
	}
	prints := strings.Join(out.res.Prints, "\n")
	if !strings.Contains(prints, "skipping") || !strings.Contains(prints, "step 2 of 4") {
		t.Errorf("console: %s", prints)
	}
}
