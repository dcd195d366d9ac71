package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dpopipe/dpopipe/pipeline/cache/atomicfile"
)

// Entry is one cached stage result.
type Entry struct {
	Key       string            `json:"key"`
	StageType string            `json:"stage_type"`
	StageName string            `json:"stage_name"`
	Parts     KeyParts          `json:"parts"`
	Output    *Object           `json:"output,omitempty"`   // Arrow IPC file with the output table
	Artifact  *Object           `json:"artifact,omitempty"` // directory of files the stage wrote
	Rows      int64             `json:"rows"`
	Meta      map[string]string `json:"meta,omitempty"`
	Created   time.Time         `json:"created"`
	LastUsed  time.Time         `json:"last_used"`
}

// Object is a content-addressed file or directory in objects/.
type Object struct {
	Digest string `json:"digest"`        // HashFile (file) or HashTree (directory) digest
	Size   int64  `json:"size"`          // bytes of content (for a directory, of all its files)
	Dir    bool   `json:"dir,omitempty"` // a directory object
	Path   string `json:"-"`             // absolute path inside objects/, filled on read
}

// record is the on-disk form of an entry.
type record struct {
	Format int `json:"format"`
	Entry
}

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (c *Cache) objectPath(digest string, dir bool) string {
	p := filepath.Join(c.Root, "objects", digest[:2], digest)
	if dir {
		p += ".dir"
	}
	return p
}

func (c *Cache) entryPath(key string) string {
	return filepath.Join(c.Root, "entries", key+".json")
}

func (e *Entry) objects() []*Object {
	var objs []*Object
	if e.Output != nil {
		objs = append(objs, e.Output)
	}
	if e.Artifact != nil {
		objs = append(objs, e.Artifact)
	}
	return objs
}

func (c *Cache) fillPaths(e *Entry) {
	for _, o := range e.objects() {
		if isHexDigest(o.Digest) {
			o.Path = c.objectPath(o.Digest, o.Dir)
		}
	}
}

// Commit stores a stage result: the output file (may be "") and the artifact
// directory (may be "") are moved into objects/ by content digest (deduplicated
// against objects already there) and fsynced, then the entry record is
// written atomically, last. Items under Root/tmp (see TempDir) are moved,
// which is cheap; items elsewhere are copied and left in place. Stored files
// are made read-only. e.Key may be empty; it is computed from e.Parts
// and must match if given. On error nothing becomes visible in entries/,
// objects this call placed are removed, and the given temp items are removed
// if they live under Root/tmp.
func (c *Cache) Commit(e Entry, outputFile, artifactDir string) (_ *Entry, err error) {
	key := e.Parts.Key()
	if e.Key != "" && e.Key != key {
		return nil, fmt.Errorf("cache: entry key %s does not match its key parts (%s)", e.Key, key)
	}
	e.Key = key
	if e.Parts.Config != nil {
		if cfg, cerr := Canonical(e.Parts.Config); cerr == nil {
			e.Parts.Config = cfg
		}
	}
	b := c.newBudget()
	var placed []string
	defer func() {
		if err == nil {
			return
		}
		for _, p := range placed {
			c.discard(p)
		}
		for _, p := range []string{outputFile, artifactDir} {
			if p != "" && c.inTmp(p) {
				removeAllForce(p)
			}
		}
		err = c.wrapErr(err)
	}()

	unlock, err := c.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()

	e.Output, e.Artifact = nil, nil
	if outputFile != "" {
		obj, newPath, err := c.ingest(outputFile, false, b)
		if err != nil {
			return nil, fmt.Errorf("cache: storing output %s: %w", outputFile, err)
		}
		if newPath != "" {
			placed = append(placed, newPath)
		}
		e.Output = obj
	}
	if artifactDir != "" {
		obj, newPath, err := c.ingest(artifactDir, true, b)
		if err != nil {
			return nil, fmt.Errorf("cache: storing artifact %s: %w", artifactDir, err)
		}
		if newPath != "" {
			placed = append(placed, newPath)
		}
		e.Artifact = obj
	}
	now := time.Now().UTC()
	if e.Created.IsZero() {
		e.Created = now
	}
	e.LastUsed = now
	if err := c.writeRecord(&e, b); err != nil {
		return nil, fmt.Errorf("cache: writing entry %s: %w", e.Key, err)
	}
	c.fillPaths(&e)
	return &e, nil
}

func (c *Cache) inTmp(p string) bool {
	abs, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	return strings.HasPrefix(abs, filepath.Join(c.Root, "tmp")+string(filepath.Separator))
}

