package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// treeMagic starts the hashed encoding of a directory, so a directory digest
// can never equal the plain sha256 of a file.
const treeMagic = "dpopipe-tree-v1\x00"

// fileMemo maps a file's identity (path, size, mtime, ctime, inode, device)
// to its content digest, so big files (model weights) are hashed once per
// process. Any change to the file changes its identity and forces a re-hash.
var fileMemo sync.Map // fileIdentity → string

type fileIdentity struct {
	path         string
	size         int64
	mtime, ctime int64
	ino, dev     uint64
}

func identityOf(path string, fi os.FileInfo) fileIdentity {
	id := fileIdentity{path: path, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	id.ino, id.dev, id.ctime = statExtra(fi)
	return id
}

// HashFile returns the lowercase hex sha256 of a file's content.
// Results are memoised per process by the file's identity.
func HashFile(path string) (string, error) {
	return hashFile(path, true)
}

func hashFile(path string, memo bool) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	f, err := os.Open(abs)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	id := identityOf(abs, fi)
	if memo {
		if d, ok := fileMemo.Load(id); ok {
			return d.(string), nil
		}
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	d := hex.EncodeToString(h.Sum(nil))
	if memo {
		// Only remember the digest if the file did not change while we read it.
		if fi2, err := f.Stat(); err == nil && identityOf(abs, fi2) == id {
			fileMemo.Store(id, d)
		}
	}
	return d, nil
}

// HashTree returns the content digest of a file or a directory. For a file it
// is HashFile. For a directory it is the sha256 of a header followed by one
// record per entry, sorted by slash-separated relative path:
//
//	kind byte ('f' file, 'l' symlink not followed), len+relpath,
//	exec byte (1 if any execute bit is set), size (uint64), sha256 of content
//
// where a symlink that is not followed contributes its target text as its
// content. Symlinks are followed only if they resolve inside the directory
// (and do not form a cycle); others are recorded as links. Nothing is
// ignored: hidden files count. Empty directories contribute nothing.
// Sockets, devices and pipes are errors.
func HashTree(path string) (string, error) {
	d, _, err := hashTree(path, true)
	return d, err
}

// treeRecord is one hashed entry of a directory.
type treeRecord struct {
	rel  string
	kind byte
	exec bool
	size int64
	sum  [32]byte
}

// hashTree returns the digest and the total size of the regular files.
func hashTree(path string, memo bool) (string, int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", 0, err
	}
	if !fi.IsDir() {
		d, err := hashFile(path, memo)
		return d, fi.Size(), err
	}
	root, err := filepath.Abs(path)
	if err != nil {
		return "", 0, err
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return "", 0, err
	}
	w := &treeWalker{root: root, memo: memo, stack: map[string]bool{}}
	if err := w.walk(root, ""); err != nil {
		return "", 0, err
	}
	sort.Slice(w.recs, func(i, j int) bool { return w.recs[i].rel < w.recs[j].rel })
	h := sha256.New()
	io.WriteString(h, treeMagic)
	var total int64
	for _, r := range w.recs {
		h.Write([]byte{r.kind})
		writeField(h, r.rel)
		if r.exec {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
		writeUint(h, uint64(r.size))
		h.Write(r.sum[:])
		if r.kind == 'f' {
			total += r.size
		}
	}
	return hex.EncodeToString(h.Sum(nil)), total, nil
}

type treeWalker struct {
	root  string
	memo  bool
	stack map[string]bool // real paths of the directories being walked
	recs  []treeRecord
}

func (w *treeWalker) inside(p string) bool {
	return p == w.root || strings.HasPrefix(p, w.root+string(filepath.Separator))
}

func (w *treeWalker) walk(dir, rel string) error {
	w.stack[dir] = true
	defer delete(w.stack, dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		full := filepath.Join(dir, e.Name())
		r := e.Name()
		if rel != "" {
			r = rel + "/" + e.Name()
		}
		mode := e.Type()
		switch {
		case mode.IsRegular():
			if err := w.addFile(full, r); err != nil {
				return err
			}
		case mode.IsDir():
			if err := w.walk(full, r); err != nil {
				return err
			}
		case mode&os.ModeSymlink != 0:
			if err := w.addLink(full, r); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported file type %v", full, mode)
		}
	}
	return nil
}

func (w *treeWalker) addFile(full, rel string) error {
	fi, err := os.Stat(full)
	if err != nil {
		return err
	}
	d, err := hashFile(full, w.memo)
	if err != nil {
		return err
	}
	rec := treeRecord{rel: rel, kind: 'f', exec: fi.Mode().Perm()&0o111 != 0, size: fi.Size()}
	hex.Decode(rec.sum[:], []byte(d))
	w.recs = append(w.recs, rec)
	return nil
}

func (w *treeWalker) addLink(full, rel string) error {
	target, err := filepath.EvalSymlinks(full)
	if err == nil && w.inside(target) {
		fi, err := os.Stat(target)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode().IsRegular():
			return w.addFile(target, rel)
		case fi.IsDir() && !w.stack[target]:
			return w.walk(target, rel)
		}
	}
	// Outside, dangling or cyclic: record the link itself.
	text, err := os.Readlink(full)
	if err != nil {
		return err
	}
	w.recs = append(w.recs, treeRecord{rel: rel, kind: 'l', size: int64(len(text)), sum: sha256.Sum256([]byte(text))})
	return nil
}

// sumWriter hashes what it writes, for content-addressed outputs.
type sumWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newSumWriter(w io.Writer) *sumWriter { return &sumWriter{w: w, h: sha256.New()} }

func (s *sumWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	return n, err
}

func (s *sumWriter) digest() string { return hex.EncodeToString(s.h.Sum(nil)) }
