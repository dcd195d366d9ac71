package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpopipe/dpopipe/internal/testassets"
)

// TestTinyStoriesExample runs examples/tinystories/train.hcl, as its README
// section shows, on stories260K with a few story pairs.
func TestTinyStoriesExample(t *testing.T) {
	modelPath := testassets.Path(t, "models/stories260K/stories260K.bin")
	tokPath := testassets.Path(t, "models/stories260K/tok512.bin")
	e := newEnv(t)
	names := []string{"Lily", "Tom", "Sue", "Ben", "Max", "Anna"}
	things := []string{"ball", "cat", "tree", "cake", "dog", "book"}
	var b strings.Builder
	for i := 0; i < 40; i++ {
		row, _ := json.Marshal(map[string]string{
			"prompt":   fmt.Sprintf("Once upon a time, there was a little girl named %s.", names[i%len(names)]),
			"chosen":   fmt.Sprintf(" She loved to play with her %s every day.", things[i%len(things)]),
			"rejected": fmt.Sprintf(" %s %s the the was was.", things[(i+1)%len(things)], things[(i+2)%len(things)]),
		})
		b.Write(row)
		b.WriteByte('\n')
	}
	pairsPath := e.write("story_prefs.jsonl", b.String())
	file, _ := filepath.Abs(filepath.Join(repoRoot(), "examples", "tinystories", "train.hcl"))
	runDir := filepath.Join(e.dir, "run")
	r := e.run("run", file, "--run-dir", runDir, "-var", "model="+modelPath, "-var", "tokenizer="+tokPath,
		"-var", "pairs="+pairsPath, "-var", "max_steps=4")
	if r.code != 0 {
		t.Fatalf("tinystories example failed:\n%s\n%s", r.stdout, r.stderr)
	}
	rec := e.readRun(runDir)
	if rec.Status != "ok" {
		t.Fatalf("status %s", rec.Status)
	}
	var summary map[string]any
	data, err := os.ReadFile(filepath.Join(runDir, "eval", "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &summary); err != nil {
		t.Fatal(err)
	}
	if _, ok := summary["rewards/accuracies"]; !ok {
		t.Fatalf("summary.json lacks rewards/accuracies: %v", summary)
	}
}
