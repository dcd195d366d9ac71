// Package atomicfile writes files so that readers see either the old content
// or the complete new content, never a partial file, even if the process is
// killed or the machine loses power mid-write.
//
// The data is written to a hidden temporary file in the destination
// directory, fsynced, renamed over the destination, and the directory is
// fsynced so the rename itself is durable.
//
// Temporary files are named ".<base>.tmp-<random>"; a crash can leave one
// behind. Readers that scan a directory should ignore names for which
// IsTemp reports true, and janitors may delete them once they are old.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// tempMarker is embedded in every temporary file name.
const tempMarker = ".tmp-"

// IsTemp reports whether a base name is one of this package's temporary files.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMarker)
}

// AtomicFile is a file being written that becomes visible at its destination
// only on Commit.
type AtomicFile struct {
	f    *os.File
	path string
	perm os.FileMode
	done bool
}

// CreateAtomic starts writing path with permissions 0644. Nothing is visible
// at path until Commit. Callers must call Commit or Abort; calling Abort after
// a successful Commit is a no-op, so `defer af.Abort()` is the usual pattern.
func CreateAtomic(path string) (*AtomicFile, error) {
	return CreateAtomicPerm(path, 0o644)
}

// CreateAtomicPerm is CreateAtomic with explicit permissions for the final
// file (applied with chmod, so the umask is not consulted).
func CreateAtomicPerm(path string, perm os.FileMode) (*AtomicFile, error) {
	dir, base := filepath.Split(path)
	if base == "" {
		return nil, fmt.Errorf("atomicfile: %q names a directory", path)
	}
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempMarker+"*")
	if err != nil {
		return nil, err
	}
	return &AtomicFile{f: f, path: path, perm: perm}, nil
}

// Name returns the destination path.
func (a *AtomicFile) Name() string { return a.path }

// TempName returns the path of the temporary file being written.
func (a *AtomicFile) TempName() string { return a.f.Name() }

// File exposes the underlying temporary file, for writers that need to seek.
func (a *AtomicFile) File() *os.File { return a.f }

// Write implements io.Writer.
func (a *AtomicFile) Write(p []byte) (int, error) {
	if a.done {
		return 0, os.ErrClosed
	}
	return a.f.Write(p)
}

// WriteString implements io.StringWriter.
func (a *AtomicFile) WriteString(s string) (int, error) {
	if a.done {
		return 0, os.ErrClosed
	}
	return a.f.WriteString(s)
}

// ReadFrom implements io.ReaderFrom so io.Copy can use the file's fast paths.
func (a *AtomicFile) ReadFrom(r io.Reader) (int64, error) {
	if a.done {
		return 0, os.ErrClosed
	}
	return a.f.ReadFrom(r)
}

// Commit makes the written data visible at the destination path:
// fsync, close, chmod, rename, fsync of the directory.
// On failure the temporary file is removed and the destination is untouched.
func (a *AtomicFile) Commit() error {
	return a.CommitAs(a.path)
}

// CommitAs is Commit to a different destination, which must be in the same
// directory (or at least the same filesystem) as the one given to
// CreateAtomic. It is meant for content-addressed files whose name is known
// only after their content has been written.
func (a *AtomicFile) CommitAs(path string) (err error) {
	if a.done {
		return os.ErrClosed
	}
	a.done = true
	tmp := a.f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := a.f.Sync(); err != nil {
		_ = a.f.Close()
		return err
	}
	if err := a.f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, a.perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	a.path = path
	return SyncDir(filepath.Dir(path))
}

// Abort discards the temporary file. It is safe to call more than once and
// after Commit.
func (a *AtomicFile) Abort() error {
	if a.done {
		return nil
	}
	a.done = true
	errClose := a.f.Close()
	errRemove := os.Remove(a.f.Name())
	if errRemove != nil && !errors.Is(errRemove, os.ErrNotExist) {
		return errRemove
	}
	return errClose
}

// WriteFileAtomic is os.WriteFile made atomic and durable.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	af, err := CreateAtomicPerm(path, perm)
	if err != nil {
		return err
	}
	defer af.Abort()
	if _, err := af.Write(data); err != nil {
		return err
	}
	return af.Commit()
}

// SyncDir fsyncs a directory so that renames and creations inside it are
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !isSyncUnsupported(err) {
		return err
	}
	return nil
}

// isSyncUnsupported reports errors from filesystems that cannot fsync a
// directory; durability there is the filesystem's business.
func isSyncUnsupported(err error) bool {
	var pe *os.PathError
	if errors.As(err, &pe) {
		s := pe.Err.Error()
		return strings.Contains(s, "invalid argument") || strings.Contains(s, "not supported")
	}
	return false
}
