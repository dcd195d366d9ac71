// Package jsonfile writes and reads the JSON files stages leave in their
// artifact directories (summary.json, samples.jsonl, ...). Writes are
// atomic: a reader never sees half a file.
package jsonfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/dpopipe/dpopipe/pipeline/cache/atomicfile"
)

// Write writes v as indented JSON and a newline.
func Write(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFileAtomic(path, append(b, '\n'), 0o644)
}

// WriteLines writes one JSON object per line, without HTML escaping.
func WriteLines[T any](path string, items []T) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	return atomicfile.WriteFileAtomic(path, buf.Bytes(), 0o644)
}

// ReadLines reads a file WriteLines wrote.
func ReadLines[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []T
	dec := json.NewDecoder(f)
	for line := 1; dec.More(); line++ {
		var v T
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: record %d: %w", path, line, err)
		}
		out = append(out, v)
	}
	return out, nil
}
