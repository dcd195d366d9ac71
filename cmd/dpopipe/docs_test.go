package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite docs/stages.md")

// TestStagesDocIsCurrent keeps docs/stages.md equal to what the stages'
// specs generate, so the reference never drifts from the code.
func TestStagesDocIsCurrent(t *testing.T) {
	var buf bytes.Buffer
	writeStagesMarkdown(&buf)
	path := filepath.Join(repoRoot(), "docs", "stages.md")
	if *rewrite {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/dpopipe -run TestStagesDoc -rewrite creates it)", err)
	}
	if !bytes.Equal(got, buf.Bytes()) {
		t.Fatalf("docs/stages.md is out of date: go test ./cmd/dpopipe -run TestStagesDoc -rewrite")
	}
}
