package report

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/evaluate"
	"github.com/dpopipe/dpopipe/stages/judge"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fixtureArtifacts writes the artifacts of sft, dpo, evaluate and judge
// stages as they lay them out.
func fixtureArtifacts(t *testing.T) (sftDir, dpoDir, evalDir, judgeDir string) {
	t.Helper()
	root := t.TempDir()
	sftDir, dpoDir = filepath.Join(root, "sft"), filepath.Join(root, "dpo")
	evalDir, judgeDir = filepath.Join(root, "eval"), filepath.Join(root, "judge")
	var sft, dpo strings.Builder
	for s := 10; s <= 100; s += 10 {
		fmt.Fprintf(&sft, `{"step":%d,"epoch":%g,"loss":%g,"logps/chosen":%g}`+"\n", s, float64(s)/50, 3/float64(s/10), -5/float64(s/10))
		x := float64(s) / 100
		fmt.Fprintf(&dpo, `{"step":%d,"epoch":%g,"loss":%g,"rewards/chosen":%g,"rewards/rejected":%g,"rewards/accuracies":%g,"rewards/margins":%g,"learning_rate":0.0003}`+"\n",
			s, x, 0.69-0.4*x, 0.1*x, -x, 0.5+0.5*x, 1.1*x)
	}
	writeFile(t, filepath.Join(sftDir, "metrics.jsonl"), sft.String())
	writeFile(t, filepath.Join(dpoDir, "metrics.jsonl"), dpo.String())
	writeFile(t, filepath.Join(dpoDir, "train_summary.json"), `{"stage":"dpo","global_step":100,"train_loss":0.4,"train_runtime":6.5}`)

	rs := []evaluate.PairResult{
		{Row: 3, PolicyChosen: -1, PolicyRejected: -9, RefChosen: -2, RefRejected: -1.5, ChosenTokens: 3, RejectedTokens: 3},
		{Row: 7, PolicyChosen: -2, PolicyRejected: -3, RefChosen: -2.5, RefRejected: -2, ChosenTokens: 4, RejectedTokens: 4},
	}
	for i := range rs {
		r := &rs[i]
		r.RewardChosen, r.RewardRejected = 0.1*(r.PolicyChosen-r.RefChosen), 0.1*(r.PolicyRejected-r.RefRejected)
		r.Correct = r.RewardChosen > r.RewardRejected
	}
	if err := os.MkdirAll(evalDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := evaluate.WritePairs(filepath.Join(evalDir, evaluate.PairsFile), rs); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(evalDir, evaluate.SummaryFile), `{"rewards/accuracies":1,"rewards/margins":0.775,"rewards/chosen":0.075,"rewards/rejected":-0.7,"logps/chosen":-1.5,"logps/rejected":-6,"loss/sigmoid":0.5,"eval/pairs":2,"beta":0.1}`)
	writeFile(t, filepath.Join(evalDir, evaluate.SamplesFile),
		`{"row":3,"prompt":"rev ab=","chosen":"ba","reference_completion":"ab","policy_completion":"ba"}`+"\n"+
			`{"row":7,"prompt":"rev <b>&c=","chosen":"c&>b<","reference_completion":"c&>b<","policy_completion":"c&>b<"}`+"\n")
	writeFile(t, filepath.Join(judgeDir, judge.SummaryFile), `{"rule":"exact","samples":2,"compared":2,"wins":1,"losses":0,"ties":1,"win_rate":0.75,"policy_mean_score":1,"reference_mean_score":0.5,"policy_accuracy":1,"reference_accuracy":0.5}`)
	writeFile(t, filepath.Join(judgeDir, judge.VerdictsFile),
		`{"row":3,"prompt":"rev ab=","chosen":"ba","reference_completion":"ab","policy_completion":"ba","reference_score":0,"policy_score":1,"winner":"policy"}`+"\n"+
			`{"row":7,"prompt":"rev <b>&c=","chosen":"c&>b<","reference_completion":"c&>b<","policy_completion":"c&>b<","reference_score":1,"policy_score":1,"winner":"tie"}`+"\n")
	return
}

