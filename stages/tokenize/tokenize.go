// Package tokenize is the "tokenize" stage: it turns the load stage's
// preference pairs into token ids, with the columns
//
//	row                                    int64 (passed through)
//	prompt_ids, chosen_ids, rejected_ids   list<int32>
//	weight                                 float32 (1 when the input has none)
//	split                                  utf8 ("train" when the input has none)
//
// # Token layout
//
//	prompt_ids   = [BOS if the tokenizer adds one] + encode(prompt)
//	chosen_ids   = encode(chosen) + [EOS]
//	rejected_ids = encode(rejected) + [EOS]
//
// The prompt and each completion are tokenized separately and never as one
// concatenated string: the completion ids are exactly the tokens the model
// scores after the prompt ids, and the boundary between prompt and
// completion cannot be blurred by a merge across it (TRL's DPO trainer does
// the same). With a SentencePiece-style tokenizer each piece gets its own
// dummy-prefix space, as in TRL.
//
// BOS appears once at the start: when the rendered prompt already starts with
// BOS (a chat template's "<s>" or {{bos}}), no second one is added. EOS ends
// each completion once: when the completion already ends with EOS (the
// template wrote it), none is added. add_eos = false adds none.
//
// String prompts and completions are encoded verbatim (a literal "</s>" in
// data is text, never a special token). Conversational input (message lists)
// is rendered with chat_template first; see Template for the syntax.
//
// # Truncation
//
// A prompt longer than max_prompt_length keeps its last tokens (truncation =
// "keep_end", with BOS kept first) or its first ones ("keep_start"). Then
// completions longer than max_length minus the prompt length keep their
// first tokens, losing EOS. With on_overflow = "drop" such rows are dropped
// instead. Rows whose completion is empty (or only white space) and rows
// whose chosen and rejected ids are identical (before or after truncation)
// are dropped. Every changed or dropped row is counted: the stats
// truncated/prompt, truncated/completion, truncated/eos_lost (completions),
// dropped/too_long, dropped/empty_completion, dropped/identical and
// error/out_of_vocab; the counts and the first rows of each reason are
// printed.
//
// # Text datasets
//
// An input with a text column and no prompt, chosen or rejected (the load
// stage's prompt_format = "text") is a text dataset: each document becomes
// a chosen-only row,
//
//	prompt_ids   = [BOS if the tokenizer adds one]   (else empty)
//	chosen_ids   = encode(text) + [EOS]
//	rejected_ids = []                                 (empty)
//
// for the sft stage (target = "chosen") to train on. The same rules apply:
// BOS and EOS appear once, a document longer than max_length keeps its
// first tokens (truncated/completion, truncated/eos_lost) or is dropped
// (on_overflow = "drop", dropped/too_long), and an empty or blank document
// is dropped (dropped/empty_completion). The dpo stage refuses such rows.
//
// # Pre-tokenized input
//
// prompt_ids, chosen_ids and rejected_ids columns (any integer list type)
// pass through unchanged (no BOS or EOS is added) after a check that every id
// is below the tokenizer's vocabulary size; max_length and
// max_prompt_length still apply. An out-of-range id is an error naming the
// row, or with on_error = "skip" the row is counted in error/out_of_vocab
// and written to quarantine.jsonl.
package tokenize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

// Version is the stage version (part of the cache key).
const Version = "1"

// batchRows is the most rows in one output batch.
const batchRows = 4096

// showRows is how many rows of each reason are printed.
const showRows = 3

// New returns the tokenize stage.
func New() sdk.Stage { return &Stage{} }

// Stage is the tokenize stage.
type Stage struct{}

