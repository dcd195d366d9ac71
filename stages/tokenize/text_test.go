package tokenize

import (
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/internal/testassets"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

// textFixture is the load stage's text dataset fixture.
const textFixture = "../load/testdata/text.jsonl"

// tinyLlama2c is a llama2.c tokenizer fixture (BOS 1, EOS 2).
const tinyLlama2c = "../tokenizer/testdata/tiny-llama2c.bin"

func TestTextDatasetLayout(t *testing.T) {
	in := loadPath(t, map[string]any{"path": textFixture})
	rows, res := mustTok(t, in, map[string]any{})
	docs := []struct {
		row    int64
		text   string
		weight float32
	}{
		{1, "Once upon a time there was a little cat.", 1},
		{2, "The cat liked to sit in the sun.", 0.5},
		{4, "One day the cat saw a bird.", 1},
		{5, "Über the hill, the bird sang.", 1},
	}
	var want []tokRow
	for _, d := range docs {
		want = append(want, tokRow{Row: d.row, P: []int32{bos}, C: cat(bytesOf(d.text), []int32{eos}), R: []int32{}, Weight: d.weight, Split: "train"})
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("got  %v\nwant %v", rows, want)
	}
	if res.Stats["rows_in"] != 4 || res.Stats["rows_out"] != 4 || res.Stats["tokens/prompt"] != 4 {
		t.Errorf("stats %v", res.Stats)
	}
	rows, _ = mustTok(t, in, map[string]any{"add_eos": false})
	if !reflect.DeepEqual(rows[0].C, bytesOf(docs[0].text)) || !reflect.DeepEqual(rows[0].P, []int32{bos}) {
		t.Errorf("add_eos false: %v", rows[0])
	}
}

// BOS once, first; EOS once, last; special-token text in a document is text.
func TestTextDatasetBOSAndEOSOnce(t *testing.T) {
	in := loadJSONL(t, jsonl(map[string]any{"text": "<s>a story</s>"}, map[string]any{"text": "plain"}))
	check := func(name string, rows []tokRow, bos, eos int32) {
		t.Helper()
		for _, r := range rows {
			if !reflect.DeepEqual(r.P, []int32{bos}) || len(r.R) != 0 {
				t.Errorf("%s: row %d: prompt %v rejected %v", name, r.Row, r.P, r.R)
			}
			n := len(r.C)
			if n < 2 || r.C[n-1] != eos {
				t.Errorf("%s: row %d: chosen %v does not end with EOS", name, r.Row, r.C)
			}
			for k, id := range r.C {
				if id == bos || (id == eos && k != n-1) {
					t.Errorf("%s: row %d: chosen %v has BOS or an inner EOS at %d", name, r.Row, r.C, k)
				}
			}
		}
	}
	rows, _ := mustTok(t, in, map[string]any{})
	check("bytes", rows, bos, eos)
	if want := cat(bytesOf("<s>a story</s>"), []int32{eos}); !reflect.DeepEqual(rows[0].C, want) {
		t.Errorf("bytes: chosen %v, want %v", rows[0].C, want)
	}
	tok, err := tokenizer.Load(tinyLlama2c)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ = mustTok(t, in, map[string]any{"tokenizer": tinyLlama2c})
	check("llama2.c", rows, tok.BOS(), tok.EOS())
	if want := append(tok.Encode("plain"), tok.EOS()); !reflect.DeepEqual(rows[1].C, want) {
		t.Errorf("llama2.c: chosen %v, want %v", rows[1].C, want)
	}
}

// A tokenizer that adds no BOS gives an empty prompt.
func TestTextDatasetNoBOS(t *testing.T) {
	p := "../tokenizer/testdata/tiny-gpt2.json"
	tok, err := tokenizer.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AddBOS() {
		t.Skipf("%s adds BOS", p)
	}
	rows, _ := mustTok(t, loadJSONL(t, jsonl(map[string]any{"text": "hello world"})), map[string]any{"tokenizer": p})
	want := tok.Encode("hello world")
	if e := tok.EOS(); e >= 0 {
		want = append(want, e)
	}
	if len(rows) != 1 || len(rows[0].P) != 0 || !reflect.DeepEqual(rows[0].C, want) || len(rows[0].R) != 0 {
		t.Errorf("rows %v, want chosen %v", rows, want)
	}
}

func TestTextDatasetTruncation(t *testing.T) {
	in := loadJSONL(t, jsonl(
		map[string]any{"text": "0123456789abcdefghij"}, // 20 bytes: BOS + 20 + EOS
		map[string]any{"text": "short"},                // BOS + 5 + EOS = 7
		map[string]any{"text": " \n "},
	))
	short := tokRow{Row: 2, P: []int32{bos}, C: cat(bytesOf("short"), []int32{eos}), R: []int32{}, Weight: 1, Split: "train"}
	rows, res := mustTok(t, in, map[string]any{"max_length": 10, "max_prompt_length": 4})
	want := []tokRow{{Row: 1, P: []int32{bos}, C: bytesOf("012345678"), R: []int32{}, Weight: 1, Split: "train"}, short}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("truncate:\n got %v\nwant %v", rows, want)
	}
	for stat, n := range map[string]int64{"truncated/completion": 1, "truncated/eos_lost": 1, "truncated/prompt": 0,
		"dropped/empty_completion": 1, "rows_in": 3, "rows_out": 2} {
		if res.Stats[stat] != n {
			t.Errorf("truncate: stat %s = %d, want %d (%v)", stat, res.Stats[stat], n, res.Stats)
		}
	}
	if !printed(res, "truncated/completion: row 1: chosen 21 tokens cut to 9") || !printed(res, "dropped/empty_completion: row 3: text is empty") {
		t.Errorf("prints %q", res.Prints)
	}
	// Exactly at the limit: nothing cut, EOS kept.
	rows, res = mustTok(t, in, map[string]any{"max_length": 7, "max_prompt_length": 1})
	if !reflect.DeepEqual(rows[1], short) || res.Stats["truncated/completion"] != 1 {
		t.Errorf("at the limit: rows %v stats %v", rows, res.Stats)
	}
	rows, res = mustTok(t, in, map[string]any{"max_length": 10, "max_prompt_length": 4, "on_overflow": "drop"})
	if !reflect.DeepEqual(rows, []tokRow{short}) || res.Stats["dropped/too_long"] != 1 || res.Stats["truncated/completion"] != 0 {
		t.Errorf("drop: rows %v stats %v", rows, res.Stats)
	}
}

