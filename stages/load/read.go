package load

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Source formats.
const (
	fmtJSONL   = "jsonl"
	fmtJSON    = "json"
	fmtParquet = "parquet"
	fmtArrow   = "arrow"
	fmtCSV     = "csv"
)

// srcRow is one record read from a source file, before it is interpreted as
// a preference pair.
type srcRow struct {
	file  string         // the file it came from
	local int64          // 1-based line (JSONL) or 0-based record index (others) in file
	row   int64          // the output row number (see the package doc)
	line  int64          // for CSV: the 1-based line the record starts on
	kind  string         // format of the file
	raw   []byte         // the source text, for the quarantine file
	val   map[string]any // the decoded record
	csv   bool           // values are CSV cells (strings)
	err   *rowError      // set when the record could not be decoded
}

// where names the row in messages: "file line N" or "file row N".
func (r *srcRow) where() string {
	switch {
	case r.kind == fmtJSONL:
		return fmt.Sprintf("%s line %d", r.file, r.local)
	case r.kind == fmtCSV && r.line > 0:
		return fmt.Sprintf("%s row %d (line %d)", r.file, r.local, r.line)
	}
	return fmt.Sprintf("%s row %d", r.file, r.local)
}

// rowError is a problem with one row: reason is the short stat name.
type rowError struct {
	reason string
	msg    string
}

func (e *rowError) Error() string { return e.msg }

func badRow(reason, format string, args ...any) *rowError {
	return &rowError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// errStop ends reading early (limit reached).
var errStop = errors.New("stop")

// emitFunc receives each row. It returns errStop to stop reading, or an error
// that aborts the stage.
type emitFunc func(r *srcRow) error

// formatOf returns the format of name from its extension (ignoring .gz), or "".
func formatOf(name string) string {
	n := strings.ToLower(name)
	n = strings.TrimSuffix(n, ".gz")
	switch filepath.Ext(n) {
	case ".jsonl", ".ndjson":
		return fmtJSONL
	case ".json":
		return fmtJSON
	case ".parquet", ".pq":
		return fmtParquet
	case ".arrow", ".ipc", ".feather", ".arrows":
		return fmtArrow
	case ".csv", ".tsv":
		return fmtCSV
	}
	return ""
}

// metadataFiles are JSON files found in dataset directories that hold no rows.
var metadataFiles = map[string]bool{
	"dataset_info.json": true, "dataset_infos.json": true, "dataset_dict.json": true,
	"state.json": true, "config.json": true, "tokenizer.json": true,
	"tokenizer_config.json": true, "special_tokens_map.json": true, "generation_config.json": true,
}

// listFiles returns the data files at path and their format. A directory is
// walked recursively (skipping hidden entries and metadata files) and its
// files are returned in sorted order; they must share one format.
func listFiles(path, format string) ([]string, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("load: %w", err)
	}
	if !st.IsDir() {
		f := format
		if f == "auto" || f == "" {
			if f = formatOf(path); f == "" {
				return nil, "", fmt.Errorf("load: cannot tell the format of %s from its extension (.jsonl .json .parquet .arrow .csv, optionally .gz): set format", path)
			}
		}
		return []string{path}, f, nil
	}
	byFormat := map[string][]string{}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != path && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || metadataFiles[strings.ToLower(name)] {
			return nil
		}
		if f := formatOf(name); f != "" {
			byFormat[f] = append(byFormat[f], p)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("load: %w", err)
	}
	if format != "auto" && format != "" {
		files := byFormat[format]
		if len(files) == 0 {
			return nil, "", fmt.Errorf("load: directory %s holds no %s files", path, format)
		}
		sort.Strings(files)
		return files, format, nil
	}
	if len(byFormat) == 0 {
		return nil, "", fmt.Errorf("load: directory %s holds no data files (.jsonl .json .parquet .arrow .csv, optionally .gz)", path)
	}
	if len(byFormat) > 1 {
		var kinds []string
		for f, files := range byFormat {
			kinds = append(kinds, fmt.Sprintf("%d %s", len(files), f))
		}
		sort.Strings(kinds)
		return nil, "", fmt.Errorf("load: directory %s holds files of several formats (%s): set format to pick one", path, strings.Join(kinds, ", "))
	}
	for f, files := range byFormat {
		sort.Strings(files)
		return files, f, nil
	}
	panic("unreachable")
}

// openMaybeGzip opens path, decompressing it when it starts with the gzip
// magic bytes (whatever its extension).
func openMaybeGzip(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(f, 1<<16)
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &gzipFile{Reader: zr, f: f}, nil
	}
	return &bufFile{Reader: br, f: f}, nil
}