// writeRecord atomically writes e's record; b may be nil (no budget).
func (c *Cache) writeRecord(e *Entry, b *budget) error {
	data, err := json.MarshalIndent(record{Format: FormatVersion, Entry: *e}, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	af, err := atomicfile.CreateAtomic(c.entryPath(e.Key))
	if err != nil {
		return err
	}
	defer af.Abort()
	var w io.Writer = af
	if b != nil {
		w = b.writer(af)
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return af.Commit()
}

// ingest moves src into objects/. It returns the object and, if this call
// created the object (rather than finding it already there), its path.
func (c *Cache) ingest(src string, wantDir bool, b *budget) (*Object, string, error) {
	fi, err := os.Lstat(src)
	if err != nil {
		return nil, "", err
	}
	if wantDir && !fi.IsDir() {
		return nil, "", errors.New("not a directory")
	}
	if !wantDir && !fi.Mode().IsRegular() {
		return nil, "", errors.New("not a regular file")
	}
	if !c.inTmp(src) {
		// Stage a copy in tmp/ so the final step is a same-filesystem rename.
		staged, err := c.stageCopy(src, wantDir, b)
		if err != nil {
			return nil, "", err
		}
		obj, placed, err := c.place(staged, wantDir, b, true)
		if err != nil {
			removeAllForce(staged)
			return nil, "", err
		}
		return obj, placed, nil
	}
	return c.place(src, wantDir, b, false)
}

// place seals src (fsync, read-only files), hashes it and renames it into
// objects/. charged says whether the bytes were already counted.
func (c *Cache) place(src string, dir bool, b *budget, charged bool) (*Object, string, error) {
	if err := seal(src); err != nil {
		return nil, "", err
	}
	digest, size, err := hashTree(src, false)
	if err != nil {
		return nil, "", err
	}
	if !charged {
		if err := b.add(size); err != nil {
			return nil, "", err
		}
	}
	obj := &Object{Digest: digest, Size: size, Dir: dir}
	dst := c.objectPath(digest, dir)
	obj.Path = dst
	newShard := false
	if err := os.Mkdir(filepath.Dir(dst), 0o755); err == nil {
		newShard = true
	} else if !errors.Is(err, os.ErrExist) {
		return nil, "", err
	}
	if _, err := os.Lstat(dst); err == nil {
		if got, _, verr := hashTree(dst, true); verr == nil && got == digest {
			removeAllForce(src) // dedup: identical content already stored
			return obj, "", nil
		}
		// The stored copy is damaged: replace it with the fresh one.
		if err := c.discard(dst); err != nil {
			return nil, "", err
		}
	}
	if err := os.Rename(src, dst); err != nil {
		if dir && (errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY)) {
			// A concurrent commit placed the same directory first.
			removeAllForce(src)
			return obj, "", nil
		}
		return nil, "", err
	}
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		return nil, "", err
	}
	if newShard {
		if err := atomicfile.SyncDir(filepath.Join(c.Root, "objects")); err != nil {
			return nil, "", err
		}
	}
	return obj, dst, nil
}

// seal fsyncs every file and directory under p and makes files read-only
// (keeping execute bits), so stored objects are not modified by accident.
func seal(p string) error {
	return filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 {
			return nil
		}
		if !d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := os.Chmod(path, 0o444|fi.Mode().Perm()&0o111); err != nil {
				return err
			}
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Sync(); err != nil && !d.IsDir() {
			return err
		}
		return nil
	})
}

// stageCopy copies src into a fresh item under tmp/, charging the budget.
func (c *Cache) stageCopy(src string, dir bool, b *budget) (string, error) {
	td, err := c.TempDir("ingest-")
	if err != nil {
		return "", err
	}
	dst := filepath.Join(td, "obj")
	if !dir {
		return dst, copyFile(src, dst, b)
	}
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return copyFile(path, target, b)
		}
	})
	if err != nil {
		removeAllForce(td)
		return "", err
	}
	return dst, nil
}

func copyFile(src, dst string, b *budget) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm()|0o200)
	if err != nil {
		return err
	}
	_, err = io.Copy(b.writer(out), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// readRecord reads and checks one entry record.
func (c *Cache) readRecord(key string) (*Entry, error) {
	data, err := os.ReadFile(c.entryPath(key))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("unreadable entry record: %v", err)
	}
	e := &r.Entry
	switch {
	case r.Format != FormatVersion:
		return nil, fmt.Errorf("entry record has format %d, want %d", r.Format, FormatVersion)
	case e.Key != key:
		return nil, fmt.Errorf("entry record names key %q", e.Key)
	case e.Parts.Key() != key:
		return nil, errors.New("entry record's key parts do not hash to its key")
	}
	for _, o := range e.objects() {
		if !isHexDigest(o.Digest) {
			return nil, fmt.Errorf("entry record names a malformed object digest %q", o.Digest)
		}
	}
	c.fillPaths(e)
	return e, nil
}

