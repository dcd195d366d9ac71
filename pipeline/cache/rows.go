package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/dpopipe/dpopipe/pipeline/cache/atomicfile"
)

// RowKeyColumn is the utf8 column every row segment carries.
const RowKeyColumn = "row_key"

const (
	segPrefix     = "seg-"
	segSuffix     = ".arrow"
	nsNameFile    = "namespace" // holds the unsanitised namespace
	nsUsedMarker  = ".used"     // its mtime is the namespace's last use
	maxNsDirBytes = 120
)

// RowStore is a row-level store inside the cache, for stages that reuse work
// per row (the reference log-prob stage). Rows live in segments: Arrow IPC
// files holding a "row_key" utf8 column plus value columns, each written
// atomically and named by the sha256 of its content (seg-<hex>.arrow), which
// Load verifies. When several segments hold a key, the first loaded wins
// (segments load oldest first).
//
// Records returned by Lookup stay valid until Close or the next Load.
type RowStore struct {
	c         *Cache
	namespace string
	dir       string

	mu       sync.Mutex
	recs     []arrow.RecordBatch
	index    map[string]rowRef
	problems []string
}

type rowRef struct {
	rec int
	row int
}

// Rows returns the row store for namespace (for example
// "reference_logprobs/<model digest>"). The namespace is mapped to one safe
// directory name under rows/; it is created on first Append.
func (c *Cache) Rows(namespace string) *RowStore {
	return &RowStore{
		c:         c,
		namespace: namespace,
		dir:       filepath.Join(c.Root, "rows", sanitizeNamespace(namespace)),
		index:     map[string]rowRef{},
	}
}

// sanitizeNamespace keeps [A-Za-z0-9._-], maps everything else (including
// '/') to '_', and appends a short hash of the original whenever that changed
// anything or the name had to be shortened, so distinct namespaces never
// share a directory.
func sanitizeNamespace(ns string) string {
	var b strings.Builder
	for _, r := range ns {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if s == ns && len(s) <= maxNsDirBytes && !strings.HasPrefix(s, ".") && s != "" {
		return s
	}
	sum := sha256.Sum256([]byte(ns))
	if len(s) > maxNsDirBytes {
		s = s[:maxNsDirBytes]
	}
	s = strings.TrimLeft(s, ".")
	return s + "-" + hex.EncodeToString(sum[:4])
}

// Namespace returns the store's namespace; Dir its directory.
func (s *RowStore) Namespace() string { return s.namespace }

// Dir returns the directory holding the store's segments.
func (s *RowStore) Dir() string { return s.dir }

func (s *RowStore) release() {
	for _, r := range s.recs {
		r.Release()
	}
	s.recs = nil
	s.index = map[string]rowRef{}
	s.problems = nil
}

// Close releases every loaded record.
func (s *RowStore) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.release()
}

// Problems returns what the last Load found wrong (corrupted segments,
// which were skipped and deleted).
func (s *RowStore) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.problems...)
}

// Rows returns the number of distinct keys loaded or appended.
func (s *RowStore) Rows() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.index)
}

type segFile struct {
	name   string
	digest string
	mtime  time.Time
}

func listSegments(dir string) ([]segFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var segs []segFile
	for _, e := range ents {
		name := e.Name()
		d, ok := strings.CutPrefix(name, segPrefix)
		if !ok {
			continue
		}
		d, ok = strings.CutSuffix(d, segSuffix)
		if !ok {
			continue
		}
		sf := segFile{name: name, digest: d}
		if fi, err := e.Info(); err == nil {
			sf.mtime = fi.ModTime()
		}
		segs = append(segs, sf)
	}
	sort.Slice(segs, func(i, j int) bool {
		if !segs[i].mtime.Equal(segs[j].mtime) {
			return segs[i].mtime.Before(segs[j].mtime)
		}
		return segs[i].name < segs[j].name
	})
	return segs, nil
}