func runReport(t *testing.T, cfg map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	res, err := sdk.RunLocal(context.Background(), New(), cfg, sdk.LocalOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	res.Release()
	return dir
}

func TestReportSelfContained(t *testing.T) {
	sftDir, dpoDir, evalDir, judgeDir := fixtureArtifacts(t)
	dir := runReport(t, map[string]any{"train": dpoDir, "sft": sftDir, "eval": evalDir, "judge": judgeDir, "title": "fixture"})
	b, err := os.ReadFile(filepath.Join(dir, HTMLFile))
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, bad := range []string{"http://", "https://", "<script", "<link", "@import", "url("} {
		if strings.Contains(html, bad) {
			t.Errorf("report.html contains %q: it must not load anything", bad)
		}
	}
	srcs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(html, -1)
	if len(srcs) == 0 {
		t.Fatal("no images")
	}
	for _, m := range srcs {
		if !strings.HasPrefix(m[1], "data:image/png;base64,") {
			t.Errorf("src/href %.60q is not an inline PNG", m[1])
		}
	}
	// SFT loss, DPO loss, rewards, accuracy, exact-answer bars
	if n := strings.Count(html, `src="data:image/png;base64,`); n != 5 {
		t.Errorf("%d inline PNG plots, want 5", n)
	}
	for _, want := range []string{`id="eval-table"`, `id="samples-table"`, `id="judge-table"`, `id="train-table"`,
		"rewards/accuracies", "loss/sigmoid", "rev &lt;b&gt;&amp;c=", "policy win rate"} {
		if !strings.Contains(html, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	if strings.Contains(html, "<b>&c") {
		t.Error("sample text is not escaped")
	}
	var s Summary
	sb, _ := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err := json.Unmarshal(sb, &s); err != nil {
		t.Fatal(err)
	}
	if *s.ExactBefore != 0.5 || *s.ExactAfter != 1 || *s.WinRate != 0.75 || *s.PreferenceAccuracy != 1 ||
		*s.LikelihoodAccuracyBefore != 0 || *s.LikelihoodAccuracyAfter != 1 || s.TrainSteps != 100 {
		t.Errorf("summary.json: %s", sb)
	}
}

// TestSummaryTextGolden fixes the structure of summary.txt, which dpopipe
// prints at the end of a run. Update with -update.
func TestSummaryTextGolden(t *testing.T) {
	sftDir, dpoDir, evalDir, judgeDir := fixtureArtifacts(t)
	dir := runReport(t, map[string]any{"train": dpoDir, "sft": sftDir, "eval": evalDir, "judge": judgeDir, "title": "fixture"})
	got, err := os.ReadFile(filepath.Join(dir, TextFile))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "summary.txt.golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("summary.txt:\n%s\nwant:\n%s", got, want)
	}

	// without a judge or a reference model, the lines that need them go
	evalOnly := runReport(t, map[string]any{"eval": evalDir})
	txt, _ := os.ReadFile(filepath.Join(evalOnly, TextFile))
	if strings.Contains(string(txt), "judge") || strings.Contains(string(txt), "DPO:") {
		t.Errorf("eval-only summary mentions missing parts:\n%s", txt)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := sdk.RunLocal(context.Background(), New(), map[string]any{}, sdk.LocalOptions{Dir: t.TempDir()}); err == nil {
		t.Error("no train and no eval: no error")
	}
	if _, err := sdk.RunLocal(context.Background(), New(), map[string]any{"eval": t.TempDir()}, sdk.LocalOptions{Dir: t.TempDir()}); err == nil {
		t.Error("eval directory without summary.json: no error")
	}
}

const chromium = "/usr/bin/chromium"

// TestReportInChromium opens the report in headless Chromium and checks
// that the page loads without console errors and that its DOM holds the
// tables and the plots.
func TestReportInChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s is absent (Debian: apt-get install chromium); skipping the browser check", chromium)
	}
	sftDir, dpoDir, evalDir, judgeDir := fixtureArtifacts(t)
	dir := runReport(t, map[string]any{"train": dpoDir, "sft": sftDir, "eval": evalDir, "judge": judgeDir, "title": "fixture"})
	page, _ := filepath.Abs(filepath.Join(dir, HTMLFile))
	profile := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+profile,
		"--enable-logging=stderr", "--v=0", "--dump-dom", "file://"+page)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "Uncaught") || strings.Contains(l, "CONSOLE") || (strings.Contains(l, "ERROR") && strings.Contains(l, "console")) ||
			strings.Contains(l, "net::ERR") {
			t.Errorf("chromium: %s", l)
		}
	}
	dom := stdout.String()
	for _, want := range []string{`id="eval-table"`, `id="samples-table"`, `id="judge-table"`, "<img"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the DOM lacks %q", want)
		}
	}
	if n := strings.Count(dom, "data:image/png;base64,"); n != 5 {
		t.Errorf("the DOM has %d inline PNGs, want 5", n)
	}
}