// checkObject verifies an object by re-hashing it. memo allows skipping
// files whose identity was already hashed in this process.
func checkObject(o *Object, memo bool) string {
	fi, err := os.Lstat(o.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf("object %s missing", o.Digest)
		}
		return fmt.Sprintf("object %s unreadable: %v", o.Digest, err)
	}
	if fi.IsDir() != o.Dir {
		return fmt.Sprintf("object %s has the wrong type", o.Digest)
	}
	got, size, err := hashTree(o.Path, memo)
	if err != nil {
		return fmt.Sprintf("object %s unreadable: %v", o.Digest, err)
	}
	if got != o.Digest {
		return fmt.Sprintf("object %s digest mismatch (content hashes to %s)", o.Digest, got)
	}
	if size != o.Size {
		return fmt.Sprintf("object %s size mismatch (%d bytes, record says %d)", o.Digest, size, o.Size)
	}
	return ""
}

// Lookup returns the entry for key if its record exists and every object it
// names exists and verifies. A damaged entry is a miss with a reason; its
// record (and any damaged object) is removed so a later run recomputes it.
// A hit updates LastUsed (best effort).
func (c *Cache) Lookup(key string) (*Entry, bool, string, error) {
	if !isHexDigest(key) {
		return nil, false, "", fmt.Errorf("cache: malformed key %q", key)
	}
	unlock, err := c.lock(false)
	if err != nil {
		return nil, false, "", err
	}
	defer unlock()
	e, err := c.readRecord(key)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, "no entry", nil
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, false, "", fmt.Errorf("cache: %w", err)
		}
		c.dropRecord(key)
		return nil, false, err.Error(), nil
	}
	for _, o := range e.objects() {
		if reason := checkObject(o, true); reason != "" {
			c.dropRecord(key)
			if strings.Contains(reason, "mismatch") || strings.Contains(reason, "wrong type") {
				c.discard(o.Path)
			}
			return nil, false, reason, nil
		}
	}
	e.LastUsed = time.Now().UTC()
	_ = c.writeRecord(e, nil)
	return e, true, "", nil
}

func (c *Cache) dropRecord(key string) {
	if os.Remove(c.entryPath(key)) == nil {
		atomicfile.SyncDir(filepath.Join(c.Root, "entries"))
	}
}