// readSegment reads a segment file, verifies its digest and decodes it.
func readSegment(path, digest string) ([]arrow.RecordBatch, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != digest {
		return nil, fmt.Errorf("digest mismatch (content hashes to %s)", got)
	}
	r, err := ipc.NewFileReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not an Arrow IPC file: %v", err)
	}
	defer r.Close()
	if idx := r.Schema().FieldIndices(RowKeyColumn); len(idx) != 1 || !isUTF8(r.Schema().Field(idx[0]).Type) {
		return nil, fmt.Errorf("no %s utf8 column", RowKeyColumn)
	}
	var recs []arrow.RecordBatch
	for i := 0; i < r.NumRecords(); i++ {
		rec, err := r.RecordBatchAt(i)
		if err != nil {
			for _, x := range recs {
				x.Release()
			}
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

func isUTF8(t arrow.DataType) bool {
	return t.ID() == arrow.STRING || t.ID() == arrow.LARGE_STRING
}

// keyColumn returns a function giving the row key of row i ("" and false
// for null) of rec.
func keyColumn(rec arrow.RecordBatch) (func(i int) (string, bool), error) {
	idx := rec.Schema().FieldIndices(RowKeyColumn)
	if len(idx) != 1 {
		return nil, fmt.Errorf("record needs exactly one %q column", RowKeyColumn)
	}
	switch col := rec.Column(idx[0]).(type) {
	case *array.String:
		return func(i int) (string, bool) { return col.Value(i), col.IsValid(i) }, nil
	case *array.LargeString:
		return func(i int) (string, bool) { return col.Value(i), col.IsValid(i) }, nil
	default:
		return nil, fmt.Errorf("column %q is %s, want utf8", RowKeyColumn, col.DataType())
	}
}

// add indexes rec's rows (first wins) and keeps rec; the store takes over
// the caller's reference.
func (s *RowStore) add(rec arrow.RecordBatch) error {
	key, err := keyColumn(rec)
	if err != nil {
		return err
	}
	ri := len(s.recs)
	s.recs = append(s.recs, rec)
	for i := 0; i < int(rec.NumRows()); i++ {
		k, ok := key(i)
		if !ok {
			continue
		}
		if _, dup := s.index[k]; !dup {
			s.index[k] = rowRef{rec: ri, row: i}
		}
	}
	return nil
}

// Load reads and verifies every segment and rebuilds the index. Corrupted
// segments are skipped, deleted and reported by Problems; only I/O errors
// that prevent reading the directory are returned.
func (s *RowStore) Load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.release()
	segs, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("cache: row store %s: %w", s.namespace, err)
	}
	for _, sf := range segs {
		path := filepath.Join(s.dir, sf.name)
		recs, err := readSegment(path, sf.digest)
		if err != nil {
			s.problems = append(s.problems, fmt.Sprintf("row segment %s/%s: %v (skipped and removed)", s.namespace, sf.name, err))
			os.Remove(path)
			continue
		}
		for _, r := range recs {
			if err := s.add(r); err != nil {
				r.Release()
			}
		}
	}
	s.touch()
	return nil
}

// touch marks the namespace as used now, for GCRows.
func (s *RowStore) touch() {
	p := filepath.Join(s.dir, nsUsedMarker)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil && errors.Is(err, os.ErrNotExist) {
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			f.Close()
		}
	}
}

// Lookup returns the record and row index holding key.
func (s *RowStore) Lookup(key string) (arrow.RecordBatch, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.index[key]
	if !ok {
		return nil, 0, false
	}
	return s.recs[ref.rec], ref.row, true
}

