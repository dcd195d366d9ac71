package main

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

const resumePipeline = `
variable "model" {
  type = string
}
variable "steps" {
  type    = number
  default = 80
}

stage "load" "prefs" {
  path = "prefs.jsonl"
}

stage "tokenize" "tok" {
  input             = stage.load.prefs
  builtin_tokenizer = "bytes"
}

stage "reference_logprobs" "ref" {
  input = stage.tokenize.tok
  model = var.model
}

stage "dpo" "train" {
  input         = stage.reference_logprobs.ref
  model         = var.model
  learning_rate = 1e-4
  batch_size    = 8
  max_steps     = var.steps
  save_steps    = 4
  logging_steps = 2
}
`

// TestResumeAfterKillIsBitIdentical kills a run with kill -9 while DPO
// trains, resumes it with dpopipe run --resume, and compares metrics.jsonl
// and the final weights with an uninterrupted run's.
func TestResumeAfterKillIsBitIdentical(t *testing.T) {
	base := newEnv(t)
	modelPath := writeModel(t, base.dir)
	writePrefs(t, filepath.Join(base.dir, "prefs.jsonl"), 120, 5)
	file := base.write("train.hcl", resumePipeline)

	// The uninterrupted run, with a cache of its own.
	full := filepath.Join(base.dir, "full")
	if r := base.run("run", file, "--run-dir", full, "-var", "model="+modelPath); r.code != 0 {
		t.Fatalf("uninterrupted run: %s", r.stderr)
	}

	killed := &env{t: t, dir: base.dir, cache: filepath.Join(base.dir, "cache2")}
	runDir := filepath.Join(base.dir, "killed")
	cmd := killed.command("run", file, "--run-dir", runDir, "-var", "model="+modelPath)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(runDir, "train", "checkpoints", "step-8")
	deadline := time.Now().Add(120 * time.Second)
	for {
		if _, err := os.Stat(ckpt); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no checkpoint %s appeared:\n%s", ckpt, errb.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(runDir, "train", "model")); err == nil {
		t.Fatal("the run finished before it was killed; the test proves nothing")
	}

	t.Logf("killed the run after %s", ckpt)
	r := killed.run("run", "--resume", runDir)
	if r.code != 0 {
		t.Fatalf("resume failed:\n%s\n%s", r.stdout, r.stderr)
	}
	for _, name := range []string{"metrics.jsonl", filepath.Join("model", "model.safetensors")} {
		a, err := os.ReadFile(filepath.Join(full, "train", name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(runDir, "train", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs between the uninterrupted and the resumed run", name)
		}
	}
}
