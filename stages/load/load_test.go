package load

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/dpopipe/dpopipe/internal/testassets"
	"github.com/dpopipe/dpopipe/plugins/sdk"
)

// outRow is one output row, with prompt/chosen/rejected as string,
// []message or []int32.
type outRow struct {
	Row                      int64
	Prompt, Chosen, Rejected any
	Weight                   float32
	Split                    string
}

func runLoad(t testing.TB, cfg map[string]any) (*sdk.LocalResult, error) {
	t.Helper()
	return sdk.RunLocal(context.Background(), New(), cfg, sdk.LocalOptions{Dir: t.TempDir()})
}

func mustLoad(t testing.TB, cfg map[string]any) ([]outRow, *sdk.LocalResult) {
	t.Helper()
	res, err := runLoad(t, cfg)
	if err != nil {
		t.Fatalf("load %v: %v", cfg, err)
	}
	t.Cleanup(res.Release)
	return collect(t, res.Output), res
}

func collect(t testing.TB, recs []arrow.RecordBatch) []outRow {
	t.Helper()
	var out []outRow
	for _, rec := range recs {
		if rec.NumRows() > batchRows {
			t.Fatalf("batch of %d rows, more than %d", rec.NumRows(), batchRows)
		}
		if rec.NumCols() != 6 {
			t.Fatalf("schema %v: want 6 columns", rec.Schema())
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			r := outRow{
				Row:      rec.Column(0).(*array.Int64).Value(i),
				Prompt:   cell(rec.Column(1), i),
				Chosen:   cell(rec.Column(2), i),
				Rejected: cell(rec.Column(3), i),
				Weight:   rec.Column(4).(*array.Float32).Value(i),
				Split:    rec.Column(5).(*array.String).Value(i),
			}
			out = append(out, r)
		}
	}
	return out
}

func cell(a arrow.Array, i int) any {
	switch x := a.(type) {
	case *array.String:
		return x.Value(i)
	case *array.List:
		lo, hi := x.ValueOffsets(i)
		switch v := x.ListValues().(type) {
		case *array.Int32:
			return append([]int32{}, v.Int32Values()[lo:hi]...)
		case *array.Struct:
			ms := []message{}
			for j := lo; j < hi; j++ {
				ms = append(ms, message{
					Role:    v.Field(0).(*array.String).Value(int(j)),
					Content: v.Field(1).(*array.String).Value(int(j)),
				})
			}
			return ms
		}
	}
	panic(fmt.Sprintf("unexpected column type %v", a.DataType()))
}

func TestHHRLHF(t *testing.T) {
	path := testassets.Path(t, "prefs/hh-rlhf/harmless-base-test.jsonl")
	rows, res := mustLoad(t, map[string]any{"path": path})
	if len(rows) != 2312 {
		t.Fatalf("loaded %d rows, want 2312", len(rows))
	}
	if res.Stats["rows_in"] != 2312 || res.Stats["rows_out"] != 2312 {
		t.Errorf("stats %v", res.Stats)
	}
	// Check every row against the source: prompt + completion gives back
	// the transcripts, and row is the 1-based line number.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for i := 0; sc.Scan(); i++ {
		var src struct{ Chosen, Rejected string }
		if err := json.Unmarshal(sc.Bytes(), &src); err != nil {
			t.Fatal(err)
		}
		r := rows[i]
		p := r.Prompt.(string)
		if r.Row != int64(i+1) {
			t.Fatalf("row %d: row = %d, want the line number %d", i, r.Row, i+1)
		}
		if p+r.Chosen.(string) != src.Chosen || p+r.Rejected.(string) != src.Rejected {
			t.Fatalf("line %d: prompt + completion differ from the transcript", i+1)
		}
		if !strings.HasSuffix(p, "\n\nAssistant:") {
			t.Fatalf("line %d: prompt does not end with the last shared Assistant turn: %q", i+1, tail(p))
		}
		if r.Split != "train" || r.Weight != 1 {
			t.Fatalf("line %d: split %q weight %v", i+1, r.Split, r.Weight)
		}
	}
	// A known row: the first line's final turns.
	r := rows[0]
	if !strings.HasPrefix(r.Prompt.(string), "\n\nHuman: what are some pranks with a pen i can do?") ||
		!strings.HasSuffix(r.Prompt.(string), "Human: okay some of these do not have anything to do with pens\n\nAssistant:") {
		t.Errorf("line 1 prompt = ...%q", tail(r.Prompt.(string)))
	}
	if want := " No, sorry!  All of these involve a pen, the point is that you can get funny results by doing pranks with pens."; r.Chosen != want {
		t.Errorf("line 1 chosen = %q, want %q", r.Chosen, want)
	}
	if c := r.Rejected.(string); strings.Contains(c, "\n\nAssistant:") || !strings.HasPrefix(c, " ") {
		t.Errorf("line 1 rejected is not the final turn: %q", c)
	}
}

