package jsonfile

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

type item struct {
	A string `json:"a"`
	N int    `json:"n"`
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := []item{{"<b>&", 1}, {"x\ny", 2}}
	p := filepath.Join(dir, "x.jsonl")
	if err := WriteLines(p, in); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	if string(raw) != "{\"a\":\"<b>&\",\"n\":1}\n{\"a\":\"x\\ny\",\"n\":2}\n" {
		t.Fatalf("file %q", raw)
	}
	out, err := ReadLines[item](p)
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("read %v, %v", out, err)
	}
	os.WriteFile(p, []byte("{\"a\":\"x\"}\n{bad\n"), 0o644)
	if _, err := ReadLines[item](p); err == nil {
		t.Fatal("a broken record must be an error")
	}
	if err := Write(filepath.Join(dir, "s.json"), map[string]int{"b": 1}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "s.json")); string(b) != "{\n  \"b\": 1\n}\n" {
		t.Fatalf("summary %q", b)
	}
}