// Spec describes the stage.
func (*Stage) Spec() sdk.Spec {
	return sdk.Spec{
		Type:    "tokenize",
		Version: Version,
		Description: "Tokenizes preference pairs: prompt_ids = [BOS] + encode(prompt), completions = encode(completion) + [EOS], " +
			"prompt and completions tokenized separately; truncates or drops long rows and counts every change. " +
			"A text column (load's prompt_format = \"text\") becomes chosen-only rows for sft: prompt_ids = [BOS], chosen_ids = encode(text) + [EOS], rejected_ids empty.",
		Config: []sdk.Attr{
			{Name: "tokenizer", Type: "string", Path: true,
				Description: `A tokenizer file or directory: llama2.c tokenizer.bin, Hugging Face tokenizer.json (file or directory) or GPT-2 vocab.json+merges.txt. The value "bytes" names the built-in byte tokenizer (no file); prefer builtin_tokenizer = "bytes" for it.`},
			{Name: "builtin_tokenizer", Type: "string", Enum: []string{"bytes"},
				Description: `A built-in tokenizer instead of a file: "bytes" (ids 0-255 bytes, 256 BOS, 257 EOS). Set this or tokenizer.`},
			{Name: "max_length", Type: "number", Default: sdk.Def(512),
				Description: "Most tokens of prompt plus completion, BOS and EOS included."},
			{Name: "max_prompt_length", Type: "number", Default: sdk.Def(256),
				Description: "Most prompt tokens, BOS included; less than max_length."},
			{Name: "truncation", Type: "string", Default: sdk.Def("keep_end"), Enum: []string{"keep_end", "keep_start"},
				Description: "Which prompt tokens a long prompt keeps: the last (keep_end, BOS kept first) or the first. Completions always keep their first tokens."},
			{Name: "on_overflow", Type: "string", Default: sdk.Def("truncate"), Enum: []string{"truncate", "drop"},
				Description: "truncate long rows, or drop them (counted in dropped/too_long)."},
			{Name: "chat_template", Type: "string", Default: sdk.Def("plain"),
				Description: `For conversational input: plain ("\n\nHuman: ...\n\nAssistant: ..."), chatml, llama-2, zephyr, or a custom per-message format with {{role}}, {{content}}, {{bos}} and {{eos}}, e.g. "<|{{role}}|>\n{{content}}{{eos}}\n". String prompts are used verbatim.`},
			{Name: "add_eos", Type: "bool", Default: sdk.Def(true),
				Description: "End each completion with EOS (never doubled)."},
			{Name: "on_error", Type: "string", Default: sdk.Def("fail"), Enum: []string{"fail", "skip"},
				Description: "fail stops at the first bad row (ids outside the vocabulary, null values); skip counts it and writes it to quarantine.jsonl."},
		},
		Input: []sdk.Column{
			{Name: "row", Type: "int64"},
			{Name: "prompt", Optional: true}, {Name: "chosen", Optional: true}, {Name: "rejected", Optional: true},
			{Name: "prompt_ids", Optional: true}, {Name: "chosen_ids", Optional: true}, {Name: "rejected_ids", Optional: true},
			{Name: "text", Optional: true},
			{Name: "weight", Type: "float32", Optional: true},
			{Name: "split", Type: "utf8", Optional: true},
		},
		Output: []sdk.Column{
			{Name: "row", Type: "int64"},
			{Name: "prompt_ids", Type: "list<int32>"},
			{Name: "chosen_ids", Type: "list<int32>"},
			{Name: "rejected_ids", Type: "list<int32>"},
			{Name: "weight", Type: "float32"},
			{Name: "split", Type: "utf8"},
		},
	}
}

type config struct {
	Tokenizer        string  `json:"tokenizer"`
	BuiltinTokenizer string  `json:"builtin_tokenizer"`
	MaxLength        float64 `json:"max_length"`
	MaxPromptLength  float64 `json:"max_prompt_length"`
	Truncation       string  `json:"truncation"`
	OnOverflow       string  `json:"on_overflow"`
	ChatTemplate     string  `json:"chat_template"`
	AddEOS           bool    `json:"add_eos"`
	OnError          string  `json:"on_error"`

	template *Template
}

