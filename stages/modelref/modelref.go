// Package modelref resolves what a stage's model attribute names: a
// llama2.c checkpoint file, a Hugging Face model directory, or the artifact
// of an upstream training stage (model = stage.dpo.train), whose model lives
// in its model/ subdirectory together with a copy of its tokenizer.
package modelref

import (
	"os"
	"path/filepath"

	"github.com/dpopipe/dpopipe/stages/model"
)

// ModelDir is the name of the model directory inside a training stage's
// artifact.
const ModelDir = "model"

// TokenizerNames are the tokenizer files a model directory may carry, in
// the order they are preferred.
var TokenizerNames = []string{"tokenizer.json", "tokenizer.bin", "tokenizer.model.bytes"}

// Resolve returns the path of the model itself: path/model when path is a
// training stage's artifact, path otherwise.
func Resolve(path string) string {
	sub := filepath.Join(path, ModelDir)
	if st, err := os.Stat(sub); err == nil && st.IsDir() {
		return sub
	}
	return path
}

// Load loads the model path names.
func Load(path string) (*model.Model, error) { return model.Load(Resolve(path)) }

// Tokenizer returns the tokenizer stored beside the model, if any. The
// built-in byte tokenizer is recorded as a file named
// "tokenizer.model.bytes"; for it Tokenizer returns "bytes".
func Tokenizer(path string) (string, bool) {
	dir := Resolve(path)
	for _, name := range TokenizerNames {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			if name == "tokenizer.model.bytes" {
				return "bytes", true
			}
			return p, true
		}
	}
	return "", false
}

// CopyTokenizer stores the tokenizer at src ("bytes" for the built-in one)
// in the model directory dir, so that later stages find it with Tokenizer.
func CopyTokenizer(src, dir string) error {
	if src == "" {
		return nil
	}
	if IsBuiltinTokenizer(src) {
		return os.WriteFile(filepath.Join(dir, "tokenizer.model.bytes"), []byte("dpopipe built-in byte-level tokenizer\n"), 0o644)
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		for _, name := range []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} {
			if b, err := os.ReadFile(filepath.Join(src, name)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					return err
				}
			}
		}
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	name := "tokenizer.bin"
	if filepath.Ext(src) == ".json" {
		name = "tokenizer.json"
		if cfg, err := os.ReadFile(filepath.Join(filepath.Dir(src), "tokenizer_config.json")); err == nil {
			if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cfg, 0o644); err != nil {
				return err
			}
		}
	}
	return os.WriteFile(filepath.Join(dir, name), b, 0o644)
}

// IsBuiltinTokenizer reports whether a tokenizer attribute names the
// built-in byte-level tokenizer: "bytes", also after the engine resolved it
// to a path in the pipeline's directory, where no such file exists.
func IsBuiltinTokenizer(src string) bool {
	base := filepath.Base(src)
	if base != "bytes" && base != "byte" {
		return false
	}
	if src == base {
		return true
	}
	_, err := os.Stat(src)
	return err != nil
}
