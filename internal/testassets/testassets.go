// Package testassets locates the shared test assets (real models, tokenizers
// and preference data) that some tests use. They are not part of the
// repository: tests that need them skip with a clear message when absent.
package testassets

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Root returns the assets directory: $DPOPIPE_ASSETS, or ../shared/assets
// beside the repository root. ok is false when it does not exist.
func Root() (dir string, ok bool) {
	if d := os.Getenv("DPOPIPE_ASSETS"); d != "" {
		_, err := os.Stat(d)
		return d, err == nil
	}
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	d := filepath.Join(repo, "..", "shared", "assets")
	if abs, err := filepath.Abs(d); err == nil {
		d = abs
	}
	_, err := os.Stat(d)
	return d, err == nil
}

// Path returns the path of an asset relative to the assets directory, or
// skips the test with a message naming what is missing and how to provide it.
func Path(t testing.TB, rel string) string {
	t.Helper()
	dir, ok := Root()
	if !ok {
		t.Skipf("test assets not found at %s: set DPOPIPE_ASSETS to the shared assets directory to run this test", dir)
	}
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Skipf("test asset %s not found: %v", p, err)
	}
	return p
}
