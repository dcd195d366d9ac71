package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func newCache(t *testing.T, opts Options) *Cache {
	t.Helper()
	c, err := OpenWith(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// partsFor returns distinct key parts for name.
func partsFor(name string) KeyParts {
	return KeyParts{
		FormatVersion: FormatVersion,
		StageType:     "tokenize",
		PluginSHA256:  strings.Repeat("0", 64),
		PluginVersion: "1",
		Config:        json.RawMessage(fmt.Sprintf(`{"name":%q}`, name)),
	}
}

// tempOutput writes content to a fresh file in the cache's tmp/.
func tempOutput(t *testing.T, c *Cache, content string) string {
	t.Helper()
	d, err := c.TempDir("out-")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d, "output.arrow")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tempArtifact writes files (relative path → content) into a fresh dir.
func tempArtifact(t *testing.T, c *Cache, files map[string]string) string {
	t.Helper()
	d, err := c.TempDir("art-")
	if err != nil {
		t.Fatal(err)
	}
	for rel, content := range files {
		p := filepath.Join(d, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func commit(t *testing.T, c *Cache, name, output string, artifact map[string]string) *Entry {
	t.Helper()
	var out, art string
	if output != "" {
		out = tempOutput(t, c, output)
	}
	if artifact != nil {
		art = tempArtifact(t, c, artifact)
	}
	e, err := c.Commit(Entry{StageType: "tokenize", StageName: name, Parts: partsFor(name), Rows: 3,
		Meta: map[string]string{"rows_reused": "1"}}, out, art)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustVerify(t *testing.T, c *Cache) {
	t.Helper()
	problems, err := c.Verify()
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("Verify: %q", problems)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func TestCommitLookupRoundTrip(t *testing.T) {
	c := newCache(t, Options{})
	e := commit(t, c, "a", "table bytes", map[string]string{"model/w.bin": "weights", "metrics.jsonl": "{}\n"})
	if e.Key != partsFor("a").Key() {
		t.Fatalf("key %s", e.Key)
	}
	sum := sha256.Sum256([]byte("table bytes"))
	if e.Output.Digest != hex.EncodeToString(sum[:]) || e.Output.Size != 11 {
		t.Fatalf("output object %+v", e.Output)
	}
	if e.Artifact.Size != int64(len("weights")+3) || !e.Artifact.Dir {
		t.Fatalf("artifact object %+v", e.Artifact)
	}
	if n := countFiles(t, filepath.Join(c.Root, "tmp")); n != 0 {
		t.Fatalf("%d files left in tmp/", n)
	}
	time.Sleep(5 * time.Millisecond)
	for _, cc := range []*Cache{c, reopen(t, c)} {
		got, ok, reason, err := cc.Lookup(e.Key)
		if err != nil || !ok {
			t.Fatalf("Lookup: ok=%v reason=%q err=%v", ok, reason, err)
		}
		if got.StageName != "a" || got.Rows != 3 || got.Meta["rows_reused"] != "1" {
			t.Fatalf("entry %+v", got)
		}
		if !got.LastUsed.After(e.LastUsed) || !got.Created.Equal(e.Created) {
			t.Fatalf("times: created %v/%v last used %v/%v", got.Created, e.Created, got.LastUsed, e.LastUsed)
		}
		b, err := os.ReadFile(got.Output.Path)
		if err != nil || string(b) != "table bytes" {
			t.Fatalf("output %q %v", b, err)
		}
		b, err = os.ReadFile(filepath.Join(got.Artifact.Path, "model", "w.bin"))
		if err != nil || string(b) != "weights" {
			t.Fatalf("artifact %q %v", b, err)
		}
		if d, err := HashTree(got.Artifact.Path); err != nil || d != got.Artifact.Digest {
			t.Fatalf("artifact digest %s %v", d, err)
		}
	}
	if _, ok, reason, _ := c.Lookup(partsFor("other").Key()); ok || reason != "no entry" {
		t.Fatalf("unknown key: ok=%v reason=%q", ok, reason)
	}
	list, err := c.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List: %v %v", list, err)
	}
	mustVerify(t, c)
}

func reopen(t *testing.T, c *Cache) *Cache {
	t.Helper()
	c2, err := Open(c.Root)
	if err != nil {
		t.Fatal(err)
	}
	return c2
}

func TestCommitOptionalObjects(t *testing.T) {
	c := newCache(t, Options{})
	cases := []struct {
		name   string
		output string
		art    map[string]string
	}{
		{"none", "", nil},
		{"output only", "x", nil},
		{"artifact only", "", map[string]string{"f": "y"}},
		{"empty artifact", "", map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := commit(t, c, tc.name, tc.output, tc.art)
			got, ok, reason, err := c.Lookup(e.Key)
			if !ok || err != nil {
				t.Fatalf("miss %q %v", reason, err)
			}
			if (got.Output != nil) != (tc.output != "") || (got.Artifact != nil) != (tc.art != nil) {
				t.Fatalf("objects %+v %+v", got.Output, got.Artifact)
			}
		})
	}
	mustVerify(t, c)
}

func TestCommitRejectsWrongKey(t *testing.T) {
	c := newCache(t, Options{})
	_, err := c.Commit(Entry{Key: strings.Repeat("f", 64), Parts: partsFor("a")}, tempOutput(t, c, "x"), "")
	if err == nil {
		t.Fatal("commit with a key that does not match its parts succeeded")
	}
	if n := countFiles(t, c.Root) - 1; n != 0 { // the lock file stays
		t.Fatalf("%d files left", n)
	}
}

func TestDedup(t *testing.T) {
	c := newCache(t, Options{})
	art := map[string]string{"model/w.bin": "same weights"}
	a := commit(t, c, "a", "same table", art)
	b := commit(t, c, "b", "same table", art)
	if a.Key == b.Key {
		t.Fatal("distinct parts share a key")
	}
	if a.Output.Path != b.Output.Path || a.Artifact.Path != b.Artifact.Path {
		t.Fatal("identical objects not deduplicated")
	}
	if n := countFiles(t, filepath.Join(c.Root, "objects")); n != 2 {
		t.Fatalf("%d object files, want 2", n)
	}
	if n := countFiles(t, filepath.Join(c.Root, "tmp")); n != 0 {
		t.Fatalf("%d files left in tmp/", n)
	}
	// Removing one entry keeps the shared objects for the other.
	if err := c.Remove(a.Key); err != nil {
		t.Fatal(err)
	}
	if _, ok, reason, _ := c.Lookup(b.Key); !ok {
		t.Fatalf("b missed after removing a: %s", reason)
	}
	if err := c.Remove(b.Key[:12]); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, filepath.Join(c.Root, "objects")); n != 0 {
		t.Fatalf("%d object files left after removing every entry", n)
	}
	mustVerify(t, c)
}

// writeInto overwrites part of a (read-only) stored file.
func writeInto(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestLookupDamage(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, c *Cache, e *Entry)
		reason string
	}{
		{"output byte flipped", func(t *testing.T, c *Cache, e *Entry) {
			b, _ := os.ReadFile(e.Output.Path)
			writeInto(t, e.Output.Path, 3, []byte{b[3] ^ 1})
		}, "digest mismatch"},
		{"output deleted", func(t *testing.T, c *Cache, e *Entry) {
			os.Remove(e.Output.Path)
		}, "missing"},
		{"output truncated", func(t *testing.T, c *Cache, e *Entry) {
			os.Truncate(e.Output.Path, 2)
		}, "digest mismatch"},
		{"artifact file changed", func(t *testing.T, c *Cache, e *Entry) {
			writeInto(t, filepath.Join(e.Artifact.Path, "model", "w.bin"), 0, []byte("W"))
		}, "digest mismatch"},
		{"artifact file added", func(t *testing.T, c *Cache, e *Entry) {
			os.WriteFile(filepath.Join(e.Artifact.Path, "extra"), nil, 0o644)
		}, "digest mismatch"},
		{"artifact deleted", func(t *testing.T, c *Cache, e *Entry) {
			removeAllForce(e.Artifact.Path)
		}, "missing"},
		{"record garbage", func(t *testing.T, c *Cache, e *Entry) {
			os.WriteFile(c.entryPath(e.Key), []byte("{not json"), 0o644)
		}, "unreadable entry record"},
		{"record truncated", func(t *testing.T, c *Cache, e *Entry) {
			os.Truncate(c.entryPath(e.Key), 10)
		}, "unreadable entry record"},
		{"record for other key", func(t *testing.T, c *Cache, e *Entry) {
			other := commit(t, c, "other", "o", nil)
			b, _ := os.ReadFile(c.entryPath(other.Key))
			os.WriteFile(c.entryPath(e.Key), b, 0o644)
		}, "names key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, Options{})
			e := commit(t, c, "a", "some table bytes", map[string]string{"model/w.bin": "weights"})
			tc.damage(t, c, e)
			got, ok, reason, err := c.Lookup(e.Key)
			if err != nil {
				t.Fatal(err)
			}
			if ok || got != nil {
				t.Fatal("damaged entry looked up as a hit")
			}
			if !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason %q, want it to mention %q", reason, tc.reason)
			}
			if strings.Contains(tc.reason, "mismatch") && !strings.Contains(reason, "object ") {
				t.Fatalf("reason %q does not name the object", reason)
			}
			if _, err := os.Stat(c.entryPath(e.Key)); !os.IsNotExist(err) {
				t.Fatal("damaged entry record not removed")
			}
			if _, ok, reason, _ := c.Lookup(e.Key); ok || reason != "no entry" {
				t.Fatalf("second lookup: ok=%v reason=%q", ok, reason)
			}
			mustVerify(t, c)
			// Recomputing stores a good copy again.
			e2 := commit(t, c, "a", "some table bytes", map[string]string{"model/w.bin": "weights"})
			if _, ok, reason, _ := reopen(t, c).Lookup(e2.Key); !ok {
				t.Fatalf("recommitted entry missed: %s", reason)
			}
			mustVerify(t, c)
		})
	}
}

func TestVerifyReportsDamage(t *testing.T) {
	c := newCache(t, Options{})
	e := commit(t, c, "a", "table", nil)
	mustVerify(t, c)
	writeInto(t, e.Output.Path, 0, []byte("T"))
	problems, err := c.Verify()
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 2 { // the entry's view and the object's own
		t.Fatalf("problems %q", problems)
	}
	for _, p := range problems {
		if !strings.Contains(p, "digest mismatch") {
			t.Fatalf("problem %q", p)
		}
	}
}

func TestLeftoverTempNeverAnEntry(t *testing.T) {
	c := newCache(t, Options{})
	key := partsFor("a").Key()
	// What a commit killed mid-way leaves: a half-written record temp file,
	// a staged output in tmp/, an object without a record.
	partial := filepath.Join(c.Root, "entries", "."+key+".json.tmp-12345")
	if err := os.WriteFile(partial, []byte(`{"format":1,"key":"`+key), 0o644); err != nil {
		t.Fatal(err)
	}
	staged := tempOutput(t, c, "half")
	e := commit(t, c, "b", "orphan", nil)
	os.Remove(c.entryPath(e.Key))

	if list, err := c.List(); err != nil || len(list) != 0 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if _, ok, reason, _ := c.Lookup(key); ok || reason != "no entry" {
		t.Fatalf("Lookup: ok=%v reason=%q", ok, reason)
	}
	mustVerify(t, c)

	// Old leftovers are cleaned when the cache is opened; young ones stay
	// (they may belong to a commit in progress).
	reopen(t, c)
	if _, err := os.Stat(partial); err != nil {
		t.Fatal("young temp file removed")
	}
	old := time.Now().Add(-2 * StaleTempAge)
	os.Chtimes(partial, old, old)
	os.Chtimes(filepath.Dir(staged), old, old)
	reopen(t, c)
	for _, p := range []string{partial, filepath.Dir(staged)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("stale %s not removed", p)
		}
	}
	// gc removes the orphan object.
	if _, err := c.GC(0, 0); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, filepath.Join(c.Root, "objects")); n != 0 {
		t.Fatalf("%d orphan objects left", n)
	}
}