// keys lists the keys of all entry records (complete ones only).
func (c *Cache) keys() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(c.Root, "entries"))
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, d := range ents {
		name := d.Name()
		if k, ok := strings.CutSuffix(name, ".json"); ok && isHexDigest(k) && d.Type().IsRegular() {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// List returns every readable entry, most recently used first. Objects are
// not verified (Lookup does that).
func (c *Cache) List() ([]Entry, error) {
	keys, err := c.keys()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, k := range keys {
		if e, err := c.readRecord(k); err == nil {
			out = append(out, *e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].LastUsed.Equal(out[j].LastUsed) {
			return out[i].LastUsed.After(out[j].LastUsed)
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// Resolve expands a unique key prefix to a full key.
func (c *Cache) Resolve(prefix string) (string, error) {
	prefix = strings.ToLower(strings.TrimPrefix(prefix, "sha256:"))
	if prefix == "" {
		return "", errors.New("cache: empty key")
	}
	keys, err := c.keys()
	if err != nil {
		return "", err
	}
	var match []string
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			match = append(match, k)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("cache: no entry matches %q", prefix)
	case 1:
		return match[0], nil
	default:
		return "", fmt.Errorf("cache: key prefix %q is ambiguous (%d entries match)", prefix, len(match))
	}
}

// Remove deletes the entry whose key is key or starts with the unique prefix
// key, then the objects no other entry references.
func (c *Cache) Remove(key string) error {
	unlock, err := c.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	full, err := c.Resolve(key)
	if err != nil {
		return err
	}
	if err := os.Remove(c.entryPath(full)); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	atomicfile.SyncDir(filepath.Join(c.Root, "entries"))
	return c.sweepObjects()
}

// sweepObjects deletes every object no entry record references. The caller
// holds the exclusive lock, so no commit is between placing objects and
// writing its record.
func (c *Cache) sweepObjects() error {
	keys, err := c.keys()
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, k := range keys {
		e, err := c.readRecord(k)
		if err != nil {
			continue
		}
		for _, o := range e.objects() {
			live[filepath.Base(o.Path)] = true
		}
	}
	objRoot := filepath.Join(c.Root, "objects")
	shards, err := os.ReadDir(objRoot)
	if err != nil {
		return err
	}
	var firstErr error
	for _, s := range shards {
		if !s.IsDir() {
			continue
		}
		shard := filepath.Join(objRoot, s.Name())
		objs, err := os.ReadDir(shard)
		if err != nil {
			continue
		}
		left := 0
		for _, o := range objs {
			if live[o.Name()] {
				left++
				continue
			}
			if err := c.discard(filepath.Join(shard, o.Name())); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if left == 0 {
			os.Remove(shard)
		}
	}
	return firstErr
}

// GC removes entries unused for longer than olderThan (0: no age limit),
// then the least recently used ones until the objects still referenced
// total at most maxSize bytes (0: no size limit), then every unreferenced
// object. Row segments are not touched (see GCRows). It returns the removed
// entries.
func (c *Cache) GC(olderThan time.Duration, maxSize int64) ([]Entry, error) {
	unlock, err := c.lock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	entries, err := c.List()
	if err != nil {
		return nil, err
	}
	// Oldest first.
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].LastUsed.Before(entries[j].LastUsed) })
	now := time.Now()
	var removed, kept []Entry
	for _, e := range entries {
		if olderThan > 0 && now.Sub(e.LastUsed) > olderThan {
			removed = append(removed, e)
		} else {
			kept = append(kept, e)
		}
	}
	if maxSize > 0 {
		refs := map[string]int{}
		sizes := map[string]int64{}
		var total int64
		for _, e := range kept {
			for _, o := range e.objects() {
				if refs[o.Path] == 0 {
					total += o.Size
					sizes[o.Path] = o.Size
				}
				refs[o.Path]++
			}
		}
		i := 0
		for ; i < len(kept) && total > maxSize; i++ {
			removed = append(removed, kept[i])
			for _, o := range kept[i].objects() {
				refs[o.Path]--
				if refs[o.Path] == 0 {
					total -= sizes[o.Path]
				}
			}
		}
		kept = kept[i:]
	}
	for _, e := range removed {
		if err := os.Remove(c.entryPath(e.Key)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	if len(removed) > 0 {
		atomicfile.SyncDir(filepath.Join(c.Root, "entries"))
	}
	c.cleanStale(now.Add(-StaleTempAge))
	return removed, c.sweepObjects()
}

// Size returns the total bytes of the objects referenced by entries.
func (c *Cache) Size() (int64, error) {
	entries, err := c.List()
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	var total int64
	for _, e := range entries {
		for _, o := range e.objects() {
			if !seen[o.Path] {
				seen[o.Path] = true
				total += o.Size
			}
		}
	}
	return total, nil
}

// Verify checks every entry record, every object (by full re-hash, no memo)
// and every row segment, and returns the problems found. Unreferenced
// objects and leftover temp files are not problems.
func (c *Cache) Verify() ([]string, error) {
	var problems []string
	ents, err := os.ReadDir(filepath.Join(c.Root, "entries"))
	if err != nil {
		return nil, err
	}
	for _, d := range ents {
		name := d.Name()
		if atomicfile.IsTemp(name) {
			continue
		}
		k, ok := strings.CutSuffix(name, ".json")
		if !ok || !isHexDigest(k) {
			problems = append(problems, fmt.Sprintf("entries/%s: unexpected file", name))
			continue
		}
		e, err := c.readRecord(k)
		if err != nil {
			problems = append(problems, fmt.Sprintf("entry %s: %v", k, err))
			continue
		}
		for _, o := range e.objects() {
			if reason := checkObject(o, false); reason != "" {
				problems = append(problems, fmt.Sprintf("entry %s: %s", k, reason))
			}
		}
	}
	objRoot := filepath.Join(c.Root, "objects")
	shards, err := os.ReadDir(objRoot)
	if err != nil {
		return nil, err
	}
	for _, s := range shards {
		objs, err := os.ReadDir(filepath.Join(objRoot, s.Name()))
		if err != nil {
			problems = append(problems, fmt.Sprintf("objects/%s: %v", s.Name(), err))
			continue
		}
		for _, o := range objs {
			digest, isDir := strings.CutSuffix(o.Name(), ".dir")
			rel := "objects/" + s.Name() + "/" + o.Name()
			if !isHexDigest(digest) || digest[:2] != s.Name() {
				problems = append(problems, rel+": unexpected file")
				continue
			}
			obj := &Object{Digest: digest, Dir: isDir, Path: filepath.Join(objRoot, s.Name(), o.Name())}
			if reason := checkObject(obj, false); reason != "" && !strings.Contains(reason, "size mismatch") {
				problems = append(problems, rel+": "+reason)
			}
		}
	}
	problems = append(problems, c.verifyRows()...)
	return problems, nil
}
