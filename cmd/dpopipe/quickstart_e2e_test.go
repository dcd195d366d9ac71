package main

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuickstart runs examples/quickstart/train.hcl as make run does and
// checks what the README promises: the report's path and a summary in which
// DPO beats the SFT model on held-out exact answers; and that the summary's
// metrics equal what one recomputes from pairs.arrow with dpopipe cat.
func TestQuickstart(t *testing.T) {
	e := newEnv(t)
	file, _ := filepath.Abs(filepath.Join(repoRoot(), "examples", "quickstart", "train.hcl"))
	runDir := filepath.Join(e.dir, "quickstart")
	r := e.run("run", file, "--run-dir", runDir)
	if r.code != 0 {
		t.Fatalf("quickstart failed:\n%s\n%s", r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "report: "+filepath.Join(runDir, "report", "report.html")) {
		t.Fatalf("the run does not print where the report is:\n%s", r.stdout)
	}
	var sum map[string]float64
	readJSON(t, filepath.Join(runDir, "eval", "summary.json"), &sum)
	before, after := sum["samples/reference_exact"], sum["samples/policy_exact"]
	t.Logf("held-out exact-answer accuracy: SFT %.3f, DPO %.3f", before, after)
	if after < before+0.2 {
		t.Fatalf("DPO does not beat the SFT model by a clear margin: %.3f -> %.3f", before, after)
	}
	if !strings.Contains(r.stdout, "after DPO") {
		t.Fatalf("the run does not print the summary:\n%s", r.stdout)
	}

	// Recompute the TRL metrics from the per-pair table.
	cat := e.run("cat", filepath.Join(runDir, "eval", "pairs.arrow"))
	if cat.code != 0 {
		t.Fatal(cat.stderr)
	}
	var n, correct float64
	var chosen, rejected, margins, logpC, logpR float64
	sc := bufio.NewScanner(strings.NewReader(cat.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var row struct {
			RewardChosen   float64 `json:"reward_chosen"`
			RewardRejected float64 `json:"reward_rejected"`
			Correct        bool    `json:"correct"`
			PolicyChosen   float64 `json:"policy_chosen_logp"`
			PolicyRejected float64 `json:"policy_rejected_logp"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		n++
		chosen += row.RewardChosen
		rejected += row.RewardRejected
		margins += row.RewardChosen - row.RewardRejected
		logpC += row.PolicyChosen
		logpR += row.PolicyRejected
		if row.Correct {
			correct++
		}
	}
	checks := map[string]float64{
		"rewards/chosen": chosen / n, "rewards/rejected": rejected / n, "rewards/margins": margins / n,
		"rewards/accuracies": correct / n, "logps/chosen": logpC / n, "logps/rejected": logpR / n, "eval/pairs": n,
	}
	for k, want := range checks {
		if got, ok := sum[k]; !ok || math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("summary %s = %v, recomputed from pairs.arrow %v", k, got, want)
		}
	}
	// dpopipe report prints the same.
	rep := e.run("report", runDir)
	if rep.code != 0 || !strings.Contains(rep.stdout, "report.html") || !strings.Contains(rep.stdout, "after DPO") {
		t.Fatalf("dpopipe report:\n%s\n%s", rep.stdout, rep.stderr)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestNoCache runs the quickstart (shortened) with --no-cache and a relative
// run directory: every stage runs, later stages read earlier artifacts from
// the run directory, and the cache stays empty.
func TestNoCache(t *testing.T) {
	e := newEnv(t)
	file, _ := filepath.Abs(filepath.Join(repoRoot(), "examples", "quickstart", "train.hcl"))
	r := e.run("run", file, "--run-dir", "rel-run", "--no-cache", "-var", "sft_steps=20")
	if r.code != 0 {
		t.Fatalf("--no-cache run failed:\n%s\n%s", r.stdout, r.stderr)
	}
	rec := e.readRun(filepath.Join(e.dir, "rel-run"))
	for _, s := range rec.Stages {
		if s.CacheHit || s.Status != "ok" {
			t.Fatalf("stage %s: status %s hit %v", s.Name, s.Status, s.CacheHit)
		}
	}
	if ls := e.run("cache", "ls"); strings.Count(strings.TrimSpace(ls.stdout), "\n") != 0 {
		t.Fatalf("--no-cache left entries:\n%s", ls.stdout)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.cache, "rows")); len(entries) != 0 {
		t.Fatalf("--no-cache left row segments: %v", entries)
	}
}