func parseConfig(c sdk.Config) (*config, error) {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	var errs sdk.Errors
	switch {
	case cfg.Tokenizer == "" && cfg.BuiltinTokenizer == "":
		errs = append(errs, sdk.Errorf("tokenizer", "Missing tokenizer", `set tokenizer to a tokenizer file, or builtin_tokenizer = "bytes"`))
	case cfg.Tokenizer != "" && cfg.BuiltinTokenizer != "":
		errs = append(errs, sdk.Errorf("builtin_tokenizer", "Two tokenizers", "set tokenizer or builtin_tokenizer, not both"))
	case cfg.BuiltinTokenizer != "" && cfg.BuiltinTokenizer != "bytes":
		errs = append(errs, sdk.Errorf("builtin_tokenizer", "Unknown built-in tokenizer", `%q: the built-in tokenizer is "bytes"`, cfg.BuiltinTokenizer))
	}
	whole := func(v float64) bool { return v == math.Trunc(v) && v >= 1 && v <= 1<<30 }
	if !whole(cfg.MaxLength) {
		errs = append(errs, sdk.Errorf("max_length", "Invalid max_length", "%v: use a positive whole number", cfg.MaxLength))
	}
	if !whole(cfg.MaxPromptLength) {
		errs = append(errs, sdk.Errorf("max_prompt_length", "Invalid max_prompt_length", "%v: use a positive whole number", cfg.MaxPromptLength))
	} else if cfg.MaxPromptLength >= cfg.MaxLength {
		errs = append(errs, sdk.Errorf("max_prompt_length", "max_prompt_length too large", "max_prompt_length (%v) must be less than max_length (%v) to leave room for the completion", cfg.MaxPromptLength, cfg.MaxLength))
	}
	if cfg.Truncation != "keep_end" && cfg.Truncation != "keep_start" {
		errs = append(errs, sdk.Errorf("truncation", "Invalid truncation", "%q: use keep_end or keep_start", cfg.Truncation))
	}
	if cfg.OnOverflow != "truncate" && cfg.OnOverflow != "drop" {
		errs = append(errs, sdk.Errorf("on_overflow", "Invalid on_overflow", "%q: use truncate or drop", cfg.OnOverflow))
	}
	if cfg.OnError != "fail" && cfg.OnError != "skip" {
		errs = append(errs, sdk.Errorf("on_error", "Invalid on_error", "%q: use fail or skip", cfg.OnError))
	}
	t, err := ParseTemplate(cfg.ChatTemplate)
	if err != nil {
		errs = append(errs, sdk.Errorf("chat_template", "Invalid chat template", "%v", err))
	}
	cfg.template = t
	if len(errs) > 0 {
		return nil, errs
	}
	return &cfg, nil
}

// Configure checks the configuration.
func (*Stage) Configure(c sdk.Config) error {
	_, err := parseConfig(c)
	return err
}

// loadTokenizer opens the configured tokenizer.
func loadTokenizer(cfg *config) (tokenizer.Tokenizer, error) {
	if cfg.BuiltinTokenizer == "bytes" {
		return tokenizer.NewBytes(), nil
	}
	p := cfg.Tokenizer
	if filepath.Base(p) == "bytes" {
		// The host resolves path attributes against the pipeline's
		// directory; "bytes" names the built-in tokenizer unless such a
		// file exists.
		if _, err := os.Stat(p); err != nil {
			return tokenizer.NewBytes(), nil
		}
	}
	t, err := tokenizer.Load(p)
	if err != nil {
		return nil, fmt.Errorf("tokenize: %w", err)
	}
	return t, nil
}

// Input kinds.
const (
	kindText = iota
	kindMessages
	kindIDs
	kindDoc // a text dataset: one document per row, chosen-only output
)

// task is one input row.
type task struct {
	row                 int64
	prompt, chosen, rej string
	pm, cm, rm          []Message
	pi, ci, ri          []int64
	weight              float32
	split               string
	null                string // the name of a null column, if any
}

// result is one row's outcome.
type result struct {
	p, c, r []int32
	drop    string // the stat of a dropped row, e.g. "dropped/too_long"
	errStat string // the stat of a bad row, e.g. "error/out_of_vocab"
	msg     string // what happened, for the printed examples and errors
	notes   []note // changes to a kept row
	eosLost int64
}

type note struct{ stat, msg string }

