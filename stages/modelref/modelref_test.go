package modelref

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveAndTokenizer(t *testing.T) {
	dir := t.TempDir()
	artifact := filepath.Join(dir, "artifact")
	model := filepath.Join(artifact, ModelDir)
	if err := os.MkdirAll(model, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := Resolve(artifact); got != model {
		t.Fatalf("Resolve(artifact) = %s, want its model/ directory", got)
	}
	file := filepath.Join(dir, "m.bin")
	if got := Resolve(file); got != file {
		t.Fatalf("Resolve(file) = %s", got)
	}
	if _, ok := Tokenizer(artifact); ok {
		t.Fatal("no tokenizer stored yet")
	}
	// A byte tokenizer, named as written in HCL or as resolved to a path.
	for _, src := range []string{"bytes", filepath.Join(dir, "bytes")} {
		if !IsBuiltinTokenizer(src) {
			t.Fatalf("IsBuiltinTokenizer(%q) = false", src)
		}
		if err := CopyTokenizer(src, model); err != nil {
			t.Fatal(err)
		}
		if p, ok := Tokenizer(artifact); !ok || p != "bytes" {
			t.Fatalf("Tokenizer after copying %q = %q, %v", src, p, ok)
		}
		os.Remove(filepath.Join(model, "tokenizer.model.bytes"))
	}
	// A real file named bytes is a file.
	real := filepath.Join(dir, "sub", "bytes")
	os.MkdirAll(filepath.Dir(real), 0o755)
	os.WriteFile(real, []byte("x"), 0o644)
	if IsBuiltinTokenizer(real) {
		t.Fatal("an existing file named bytes is not the built-in tokenizer")
	}
	// A tokenizer.json travels with its config.
	src := filepath.Join(dir, "hf")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "tokenizer.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(src, "tokenizer_config.json"), []byte(`{"add_bos_token":true}`), 0o644)
	if err := CopyTokenizer(filepath.Join(src, "tokenizer.json"), model); err != nil {
		t.Fatal(err)
	}
	if p, ok := Tokenizer(artifact); !ok || p != filepath.Join(model, "tokenizer.json") {
		t.Fatalf("Tokenizer = %q, %v", p, ok)
	}
	if _, err := os.Stat(filepath.Join(model, "tokenizer_config.json")); err != nil {
		t.Fatal("tokenizer_config.json was not copied")
	}
}