// Append writes rec as a new segment (atomically, named by its digest) and
// indexes its rows; keys already present keep their first row. rec must
// have a utf8 "row_key" column. The store retains rec.
func (s *RowStore) Append(rec arrow.RecordBatch) (err error) {
	if _, err := keyColumn(rec); err != nil {
		return fmt.Errorf("cache: row store %s: %w", s.namespace, err)
	}
	if rec.NumRows() == 0 {
		return nil
	}
	defer func() { err = s.c.wrapErr(err) }()
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	b := s.c.newBudget()
	nsFile := filepath.Join(s.dir, nsNameFile)
	if _, err := os.Stat(nsFile); errors.Is(err, os.ErrNotExist) {
		if err := b.add(int64(len(s.namespace))); err != nil {
			return err
		}
		if err := atomicfile.WriteFileAtomic(nsFile, []byte(s.namespace), 0o644); err != nil {
			return err
		}
	}
	af, err := atomicfile.CreateAtomicPerm(filepath.Join(s.dir, "seg"+segSuffix), 0o444)
	if err != nil {
		return err
	}
	defer af.Abort()
	sw := newSumWriter(b.writer(af))
	w, err := ipc.NewFileWriter(sw, ipc.WithSchema(rec.Schema()))
	if err != nil {
		return err
	}
	if err := w.Write(rec); err != nil {
		return fmt.Errorf("cache: writing row segment: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("cache: writing row segment: %w", err)
	}
	if err := af.CommitAs(filepath.Join(s.dir, segPrefix+sw.digest()+segSuffix)); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec.Retain()
	if err := s.add(rec); err != nil {
		rec.Release()
		return err
	}
	s.touch()
	return nil
}

// RowNamespace describes one row store on disk.
type RowNamespace struct {
	Namespace string
	Dir       string
	Segments  int
	Size      int64
	LastUsed  time.Time
}

// RowNamespaces lists the row stores, most recently used first.
func (c *Cache) RowNamespaces() ([]RowNamespace, error) {
	root := filepath.Join(c.Root, "rows")
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var out []RowNamespace
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		ns := RowNamespace{Namespace: e.Name(), Dir: dir}
		if b, err := os.ReadFile(filepath.Join(dir, nsNameFile)); err == nil {
			ns.Namespace = string(b)
		}
		if fi, err := os.Stat(filepath.Join(dir, nsUsedMarker)); err == nil {
			ns.LastUsed = fi.ModTime()
		} else if fi, err := e.Info(); err == nil {
			ns.LastUsed = fi.ModTime()
		}
		segs, _ := listSegments(dir)
		for _, sf := range segs {
			ns.Segments++
			if fi, err := os.Stat(filepath.Join(dir, sf.name)); err == nil {
				ns.Size += fi.Size()
			}
		}
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

// GCRows deletes the row stores not used (loaded or appended to) for longer
// than olderThan, and returns them.
func (c *Cache) GCRows(olderThan time.Duration) ([]RowNamespace, error) {
	if olderThan <= 0 {
		return nil, nil
	}
	unlock, err := c.lock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	all, err := c.RowNamespaces()
	if err != nil {
		return nil, err
	}
	var removed []RowNamespace
	for _, ns := range all {
		if time.Since(ns.LastUsed) > olderThan {
			if err := c.discard(ns.Dir); err != nil {
				return removed, err
			}
			removed = append(removed, ns)
		}
	}
	return removed, nil
}

// verifyRows checks every segment's digest (decoding is left to Load).
func (c *Cache) verifyRows() []string {
	var problems []string
	root := filepath.Join(c.Root, "rows")
	ents, err := os.ReadDir(root)
	if err != nil {
		return []string{"rows: " + err.Error()}
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		segs, err := listSegments(filepath.Join(root, e.Name()))
		if err != nil {
			problems = append(problems, fmt.Sprintf("rows/%s: %v", e.Name(), err))
			continue
		}
		for _, sf := range segs {
			data, err := os.ReadFile(filepath.Join(root, e.Name(), sf.name))
			if err != nil {
				problems = append(problems, fmt.Sprintf("rows/%s/%s: %v", e.Name(), sf.name, err))
				continue
			}
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != sf.digest {
				problems = append(problems, fmt.Sprintf("rows/%s/%s: digest mismatch", e.Name(), sf.name))
			}
		}
	}
	return problems
}