// setLastUsed rewrites an entry's LastUsed.
func setLastUsed(t *testing.T, c *Cache, key string, when time.Time) {
	t.Helper()
	e, err := c.readRecord(key)
	if err != nil {
		t.Fatal(err)
	}
	e.LastUsed = when
	if err := c.writeRecord(e, nil); err != nil {
		t.Fatal(err)
	}
}

func TestGC(t *testing.T) {
	now := time.Now()
	type ent struct {
		name   string
		size   int
		age    time.Duration
		shared bool // output shared with the entry "keep"
	}
	ents := []ent{
		{"old", 100, 40 * 24 * time.Hour, false},
		{"older", 100, 50 * 24 * time.Hour, true},
		{"mid", 200, 2 * time.Hour, false},
		{"recent", 300, time.Hour, false},
		{"keep", 400, 0, false},
	}
	cases := []struct {
		name      string
		olderThan time.Duration
		maxSize   int64
		removed   []string
	}{
		{"no limits", 0, 0, nil},
		{"by age", 30 * 24 * time.Hour, 0, []string{"older", "old"}},
		{"by size", 0, 650, []string{"older", "old", "mid", "recent"}},
		{"by size, room for recent", 0, 750, []string{"older", "old", "mid"}},
		{"by age only", 30 * 24 * time.Hour, 900, []string{"older", "old"}},
		{"by age then size", 30 * 24 * time.Hour, 850, []string{"older", "old", "mid"}},
		{"everything fits", 0, 10000, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, Options{})
			keys := map[string]string{}
			for _, e := range ents {
				content := strings.Repeat(e.name[:1], e.size)
				if e.shared {
					content = strings.Repeat("k", 400)
				}
				ce := commit(t, c, e.name, content, nil)
				keys[e.name] = ce.Key
				setLastUsed(t, c, ce.Key, now.Add(-e.age))
			}
			removed, err := c.GC(tc.olderThan, tc.maxSize)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range removed {
				names = append(names, r.StageName)
			}
			if fmt.Sprint(names) != fmt.Sprint(tc.removed) {
				t.Fatalf("removed %v, want %v", names, tc.removed)
			}
			gone := map[string]bool{}
			for _, n := range names {
				gone[n] = true
			}
			for _, e := range ents {
				_, ok, _, _ := c.Lookup(keys[e.name])
				if ok == gone[e.name] {
					t.Errorf("%s: hit=%v after gc", e.name, ok)
				}
			}
			size, _ := c.Size()
			if tc.maxSize > 0 && size > tc.maxSize {
				t.Fatalf("size %d > %d after gc", size, tc.maxSize)
			}
			if n := countFiles(t, filepath.Join(c.Root, "objects")); n != len(ents)-1-len(names)+boolInt(gone["older"]) {
				t.Fatalf("%d objects left", n)
			}
			mustVerify(t, c)
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestRemoveByPrefix(t *testing.T) {
	c := newCache(t, Options{})
	byFirst := map[byte][]string{}
	var ambiguous string
	for i := 0; i < 20; i++ {
		e := commit(t, c, fmt.Sprint("e", i), fmt.Sprint("content", i), nil)
		byFirst[e.Key[0]] = append(byFirst[e.Key[0]], e.Key)
		if len(byFirst[e.Key[0]]) == 2 {
			ambiguous = e.Key[:1]
		}
	}
	target := byFirst[ambiguous[0]][0]
	cases := []struct {
		name, arg, errPart string
	}{
		{"empty", "", "empty"},
		{"unknown", "zz", "no entry"},
		{"ambiguous", ambiguous, "ambiguous"},
		{"unique prefix", "sha256:" + target[:10], ""},
		{"already removed", target, "no entry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Remove(tc.arg)
			if tc.errPart == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("err %v, want %q", err, tc.errPart)
			}
		})
	}
	list, _ := c.List()
	if len(list) != 19 {
		t.Fatalf("%d entries left", len(list))
	}
	if n := countFiles(t, filepath.Join(c.Root, "objects")); n != 19 {
		t.Fatalf("%d objects left", n)
	}
	mustVerify(t, c)
}

