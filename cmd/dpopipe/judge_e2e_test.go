package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestUserJudgePlugin runs a user's own judge, built on the SDK, after the
// built-in evaluate stage: the example http_judge asks a scoring service
// (here a local test server that prefers shorter completions) to score both
// completions of every sample.
func TestUserJudgePlugin(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Prompt, Completion string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Prompt == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		calls.Add(1)
		fmt.Fprintf(w, `{"score": %d}`, -len(in.Completion))
	}))
	defer srv.Close()

	e := newEnv(t)
	file := e.write("judge.hcl", fmt.Sprintf(`
plugin "http_judge" {
  source = %q
}

stage "generate" "task" {
  task = "reverse"
  n    = 120
  seed = 3
}

stage "tokenize" "tok" {
  input             = stage.generate.task
  builtin_tokenizer = "bytes"
  max_length        = 32
  max_prompt_length = 16
}

stage "sft" "warm" {
  input = stage.tokenize.tok
  init = {
    vocab_size = 259, dim = 32, layers = 1, heads = 2, hidden_dim = 64,
    seq_len = 32, seed = 1, bos = 256, eos = 257
  }
  target        = "both"
  learning_rate = 5e-3
  batch_size    = 16
  max_steps     = 40
}

stage "reference_logprobs" "ref" {
  input = stage.tokenize.tok
  model = stage.sft.warm
}

stage "dpo" "train" {
  input         = stage.reference_logprobs.ref
  model         = stage.sft.warm
  learning_rate = 1e-3
  batch_size    = 16
  max_steps     = 5
}

stage "evaluate" "eval" {
  input           = stage.reference_logprobs.ref
  model           = stage.dpo.train
  reference_model = stage.sft.warm
  tokenizer       = "bytes"
  samples         = 8
  max_new_tokens  = 8
}

stage "http_judge" "rm" {
  input = stage.evaluate.eval
  url   = %q
}
`, bins.httpJudge, srv.URL))
	runDir := filepath.Join(e.dir, "run")
	r := e.run("run", file, "--run-dir", runDir)
	if r.code != 0 {
		t.Fatalf("run with a user judge failed:\n%s\n%s", r.stdout, r.stderr)
	}
	if got := calls.Load(); got != 16 {
		t.Fatalf("the scoring service got %d requests, want 2 per sample = 16", got)
	}
	// Recompute the win rate from the samples the evaluate stage wrote.
	samples := e.run("cat", filepath.Join(runDir, "eval", "output.arrow"))
	var wins, ties float64
	sc := bufio.NewScanner(strings.NewReader(samples.stdout))
	n := 0
	for sc.Scan() {
		var s struct {
			Ref string `json:"reference_completion"`
			Pol string `json:"policy_completion"`
		}
		json.Unmarshal(sc.Bytes(), &s)
		n++
		switch {
		case len(s.Pol) < len(s.Ref):
			wins++
		case len(s.Pol) == len(s.Ref):
			ties++
		}
	}
	var sum struct {
		WinRate float64 `json:"win_rate"`
		Samples int     `json:"samples"`
	}
	readJSON(t, filepath.Join(runDir, "rm", "summary.json"), &sum)
	want := (wins + ties/2) / float64(n)
	if n != 8 || sum.Samples != 8 || sum.WinRate != want {
		t.Fatalf("judge summary %+v over %d samples, recomputed win rate %v", sum, n, want)
	}
}