func tail(s string) string {
	if len(s) > 80 {
		return s[len(s)-80:]
	}
	return s
}

func TestStackExchangePaired(t *testing.T) {
	path := testassets.Path(t, "prefs/stack-exchange-paired/stack_exchange_paired_tiny.json")
	rows, _ := mustLoad(t, map[string]any{
		"path":    path,
		"columns": map[string]string{"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
	})
	if len(rows) != 25 {
		t.Fatalf("loaded %d rows, want 25", len(rows))
	}
	var src []map[string]string
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &src); err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		if r.Row != int64(i) {
			t.Errorf("row %d: row = %d (JSON arrays are numbered from 0)", i, r.Row)
		}
		if r.Prompt != src[i]["question"] || r.Chosen != src[i]["response_j"] || r.Rejected != src[i]["response_k"] {
			t.Errorf("row %d differs from the source", i)
		}
	}
	if !strings.HasPrefix(rows[0].Prompt.(string), "I'm writing a code using Java Swing") {
		t.Errorf("row 0 prompt = %q", rows[0].Prompt)
	}
}

func fixture(name string) string { return filepath.Join("testdata", name) }

// twins writes the rows of the JSONL fixture as Parquet, Arrow IPC (file
// and stream), gzipped variants and CSV, and returns their paths.
func twins(t *testing.T) map[string]string {
	t.Helper()
	res, err := runLoad(t, map[string]any{"path": fixture("prefs.jsonl")})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	// Drop row and split: the twins hold only the source columns.
	var recs []arrow.RecordBatch
	var schema *arrow.Schema
	for _, rec := range res.Output {
		cols := []arrow.Array{rec.Column(1), rec.Column(2), rec.Column(3), rec.Column(4)}
		fields := rec.Schema().Fields()[1:5]
		schema = arrow.NewSchema(fields, nil)
		recs = append(recs, array.NewRecordBatch(schema, cols, rec.NumRows()))
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	dir := t.TempDir()
	paths := map[string]string{}
	write := func(name string, f func(w *os.File) error) {
		p := filepath.Join(dir, name)
		fh, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f(fh); err != nil {
			t.Fatalf("writing %s: %v", name, err)
		}
		if err := fh.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			t.Fatal(err)
		}
		paths[name] = p
	}
	write("prefs.parquet", func(w *os.File) error {
		tbl := array.NewTableFromRecords(schema, recs)
		defer tbl.Release()
		return pqarrow.WriteTable(tbl, w, 2, parquet.NewWriterProperties(), pqarrow.DefaultWriterProps())
	})
	write("prefs.arrow", func(w *os.File) error {
		fw, err := ipc.NewFileWriter(w, ipc.WithSchema(schema))
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fw.Write(r); err != nil {
				return err
			}
		}
		return fw.Close()
	})
	write("prefs.arrows", func(w *os.File) error {
		sw := ipc.NewWriter(w, ipc.WithSchema(schema))
		for _, r := range recs {
			if err := sw.Write(r); err != nil {
				return err
			}
		}
		return sw.Close()
	})
	write("prefs.csv", func(w *os.File) error {
		var src []map[string]any
		data, _ := os.ReadFile(fixture("prefs.jsonl"))
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				return err
			}
			src = append(src, m)
		}
		var sb strings.Builder
		sb.WriteString("prompt,chosen,rejected,weight\n")
		q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
		for _, m := range src {
			w := "1"
			if x, ok := m["weight"]; ok {
				w = fmt.Sprint(x)
			}
			fmt.Fprintf(&sb, "%s,%s,%s,%s\n", q(m["prompt"].(string)), q(m["chosen"].(string)), q(m["rejected"].(string)), w)
		}
		_, err := w.WriteString(sb.String())
		return err
	})
	for _, name := range []string{"prefs.parquet", "prefs.arrow", "prefs.arrows", "prefs.csv"} {
		data, err := os.ReadFile(paths[name])
		if err != nil {
			t.Fatal(err)
		}
		write(name+".gz", func(w *os.File) error {
			zw := gzip.NewWriter(w)
			if _, err := zw.Write(data); err != nil {
				return err
			}
			return zw.Close()
		})
	}
	jl, _ := os.ReadFile(fixture("prefs.jsonl"))
	write("prefs.jsonl.gz", func(w *os.File) error {
		zw := gzip.NewWriter(w)
		zw.Write(jl)
		return zw.Close()
	})
	return paths
}