type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g *gzipFile) Close() error { g.Reader.Close(); return g.f.Close() }

type bufFile struct {
	*bufio.Reader
	f *os.File
}

func (b *bufFile) Close() error { return b.f.Close() }

// readAllMaybeGzip returns the (decompressed) content of path.
func readAllMaybeGzip(path string) ([]byte, error) {
	r, err := openMaybeGzip(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// readFile reads one file of the given format, numbering rows from offset,
// and returns the number of row numbers it used (lines for JSONL, records
// otherwise).
func readFile(ctx context.Context, path, display, format string, offset int64, needed func(string) bool, emit emitFunc) (int64, error) {
	switch format {
	case fmtJSONL:
		r, err := openMaybeGzip(path)
		if err != nil {
			return 0, fmt.Errorf("load: %w", err)
		}
		defer r.Close()
		return readJSONL(ctx, r, display, offset, emit)
	case fmtJSON:
		r, err := openMaybeGzip(path)
		if err != nil {
			return 0, fmt.Errorf("load: %w", err)
		}
		defer r.Close()
		br := bufio.NewReaderSize(r, 1<<16)
		// Many ".json" files are JSON Lines: an object first means lines.
		if first := firstByte(br); first == '{' {
			return readJSONL(ctx, br, display, offset, emit)
		}
		return readJSONArray(ctx, br, display, offset, emit)
	case fmtCSV:
		r, err := openMaybeGzip(path)
		if err != nil {
			return 0, fmt.Errorf("load: %w", err)
		}
		defer r.Close()
		comma := ','
		if strings.HasSuffix(strings.TrimSuffix(strings.ToLower(path), ".gz"), ".tsv") {
			comma = '\t'
		}
		return readCSV(ctx, r, display, comma, offset, emit)
	case fmtParquet:
		data, err := readAllMaybeGzip(path)
		if err != nil {
			return 0, fmt.Errorf("load: %w", err)
		}
		pf, err := file.NewParquetReader(bytes.NewReader(data))
		if err != nil {
			return 0, fmt.Errorf("load: %s: not a Parquet file: %w", display, err)
		}
		defer pf.Close()
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: batchRows}, memory.DefaultAllocator)
		if err != nil {
			return 0, fmt.Errorf("load: %s: %w", display, err)
		}
		var cols []int
		for i, f := range fr.Manifest.Fields {
			if f.Field != nil && needed(f.Field.Name) {
				cols = append(cols, i)
			}
		}
		if len(cols) == 0 {
			return 0, fmt.Errorf("load: %s: none of its columns is used (columns: %s): set columns", display, schemaNames(fr))
		}
		rr, err := fr.GetRecordReader(ctx, cols, nil)
		if err != nil {
			return 0, fmt.Errorf("load: %s: %w", display, err)
		}
		defer rr.Release()
		return readArrowRecords(ctx, rr, display, fmtParquet, offset, needed, emit)
	case fmtArrow:
		data, err := readAllMaybeGzip(path)
		if err != nil {
			return 0, fmt.Errorf("load: %w", err)
		}
		if bytes.HasPrefix(data, []byte("ARROW1")) {
			fr, err := ipc.NewFileReader(bytes.NewReader(data))
			if err != nil {
				return 0, fmt.Errorf("load: %s: not an Arrow IPC file: %w", display, err)
			}
			defer fr.Close()
			return readArrowRecords(ctx, &ipcFileIter{fr: fr}, display, fmtArrow, offset, needed, emit)
		}
		sr, err := ipc.NewReader(bytes.NewReader(data))
		if err != nil {
			return 0, fmt.Errorf("load: %s: not an Arrow IPC file or stream: %w", display, err)
		}
		defer sr.Release()
		return readArrowRecords(ctx, sr, display, fmtArrow, offset, needed, emit)
	}
	return 0, fmt.Errorf("load: unknown format %q", format)
}

func schemaNames(fr *pqarrow.FileReader) string {
	var names []string
	for _, f := range fr.Manifest.Fields {
		if f.Field != nil {
			names = append(names, f.Field.Name)
		}
	}
	return strings.Join(names, ", ")
}

func firstByte(br *bufio.Reader) byte {
	for n := 1; n <= 4096; n++ {
		b, err := br.Peek(n)
		if len(b) < n || err != nil {
			return 0
		}
		switch c := b[n-1]; c {
		case ' ', '\t', '\r', '\n':
			continue
		case 0xef, 0xbb, 0xbf: // UTF-8 byte order mark
			continue
		default:
			return c
		}
	}
	return 0
}

