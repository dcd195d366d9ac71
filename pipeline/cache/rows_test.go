package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func valueAt(t *testing.T, rec arrow.RecordBatch, row int) float64 {
	t.Helper()
	return rec.Column(1).(*array.Float64).Value(row)
}

func segments(t *testing.T, s *RowStore) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(s.Dir(), "seg-*.arrow"))
	return m
}

func TestRowStore(t *testing.T) {
	c := newCache(t, Options{})
	const ns = "reference_logprobs/sha256:0123abcd"
	s := c.Rows(ns)
	if err := s.Load(); err != nil { // nothing yet
		t.Fatal(err)
	}
	r1 := rowRecord([]string{"a", "b"}, []float64{1, 2})
	r2 := rowRecord([]string{"b", "c", "d"}, []float64{20, 3, 4})
	for _, r := range []arrow.RecordBatch{r1, r2} {
		if err := s.Append(r); err != nil {
			t.Fatal(err)
		}
		r.Release() // the store keeps its own reference
	}
	if len(segments(t, s)) != 2 {
		t.Fatalf("segments %v", segments(t, s))
	}
	check := func(t *testing.T, s *RowStore) {
		t.Helper()
		if s.Rows() != 4 {
			t.Fatalf("Rows() = %d", s.Rows())
		}
		for key, want := range map[string]float64{"a": 1, "b": 2, "c": 3, "d": 4} {
			rec, row, ok := s.Lookup(key)
			if !ok {
				t.Fatalf("key %q not found", key)
			}
			if got := valueAt(t, rec, row); got != want {
				t.Fatalf("key %q = %v, want %v", key, got, want)
			}
		}
		if _, _, ok := s.Lookup("zz"); ok {
			t.Fatal("unknown key found")
		}
	}
	check(t, s)
	s.Close()

	// A fresh store over the same namespace finds both segments.
	s2 := c.Rows(ns)
	if err := s2.Load(); err != nil {
		t.Fatal(err)
	}
	check(t, s2)
	if len(s2.Problems()) != 0 {
		t.Fatal(s2.Problems())
	}
	s2.Close()
	mustVerify(t, c)

	nss, err := c.RowNamespaces()
	if err != nil || len(nss) != 1 || nss[0].Namespace != ns || nss[0].Segments != 2 {
		t.Fatalf("namespaces %+v %v", nss, err)
	}
	if strings.ContainsAny(filepath.Base(s.Dir()), "/:") || filepath.Dir(s.Dir()) != filepath.Join(c.Root, "rows") {
		t.Fatalf("unsafe namespace dir %q", s.Dir())
	}
}

func TestRowStoreCorruptSegment(t *testing.T) {
	for _, damage := range []string{"flip", "truncate", "garbage"} {
		t.Run(damage, func(t *testing.T) {
			c := newCache(t, Options{})
			s := c.Rows("ns")
			r1 := rowRecord([]string{"a"}, []float64{1})
			r2 := rowRecord([]string{"b"}, []float64{2})
			defer r1.Release()
			defer r2.Release()
			if err := s.Append(r1); err != nil {
				t.Fatal(err)
			}
			segs := segments(t, s)
			if err := s.Append(r2); err != nil {
				t.Fatal(err)
			}
			s.Close()
			bad := segs[0]
			switch damage {
			case "flip":
				b, _ := os.ReadFile(bad)
				writeInto(t, bad, int64(len(b)/2), []byte{b[len(b)/2] ^ 0x40})
			case "truncate":
				os.Truncate(bad, 20)
			case "garbage":
				os.Chmod(bad, 0o644)
				os.WriteFile(bad, []byte("not arrow"), 0o644)
			}
			if problems, _ := c.Verify(); len(problems) != 1 || !strings.Contains(problems[0], "digest mismatch") {
				t.Fatalf("Verify: %q", problems)
			}
			s = c.Rows("ns")
			defer s.Close()
			if err := s.Load(); err != nil {
				t.Fatal(err)
			}
			if p := s.Problems(); len(p) != 1 || !strings.Contains(p[0], filepath.Base(bad)) {
				t.Fatalf("problems %q", p)
			}
			if _, _, ok := s.Lookup("a"); ok {
				t.Fatal("row from the corrupted segment served")
			}
			if rec, row, ok := s.Lookup("b"); !ok || valueAt(t, rec, row) != 2 {
				t.Fatal("row from the good segment lost")
			}
			mustVerify(t, c) // the bad segment was removed
		})
	}
}

func TestRowStoreValidation(t *testing.T) {
	c := newCache(t, Options{})
	s := c.Rows("ns")
	defer s.Close()
	schema := arrow.NewSchema([]arrow.Field{{Name: "key", Type: arrow.BinaryTypes.String}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	b.Field(0).(*array.StringBuilder).Append("x")
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()
	if err := s.Append(rec); err == nil {
		t.Fatal("record without row_key accepted")
	}
	empty := rowRecord(nil, nil)
	defer empty.Release()
	if err := s.Append(empty); err != nil || len(segments(t, s)) != 0 {
		t.Fatalf("empty append: %v, %d segments", err, len(segments(t, s)))
	}
}

func TestRowStoreOutOfSpace(t *testing.T) {
	c := newCache(t, Options{MaxWriteBytes: 200})
	s := c.Rows("ns")
	defer s.Close()
	keys := make([]string, 100)
	vals := make([]float64, 100)
	for i := range keys {
		keys[i] = strings.Repeat("k", i+1)
	}
	rec := rowRecord(keys, vals)
	defer rec.Release()
	err := s.Append(rec)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), c.Root) {
		t.Fatalf("error %v", err)
	}
	if s.Rows() != 0 {
		t.Fatal("rows indexed after a failed append")
	}
	ents, _ := os.ReadDir(s.Dir())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "seg") || strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("left %s", e.Name())
		}
	}
	mustVerify(t, c)
}

func TestSanitizeNamespace(t *testing.T) {
	seen := map[string]string{}
	for _, ns := range []string{"a", "a_b", "a/b", "a:b", "../../etc", ".", "", strings.Repeat("x", 300), strings.Repeat("x", 301), "é"} {
		d := sanitizeNamespace(ns)
		if d == "" || d == "." || d == ".." || strings.ContainsAny(d, `/\:`) || strings.HasPrefix(d, ".") || len(d) > 200 {
			t.Errorf("sanitizeNamespace(%q) = %q", ns, d)
		}
		if prev, ok := seen[d]; ok {
			t.Errorf("%q and %q share %q", prev, ns, d)
		}
		seen[d] = ns
	}
}

func TestGCRows(t *testing.T) {
	c := newCache(t, Options{})
	for _, ns := range []string{"old", "new"} {
		s := c.Rows(ns)
		r := rowRecord([]string{"a"}, []float64{1})
		if err := s.Append(r); err != nil {
			t.Fatal(err)
		}
		r.Release()
		s.Close()
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(filepath.Join(c.Rows("old").Dir(), nsUsedMarker), old, old)
	removed, err := c.GCRows(24 * time.Hour)
	if err != nil || len(removed) != 1 || removed[0].Namespace != "old" {
		t.Fatalf("removed %+v %v", removed, err)
	}
	nss, _ := c.RowNamespaces()
	if len(nss) != 1 || nss[0].Namespace != "new" {
		t.Fatalf("left %+v", nss)
	}
}