func TestFormatsLoadTheSameRows(t *testing.T) {
	want, _ := mustLoad(t, map[string]any{"path": fixture("prefs.jsonl")})
	if len(want) != 6 {
		t.Fatalf("fixture: %d rows", len(want))
	}
	if want[1].Weight != 0.5 || want[2].Weight != 2 || want[0].Weight != 1 {
		t.Errorf("weights %v %v %v", want[0].Weight, want[1].Weight, want[2].Weight)
	}
	for name, path := range twins(t) {
		t.Run(name, func(t *testing.T) {
			got, _ := mustLoad(t, map[string]any{"path": path})
			if len(got) != len(want) {
				t.Fatalf("%d rows, want %d", len(got), len(want))
			}
			for i := range got {
				w := want[i]
				if !strings.HasPrefix(name, "prefs.jsonl") {
					w.Row-- // 0-based record index instead of the line number
				}
				if !reflect.DeepEqual(got[i], w) {
					t.Errorf("row %d:\n got %+v\nwant %+v", i, got[i], w)
				}
			}
		})
	}
}

func TestCSVColumnMapping(t *testing.T) {
	rows, _ := mustLoad(t, map[string]any{
		"path":    fixture("prefs.csv"),
		"columns": map[string]string{"prompt": "question", "chosen": "good", "rejected": "bad"},
	})
	want := []outRow{
		{Row: 0, Prompt: "What is 2+2?", Chosen: "4", Rejected: "5", Weight: 1, Split: "train"},
		{Row: 1, Prompt: "Multi\nline?", Chosen: `yes, "quoted"`, Rejected: "no", Weight: 1, Split: "train"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("got %+v\nwant %+v", rows, want)
	}
}

func TestConversational(t *testing.T) {
	want := []outRow{
		{Row: 1, Weight: 1, Split: "train",
			Prompt:   []message{{"system", "Be brief."}, {"user", "Hi?"}},
			Chosen:   []message{{"assistant", "Hello."}},
			Rejected: []message{{"assistant", "Go away."}}},
		{Row: 2, Weight: 1, Split: "train",
			Prompt:   []message{{"user", "2+2?"}},
			Chosen:   []message{{"assistant", "4"}},
			Rejected: []message{{"assistant", "22"}}},
	}
	for _, name := range []string{"messages.jsonl", "sharegpt.jsonl", "openai.jsonl"} {
		t.Run(name, func(t *testing.T) {
			for _, pf := range []string{"auto", "conversational"} {
				rows, res := mustLoad(t, map[string]any{"path": fixture(name), "prompt_format": pf})
				if !reflect.DeepEqual(rows, want) {
					t.Errorf("prompt_format %s:\n got %+v\nwant %+v", pf, rows, want)
				}
				if s := res.Output[0].Schema().Field(1).Type; !arrow.TypeEqual(s, MessagesType) {
					t.Errorf("prompt type %v", s)
				}
			}
		})
	}
}

func TestTokenized(t *testing.T) {
	rows, _ := mustLoad(t, map[string]any{"path": fixture("tokenized.jsonl"), "vocab_size": 64})
	want := []outRow{
		{Row: 1, Prompt: []int32{1, 10, 11}, Chosen: []int32{20, 21, 2}, Rejected: []int32{30, 2}, Weight: 1, Split: "train"},
		{Row: 2, Prompt: []int32{1}, Chosen: []int32{5}, Rejected: []int32{6, 7, 8}, Weight: 0.25, Split: "train"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("got %+v\nwant %+v", rows, want)
	}
	_, err := runLoad(t, map[string]any{"path": fixture("tokenized.jsonl"), "vocab_size": 25})
	if err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "vocab") {
		t.Errorf("vocab_size 25: err = %v", err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadRows(t *testing.T) {
	good := `{"prompt": "p", "chosen": "a", "rejected": "b"}`
	cases := []struct {
		reason, line, want string
	}{
		{"invalid_json", `{"prompt": "p", "chosen": "a", `, "invalid JSON"},
		{"invalid_json", `["not", "an", "object"]`, "not a JSON object"},
		{"invalid_utf8", "{\"prompt\": \"p\xff\", \"chosen\": \"a\", \"rejected\": \"b\"}", "invalid UTF-8"},
		{"missing_field", `{"prompt": "p", "chosen": "a"}`, `missing field "rejected`},
		{"not_string", `{"prompt": "p", "chosen": 3, "rejected": "b"}`, `"chosen" is a number, not a string`},
		{"empty_completion", `{"prompt": "p", "chosen": "", "rejected": "b"}`, "chosen is empty"},
		{"identical", `{"prompt": "p", "chosen": "same", "rejected": "same"}`, "identical"},
		{"bad_weight", `{"prompt": "p", "chosen": "a", "rejected": "b", "weight": "x"}`, "weight"},
		{"bad_weight", `{"prompt": "p", "chosen": "a", "rejected": "b", "weight": -1}`, "weight"},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d_%s", i, c.reason), func(t *testing.T) {
			// The bad row is line 4, after two good rows and a blank line.
			p := writeFile(t, dir, fmt.Sprintf("bad%d.jsonl", i), good+"\n"+good+"\n\n"+c.line+"\n"+good+"\n")
			_, err := runLoad(t, map[string]any{"path": p})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range []string{p + " line 4", c.want, `on_error = "skip"`} {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			rows, res := mustLoad(t, map[string]any{"path": p, "on_error": "skip"})
			if len(rows) != 3 || rows[2].Row != 5 {
				t.Errorf("skip: rows %+v", rows)
			}
			if res.Stats["skipped/"+c.reason] != 1 || res.Stats["rows_in"] != 4 || res.Stats["rows_out"] != 3 {
				t.Errorf("skip: stats %v", res.Stats)
			}
		})
	}
}

func TestSkipQuarantine(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	for i := 0; i < 5; i++ {
		lines = append(lines, `{"prompt": "p", "chosen": "same", "rejected": "same"}`)
	}
	lines = append(lines, `{"prompt": "p", "chosen": "a", "rejected": "b"}`, `not json`)
	p := writeFile(t, dir, "mixed.jsonl", strings.Join(lines, "\n"))
	out := t.TempDir()
	res, err := sdk.RunLocal(context.Background(), New(), map[string]any{"path": p, "on_error": "skip"}, sdk.LocalOptions{Dir: out})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if got := collect(t, res.Output); len(got) != 1 || got[0].Row != 6 {
		t.Errorf("rows %+v", got)
	}
	wantStats := map[string]int64{"rows_in": 7, "rows_out": 1, "skipped/identical": 5, "skipped/invalid_json": 1}
	for k, v := range wantStats {
		if res.Stats[k] != v {
			t.Errorf("stat %s = %d, want %d", k, res.Stats[k], v)
		}
	}
	printed := 0
	for _, m := range res.Prints {
		if strings.HasPrefix(m, "skipped ") && strings.Contains(m, "identical") {
			printed++
		}
	}
	if printed != 3 {
		t.Errorf("printed %d identical rows, want the first 3: %q", printed, res.Prints)
	}
	data, err := os.ReadFile(filepath.Join(out, "quarantine.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	qs := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(qs) != 6 {
		t.Fatalf("quarantine has %d lines, want 6", len(qs))
	}
	var last quarantined
	if err := json.Unmarshal([]byte(qs[5]), &last); err != nil {
		t.Fatal(err)
	}
	if last.Row != 7 || last.Line != 7 || last.Reason != "invalid_json" || last.Raw != "not json" || last.File != p {
		t.Errorf("quarantine entry %+v", last)
	}
}

func TestCSVBadRows(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "bad.csv", "prompt,chosen,rejected\np,a,b\np,a\np,x,x\n")
	_, err := runLoad(t, map[string]any{"path": p})
	if err == nil || !strings.Contains(err.Error(), p+" row 1 (line 3)") {
		t.Errorf("err = %v", err)
	}
	rows, res := mustLoad(t, map[string]any{"path": p, "on_error": "skip"})
	if len(rows) != 1 || res.Stats["skipped/bad_csv"] != 1 || res.Stats["skipped/identical"] != 1 {
		t.Errorf("rows %+v stats %v", rows, res.Stats)
	}
}

func TestSplit(t *testing.T) {
	dir := t.TempDir()
	var sb strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&sb, `{"prompt": "p%d", "chosen": "a", "rejected": "b"}`+"\n", i)
	}
	p := writeFile(t, dir, "many.jsonl", sb.String())
	cfg := map[string]any{"path": p, "split": map[string]any{"eval": 0.1, "seed": 7}}
	rows, res := mustLoad(t, cfg)
	again, _ := mustLoad(t, cfg)
	if !reflect.DeepEqual(rows, again) {
		t.Fatal("split is not deterministic")
	}
	if n := res.Stats["split/eval"]; n < 140 || n > 260 {
		t.Errorf("eval rows %d of 2000 at ratio 0.1", n)
	}
	if len(res.Output) != 1 {
		t.Errorf("%d batches", len(res.Output))
	}
	// Appending rows keeps the split of the existing ones.
	for i := 2000; i < 5000; i++ {
		fmt.Fprintf(&sb, `{"prompt": "p%d", "chosen": "a", "rejected": "b"}`+"\n", i)
	}
	writeFile(t, dir, "many.jsonl", sb.String())
	more, res2 := mustLoad(t, cfg)
	if len(more) != 5000 || len(res2.Output) != 2 {
		t.Fatalf("%d rows in %d batches", len(more), len(res2.Output))
	}
	if !reflect.DeepEqual(more[:2000], rows) {
		t.Error("appending rows changed the split of existing rows")
	}
	// Another seed gives another split.
	other, _ := mustLoad(t, map[string]any{"path": p, "split": map[string]any{"eval": 0.1, "seed": 8}, "limit": 2000})
	if reflect.DeepEqual(other, rows) {
		t.Error("seed does not matter")
	}
	if len(other) != 2000 {
		t.Errorf("limit 2000: %d rows", len(other))
	}
}

func TestDatasetDirSplitByFile(t *testing.T) {
	twin := twins(t)["prefs.parquet"]
	data, err := os.ReadFile(twin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, dir, "data/train-00000-of-00001.parquet", string(data))
	writeFile(t, dir, "data/test-00000-of-00001.parquet", string(data))
	writeFile(t, dir, "README.md", "# a dataset card\n")
	writeFile(t, dir, ".cache/x.parquet", "junk")
	writeFile(t, dir, "dataset_info.json", `{"splits": {}}`)
	rows, res := mustLoad(t, map[string]any{"path": dir, "split": map[string]any{"by": "file"}})
	if len(rows) != 12 || res.Stats["split/eval"] != 6 || res.Stats["split/train"] != 6 {
		t.Fatalf("%d rows, stats %v", len(rows), res.Stats)
	}
	// Sorted order: data/test-* first, numbered on from 0 across files.
	for i, r := range rows {
		wantSplit := "eval"
		if i >= 6 {
			wantSplit = "train"
		}
		if r.Row != int64(i) || r.Split != wantSplit {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	writeFile(t, dir, "data/other.parquet", string(data))
	if _, err := runLoad(t, map[string]any{"path": dir, "split": map[string]any{"by": "file"}}); err == nil || !strings.Contains(err.Error(), "other.parquet") {
		t.Errorf("unnamed shard: err = %v", err)
	}
}

func TestImplicitGeneric(t *testing.T) {
	cases := []struct{ c, r, p, pc, pr string }{
		{"Q: hi A: yes", "Q: hi A: no", "Q: hi A:", " yes", " no"},
		{"Q? Yes", "Q? Yesterday", "Q?", " Yes", " Yesterday"},
		{"abc", "abd", "", "abc", "abd"},
		{"\n\nHuman: x\n\nAssistant: a\n\nHuman: y\n\nAssistant: b", "\n\nHuman: x\n\nAssistant: a\n\nHuman: z\n\nAssistant: c",
			"\n\nHuman: x\n\nAssistant:", " a\n\nHuman: y\n\nAssistant: b", " a\n\nHuman: z\n\nAssistant: c"},
		{"Wie heißt du? Über", "Wie heißt du? Übel", "Wie heißt du?", " Über", " Übel"},
	}
	for _, c := range cases {
		p, pc, pr := splitImplicit(c.c, c.r)
		if p != c.p || pc != c.pc || pr != c.pr {
			t.Errorf("splitImplicit(%q, %q) = %q, %q, %q; want %q, %q, %q", c.c, c.r, p, pc, pr, c.p, c.pc, c.pr)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []map[string]any{
		{"path": "x.jsonl", "format": "xml"},
		{"path": "x.jsonl", "columns": map[string]string{"answer": "a"}},
		{"path": "x.jsonl", "split": map[string]any{"eval": 1.5}},
		{"path": "x.jsonl", "split": map[string]any{"by": "name"}},
		{"path": "x.jsonl", "on_error": "ignore"},
		{"path": "x.jsonl", "limit": -1},
	} {
		if _, err := runLoad(t, cfg); err == nil {
			t.Errorf("%v: no error", cfg)
		}
	}
}
