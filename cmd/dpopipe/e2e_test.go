package main

// End-to-end tests of the engine: they run the dpopipe binary and real
// plugin processes, as a user would.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dpopipe/dpopipe/internal/testassets"
	"github.com/dpopipe/dpopipe/pipeline/arrowio"
)

// bins holds the binaries the tests run, built once by TestMain.
var bins struct {
	dpopipe    string // the CLI
	pluginDir  string // dpopipe-stage-* test plugins
	lengthFilt string // the third-party example
	httpJudge  string // the third-party judge example
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dpopipe-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if err := buildBinaries(dir); err != nil {
			fmt.Fprintln(os.Stderr, "building test binaries:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func goBuild(dir, out, pkg string, tags string) error {
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

func buildBinaries(dir string) error {
	root := repoRoot()
	bins.dpopipe = os.Getenv("DPOPIPE_SELF")
	if bins.dpopipe == "" || !fileExists(bins.dpopipe) {
		bins.dpopipe = filepath.Join(dir, "dpopipe")
		if err := goBuild(root, bins.dpopipe, "./cmd/dpopipe", ""); err != nil {
			return err
		}
	}
	bins.pluginDir = filepath.Join(dir, "plugins")
	if err := os.MkdirAll(bins.pluginDir, 0o755); err != nil {
		return err
	}
	tp := filepath.Join(dir, "testplugin")
	if err := goBuild(root, tp, "./cmd/dpopipe/testdata/testplugin", ""); err != nil {
		return err
	}
	data, err := os.ReadFile(tp)
	if err != nil {
		return err
	}
	for _, name := range []string{"passthrough", "crash", "hang", "garbage", "protocol2"} {
		if err := os.WriteFile(filepath.Join(bins.pluginDir, "dpopipe-stage-"+name), data, 0o755); err != nil {
			return err
		}
	}
	bins.lengthFilt = filepath.Join(dir, "dpopipe-stage-length_filter")
	if err := goBuild(filepath.Join(root, "examples", "thirdparty-stage"), bins.lengthFilt, ".", ""); err != nil {
		return err
	}
	bins.httpJudge = filepath.Join(dir, "dpopipe-stage-http_judge")
	return goBuild(filepath.Join(root, "examples", "thirdparty-stage"), bins.httpJudge, "./httpjudge", "")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// env is a test's environment: its own cache and run directories.
type env struct {
	t     *testing.T
	dir   string
	cache string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	return &env{t: t, dir: dir, cache: filepath.Join(dir, "cache")}
}

// write writes a file under the env's directory and returns its path.
func (e *env) write(name, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) command(args ...string) *exec.Cmd {
	cmd := exec.Command(bins.dpopipe, args...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(),
		"DPOPIPE_CACHE_DIR="+e.cache,
		"DPOPIPE_PLUGIN_PATH="+bins.pluginDir,
		"DPOPIPE_SELF=",
		"HOME="+e.dir,
	)
	return cmd
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running dpopipe %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

type runJSON struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Stages []struct {
		Type         string           `json:"type"`
		Name         string           `json:"name"`
		Status       string           `json:"status"`
		Pid          int              `json:"pid"`
		CacheKey     string           `json:"cache_key"`
		CacheHit     bool             `json:"cache_hit"`
		RowsIn       int64            `json:"rows_in"`
		RowsOut      int64            `json:"rows_out"`
		RowsReused   *int64           `json:"rows_reused"`
		RowsComputed *int64           `json:"rows_computed"`
		Stats        map[string]int64 `json:"stats"`
		Outputs      []string         `json:"outputs"`
		Plugin       struct {
			Path     string `json:"path"`
			SHA256   string `json:"sha256"`
			Protocol int    `json:"protocol"`
		} `json:"plugin"`
	} `json:"stages"`
}

func (e *env) readRun(runDir string) runJSON {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(runDir, "run.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var r runJSON
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// pipeline is the engine's test pipeline: built-in load and tokenize, the
// third-party length filter, and a pass-through test plugin.
func (e *env) pipeline(maxRatio float64, extra string) string {
	data, err := filepath.Abs(filepath.Join(repoRoot(), "cmd", "dpopipe", "testdata", "prefs.jsonl"))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.write("train.hcl", fmt.Sprintf(`
variable "max_ratio" {
  type    = number
  default = %g
}

plugin "length_filter" {
  source = %q
}

stage "load" "prefs" {
  path = %q
}

stage "tokenize" "tok" {
  input     = stage.load.prefs
  builtin_tokenizer = "bytes"
}

stage "length_filter" "balanced" {
  input     = stage.tokenize.tok
  max_ratio = var.max_ratio
}

stage "passthrough" "copy" {
  input = stage.length_filter.balanced
}
%s`, maxRatio, bins.lengthFilt, data, extra))
}

func TestValidateErrorsPointAtTheSource(t *testing.T) {
	cases := []struct {
		name, hcl, want string
	}{
		{"malformed", "stage \"load\" \"a\" {\n  path = \n}\n", "train.hcl:2"},
		{"unknown reference", "stage \"passthrough\" \"a\" {\n  input = stage.load.nope\n}\n", "train.hcl:2:11"},
		{"unknown type", "stage \"lod\" \"a\" {\n  path = \"x\"\n}\n", "train.hcl:1:7"},
		{"unknown attribute", "stage \"load\" \"a\" {\n  path = \"x\"\n  pth = 1\n}\n", "train.hcl:3:3"},
		{"wrong type", "stage \"load\" \"a\" {\n  path = [1, 2]\n}\n", "train.hcl:2"},
		{"cycle", "stage \"passthrough\" \"a\" {\n  input = stage.passthrough.b\n}\nstage \"passthrough\" \"b\" {\n  input = stage.passthrough.a\n}\n", "train.hcl:"},
		{"failed validation", "variable \"beta\" {\n  type = number\n  default = -1\n  validation {\n    condition = var.beta > 0\n    error_message = \"beta must be positive.\"\n  }\n}\n", "beta must be positive."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.write("train.hcl", tc.hcl)
			r := e.run("validate", "train.hcl")
			if r.code != 1 {
				t.Fatalf("exit code %d, want 1\nstderr: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("stderr lacks %q:\n%s", tc.want, r.stderr)
			}
			if !strings.Contains(r.stderr, "│") && !strings.Contains(r.stderr, "on train.hcl") {
				t.Fatalf("stderr has no source snippet:\n%s", r.stderr)
			}
		})
	}
}

func TestRunBuiltinAndThirdPartyStages(t *testing.T) {
	e := newEnv(t)
	file := e.pipeline(2.5, "")
	run1 := filepath.Join(e.dir, "run1")
	r := e.run("run", file, "--run-dir", run1)
	if r.code != 0 {
		t.Fatalf("run failed (%d):\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	rec := e.readRun(run1)
	if rec.Status != "ok" || len(rec.Stages) != 4 {
		t.Fatalf("run.json: %+v", rec)
	}
	pids := map[int]string{}
	for _, s := range rec.Stages {
		if s.Pid == 0 || s.CacheHit {
			t.Fatalf("stage %s.%s: pid %d hit %v", s.Type, s.Name, s.Pid, s.CacheHit)
		}
		if prev, dup := pids[s.Pid]; dup {
			t.Fatalf("stages %s and %s share pid %d", prev, s.Name, s.Pid)
		}
		pids[s.Pid] = s.Name
		if s.Plugin.SHA256 == "" || s.Plugin.Protocol != 1 || s.CacheKey == "" {
			t.Fatalf("stage %s: plugin record %+v key %q", s.Name, s.Plugin, s.CacheKey)
		}
	}
	byName := func(rec runJSON, name string) int {
		for i, s := range rec.Stages {
			if s.Name == name {
				return i
			}
		}
		t.Fatalf("no stage %s", name)
		return -1
	}
	load, filt, cp := rec.Stages[byName(rec, "prefs")], rec.Stages[byName(rec, "balanced")], rec.Stages[byName(rec, "copy")]
	if load.RowsOut != 40 {
		t.Fatalf("load rows_out %d, want 40", load.RowsOut)
	}
	dropped := filt.Stats["dropped/length_ratio"]
	if dropped == 0 || filt.RowsOut != filt.RowsIn-dropped || cp.RowsIn != filt.RowsOut || cp.RowsOut != cp.RowsIn {
		t.Fatalf("row counts: filter in %d out %d dropped %d; copy in %d out %d", filt.RowsIn, filt.RowsOut, dropped, cp.RowsIn, cp.RowsOut)
	}
	// The output is real Arrow: dpopipe cat reads it back.
	out := e.run("cat", filepath.Join(run1, "copy", "output.arrow"))
	if out.code != 0 || strings.Count(out.stdout, "\n") != int(cp.RowsOut) || !strings.Contains(out.stdout, `"chosen_ids":[`) {
		t.Fatalf("cat: code %d, %d lines:\n%.300s\n%s", out.code, strings.Count(out.stdout, "\n"), out.stdout, out.stderr)
	}

	// The plugin's logs come back to the host, into the stage's log.
	if log := readFile(t, filepath.Join(run1, "balanced", "stage.log")); !strings.Contains(log, "kept ") {
		t.Fatalf("the third-party stage's log line is not in stage.log:\n%s", log)
	}
	// The output file carries its cache key in its schema metadata.
	af, err := arrowio.Open(filepath.Join(run1, "copy", "output.arrow"))
	if err != nil {
		t.Fatal(err)
	}
	md := af.Schema().Metadata()
	af.Release()
	if i := md.FindKey("dpopipe.cache_key"); i < 0 || md.Values()[i] != cp.CacheKey || md.FindKey("dpopipe.key.plugin_sha256") < 0 {
		t.Fatalf("output.arrow metadata %v lacks the cache key %s", md, cp.CacheKey)
	}

	// Run 2: every stage hits.
	run2 := filepath.Join(e.dir, "run2")
	if r := e.run("run", file, "--run-dir", run2); r.code != 0 {
		t.Fatalf("run 2 failed: %s", r.stderr)
	}
	for _, s := range e.readRun(run2).Stages {
		if !s.CacheHit {
			t.Fatalf("run 2: stage %s missed the cache", s.Name)
		}
	}
	// Run 3: a new max_ratio re-runs the filter and its dependent only.
	run3 := filepath.Join(e.dir, "run3")
	if r := e.run("run", file, "--run-dir", run3, "-var", "max_ratio=1.5"); r.code != 0 {
		t.Fatalf("run 3 failed: %s", r.stderr)
	}
	rec3 := e.readRun(run3)
	for _, s := range rec3.Stages {
		wantHit := s.Name == "prefs" || s.Name == "tok"
		if s.CacheHit != wantHit {
			t.Fatalf("run 3: stage %s cache_hit %v, want %v", s.Name, s.CacheHit, wantHit)
		}
	}
	if rec3.Stages[byName(rec3, "balanced")].RowsOut >= filt.RowsOut {
		t.Fatalf("a tighter max_ratio should drop more rows")
	}
	// explain names every key component and says it hits.
	ex := e.run("explain", file, "balanced")
	for _, want := range []string{"stage_type", "plugin_sha256", "config", "cache: hit"} {
		if !strings.Contains(ex.stdout, want) {
			t.Fatalf("explain lacks %q:\n%s%s", want, ex.stdout, ex.stderr)
		}
	}
}

func TestBadPlugins(t *testing.T) {
	cases := []struct {
		name, stage, plugin, want string
		args                      []string
	}{
		{name: "missing", stage: "missing", plugin: `plugin "missing" { source = "/nonexistent/dpopipe-stage-missing" }`, want: "not found"},
		{name: "not executable", stage: "noexec", plugin: `plugin "noexec" { source = "NOEXEC" }`, want: "not executable"},
		{name: "sha256 pin", stage: "passthrough", plugin: `plugin "passthrough" {
  source = "PLUGINS/dpopipe-stage-passthrough"
  sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}`, want: "pins"},
		{name: "protocol version", stage: "protocol2", want: "Plugin version: 2"},
		{name: "garbage on stdout", stage: "garbage", want: "stdout"},
		{name: "crash mid-stream", stage: "crash", want: "crash.c"},
		{name: "hang", stage: "hang", want: "timed out", args: []string{"--stage-timeout", "3s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			noexec := e.write("dpopipe-stage-noexec", "#!/bin/sh\n")
			os.Chmod(noexec, 0o644)
			pl := strings.ReplaceAll(tc.plugin, "NOEXEC", noexec)
			pl = strings.ReplaceAll(pl, "PLUGINS", bins.pluginDir)
			file := e.pipeline(3, pl+fmt.Sprintf("\nstage %q \"c\" {\n  input = stage.passthrough.copy\n}\n", tc.stage))
			start := time.Now()
			r := e.run(append([]string{"run", file, "--run-dir", filepath.Join(e.dir, "run")}, tc.args...)...)
			if r.code == 0 {
				t.Fatalf("run succeeded; want an error")
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("stderr lacks %q:\n%s", tc.want, r.stderr)
			}
			if time.Since(start) > 60*time.Second {
				t.Fatalf("took %s", time.Since(start))
			}
			ls := e.run("cache", "ls")
			if strings.Contains(ls.stdout, tc.stage+".c") {
				t.Fatalf("the failed stage has a cache entry:\n%s", ls.stdout)
			}
		})
	}
}

// startStalledRun starts the test pipeline with a last stage that stalls,
// and returns once that stage's plugin runs: the command, its stderr, the
// run directory and the stalled plugin's pid.
func (e *env) startStalledRun() (*exec.Cmd, *bytes.Buffer, string, int) {
	e.t.Helper()
	file := e.pipeline(3, `
stage "passthrough" "slow" {
  input    = stage.passthrough.copy
  sleep_ms = 30000
}
`)
	runDir := filepath.Join(e.dir, "run")
	cmd := e.command("run", file, "--run-dir", runDir)
	errb := &bytes.Buffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return cmd, errb, runDir, waitForPid(e.t, runDir, "slow")
}

func TestKillPluginMidRun(t *testing.T) {
	e := newEnv(t)
	cmd, errb, _, pid := e.startStalledRun()
	syscall.Kill(pid, syscall.SIGKILL)
	err := cmd.Wait()
	if err == nil {
		t.Fatal("run succeeded after its plugin was killed")
	}
	if !strings.Contains(errb.String(), "passthrough.slow") || !strings.Contains(errb.String(), "exited unexpectedly") {
		t.Fatalf("error does not name the stage and what happened:\n%s", errb.String())
	}
	ls := e.run("cache", "ls")
	if strings.Contains(ls.stdout, "passthrough.slow") {
		t.Fatalf("killed stage left a cache entry:\n%s", ls.stdout)
	}
	if v := e.run("cache", "verify"); v.code != 0 {
		t.Fatalf("cache verify: %s%s", v.stdout, v.stderr)
	}
}

func TestInterruptStopsPluginsAndCachesNothingPartial(t *testing.T) {
	e := newEnv(t)
	cmd, _, runDir, pid := e.startStalledRun()
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("interrupted run exited 0")
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("dpopipe did not stop after SIGINT")
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d still runs after the host stopped", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rec := e.readRun(runDir); rec.Status != "cancelled" {
		t.Fatalf("run.json status %q, want cancelled", rec.Status)
	}
	if ls := e.run("cache", "ls"); strings.Contains(ls.stdout, "passthrough.slow") {
		t.Fatalf("interrupted stage left a cache entry:\n%s", ls.stdout)
	}
}

// waitForPid waits until run.json shows a pid for stage name.
func waitForPid(t *testing.T, runDir, name string) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join(runDir, "run.json"))
		if err == nil {
			var r runJSON
			if json.Unmarshal(b, &r) == nil {
				for _, s := range r.Stages {
					if s.Name == name && s.Pid != 0 && s.Status == "running" {
						time.Sleep(300 * time.Millisecond)
						return s.Pid
					}
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("stage %s never started", name)
	return 0
}

func TestDiscoveredPluginsAreListedAndUnpinnedOnesWarned(t *testing.T) {
	e := newEnv(t)
	r := e.run("stages")
	if r.code != 0 {
		t.Fatalf("stages: %s", r.stderr)
	}
	for _, typ := range []string{"load", "tokenize", "reference_logprobs", "dpo", "sft", "evaluate", "judge", "report", "generate", "passthrough"} {
		if !strings.Contains(r.stdout, typ+" ") {
			t.Errorf("dpopipe stages does not list %s:\n%s", typ, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "[unpinned]") || !strings.Contains(r.stderr, "no sha256 pin") {
		t.Fatalf("a discovered plugin without a pin is not flagged:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	// A pinned plugin block with the right digest runs without a warning.
	data, err := os.ReadFile(bins.lengthFilt)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	file := e.pipeline(3, "")
	pinned := strings.Replace(readFile(t, file), fmt.Sprintf("source = %q", bins.lengthFilt),
		fmt.Sprintf("source = %q\n  sha256 = %q", bins.lengthFilt, hex.EncodeToString(sum[:])), 1)
	os.WriteFile(file, []byte(pinned), 0o644)
	v := e.run("validate", file)
	if v.code != 0 || strings.Contains(v.stderr, "length_filter\" (") {
		t.Fatalf("validate with a correct pin: code %d\n%s", v.code, v.stderr)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestThirdPartyConfigErrorsArePositioned: a third-party stage's schema and
// its own checks give errors as precise as a built-in stage's, before any
// stage runs.
func TestThirdPartyConfigErrorsArePositioned(t *testing.T) {
	cases := []struct{ name, value, want string }{
		{"wrong type", `"wide"`, "train.hcl:4:15"},
		{"plugin's own check", `0.5`, "Ratio below 1"},
		{"unknown attribute", `2` + "\n  max_ratoi = 3", "max_ratio"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.write("train.hcl", fmt.Sprintf(`plugin "length_filter" { source = %q }
stage "load" "a" { path = "x.jsonl" }
stage "length_filter" "f" {
  max_ratio = %s
  input = stage.load.a
}
`, bins.lengthFilt, tc.value))
			r := e.run("validate", "train.hcl")
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "train.hcl:") {
				t.Fatalf("exit %d, stderr lacks %q:\n%s", r.code, tc.want, r.stderr)
			}
		})
	}
}

func TestTokenizeCommand(t *testing.T) {
	tok := testassets.Path(t, "models/stories260K/tok512.bin")
	e := newEnv(t)
	r := e.run("tokenize", "--tokenizer", tok, "Once upon a time")
	want := `"ids":[1,403,407,261,378]`
	if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, `"pieces":[`) {
		t.Fatalf("tokenize: %s%s", r.stdout, r.stderr)
	}
	r = e.run("tokenize", "--tokenizer", tok, "--no-bos", "Once upon a time", "the end")
	if strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stdout, `"ids":[403,407,261,378]`) {
		t.Fatalf("tokenize --no-bos with two texts: %s%s", r.stdout, r.stderr)
	}
	r = e.run("tokenize", "--tokenizer", "bytes", "hi")
	if !strings.Contains(r.stdout, `"ids":[256,104,105]`) {
		t.Fatalf("byte tokenizer: %s%s", r.stdout, r.stderr)
	}
}

func TestCacheCommands(t *testing.T) {
	e := newEnv(t)
	file := e.pipeline(3, "")
	if r := e.run("run", file, "--run-dir", filepath.Join(e.dir, "run")); r.code != 0 {
		t.Fatal(r.stderr)
	}
	ls := e.run("cache", "ls")
	lines := strings.Split(strings.TrimSpace(ls.stdout), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "KEY") {
		t.Fatalf("cache ls: want a header and 4 entries:\n%s", ls.stdout)
	}
	key := strings.Fields(lines[1])[0]
	if r := e.run("cache", "rm", key); r.code != 0 {
		t.Fatalf("cache rm %s: %s", key, r.stderr)
	}
	if ls := e.run("cache", "ls"); strings.Contains(ls.stdout, key) {
		t.Fatalf("cache rm left %s:\n%s", key, ls.stdout)
	}
	if r := e.run("cache", "gc", "--older-than", "30d", "--max-size", "1B"); r.code != 0 || !strings.Contains(r.stdout, "removed 3 entries") {
		t.Fatalf("cache gc: %s%s", r.stdout, r.stderr)
	}
	if r := e.run("cache", "gc", "--older-than", "soon"); r.code == 0 {
		t.Fatal("a bad --older-than must be an error")
	}
}

// TestLargeTablesStreamInBoundedBatches sends a table far larger than
// gRPC's default 4 MB message limit through two plugin hops.
func TestLargeTablesStreamInBoundedBatches(t *testing.T) {
	e := newEnv(t)
	var b strings.Builder
	long := strings.Repeat("a long completion ", 16<<10) // ~288 KB
	for i := 0; i < 120; i++ {                           // ~35 MB in all
		fmt.Fprintf(&b, "{\"prompt\": \"p%d\", \"chosen\": %q, \"rejected\": \"short %d\"}\n", i, long, i)
	}
	e.write("big.jsonl", b.String())
	file := e.write("big.hcl", `
stage "load" "big" {
  path = "big.jsonl"
}
stage "passthrough" "copy" {
  input = stage.load.big
}
`)
	r := e.run("run", file, "--run-dir", filepath.Join(e.dir, "run"))
	if r.code != 0 {
		t.Fatalf("a large table failed to stream:\n%s", r.stderr)
	}
	rec := e.readRun(filepath.Join(e.dir, "run"))
	if cp := rec.Stages[1]; cp.RowsIn != 120 || cp.RowsOut != 120 {
		t.Fatalf("rows in %d out %d, want 120", cp.RowsIn, cp.RowsOut)
	}
}