// A null text is a bad row, named by its row number.
func TestTextDatasetNull(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 2}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"ok", ""}, []bool{true, false})
	rec := b.NewRecordBatch()
	defer rec.Release()
	_, err := runTok(t, []arrow.RecordBatch{rec}, map[string]any{})
	if err == nil || !strings.Contains(err.Error(), "row 2: text is null") {
		t.Errorf("err = %v", err)
	}
	rows, res := mustTok(t, []arrow.RecordBatch{rec}, map[string]any{"on_error": "skip"})
	if len(rows) != 1 || rows[0].Split != "train" || rows[0].Weight != 1 || res.Stats["error/null_value"] != 1 {
		t.Errorf("skip: rows %v stats %v", rows, res.Stats)
	}
}

func TestTextDatasetLlama2(t *testing.T) {
	path := testassets.Path(t, "tokenizers/llama2/tokenizer.bin")
	tok := llama2(t)
	in := loadPath(t, map[string]any{"path": textFixture})
	rows, _ := mustTok(t, in, map[string]any{"tokenizer": path})
	if want := append(tok.Encode("Once upon a time there was a little cat."), 2); !reflect.DeepEqual(rows[0].C, want) || !reflect.DeepEqual(rows[0].P, []int32{1}) {
		t.Errorf("row 1: prompt %v chosen %v, want [1] and %v", rows[0].P, rows[0].C, want)
	}
}