// worker tokenizes rows with fixed settings.
type worker struct {
	tok       tokenizer.Tokenizer
	cfg       *config
	kind      int
	maxLen    int
	maxPrompt int
}

func (w *worker) process(t *task) (res result) {
	if t.null != "" {
		res.errStat, res.msg = "error/null_value", fmt.Sprintf("%s is null", t.null)
		return res
	}
	tok := w.tok
	bos, eos := tok.BOS(), tok.EOS()
	addBOS := tok.AddBOS() && bos >= 0
	var p, c, r []int32
	switch w.kind {
	case kindText:
		if blank(t.chosen) || blank(t.rej) {
			res.drop, res.msg = "dropped/empty_completion", emptyWhich(blank(t.chosen))
			return res
		}
		if addBOS {
			p = append(p, bos)
		}
		p = append(p, tok.Encode(t.prompt)...)
		c = tok.Encode(t.chosen)
		r = tok.Encode(t.rej)
	case kindMessages:
		if blankMsgs(t.cm) || blankMsgs(t.rm) {
			res.drop, res.msg = "dropped/empty_completion", emptyWhich(blankMsgs(t.cm))
			return res
		}
		tmpl := w.cfg.template
		enc := encodeSegs(tok, tmpl.RenderPrompt(t.pm))
		if addBOS && (len(enc) == 0 || enc[0] != bos) {
			p = append(p, bos)
		}
		p = append(p, enc...)
		for len(p) > 1 && p[0] == bos && p[1] == bos { // never a doubled BOS
			p = p[1:]
		}
		c = encodeSegs(tok, tmpl.RenderCompletion(t.cm))
		r = encodeSegs(tok, tmpl.RenderCompletion(t.rm))
	case kindDoc:
		if blank(t.chosen) {
			res.drop, res.msg = "dropped/empty_completion", "text is empty"
			return res
		}
		p = []int32{}
		if addBOS {
			p = append(p, bos)
		}
		c = tok.Encode(t.chosen)
		r = []int32{}
	case kindIDs:
		vocab := int64(tok.VocabSize())
		for _, col := range []struct {
			name string
			ids  []int64
			dst  *[]int32
		}{{"prompt_ids", t.pi, &p}, {"chosen_ids", t.ci, &c}, {"rejected_ids", t.ri, &r}} {
			out := make([]int32, len(col.ids))
			for i, id := range col.ids {
				if id < 0 || id >= vocab {
					res.errStat = "error/out_of_vocab"
					res.msg = fmt.Sprintf("%s[%d] = %d is outside the tokenizer's vocabulary (%d ids)", col.name, i, id, vocab)
					return res
				}
				out[i] = int32(id)
			}
			*col.dst = out
		}
		if len(c) == 0 || len(r) == 0 {
			res.drop, res.msg = "dropped/empty_completion", emptyWhich(len(c) == 0)
			return res
		}
	}
	if w.kind == kindDoc {
		if len(c) == 0 {
			res.drop, res.msg = "dropped/empty_completion", "text is empty after tokenization"
			return res
		}
		if w.cfg.AddEOS && eos >= 0 && c[len(c)-1] != eos {
			c = append(c, eos)
		}
	} else if w.kind != kindIDs {
		if len(c) == 0 || len(r) == 0 {
			res.drop, res.msg = "dropped/empty_completion", emptyWhich(len(c) == 0)+" after tokenization"
			return res
		}
		if w.cfg.AddEOS && eos >= 0 {
			if c[len(c)-1] != eos {
				c = append(c, eos)
			}
			if r[len(r)-1] != eos {
				r = append(r, eos)
			}
		}
	}
	if w.kind != kindDoc && equal32(c, r) {
		res.drop, res.msg = "dropped/identical", "chosen and rejected have the same ids"
		return res
	}
	// Length limits.
	if len(p) > w.maxPrompt {
		if w.cfg.OnOverflow == "drop" {
			res.drop, res.msg = "dropped/too_long", fmt.Sprintf("prompt has %d tokens, max_prompt_length is %d", len(p), w.maxPrompt)
			return res
		}
		n := len(p)
		if w.cfg.Truncation == "keep_start" {
			p = p[:w.maxPrompt:w.maxPrompt]
		} else if p[0] == bos && bos >= 0 {
			kept := make([]int32, 0, w.maxPrompt)
			kept = append(kept, bos)
			p = append(kept, p[n-(w.maxPrompt-1):]...)
		} else {
			p = p[n-w.maxPrompt:]
		}
		res.notes = append(res.notes, note{"truncated/prompt", fmt.Sprintf("prompt cut from %d to %d tokens (%s)", n, w.maxPrompt, w.cfg.Truncation)})
	}
	budget := w.maxLen - len(p)
	if len(c) > budget || len(r) > budget {
		if w.cfg.OnOverflow == "drop" {
			res.drop, res.msg = "dropped/too_long", fmt.Sprintf("prompt %d + completion %d tokens exceed max_length %d", len(p), max(len(c), len(r)), w.maxLen)
			return res
		}
		var cut []string
		for _, x := range []struct {
			name string
			ids  *[]int32
		}{{"chosen", &c}, {"rejected", &r}} {
			if n := len(*x.ids); n > budget {
				if eos >= 0 && (*x.ids)[n-1] == eos {
					res.eosLost++
				}
				*x.ids = (*x.ids)[:budget:budget]
				cut = append(cut, fmt.Sprintf("%s %d", x.name, n))
			}
		}
		res.notes = append(res.notes, note{"truncated/completion", fmt.Sprintf("%s tokens cut to %d (max_length %d - prompt %d)", strings.Join(cut, " and "), budget, w.maxLen, len(p))})
		if w.kind != kindDoc && equal32(c, r) {
			res.drop, res.msg = "dropped/identical", fmt.Sprintf("chosen and rejected are identical after truncation to %d tokens", budget)
			return res
		}
	}
	res.p, res.c, res.r = p, c, r
	return res
}