func TestOutOfSpace(t *testing.T) {
	table := strings.Repeat("t", 1000)
	cases := []struct {
		name  string
		limit int64
		art   map[string]string
	}{
		{"output too big", 100, nil},
		{"artifact too big", 1100, map[string]string{"model/w.bin": strings.Repeat("w", 500)}},
		{"record does not fit", 1010, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, Options{MaxWriteBytes: tc.limit})
			out := tempOutput(t, c, table)
			var art string
			if tc.art != nil {
				art = tempArtifact(t, c, tc.art)
			}
			e, err := c.Commit(Entry{Parts: partsFor("a")}, out, art)
			if err == nil {
				t.Fatalf("commit succeeded: %+v", e)
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("error %v does not wrap ENOSPC", err)
			}
			msg := err.Error()
			for _, want := range []string{c.Root, "out of space", "DPOPIPE_CACHE_DIR", "free"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			if list, _ := c.List(); len(list) != 0 {
				t.Fatalf("entries after failed commit: %v", list)
			}
			if _, ok, _, _ := c.Lookup(partsFor("a").Key()); ok {
				t.Fatal("failed commit looks up")
			}
			for _, d := range []string{"objects", "entries", "tmp"} {
				if n := countFiles(t, filepath.Join(c.Root, d)); n != 0 {
					t.Errorf("%d files left in %s/", n, d)
				}
			}
			mustVerify(t, c)
		})
	}
	// Within the limit everything works.
	c := newCache(t, Options{MaxWriteBytes: 1 << 20})
	commit(t, c, "a", table, nil)
	mustVerify(t, c)
}

