// Package cache is dpopipe's content-addressed, crash-safe store of stage
// outputs.
//
// Layout under Root:
//
//	objects/ab/abcd…        an Arrow IPC file, named by the sha256 of its content
//	objects/ab/abcd….dir/   an artifact directory, named by its HashTree digest
//	entries/<key>.json      one record per cache key, naming the objects above
//	rows/<namespace>/       row-level segments (see RowStore)
//	tmp/                    staging area on the same filesystem, for atomic renames
//	lock                    flock: commit/lookup share it, gc/rm take it exclusively
//
// Every write is a write to tmp/ (or a hidden temp file) followed by fsync
// and an atomic rename; an entry record is written last, so a crash at any
// moment leaves at worst unreferenced objects, which gc deletes. Every read
// is verified: Lookup re-hashes the objects an entry names (once per process
// per file identity) and turns any mismatch into a miss.
package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dpopipe/dpopipe/pipeline/cache/atomicfile"
)

// FormatVersion is the version of the cache layout and key encoding. It is
// the first key component, so bumping it invalidates every entry.
const FormatVersion = 1

// StaleTempAge is how old a leftover temporary item must be before Open
// deletes it; younger ones may belong to a commit in progress.
const StaleTempAge = time.Hour

// DefaultDir returns $DPOPIPE_CACHE_DIR, else $XDG_CACHE_HOME/dpopipe, else
// ~/.cache/dpopipe.
func DefaultDir() string {
	if d := os.Getenv("DPOPIPE_CACHE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "dpopipe")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".cache", "dpopipe")
	}
	return filepath.Join(os.TempDir(), "dpopipe-cache")
}

// Options tune a Cache; the zero value is the normal configuration.
type Options struct {
	// MaxWriteBytes, when positive, simulates a full disk: any Commit or
	// Append that stores more than this many bytes fails with an error
	// wrapping syscall.ENOSPC. For tests.
	MaxWriteBytes int64
}

// Cache is an open cache directory. It is safe for concurrent use by several
// goroutines and several processes.
type Cache struct {
	Root string
	opts Options
}

// Open opens (creating if needed) a cache rooted at root and deletes
// temporary items older than StaleTempAge.
func Open(root string) (*Cache, error) { return OpenWith(root, Options{}) }

// OpenWith is Open with options.
func OpenWith(root string, opts Options) (*Cache, error) {
	if root == "" {
		return nil, errors.New("cache: empty cache directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	c := &Cache{Root: abs, opts: opts}
	for _, d := range []string{"objects", "entries", "rows", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, c.wrapErr(fmt.Errorf("cache: creating %s: %w", d, err))
		}
	}
	c.cleanStale(time.Now().Add(-StaleTempAge))
	return c, nil
}

// cleanStale removes old items from tmp/ and old atomic temp files left in
// entries/ and rows/ by killed writers. Errors are ignored: it is janitorial.
func (c *Cache) cleanStale(before time.Time) {
	tmp := filepath.Join(c.Root, "tmp")
	if ents, err := os.ReadDir(tmp); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.ModTime().Before(before) {
				removeAllForce(filepath.Join(tmp, e.Name()))
			}
		}
	}
	clean := func(dir string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			if !atomicfile.IsTemp(e.Name()) {
				continue
			}
			if fi, err := e.Info(); err == nil && fi.ModTime().Before(before) {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	clean(filepath.Join(c.Root, "entries"))
	if ents, err := os.ReadDir(filepath.Join(c.Root, "rows")); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				clean(filepath.Join(c.Root, "rows", e.Name()))
			}
		}
	}
}

// TempDir creates a fresh directory under Root/tmp, on the same filesystem
// as the objects so that Commit can rename instead of copying.
func (c *Cache) TempDir(prefix string) (string, error) {
	prefix = strings.ReplaceAll(prefix, string(filepath.Separator), "_")
	d, err := os.MkdirTemp(filepath.Join(c.Root, "tmp"), prefix+"*")
	return d, c.wrapErr(err)
}

// lock takes the cache-wide lock. Each call opens its own descriptor, so
// locks exclude each other between goroutines as well as processes.
func (c *Cache) lock(exclusive bool) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(c.Root, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f, exclusive); err != nil {
		f.Close()
		return nil, fmt.Errorf("cache: locking %s: %w", c.Root, err)
	}
	return func() { f.Close() }, nil
}

// OutOfSpaceError reports that the cache's filesystem is full (or that the
// MaxWriteBytes test limit was reached). It wraps syscall.ENOSPC.
type OutOfSpaceError struct {
	Dir string
	Err error
}

func (e *OutOfSpaceError) Error() string {
	return fmt.Sprintf("cache directory %s is out of space (%v): free some space there "+
		"(for example `dpopipe cache gc --max-size 10GB`) or set DPOPIPE_CACHE_DIR "+
		"to a directory on a disk with more room", e.Dir, e.Err)
}

func (e *OutOfSpaceError) Unwrap() error { return e.Err }

// wrapErr turns any ENOSPC into an OutOfSpaceError naming the cache.
func (c *Cache) wrapErr(err error) error {
	if err == nil {
		return nil
	}
	var oos *OutOfSpaceError
	if errors.As(err, &oos) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &OutOfSpaceError{Dir: c.Root, Err: err}
	}
	return err
}

// budget counts the bytes one Commit or Append stores, for MaxWriteBytes.
type budget struct {
	c     *Cache
	limit int64
	n     int64
}

func (c *Cache) newBudget() *budget { return &budget{c: c, limit: c.opts.MaxWriteBytes} }

func (b *budget) add(n int64) error {
	b.n += n
	if b.limit > 0 && b.n > b.limit {
		return &OutOfSpaceError{Dir: b.c.Root, Err: fmt.Errorf(
			"write limit of %d bytes exceeded: %w", b.limit, syscall.ENOSPC)}
	}
	return nil
}

// writer wraps w so every write is charged to the budget first.
func (b *budget) writer(w io.Writer) io.Writer { return budgetWriter{b, w} }

type budgetWriter struct {
	b *budget
	w io.Writer
}

func (bw budgetWriter) Write(p []byte) (int, error) {
	if err := bw.b.add(int64(len(p))); err != nil {
		return 0, err
	}
	return bw.w.Write(p)
}

// removeAllForce deletes a tree even if some directories were made
// read-only.
func removeAllForce(path string) error {
	err := os.RemoveAll(path)
	if err == nil {
		return nil
	}
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(path)
}

// discard removes a path by first renaming it into tmp/, so a half-deleted
// directory is never visible at its original path.
func (c *Cache) discard(path string) error {
	dst, err := os.MkdirTemp(filepath.Join(c.Root, "tmp"), "trash-")
	if err != nil {
		return removeAllForce(path)
	}
	if err := os.Rename(path, filepath.Join(dst, "x")); err != nil {
		os.Remove(dst)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return removeAllForce(path)
	}
	atomicfile.SyncDir(filepath.Dir(path))
	return removeAllForce(dst)
}