func blank(s string) bool { return strings.TrimSpace(s) == "" }

func blankMsgs(ms []Message) bool {
	for _, m := range ms {
		if !blank(m.Content) {
			return false
		}
	}
	return true
}

func emptyWhich(chosen bool) string {
	if chosen {
		return "chosen is empty"
	}
	return "rejected is empty"
}

func equal32(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// columns reads the task fields out of an input batch.
type columns struct {
	kind   int
	row    *array.Int64
	text   [3]func(i int) (string, bool)
	msgs   [3]func(i int) ([]Message, bool)
	ids    [3]func(i int) ([]int64, bool)
	weight *array.Float32
	split  func(i int) (string, bool)
	names  [3]string
}

func bindColumns(rec arrow.RecordBatch) (*columns, error) {
	s := rec.Schema()
	col := func(name string) arrow.Array {
		if idx := s.FieldIndices(name); len(idx) > 0 {
			return rec.Column(idx[0])
		}
		return nil
	}
	cs := &columns{}
	row, ok := col("row").(*array.Int64)
	if !ok {
		return nil, fmt.Errorf("tokenize: the input has no int64 row column (schema %v)", s)
	}
	cs.row = row
	if w := col("weight"); w != nil {
		if cs.weight, ok = w.(*array.Float32); !ok {
			return nil, fmt.Errorf("tokenize: weight is %v, not float32", w.DataType())
		}
	}
	if sp := col("split"); sp != nil {
		f, err := stringGetter(sp)
		if err != nil {
			return nil, fmt.Errorf("tokenize: split: %w", err)
		}
		cs.split = f
	}
	if col("chosen_ids") != nil {
		cs.kind = kindIDs
		cs.names = [3]string{"prompt_ids", "chosen_ids", "rejected_ids"}
		for k, name := range cs.names {
			a := col(name)
			if a == nil {
				return nil, fmt.Errorf("tokenize: pre-tokenized input lacks the %s column", name)
			}
			f, err := idsGetter(a)
			if err != nil {
				return nil, fmt.Errorf("tokenize: %s: %w", name, err)
			}
			cs.ids[k] = f
		}
		return cs, nil
	}
	if txt := col("text"); txt != nil && col("prompt") == nil && col("chosen") == nil && col("rejected") == nil {
		f, err := stringGetter(txt)
		if err != nil {
			return nil, fmt.Errorf("tokenize: text is %v: want utf8", txt.DataType())
		}
		cs.kind = kindDoc
		cs.names = [3]string{"text"}
		cs.text[1] = f
		return cs, nil
	}
	cs.names = [3]string{"prompt", "chosen", "rejected"}
	for k, name := range cs.names {
		a := col(name)
		if a == nil {
			return nil, fmt.Errorf("tokenize: the input lacks the %s column (or prompt_ids, chosen_ids and rejected_ids, or a text column alone); its schema is %v", name, s)
		}
		if f, err := stringGetter(a); err == nil {
			if k > 0 && cs.kind != kindText {
				return nil, fmt.Errorf("tokenize: %s is text but prompt is a message list", name)
			}
			cs.text[k] = f
			continue
		}
		f, err := messagesGetter(a)
		if err != nil {
			return nil, fmt.Errorf("tokenize: %s is %v: want utf8 or list<struct<role: utf8, content: utf8>>", name, a.DataType())
		}
		if k == 0 {
			cs.kind = kindMessages
		} else if cs.kind != kindMessages {
			return nil, fmt.Errorf("tokenize: %s is a message list but prompt is text", name)
		}
		cs.msgs[k] = f
	}
	return cs, nil
}

func stringGetter(a arrow.Array) (func(int) (string, bool), error) {
	switch x := a.(type) {
	case *array.String:
		return func(i int) (string, bool) { return x.Value(i), x.IsValid(i) }, nil
	case *array.LargeString:
		return func(i int) (string, bool) { return x.Value(i), x.IsValid(i) }, nil
	case *array.StringView:
		return func(i int) (string, bool) { return x.Value(i), x.IsValid(i) }, nil
	}
	return nil, fmt.Errorf("%v is not a string type", a.DataType())
}

func messagesGetter(a arrow.Array) (func(int) ([]Message, bool), error) {
	l, ok := a.(array.ListLike)
	if !ok {
		return nil, errors.New("not a list")
	}
	st, ok := l.ListValues().(*array.Struct)
	if !ok {
		return nil, errors.New("not a list of structs")
	}
	typ := st.DataType().(*arrow.StructType)
	ri, ok1 := typ.FieldIdx("role")
	ci, ok2 := typ.FieldIdx("content")
	if !ok1 || !ok2 {
		return nil, errors.New("no role and content fields")
	}
	role, err := stringGetter(st.Field(ri))
	if err != nil {
		return nil, err
	}
	content, err := stringGetter(st.Field(ci))
	if err != nil {
		return nil, err
	}
	return func(i int) ([]Message, bool) {
		if l.IsNull(i) {
			return nil, false
		}
		lo, hi := l.ValueOffsets(i)
		ms := make([]Message, 0, hi-lo)
		for j := int(lo); j < int(hi); j++ {
			r, _ := role(j)
			c, _ := content(j)
			ms = append(ms, Message{Role: r, Content: c})
		}
		return ms, true
	}, nil
}

func idsGetter(a arrow.Array) (func(int) ([]int64, bool), error) {
	l, ok := a.(array.ListLike)
	if !ok {
		return nil, fmt.Errorf("%v is not a list of integers", a.DataType())
	}
	var at func(j int) int64
	switch v := l.ListValues().(type) {
	case *array.Int32:
		at = func(j int) int64 { return int64(v.Value(j)) }
	case *array.Int64:
		at = func(j int) int64 { return v.Value(j) }
	case *array.Int16:
		at = func(j int) int64 { return int64(v.Value(j)) }
	case *array.Int8:
		at = func(j int) int64 { return int64(v.Value(j)) }
	case *array.Uint32:
		at = func(j int) int64 { return int64(v.Value(j)) }
	case *array.Uint16:
		at = func(j int) int64 { return int64(v.Value(j)) }
	case *array.Uint8:
		at = func(j int) int64 { return int64(v.Value(j)) }
	case *array.Uint64:
		at = func(j int) int64 {
			x := v.Value(j)
			if x > math.MaxInt64 {
				return -1
			}
			return int64(x)
		}
	default:
		return nil, fmt.Errorf("%v is not a list of integers", a.DataType())
	}
	return func(i int) ([]int64, bool) {
		if l.IsNull(i) {
			return nil, false
		}
		lo, hi := l.ValueOffsets(i)
		out := make([]int64, 0, hi-lo)
		for j := int(lo); j < int(hi); j++ {
			out = append(out, at(j))
		}
		return out, true
	}, nil
}

// tasks extracts the rows of a batch.
func (cs *columns) tasks(n int) []task {
	ts := make([]task, n)
	for i := range ts {
		t := &ts[i]
		t.row = cs.row.Value(i)
		t.weight = 1
		if cs.weight != nil && cs.weight.IsValid(i) {
			t.weight = cs.weight.Value(i)
		}
		t.split = "train"
		if cs.split != nil {
			if s, ok := cs.split(i); ok {
				t.split = s
			}
		}
		ok := [3]bool{}
		switch cs.kind {
		case kindText:
			t.prompt, ok[0] = cs.text[0](i)
			t.chosen, ok[1] = cs.text[1](i)
			t.rej, ok[2] = cs.text[2](i)
		case kindMessages:
			t.pm, ok[0] = cs.msgs[0](i)
			t.cm, ok[1] = cs.msgs[1](i)
			t.rm, ok[2] = cs.msgs[2](i)
		case kindIDs:
			t.pi, ok[0] = cs.ids[0](i)
			t.ci, ok[1] = cs.ids[1](i)
			t.ri, ok[2] = cs.ids[2](i)
		case kindDoc:
			var valid bool
			t.chosen, valid = cs.text[1](i)
			if !valid {
				t.null = "text"
			}
			continue
		}
		for k := range ok {
			if !ok[k] {
				t.null = cs.names[k]
				break
			}
		}
	}
	return ts
}

// parallel runs f(i) for i in [0, n) on all cores.
func parallel(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n/16))
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	const chunk = 16
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= n {
					return
				}
				for i := lo; i < min(lo+chunk, n); i++ {
					f(i)
				}
			}
		}()
	}
	wg.Wait()
}

