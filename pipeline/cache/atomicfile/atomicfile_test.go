package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	for _, content := range []string{"first", "second, longer", ""} {
		if err := WriteFileAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("perm %v", fi.Mode().Perm())
		}
		if names := listDir(t, dir); len(names) != 1 {
			t.Fatalf("leftover files: %v", names)
		}
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	af, err := CreateAtomic(p)
	if err != nil {
		t.Fatal(err)
	}
	if !IsTemp(filepath.Base(af.TempName())) {
		t.Fatalf("temp name %q not recognised", af.TempName())
	}
	if _, err := af.WriteString("new"); err != nil {
		t.Fatal(err)
	}
	if err := af.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := af.Abort(); err != nil {
		t.Fatal("second abort:", err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != "old" {
		t.Fatalf("content %q after abort", got)
	}
	if names := listDir(t, dir); len(names) != 1 {
		t.Fatalf("leftover files: %v", names)
	}
	if _, err := af.Write([]byte("x")); err == nil {
		t.Fatal("write after abort succeeded")
	}
}

func TestCommitAs(t *testing.T) {
	dir := t.TempDir()
	af, err := CreateAtomic(filepath.Join(dir, "seg.arrow"))
	if err != nil {
		t.Fatal(err)
	}
	defer af.Abort()
	if _, err := af.Write([]byte("payload")); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(dir, "seg-abc.arrow")
	if err := af.CommitAs(final); err != nil {
		t.Fatal(err)
	}
	if af.Name() != final {
		t.Fatalf("Name() = %q", af.Name())
	}
	if err := af.Commit(); err == nil {
		t.Fatal("second commit succeeded")
	}
	names := listDir(t, dir)
	if len(names) != 1 || names[0] != "seg-abc.arrow" {
		t.Fatalf("files: %v", names)
	}
}

func TestIsTemp(t *testing.T) {
	for name, want := range map[string]bool{
		".a.json.tmp-123": true,
		"a.json":          false,
		".hidden":         false,
		"x.tmp-1":         false,
	} {
		if got := IsTemp(name); got != want {
			t.Errorf("IsTemp(%q) = %v", name, got)
		}
	}
}