// readJSONL reads JSON Lines. Line numbers are 1-based; blank lines are not
// rows but still count as lines.
func readJSONL(ctx context.Context, r io.Reader, display string, offset int64, emit emitFunc) (int64, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var line int64
	for {
		buf, err := br.ReadBytes('\n')
		if len(buf) == 0 && err != nil {
			if err == io.EOF {
				return line, nil
			}
			return line, fmt.Errorf("load: reading %s: %w", display, err)
		}
		line++
		if line%1024 == 0 && ctx.Err() != nil {
			return line, ctx.Err()
		}
		text := bytes.TrimRight(buf, "\r\n")
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\xef\xbb\xbf"))
		}
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		row := &srcRow{file: display, local: line, row: offset + line, kind: fmtJSONL, raw: text}
		row.val, row.err = decodeObject(text)
		if err := emit(row); err != nil {
			return line, err
		}
	}
}

// decodeObject decodes one JSON object, checking its UTF-8 first (the JSON
// decoder would silently replace invalid bytes).
func decodeObject(text []byte) (map[string]any, *rowError) {
	if !utf8.Valid(text) {
		return nil, badRow("invalid_utf8", "invalid UTF-8 at byte %d", invalidAt(text))
	}
	var v any
	if err := json.Unmarshal(text, &v); err != nil {
		return nil, badRow("invalid_json", "invalid JSON: %v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, badRow("invalid_json", "not a JSON object (got %s)", jsonKind(v))
	}
	return m, nil
}

func invalidAt(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// readJSONArray reads a JSON array of objects; rows are 0-based indexes.
func readJSONArray(ctx context.Context, r io.Reader, display string, offset int64, emit emitFunc) (int64, error) {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return 0, fmt.Errorf("load: %s: invalid JSON: %v", display, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return 0, fmt.Errorf("load: %s: expected a JSON array of objects or JSON Lines", display)
	}
	var i int64
	for dec.More() {
		if i%1024 == 0 && ctx.Err() != nil {
			return i, ctx.Err()
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return i, fmt.Errorf("load: %s row %d (byte %d): invalid JSON: %v: a broken JSON array cannot be skipped row by row; fix the file", display, i, dec.InputOffset(), err)
		}
		row := &srcRow{file: display, local: i, row: offset + i, kind: fmtJSON, raw: raw}
		row.val, row.err = decodeObject(raw)
		if err := emit(row); err != nil {
			return i + 1, err
		}
		i++
	}
	if _, err := dec.Token(); err != nil {
		return i, fmt.Errorf("load: %s: invalid JSON after row %d: %v", display, i-1, err)
	}
	return i, nil
}

// readCSV reads CSV with a header line; rows are 0-based record indexes
// (the header is not a row).
func readCSV(ctx context.Context, r io.Reader, display string, comma rune, offset int64, emit emitFunc) (int64, error) {
	cr := csv.NewReader(r)
	cr.Comma = comma
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err == io.EOF {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load: %s: reading the CSV header: %v", display, err)
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	var i int64
	for {
		if i%1024 == 0 && ctx.Err() != nil {
			return i, ctx.Err()
		}
		rec, err := cr.Read()
		if err == io.EOF {
			return i, nil
		}
		row := &srcRow{file: display, local: i, row: offset + i, kind: fmtCSV, csv: true}
		var pe *csv.ParseError
		switch {
		case errors.As(err, &pe):
			row.line = int64(pe.StartLine)
			row.raw = []byte(strings.Join(rec, string(comma)))
			row.err = badRow("bad_csv", "malformed CSV: %v", pe.Err)
		case err != nil:
			return i, fmt.Errorf("load: reading %s: %w", display, err)
		default:
			line, _ := cr.FieldPos(0)
			row.line = int64(line)
			var sb strings.Builder
			w := csv.NewWriter(&sb)
			w.Comma = comma
			_ = w.Write(rec)
			w.Flush()
			row.raw = []byte(strings.TrimRight(sb.String(), "\n"))
			if len(rec) != len(header) {
				row.err = badRow("bad_csv", "%d fields where the header has %d", len(rec), len(header))
				break
			}
			row.val = make(map[string]any, len(rec))
			for k, v := range rec {
				if !utf8.ValidString(v) {
					row.err = badRow("invalid_utf8", "column %q is not valid UTF-8", header[k])
					break
				}
				row.val[header[k]] = v
			}
		}
		if err := emit(row); err != nil {
			return i + 1, err
		}
		i++
	}
}

// ipcFileIter walks the batches of an Arrow IPC file.
type ipcFileIter struct {
	fr  *ipc.FileReader
	i   int
	rec arrow.RecordBatch
	err error
}

func (it *ipcFileIter) Next() bool {
	if it.rec != nil {
		it.rec.Release()
		it.rec = nil
	}
	if it.i >= it.fr.NumRecords() {
		return false
	}
	rec, err := it.fr.RecordBatch(it.i)
	it.i++
	if err != nil {
		it.err = err
		return false
	}
	rec.Retain()
	it.rec = rec
	return true
}
func (it *ipcFileIter) RecordBatch() arrow.RecordBatch { return it.rec }
func (it *ipcFileIter) Err() error                     { return it.err }

type batchIter interface {
	Next() bool
	RecordBatch() arrow.RecordBatch
	Err() error
}

// readArrowRecords turns Arrow batches into rows (0-based indexes).
func readArrowRecords(ctx context.Context, it batchIter, display, kind string, offset int64, needed func(string) bool, emit emitFunc) (int64, error) {
	var i int64
	for it.Next() {
		if ctx.Err() != nil {
			return i, ctx.Err()
		}
		rec := it.RecordBatch()
		type col struct {
			name string
			arr  arrow.Array
		}
		var cols []col
		for c, f := range rec.Schema().Fields() {
			if needed(f.Name) {
				cols = append(cols, col{f.Name, rec.Column(c)})
			}
		}
		for r := 0; r < int(rec.NumRows()); r++ {
			row := &srcRow{file: display, local: i, row: offset + i, kind: kind, val: make(map[string]any, len(cols))}
			for _, c := range cols {
				v, err := arrowValue(c.arr, r)
				if err != nil {
					row.err = badRow("invalid_utf8", "column %q: %v", c.name, err)
					break
				}
				row.val[c.name] = v
			}
			if raw, err := json.Marshal(row.val); err == nil {
				row.raw = raw
			}
			if err := emit(row); err != nil {
				return i + 1, err
			}
			i++
		}
	}
	if err := it.Err(); err != nil && !errors.Is(err, io.EOF) {
		return i, fmt.Errorf("load: reading %s: %w", display, err)
	}
	return i, nil
}

// arrowValue converts the value at index i of arr into the shape JSON
// decoding gives: string, float64, bool, []any, map[string]any or nil.
func arrowValue(arr arrow.Array, i int) (any, error) {
	if arr.IsNull(i) {
		return nil, nil
	}
	switch a := arr.(type) {
	case *array.String:
		s := a.Value(i)
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("invalid UTF-8")
		}
		return s, nil
	case *array.LargeString:
		s := a.Value(i)
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("invalid UTF-8")
		}
		return s, nil
	case *array.StringView:
		s := a.Value(i)
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("invalid UTF-8")
		}
		return s, nil
	case *array.Binary:
		s := string(a.Value(i))
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("invalid UTF-8")
		}
		return s, nil
	case *array.LargeBinary:
		s := string(a.Value(i))
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("invalid UTF-8")
		}
		return s, nil
	case *array.Boolean:
		return a.Value(i), nil
	case *array.Int8:
		return float64(a.Value(i)), nil
	case *array.Int16:
		return float64(a.Value(i)), nil
	case *array.Int32:
		return float64(a.Value(i)), nil
	case *array.Int64:
		return float64(a.Value(i)), nil
	case *array.Uint8:
		return float64(a.Value(i)), nil
	case *array.Uint16:
		return float64(a.Value(i)), nil
	case *array.Uint32:
		return float64(a.Value(i)), nil
	case *array.Uint64:
		return float64(a.Value(i)), nil
	case *array.Float16:
		return float64(a.Value(i).Float32()), nil
	case *array.Float32:
		return float64(a.Value(i)), nil
	case *array.Float64:
		return a.Value(i), nil
	case array.ListLike:
		lo, hi := a.ValueOffsets(i)
		vals := a.ListValues()
		out := make([]any, 0, hi-lo)
		for j := lo; j < hi; j++ {
			v, err := arrowValue(vals, int(j))
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case *array.Struct:
		st := a.DataType().(*arrow.StructType)
		m := make(map[string]any, st.NumFields())
		for f := 0; f < st.NumFields(); f++ {
			v, err := arrowValue(a.Field(f), i)
			if err != nil {
				return nil, err
			}
			m[st.Field(f).Name] = v
		}
		return m, nil
	case *array.Dictionary:
		return arrowValue(a.Dictionary(), a.GetValueIndex(i))
	case *array.Null:
		return nil, nil
	}
	return arr.ValueStr(i), nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64, json.Number:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