func TestCommitFromOutsideTmp(t *testing.T) {
	c := newCache(t, Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out.arrow")
	os.WriteFile(out, []byte("outside"), 0o644)
	art := filepath.Join(dir, "art")
	os.MkdirAll(filepath.Join(art, "sub"), 0o755)
	os.WriteFile(filepath.Join(art, "sub", "f"), []byte("file"), 0o755)
	os.Symlink("sub/f", filepath.Join(art, "link"))
	want, _ := HashTree(art)
	e, err := c.Commit(Entry{Parts: partsFor("x")}, out, art)
	if err != nil {
		t.Fatal(err)
	}
	if e.Artifact.Digest != want {
		t.Fatal("artifact digest differs from HashTree of the source")
	}
	if _, ok, reason, _ := reopen(t, c).Lookup(e.Key); !ok {
		t.Fatal(reason)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "outside" {
		t.Fatal("source outside the cache was not left in place")
	}
	if h, _ := HashTree(art); h != want {
		t.Fatal("source artifact changed")
	}
	mustVerify(t, c)
}

func TestHashTree(t *testing.T) {
	mk := func(t *testing.T, files map[string]string) string {
		d := t.TempDir()
		for rel, content := range files {
			p := filepath.Join(d, rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	base := map[string]string{"a": "1", "sub/b": "2", ".hidden": "3"}
	d0 := mk(t, base)
	h0, err := HashTree(d0)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := HashTree(mk(t, base)); h != h0 {
		t.Fatal("same tree, different digest")
	}
	variants := map[string]func(d string){
		"content":      func(d string) { os.WriteFile(filepath.Join(d, "a"), []byte("9"), 0o644) },
		"renamed":      func(d string) { os.Rename(filepath.Join(d, "a"), filepath.Join(d, "z")) },
		"moved":        func(d string) { os.Rename(filepath.Join(d, "sub", "b"), filepath.Join(d, "b")) },
		"exec bit":     func(d string) { os.Chmod(filepath.Join(d, "a"), 0o755) },
		"hidden file":  func(d string) { os.Remove(filepath.Join(d, ".hidden")) },
		"outside link": func(d string) { os.Symlink("/etc/hostname", filepath.Join(d, "l")) },
		"dangling":     func(d string) { os.Symlink("nowhere", filepath.Join(d, "l")) },
	}
	for name, mut := range variants {
		t.Run(name, func(t *testing.T) {
			d := mk(t, base)
			mut(d)
			h, err := HashTree(d)
			if err != nil {
				t.Fatal(err)
			}
			if h == h0 {
				t.Fatal("digest did not change")
			}
		})
	}
	t.Run("inside links followed", func(t *testing.T) {
		d := mk(t, base)
		os.Symlink("a", filepath.Join(d, "copy"))
		os.Symlink("sub", filepath.Join(d, "sub2"))
		os.Symlink("..", filepath.Join(d, "sub", "up")) // a cycle: recorded as a link
		withCopies := map[string]string{"copy": "1", "sub2/b": "2"}
		for k, v := range base {
			withCopies[k] = v
		}
		d2 := mk(t, withCopies)
		os.Symlink("..", filepath.Join(d2, "sub", "up"))
		os.MkdirAll(filepath.Join(d2, "sub2"), 0o755)
		os.Symlink("..", filepath.Join(d2, "sub2", "up"))
		h1, err1 := HashTree(d)
		h2, err2 := HashTree(d2)
		if err1 != nil || err2 != nil || h1 != h2 {
			t.Fatalf("%s %v / %s %v", h1, err1, h2, err2)
		}
	})
	t.Run("file", func(t *testing.T) {
		p := filepath.Join(d0, "a")
		sum := sha256.Sum256([]byte("1"))
		for _, f := range []func(string) (string, error){HashFile, HashTree} {
			if h, err := f(p); err != nil || h != hex.EncodeToString(sum[:]) {
				t.Fatalf("%s %v", h, err)
			}
		}
	})
	t.Run("memo notices changes", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "w")
		os.WriteFile(p, []byte("one"), 0o644)
		h1, _ := HashFile(p)
		os.WriteFile(p, []byte("two"), 0o644)
		later := time.Now().Add(time.Second)
		os.Chtimes(p, later, later)
		h2, _ := HashFile(p)
		if h1 == h2 {
			t.Fatal("memo returned a stale digest")
		}
	})
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("DPOPIPE_CACHE_DIR", "/x/cache")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if d := DefaultDir(); d != "/x/cache" {
		t.Fatal(d)
	}
	t.Setenv("DPOPIPE_CACHE_DIR", "")
	if d := DefaultDir(); d != "/xdg/dpopipe" {
		t.Fatal(d)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if d := DefaultDir(); d != "/home/u/.cache/dpopipe" {
		t.Fatal(d)
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"10GB", 10e9, true},
		{"500MB", 500e6, true},
		{"1.5GiB", 1610612736, true},
		{"1KiB", 1024, true},
		{"2k", 2000, true},
		{"123", 123, true},
		{"0", 0, true},
		{" 7 mb ", 7e6, true},
		{"4TB", 4e12, true},
		{"", 0, false},
		{"GB", 0, false},
		{"-1GB", 0, false},
		{"10XB", 0, false},
		{"1.2.3MB", 0, false},
		{"99999999999PB", 0, false},
	}
	for _, c := range cases {
		got, err := ParseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestParseAge(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30d", 30 * 24 * time.Hour, true},
		{"12h", 12 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"2w", 14 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"1.5h", 90 * time.Minute, true},
		{"45s", 45 * time.Second, true},
		{"0", 0, true},
		{"", 0, false},
		{"30", 0, false},
		{"d", 0, false},
		{"-1d", 0, false},
		{"3y", 0, false},
		{"1e400d", 0, false},
	}
	for _, c := range cases {
		got, err := ParseAge(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	c := newCache(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				name := fmt.Sprint("s", (w+i)%5)
				out, _ := c.TempDir("out-")
				os.WriteFile(filepath.Join(out, "o"), []byte("shared output"), 0o644)
				art, _ := c.TempDir("art-")
				os.WriteFile(filepath.Join(art, "f"), []byte(fmt.Sprint("artifact ", i%2)), 0o644)
				e, err := c.Commit(Entry{StageName: name, Parts: partsFor(name)}, filepath.Join(out, "o"), art)
				if err != nil {
					errs <- err
					return
				}
				c.Lookup(e.Key)
				if i%3 == 2 {
					if _, err := c.GC(0, 20); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mustVerify(t, c)
	list, _ := c.List()
	for _, e := range list {
		if _, ok, reason, _ := c.Lookup(e.Key); !ok {
			t.Fatalf("%s: %s", e.Key, reason)
		}
	}
}
