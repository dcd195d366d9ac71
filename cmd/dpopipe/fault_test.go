package main

// Fault injection: kill -9 of the host or of a plugin at random moments, a
// full disk during a cache write. After every fault the cache must verify
// and the next run must complete.

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestKillTrialsLeaveAVerifiableCache(t *testing.T) {
	trials := 20
	if v, err := strconv.Atoi(os.Getenv("DPOPIPE_FAULT_TRIALS")); err == nil {
		trials = v
	}
	e := newEnv(t)
	file := e.pipeline(3, `
stage "passthrough" "slow" {
  input    = stage.passthrough.copy
  sleep_ms = 150
  label    = var.label
}

variable "label" {
  type    = string
  default = "x"
}
`)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < trials; i++ {
		runDir := filepath.Join(e.dir, "trial-"+strconv.Itoa(i))
		// A fresh label makes the last stage miss the cache each trial,
		// so that there is always something to interrupt.
		cmd := e.command("run", file, "--run-dir", runDir, "-var", "label=t"+strconv.Itoa(i))
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.IntN(2500)) * time.Millisecond
		time.Sleep(delay)
		victim := "host"
		if rng.IntN(2) == 0 {
			pids := runningPids(runDir)
			for wait := 0; len(pids) == 0 && wait < 100; wait++ {
				time.Sleep(20 * time.Millisecond)
				pids = runningPids(runDir)
			}
			if len(pids) > 0 {
				pid := pids[rng.IntN(len(pids))]
				syscall.Kill(pid, syscall.SIGKILL)
				victim = "plugin " + strconv.Itoa(pid)
			}
		}
		if victim == "host" {
			cmd.Process.Signal(syscall.SIGKILL)
		}
		cmd.Wait()
		v := e.run("cache", "verify")
		if v.code != 0 {
			t.Fatalf("trial %d (kill %s after %s): cache verify failed:\n%s%s\nrun stderr:\n%s", i, victim, delay, v.stdout, v.stderr, errb.String())
		}
		t.Logf("trial %d: killed %s after %s; cache verifies", i, victim, delay)
	}
	final := filepath.Join(e.dir, "final")
	if r := e.run("run", file, "--run-dir", final); r.code != 0 {
		t.Fatalf("the run after the trials failed:\n%s", r.stderr)
	}
	if rec := e.readRun(final); rec.Status != "ok" {
		t.Fatalf("final run status %q", rec.Status)
	}
}

// runningPids returns the pids of the stages run.json shows running.
func runningPids(runDir string) []int {
	b, err := os.ReadFile(filepath.Join(runDir, "run.json"))
	if err != nil {
		return nil
	}
	var r runJSON
	if json.Unmarshal(b, &r) != nil {
		return nil
	}
	var pids []int
	for _, s := range r.Stages {
		if s.Status == "running" && s.Pid != 0 {
			pids = append(pids, s.Pid)
		}
	}
	return pids
}

func TestFullDiskDuringCacheWrite(t *testing.T) {
	e := newEnv(t)
	file := e.pipeline(3, "")
	cmd := e.command("run", file, "--run-dir", filepath.Join(e.dir, "run"))
	cmd.Env = append(cmd.Env, "DPOPIPE_CACHE_MAX_WRITE_BYTES=2000")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err == nil {
		t.Fatal("run succeeded with a full cache disk")
	}
	msg := errb.String()
	if !strings.Contains(msg, "space") || !strings.Contains(msg, e.cache) {
		t.Fatalf("error does not say the cache is out of space and where:\n%s", msg)
	}
	if v := e.run("cache", "verify"); v.code != 0 {
		t.Fatalf("cache verify after a full disk: %s%s", v.stdout, v.stderr)
	}
	if ls := e.run("cache", "ls"); strings.Count(strings.TrimSpace(ls.stdout), "\n") != 0 {
		t.Fatalf("entries left after a full disk:\n%s", ls.stdout)
	}
	if r := e.run("run", file, "--run-dir", filepath.Join(e.dir, "run2")); r.code != 0 {
		t.Fatalf("the next run failed: %s", r.stderr)
	}
}