// Schema is the output schema.
var Schema = arrow.NewSchema([]arrow.Field{
	{Name: "row", Type: arrow.PrimitiveTypes.Int64},
	{Name: "prompt_ids", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
	{Name: "chosen_ids", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
	{Name: "rejected_ids", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
	{Name: "weight", Type: arrow.PrimitiveTypes.Float32},
	{Name: "split", Type: arrow.BinaryTypes.String},
}, nil)

// tally counts outcomes and prints the first rows of each reason.
type tally struct {
	run    *sdk.Run
	counts map[string]int64
}

func (t *tally) add(stat string, row int64, msg string) {
	t.counts[stat]++
	if t.counts[stat] <= showRows {
		t.run.Printf("%s: row %d: %s", stat, row, msg)
	}
}

type quarantined struct {
	Row    int64  `json:"row"`
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// Run tokenizes the input.
func (*Stage) Run(ctx context.Context, run *sdk.Run) error {
	cfg, err := parseConfig(run.Config)
	if err != nil {
		return err
	}
	if run.Input == nil {
		return errors.New("tokenize: no input: set input = stage.load.NAME")
	}
	tok, err := loadTokenizer(cfg)
	if err != nil {
		return err
	}
	tl := &tally{run: run, counts: map[string]int64{}}
	b := array.NewRecordBuilder(memory.DefaultAllocator, Schema)
	defer b.Release()
	rowB := b.Field(0).(*array.Int64Builder)
	idsB := [3]*array.ListBuilder{b.Field(1).(*array.ListBuilder), b.Field(2).(*array.ListBuilder), b.Field(3).(*array.ListBuilder)}
	weightB := b.Field(4).(*array.Float32Builder)
	splitB := b.Field(5).(*array.StringBuilder)
	pending := 0
	flush := func() error {
		rec := b.NewRecordBatch()
		defer rec.Release()
		pending = 0
		return run.Write(rec)
	}
	var (
		quarantine                                     *json.Encoder
		qfile                                          *os.File
		rowsIn, rowsOut, eosLost, nPrompt, nCompletion int64
		written                                        bool
	)
	defer func() {
		if qfile != nil {
			qfile.Close()
		}
	}()
	for run.Input.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec := run.Input.RecordBatch()
		n := int(rec.NumRows())
		if n == 0 {
			continue
		}
		cs, err := bindColumns(rec)
		if err != nil {
			return err
		}
		w := &worker{tok: tok, cfg: cfg, kind: cs.kind, maxLen: int(cfg.MaxLength), maxPrompt: int(cfg.MaxPromptLength)}
		tasks := cs.tasks(n)
		results := make([]result, n)
		parallel(n, func(i int) { results[i] = w.process(&tasks[i]) })
		for i := range results {
			res, t := &results[i], &tasks[i]
			rowsIn++
			switch {
			case res.errStat != "":
				if cfg.OnError != "skip" {
					return fmt.Errorf("tokenize: row %d: %s: fix the data or set on_error = \"skip\"", t.row, res.msg)
				}
				tl.add(res.errStat, t.row, res.msg)
				if run.Dir != "" {
					if quarantine == nil {
						if err := os.MkdirAll(run.Dir, 0o755); err != nil {
							return fmt.Errorf("tokenize: %w", err)
						}
						if qfile, err = os.Create(filepath.Join(run.Dir, "quarantine.jsonl")); err != nil {
							return fmt.Errorf("tokenize: %w", err)
						}
						quarantine = json.NewEncoder(qfile)
					}
					if err := quarantine.Encode(quarantined{Row: t.row, Reason: res.errStat, Error: res.msg}); err != nil {
						return fmt.Errorf("tokenize: writing quarantine.jsonl: %w", err)
					}
				}
				continue
			case res.drop != "":
				tl.add(res.drop, t.row, res.msg)
				continue
			}
			for _, nt := range res.notes {
				tl.add(nt.stat, t.row, nt.msg)
			}
			eosLost += res.eosLost
			rowB.Append(t.row)
			for k, ids := range [3][]int32{res.p, res.c, res.r} {
				idsB[k].Append(true)
				idsB[k].ValueBuilder().(*array.Int32Builder).AppendValues(ids, nil)
			}
			nPrompt += int64(len(res.p))
			nCompletion += int64(len(res.c) + len(res.r))
			weightB.Append(t.weight)
			splitB.Append(t.split)
			rowsOut++
			if pending++; pending >= batchRows {
				if err := flush(); err != nil {
					return err
				}
				written = true
			}
		}
		run.Progress(rowsIn, 0, "rows")
	}
	if err := run.Input.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("tokenize: reading input: %w", err)
	}
	if pending > 0 || !written {
		if err := flush(); err != nil {
			return err
		}
	}
	if qfile != nil {
		if err := qfile.Close(); err != nil {
			return fmt.Errorf("tokenize: closing quarantine.jsonl: %w", err)
		}
		qfile = nil
	}
	if eosLost > 0 {
		tl.counts["truncated/eos_lost"] = eosLost
	}
	run.SetStat("rows_in", rowsIn)
	run.SetStat("rows_out", rowsOut)
	run.SetStat("tokens/prompt", nPrompt)
	run.SetStat("tokens/completion", nCompletion)
	stats := make([]string, 0, len(tl.counts))
	for stat, n := range tl.counts {
		run.SetStat(stat, n)
		stats = append(stats, fmt.Sprintf("%s %d", stat, n))
	}
	sort.Strings(stats)
	msg := fmt.Sprintf("tokenized %d of %d rows (%d prompt and %d completion tokens)", rowsOut, rowsIn, nPrompt, nCompletion)
	if len(stats) > 0 {
		msg += ": " + strings.Join(stats, ", ")
	}
	run.Printf("%s", msg)
	return nil
}
