// Package arrowio reads and writes the Arrow IPC files that stages exchange
// through the cache and the run directory.
package arrowio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// File reads an Arrow IPC file batch by batch as an
// array.RecordReader.
type File struct {
	f    *os.File
	r    *ipc.FileReader
	i    int
	cur  arrow.RecordBatch
	err  error
	refs int64
}

// Open opens an Arrow IPC file for reading batch by batch.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := ipc.NewFileReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is not an Arrow IPC file: %w", path, err)
	}
	return &File{f: f, r: r, refs: 1}, nil
}

func (a *File) Retain()                                { a.refs++ }
func (a *File) Schema() *arrow.Schema                  { return a.r.Schema() }
func (a *File) RecordBatch() arrow.RecordBatch         { return a.cur }
func (a *File) Record() arrow.RecordBatch              { return a.cur }
func (a *File) Err() error                             { return a.err }
func (a *File) NumRecords() int                        { return a.r.NumRecords() }
func (a *File) Metadata() arrow.Metadata               { return a.r.Schema().Metadata() }
func (a *File) Batch(i int) (arrow.RecordBatch, error) { return a.r.RecordBatchAt(i) }

func (a *File) Next() bool {
	if a.cur != nil {
		a.cur.Release()
		a.cur = nil
	}
	if a.i >= a.r.NumRecords() {
		return false
	}
	rec, err := a.r.RecordBatchAt(a.i)
	if err != nil {
		a.err = err
		return false
	}
	a.i++
	a.cur = rec
	return true
}

func (a *File) Release() {
	a.refs--
	if a.refs > 0 {
		return
	}
	if a.cur != nil {
		a.cur.Release()
		a.cur = nil
	}
	a.r.Close()
	a.f.Close()
}

// Cat writes every row of an Arrow IPC file or stream as one JSON object per
// line. Malformed input is an error, never a panic.
func Cat(data []byte, w io.Writer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed Arrow data: %v", r)
		}
	}()
	if bytes.HasPrefix(data, []byte("ARROW1")) {
		if err := checkFile(data); err != nil {
			return fmt.Errorf("not a valid Arrow IPC file: %w", err)
		}
		fr, err := ipc.NewFileReader(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("not a valid Arrow IPC file: %w", err)
		}
		defer fr.Close()
		for i := 0; i < fr.NumRecords(); i++ {
			rec, err := fr.RecordBatchAt(i)
			if err != nil {
				return fmt.Errorf("batch %d: %w", i, err)
			}
			err = array.RecordToJSON(rec, w)
			rec.Release()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := checkStream(data, 0); err != nil {
		return fmt.Errorf("not a valid Arrow IPC stream: %w", err)
	}
	sr, err := ipc.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an Arrow IPC file or stream: %w", err)
	}
	defer sr.Release()
	for sr.Next() {
		if err := array.RecordToJSON(sr.RecordBatch(), w); err != nil {
			return err
		}
	}
	if err := sr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// ReadAll reads every batch of an Arrow IPC file. The caller releases them.
func ReadAll(path string) ([]arrow.RecordBatch, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	var out []arrow.RecordBatch
	for f.Next() {
		rec := f.RecordBatch()
		rec.Retain()
		out = append(out, rec)
	}
	return out, f.Err()
}

var _ array.RecordReader = (*File)(nil)
var _ = os.Open
