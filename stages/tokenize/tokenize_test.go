package tokenize

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/dpopipe/dpopipe/internal/testassets"
	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/load"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files in testdata")

// loadJSONL runs the load stage on JSON Lines text and returns its batches.
func loadJSONL(t testing.TB, jsonl string) []arrow.RecordBatch {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(p, []byte(jsonl), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadPath(t, map[string]any{"path": p})
}

func loadPath(t testing.TB, cfg map[string]any) []arrow.RecordBatch {
	t.Helper()
	res, err := sdk.RunLocal(context.Background(), load.New(), cfg, sdk.LocalOptions{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(res.Release)
	return res.Output
}

func jsonl(rows ...map[string]any) string {
	var sb strings.Builder
	for _, r := range rows {
		b, _ := json.Marshal(r)
		sb.Write(b)
		sb.WriteByte('\n')
	}
	return sb.String()
}

type tokRow struct {
	Row     int64
	P, C, R []int32
	Weight  float32
	Split   string
}

func runTok(t testing.TB, in []arrow.RecordBatch, cfg map[string]any) (*sdk.LocalResult, error) {
	t.Helper()
	if _, ok := cfg["tokenizer"]; !ok {
		if _, ok := cfg["builtin_tokenizer"]; !ok {
			cfg["builtin_tokenizer"] = "bytes"
		}
	}
	return sdk.RunLocal(context.Background(), New(), cfg, sdk.LocalOptions{Input: in, Dir: t.TempDir()})
}

func mustTok(t testing.TB, in []arrow.RecordBatch, cfg map[string]any) ([]tokRow, *sdk.LocalResult) {
	t.Helper()
	res, err := runTok(t, in, cfg)
	if err != nil {
		t.Fatalf("tokenize: %v", err)
	}
	t.Cleanup(res.Release)
	var rows []tokRow
	for _, rec := range res.Output {
		if !rec.Schema().Equal(Schema) {
			t.Fatalf("schema %v", rec.Schema())
		}
		if rec.NumRows() > batchRows {
			t.Fatalf("batch of %d rows", rec.NumRows())
		}
		ids := func(c, i int) []int32 {
			l := rec.Column(c).(*array.List)
			lo, hi := l.ValueOffsets(i)
			return append([]int32{}, l.ListValues().(*array.Int32).Int32Values()[lo:hi]...)
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			rows = append(rows, tokRow{
				Row: rec.Column(0).(*array.Int64).Value(i),
				P:   ids(1, i), C: ids(2, i), R: ids(3, i),
				Weight: rec.Column(4).(*array.Float32).Value(i),
				Split:  rec.Column(5).(*array.String).Value(i),
			})
		}
	}
	return rows, res
}

func bytesOf(s string) []int32 {
	out := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int32(s[i])
	}
	return out
}

func cat(parts ...[]int32) []int32 {
	var out []int32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

const bos, eos = tokenizer.BytesBOS, tokenizer.BytesEOS

func TestTextLayout(t *testing.T) {
	in := loadJSONL(t, jsonl(
		map[string]any{"prompt": "ab", "chosen": "c", "rejected": "de", "weight": 0.5},
		map[string]any{"prompt": "x</s>", "chosen": "ends</s>", "rejected": "no"},
	))
	rows, res := mustTok(t, in, map[string]any{})
	want := []tokRow{
		{Row: 1, P: cat([]int32{bos}, bytesOf("ab")), C: cat(bytesOf("c"), []int32{eos}), R: cat(bytesOf("de"), []int32{eos}), Weight: 0.5, Split: "train"},
		// Special-token text in data is text: no EOS inside, and EOS added.
		{Row: 2, P: cat([]int32{bos}, bytesOf("x</s>")), C: cat(bytesOf("ends</s>"), []int32{eos}), R: cat(bytesOf("no"), []int32{eos}), Weight: 1, Split: "train"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("got  %v\nwant %v", rows, want)
	}
	if res.Stats["rows_in"] != 2 || res.Stats["rows_out"] != 2 {
		t.Errorf("stats %v", res.Stats)
	}
	rows, _ = mustTok(t, in, map[string]any{"add_eos": false})
	if !reflect.DeepEqual(rows[0].C, bytesOf("c")) {
		t.Errorf("add_eos false: chosen %v", rows[0].C)
	}
}

// conversation is a prompt with a system message and two turns, and two
// completions.
func conversation() map[string]any {
	return map[string]any{
		"prompt": []map[string]string{
			{"role": "system", "content": "Be brief."},
			{"role": "user", "content": "Hi?"},
			{"role": "assistant", "content": "Hello."},
			{"role": "user", "content": "2+2?"},
		},
		"chosen":   []map[string]string{{"role": "assistant", "content": "4"}},
		"rejected": []map[string]string{{"role": "assistant", "content": "22"}},
	}
}

func TestBOSAndEOSNeverDoubled(t *testing.T) {
	in := loadJSONL(t, jsonl(conversation()))
	for _, tmpl := range []string{"llama-2", "zephyr", "{{bos}}<|{{role}}|>\n{{content}}{{eos}}\n", "<s>{{role}}: {{content}}</s>", "chatml", "plain"} {
		rows, _ := mustTok(t, in, map[string]any{"chat_template": tmpl})
		r := rows[0]
		if r.P[0] != bos || r.P[1] == bos {
			t.Errorf("%q: prompt starts %v: want one BOS", tmpl, r.P[:2])
		}
		for _, c := range [][]int32{r.C, r.R} {
			n := len(c)
			if c[n-1] != eos || c[n-2] == eos {
				t.Errorf("%q: completion ends %v: want one EOS", tmpl, c[max(0, n-3):])
			}
		}
	}
	// Llama 2: the template's own "<s>" is the BOS; "</s>" ends the
	// completion; the chosen completion is " 4 </s>".
	rows, _ := mustTok(t, in, map[string]any{"chat_template": "llama-2"})
	if want := cat(bytesOf(" 4 "), []int32{eos}); !reflect.DeepEqual(rows[0].C, want) {
		t.Errorf("llama-2 chosen %v, want %v", rows[0].C, want)
	}
	wantP := cat([]int32{bos}, bytesOf("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. "), []int32{eos, bos}, bytesOf("[INST] 2+2? [/INST]"))
	if !reflect.DeepEqual(rows[0].P, wantP) {
		t.Errorf("llama-2 prompt\n got %q\nwant %q", tokenizer.NewBytes().Decode(rows[0].P), tokenizer.NewBytes().Decode(wantP))
	}
}

func TestTemplateGoldens(t *testing.T) {
	conv := []Message{{"system", "Be brief."}, {"user", "Hi?"}, {"assistant", "Hello."}, {"user", "Say <|im_end|> or </s>."}}
	comp := []Message{{"assistant", "OK: <|im_end|> </s>"}}
	multi := []Message{{"assistant", "Which?"}, {"user", "Either."}, {"assistant", "Fine."}}
	for _, name := range []string{"plain", "chatml", "llama-2", "zephyr", "custom"} {
		t.Run(name, func(t *testing.T) {
			src := name
			if name == "custom" {
				src = "{{bos}}[{{role}}]\n{{content}}{{eos}}\n"
			}
			tmpl, err := ParseTemplate(src)
			if err != nil {
				t.Fatal(err)
			}
			bt := tokenizer.NewBytes()
			var sb strings.Builder
			fmt.Fprintf(&sb, "== template %q\n", src)
			p := tmpl.RenderPrompt(conv)
			fmt.Fprintf(&sb, "== prompt\n%s\n== completion\n%s\n== multi-turn completion\n%s\n", segsText(p), segsText(tmpl.RenderCompletion(comp)), segsText(tmpl.RenderCompletion(multi)))
			// Which literal specials became ids with the byte tokenizer.
			fmt.Fprintf(&sb, "== prompt ids (bytes tokenizer) with specials\n%v\n", specialsOf(encodeSegs(bt, p)))
			fmt.Fprintf(&sb, "== completion ids (bytes tokenizer) with specials\n%v\n", specialsOf(encodeSegs(bt, tmpl.RenderCompletion(comp))))
			golden := filepath.Join("testdata", "templates", name+".golden")
			if *rewrite {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(sb.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -rewrite to create it)", err)
			}
			if sb.String() != string(want) {
				t.Errorf("rendering differs from %s (go test -rewrite updates it):\n%s", golden, sb.String())
			}
		})
	}
}

// specialsOf shows ids with runs of bytes collapsed to text.
func specialsOf(ids []int32) []string {
	var out []string
	var run []byte
	for _, id := range ids {
		if id < 256 {
			run = append(run, byte(id))
			continue
		}
		if len(run) > 0 {
			out = append(out, fmt.Sprintf("%q", run))
			run = nil
		}
		out = append(out, tokenizer.NewBytes().Piece(id))
	}
	if len(run) > 0 {
		out = append(out, fmt.Sprintf("%q", run))
	}
	return out
}

func TestTemplateErrors(t *testing.T) {
	for _, s := range []string{"jinja", "{{role}}: {{message}}", "{{content}}{{content}}", "{{role}}"} {
		if _, err := ParseTemplate(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
	if _, err := runTok(t, loadJSONL(t, jsonl(conversation())), map[string]any{"chat_template": "{{x}}"}); err == nil {
		t.Error("bad chat_template: no error")
	}
}

func TestTruncation(t *testing.T) {
	// prompt 10 bytes (+BOS = 11), chosen 6 (+EOS = 7), rejected 3 (+EOS = 4).
	in := loadJSONL(t, jsonl(
		map[string]any{"prompt": "0123456789", "chosen": "abcdef", "rejected": "xyz"},
		map[string]any{"prompt": "p", "chosen": "a", "rejected": "b"},
	))
	short := tokRow{Row: 2, P: cat([]int32{bos}, bytesOf("p")), C: []int32{'a', eos}, R: []int32{'b', eos}, Weight: 1, Split: "train"}

	rows, res := mustTok(t, in, map[string]any{"max_prompt_length": 5, "max_length": 9})
	want := []tokRow{{Row: 1, P: cat([]int32{bos}, bytesOf("6789")), C: bytesOf("abcd"), R: cat(bytesOf("xyz"), []int32{eos}), Weight: 1, Split: "train"}, short}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("keep_end:\n got %v\nwant %v", rows, want)
	}
	for stat, n := range map[string]int64{"truncated/prompt": 1, "truncated/completion": 1, "truncated/eos_lost": 1, "rows_out": 2} {
		if res.Stats[stat] != n {
			t.Errorf("keep_end: stat %s = %d, want %d (%v)", stat, res.Stats[stat], n, res.Stats)
		}
	}
	if !printed(res, "truncated/prompt: row 1") || !printed(res, "truncated/completion: row 1") {
		t.Errorf("prints %q", res.Prints)
	}

	rows, _ = mustTok(t, in, map[string]any{"max_prompt_length": 5, "max_length": 9, "truncation": "keep_start"})
	if want := cat([]int32{bos}, bytesOf("0123")); !reflect.DeepEqual(rows[0].P, want) {
		t.Errorf("keep_start prompt %v, want %v", rows[0].P, want)
	}

	rows, res = mustTok(t, in, map[string]any{"max_prompt_length": 5, "max_length": 9, "on_overflow": "drop"})
	if !reflect.DeepEqual(rows, []tokRow{short}) || res.Stats["dropped/too_long"] != 1 || res.Stats["rows_in"] != 2 || res.Stats["rows_out"] != 1 {
		t.Errorf("drop: rows %v stats %v", rows, res.Stats)
	}
	// Only the completion too long.
	rows, res = mustTok(t, in, map[string]any{"max_prompt_length": 11, "max_length": 15, "on_overflow": "drop"})
	if len(rows) != 1 || res.Stats["dropped/too_long"] != 1 {
		t.Errorf("drop completion: rows %v stats %v", rows, res.Stats)
	}
}

func printed(res *sdk.LocalResult, prefix string) bool {
	for _, p := range res.Prints {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

func TestDrops(t *testing.T) {
	in := loadJSONL(t, jsonl(
		map[string]any{"prompt": "p", "chosen": " ", "rejected": "b"},
		map[string]any{"prompt": "p", "chosen": "abcX", "rejected": "abcY"},
		map[string]any{"prompt": "p", "chosen": "ok", "rejected": "no"},
	))
	rows, res := mustTok(t, in, map[string]any{"max_prompt_length": 2, "max_length": 5})
	if len(rows) != 1 || rows[0].Row != 3 {
		t.Errorf("rows %v", rows)
	}
	for stat, n := range map[string]int64{"dropped/empty_completion": 1, "dropped/identical": 1, "rows_in": 3, "rows_out": 1} {
		if res.Stats[stat] != n {
			t.Errorf("stat %s = %d, want %d (%v)", stat, res.Stats[stat], n, res.Stats)
		}
	}
	if !printed(res, "dropped/empty_completion: row 1") || !printed(res, "dropped/identical: row 2") {
		t.Errorf("prints %q", res.Prints)
	}
}

func TestPreTokenized(t *testing.T) {
	src := jsonl(
		map[string]any{"prompt_ids": []int{256, 10, 11}, "chosen_ids": []int{20, 257}, "rejected_ids": []int{30, 31, 257}},
		map[string]any{"prompt_ids": []int{256}, "chosen_ids": []int{5, 300}, "rejected_ids": []int{6}, "weight": 2},
		map[string]any{"prompt_ids": []int{}, "chosen_ids": []int{7}, "rejected_ids": []int{8}},
	)
	in := loadJSONL(t, src)
	_, err := runTok(t, in, map[string]any{})
	if err == nil || !strings.Contains(err.Error(), "row 2") || !strings.Contains(err.Error(), "chosen_ids[1] = 300") {
		t.Errorf("out of vocabulary: err = %v", err)
	}
	dir := t.TempDir()
	res, err := sdk.RunLocal(context.Background(), New(), map[string]any{"builtin_tokenizer": "bytes", "on_error": "skip"}, sdk.LocalOptions{Input: in, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if res.Stats["error/out_of_vocab"] != 1 || res.Stats["rows_out"] != 2 || res.Stats["rows_in"] != 3 {
		t.Errorf("stats %v", res.Stats)
	}
	q, err := os.ReadFile(filepath.Join(dir, "quarantine.jsonl"))
	if err != nil || !strings.Contains(string(q), `"row":2`) {
		t.Errorf("quarantine %q %v", q, err)
	}
	rows, _ := mustTok(t, in, map[string]any{"on_error": "skip"})
	want := []tokRow{
		{Row: 1, P: []int32{256, 10, 11}, C: []int32{20, 257}, R: []int32{30, 31, 257}, Weight: 1, Split: "train"},
		{Row: 3, P: []int32{}, C: []int32{7}, R: []int32{8}, Weight: 1, Split: "train"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("pass-through:\n got %v\nwant %v", rows, want)
	}
}

func TestSplitAndOrderKept(t *testing.T) {
	var rows []map[string]any
	for i := 0; i < 9000; i++ {
		rows = append(rows, map[string]any{"prompt": fmt.Sprint("q", i), "chosen": fmt.Sprint("a", i), "rejected": "b"})
	}
	p := filepath.Join(t.TempDir(), "many.jsonl")
	if err := os.WriteFile(p, []byte(jsonl(rows...)), 0o644); err != nil {
		t.Fatal(err)
	}
	in := loadPath(t, map[string]any{"path": p, "split": map[string]any{"eval": 0.2, "seed": 1}})
	out, res := mustTok(t, in, map[string]any{})
	if len(out) != 9000 || len(res.Output) != 3 {
		t.Fatalf("%d rows in %d batches", len(out), len(res.Output))
	}
	evals := 0
	for i, r := range out {
		if r.Row != int64(i+1) || string(tokenizer.NewBytes().Decode(r.C)) != fmt.Sprint("a", i) {
			t.Fatalf("row %d out of order: %+v", i, r)
		}
		if r.Split == "eval" {
			evals++
		}
	}
	if evals < 1500 || evals > 2100 {
		t.Errorf("%d eval rows", evals)
	}
}

func TestConfigErrors(t *testing.T) {
	in := loadJSONL(t, jsonl(map[string]any{"prompt": "p", "chosen": "a", "rejected": "b"}))
	for _, cfg := range []map[string]any{
		{"max_length": 100, "max_prompt_length": 100},
		{"truncation": "middle"},
		{"tokenizer": "x.bin", "builtin_tokenizer": "bytes"},
		{"builtin_tokenizer": "chars"},
		{"tokenizer": filepath.Join(t.TempDir(), "missing.bin")},
	} {
		if _, err := runTok(t, in, cfg); err == nil {
			t.Errorf("%v: no error", cfg)
		}
	}
	// tokenizer = "bytes" (resolved or not) is the built-in tokenizer.
	for _, p := range []string{"bytes", filepath.Join(t.TempDir(), "bytes")} {
		if _, err := runTok(t, in, map[string]any{"tokenizer": p}); err != nil {
			t.Errorf("tokenizer %q: %v", p, err)
		}
	}
}

func llama2(t testing.TB) tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(testassets.Path(t, "tokenizers/llama2/tokenizer.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLlama2(t *testing.T) {
	path := testassets.Path(t, "tokenizers/llama2/tokenizer.bin")
	tok := llama2(t)
	in := loadJSONL(t, jsonl(map[string]any{"prompt": "I believe the meaning of life is", "chosen": " to love.", "rejected": " 42."}))
	rows, _ := mustTok(t, in, map[string]any{"tokenizer": path})
	if want := []int32{1, 306, 4658, 278, 6593, 310, 2834, 338}; !reflect.DeepEqual(rows[0].P, want) {
		t.Errorf("prompt ids %v, want %v", rows[0].P, want)
	}
	// Completions are tokenized on their own, never cut out of the
	// concatenation.
	if want := append(tok.Encode(" to love."), 2); !reflect.DeepEqual(rows[0].C, want) {
		t.Errorf("chosen ids %v, want %v", rows[0].C, want)
	}

	// Llama 2 chat template: "<s>" and "</s>" in the template are BOS and
	// EOS, never doubled.
	in = loadJSONL(t, jsonl(conversation()))
	rows, _ = mustTok(t, in, map[string]any{"tokenizer": path, "chat_template": "llama-2"})
	r := rows[0]
	if r.P[0] != 1 || r.P[1] == 1 {
		t.Errorf("prompt starts %v", r.P[:3])
	}
	if n := len(r.C); r.C[n-1] != 2 || r.C[n-2] == 2 {
		t.Errorf("chosen %v", r.C)
	}
	if got := tok.Decode(r.P); !strings.Contains(got, "[INST] 2+2? [/INST]") {
		t.Errorf("prompt decodes to %q", got)
	}
}

func TestHHRLHFLlama2(t *testing.T) {
	path := testassets.Path(t, "tokenizers/llama2/tokenizer.bin")
	in := loadPath(t, map[string]any{"path": testassets.Path(t, "prefs/hh-rlhf/harmless-base-test.jsonl")})
	rows, res := mustTok(t, in, map[string]any{"tokenizer": path})
	tok := llama2(t)
	kept := int64(len(rows))
	var accounted int64
	for stat, n := range res.Stats {
		if strings.HasPrefix(stat, "dropped/") || strings.HasPrefix(stat, "error/") {
			accounted += n
		}
	}
	if res.Stats["rows_in"] != 2312 || kept+accounted != 2312 || res.Stats["rows_out"] != kept {
		t.Errorf("rows: kept %d, stats %v", kept, res.Stats)
	}
	if res.Stats["dropped/empty_completion"] != 4 {
		t.Errorf("HH-RLHF has 4 blank completions: stats %v", res.Stats)
	}
	for _, r := range rows {
		if r.P[0] != 1 || (len(r.P) > 1 && r.P[1] == 1) || len(r.P) > 256 || len(r.P)+max(len(r.C), len(r.R)) > 512 {
			t.Fatalf("row %d: prompt %d, chosen %d, rejected %d tokens", r.Row, len(r.P), len(r.C), len(r.R))
		}
	}
	// The first row: the prompt ends with the last Assistant turn.
	if got := tok.Decode(rows[0].P); !strings.HasSuffix(got, "\n\nAssistant:") {
		t.Errorf("row 1 prompt ends %q", got[max(0, len(got)-40):])
	}
}

func BenchmarkTokenizeHH(b *testing.B) {
	path := testassets.Path(b, "tokenizers/llama2/tokenizer.bin")
	in := loadPath(b, map[string]any{"path": testassets.Path(b, "prefs/hh-rlhf/harmless-base-test.jsonl")})
	var rows int64
	for _, rec := range in {
		rows += rec.NumRows()
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := sdk.RunLocal(context.Background(), New(), map[string]any{"tokenizer": path}, sdk.LocalOptions{Input: in})
		if err != nil {
			b.Fatal(err)
		}
		res.Release()
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
