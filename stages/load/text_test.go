package load

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// textRow is one row of a text dataset's output.
type textRow struct {
	Row    int64
	Text   string
	Weight float32
	Split  string
}

func collectText(t *testing.T, recs []arrow.RecordBatch) []textRow {
	t.Helper()
	var out []textRow
	for _, rec := range recs {
		if !rec.Schema().Equal(Schema(pfText)) {
			t.Fatalf("schema %v, want %v", rec.Schema(), Schema(pfText))
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			out = append(out, textRow{
				Row:    rec.Column(0).(*array.Int64).Value(i),
				Text:   rec.Column(1).(*array.String).Value(i),
				Weight: rec.Column(2).(*array.Float32).Value(i),
				Split:  rec.Column(3).(*array.String).Value(i),
			})
		}
	}
	return out
}

func TestText(t *testing.T) {
	want := []textRow{
		{1, "Once upon a time there was a little cat.", 1, "train"},
		{2, "The cat liked to sit in the sun.", 0.5, "train"},
		{4, "One day the cat saw a bird.", 1, "train"},
		{5, "Über the hill, the bird sang.", 1, "train"},
	}
	for _, pf := range []string{"auto", "text"} {
		res, err := runLoad(t, map[string]any{"path": fixture("text.jsonl"), "prompt_format": pf})
		if err != nil {
			t.Fatalf("%s: %v", pf, err)
		}
		got := collectText(t, res.Output)
		res.Release()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", pf, got, want)
		}
		if res.Stats["rows_in"] != 4 || res.Stats["rows_out"] != 4 {
			t.Errorf("%s: stats %v", pf, res.Stats)
		}
		if !strings.Contains(strings.Join(res.Prints, "\n"), "(text;") {
			t.Errorf("%s: prints %q", pf, res.Prints)
		}
	}
}

func TestTextMappedAndSplit(t *testing.T) {
	dir := t.TempDir()
	// columns = { text = "content" }; the rows also have fields that look
	// like pairs, which a mapped text column overrides.
	var sb strings.Builder
	for i := 0; i < 400; i++ {
		fmt.Fprintf(&sb, `{"content": "doc %d", "chosen": "x"}`+"\n", i)
	}
	p := writeFile(t, dir, "docs.jsonl", sb.String())
	cfg := map[string]any{"path": p, "columns": map[string]string{"text": "content"}, "split": map[string]any{"eval": 0.25, "seed": 3}}
	res, err := runLoad(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	rows := collectText(t, res.Output)
	if len(rows) != 400 || rows[7].Text != "doc 7" || rows[7].Row != 8 {
		t.Fatalf("%d rows, row 7 %+v", len(rows), rows[min(7, len(rows)-1)])
	}
	// The same split rule as for pairs: a hash of (seed, row).
	var nEval int64
	for _, r := range rows {
		if want := evalRow(3, r.Row, 0.25); (r.Split == "eval") != want {
			t.Errorf("row %d: split %s", r.Row, r.Split)
		}
		if r.Split == "eval" {
			nEval++
		}
	}
	if nEval != res.Stats["split/eval"] || nEval < 60 || nEval > 140 {
		t.Errorf("eval rows %d, stats %v", nEval, res.Stats)
	}
}

func TestTextCSV(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "docs.csv", "id,content\n1,first doc\n2,\"second, with a comma\"\n")
	res, err := runLoad(t, map[string]any{"path": p, "columns": map[string]string{"text": "content"}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	want := []textRow{{0, "first doc", 1, "train"}, {1, "second, with a comma", 1, "train"}}
	if got := collectText(t, res.Output); !reflect.DeepEqual(got, want) {
		t.Errorf("csv: got %v want %v", got, want)
	}
}

func TestTextBadRows(t *testing.T) {
	good := `{"text": "a document"}`
	cases := []struct {
		reason, line, want string
	}{
		{"missing_field", `{"body": "no text here"}`, `missing field "text"`},
		{"not_string", `{"text": 42}`, `"text" is a number, not a string`},
		{"not_string", `{"text": ["a", "b"]}`, `"text" is a list, not a string`},
		{"empty_text", `{"text": ""}`, "text is empty"},
		{"invalid_utf8", "{\"text\": \"caf\xe9\"}", "invalid UTF-8"},
		{"invalid_json", `{"text": "unterminated`, "invalid JSON"},
		{"bad_weight", `{"text": "w", "weight": -2}`, "weight"},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d_%s", i, c.reason), func(t *testing.T) {
			// The bad row is line 4, after two good rows and a blank line.
			p := writeFile(t, dir, fmt.Sprintf("bad%d.jsonl", i), good+"\n"+good+"\n\n"+c.line+"\n"+good+"\n")
			for _, pf := range []string{"auto", "text"} {
				_, err := runLoad(t, map[string]any{"path": p, "prompt_format": pf})
				if err == nil {
					t.Fatalf("%s: no error", pf)
				}
				for _, w := range []string{p + " line 4", c.want, `on_error = "skip"`} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not contain %q", pf, err, w)
					}
				}
			}
			res, err := runLoad(t, map[string]any{"path": p, "on_error": "skip"})
			if err != nil {
				t.Fatal(err)
			}
			defer res.Release()
			rows := collectText(t, res.Output)
			if len(rows) != 3 || rows[2].Row != 5 {
				t.Errorf("skip: rows %+v", rows)
			}
			if res.Stats["skipped/"+c.reason] != 1 || res.Stats["rows_in"] != 4 || res.Stats["rows_out"] != 3 {
				t.Errorf("skip: stats %v", res.Stats)
			}
		})
	}
	// A first row with neither pairs nor text: the error says how to map
	// either.
	p := writeFile(t, dir, "neither.jsonl", `{"body": "x"}`+"\n")
	_, err := runLoad(t, map[string]any{"path": p})
	if err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "columns = { text = ") {
		t.Errorf("neither: err = %v", err)
	}
	// Pairs after text rows are bad rows of a text dataset.
	p = writeFile(t, dir, "mixed.jsonl", good+"\n"+`{"prompt": "p", "chosen": "a", "rejected": "b"}`+"\n")
	if _, err := runLoad(t, map[string]any{"path": p}); err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `missing field "text"`) {
		t.Errorf("mixed: err = %v", err)
	}
}

// Rows with text and pairs are pairs; the text field is ignored.
func TestTextBesidePairs(t *testing.T) {
	p := writeFile(t, t.TempDir(), "pairs.jsonl", `{"text": "t", "prompt": "p", "chosen": "a", "rejected": "b"}`+"\n")
	rows, _ := mustLoad(t, map[string]any{"path": p})
	if len(rows) != 1 || rows[0].Chosen != "a" {
		t.Errorf("rows %+v", rows)
	}
}

func TestTextConfigErrors(t *testing.T) {
	for _, cfg := range []map[string]any{
		{"path": "x.jsonl", "columns": map[string]string{"text": "content", "chosen": "c"}},
		{"path": "x.jsonl", "prompt_format": "text", "columns": map[string]string{"prompt": "q"}},
		{"path": "x.jsonl", "prompt_format": "explicit", "columns": map[string]string{"text": "content"}},
		{"path": "x.jsonl", "columns": map[string]string{"text": ""}},
	} {
		if _, err := runLoad(t, cfg); err == nil {
			t.Errorf("%v: no error", cfg)
		} else if !strings.Contains(err.Error(), "columns") {
			t.Errorf("%v: error %v does not name columns", cfg, err)
		}
	}
}
