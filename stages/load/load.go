// Package load is the "load" stage: it reads preference data (JSON Lines,
// JSON arrays, Parquet, Arrow IPC or CSV files, each optionally gzipped, or
// a directory of such shards such as a Hugging Face dataset) and writes it as
// Arrow batches of at most 4096 rows with the columns
//
//	row     int64   the source row number (below)
//	prompt  chosen  rejected
//	        utf8 for explicit and implicit prompts,
//	        list<struct<role: utf8, content: utf8>> for conversational data,
//	        or, named prompt_ids, chosen_ids and rejected_ids, list<int32>
//	        for pre-tokenized data
//	weight  float32 (1 when the source has none)
//	split   utf8    "train" or "eval"
//
// # Row numbers
//
// row is the 1-based line number for JSON Lines (blank lines count as lines
// but are not rows), and the 0-based record index for every other format
// (JSON array element, Parquet/Arrow row, CSV record after the header). When
// path is a directory, its files are read in sorted path order and numbered
// as if they were concatenated: each file's numbers are offset by the lines
// (JSON Lines) or records of the files before it. Errors name the file and
// the number within it.
//
// # Prompt formats
//
//   - explicit: prompt, chosen and rejected strings.
//   - implicit: chosen and rejected are whole transcripts sharing a prefix.
//     When the shared prefix contains "\n\nAssistant:" (HH-RLHF) the prompt
//     is the prefix up to and including the last one, and the completions
//     are the rest (" I'm sorry..."). Otherwise the prompt is the longest
//     common prefix cut at the start of its last run of white space, so that
//     completions begin with that white space.
//   - conversational: message lists of {role, content}, ShareGPT {from,
//     value} (human, gpt, system become user, assistant, system), or OpenAI
//     preference rows {"input": {"messages": [...]}, "preferred_output":
//     [...], "non_preferred_output": [...]}. A completion may also be a single
//     message object or a plain string (one assistant message). Without a
//     prompt, the prompt is the leading messages chosen and rejected share
//     (all but the last).
//   - tokenized: prompt_ids, chosen_ids and rejected_ids integer lists
//     (checked against vocab_size when it is set).
//   - text: plain documents, not pairs, for the sft stage to warm a model
//     up on: a text string per row (columns = { text = "content" } maps
//     it). The output columns are then row (int64), text (utf8), weight
//     (float32) and split (utf8), with the same row numbers, weights and
//     split rules as for pairs.
//
// With prompt_format = "auto" the format is taken from the first good row:
// a mapped text column, or a text field without chosen and rejected, means
// text; *_ids columns mean tokenized; list or object completions, or a list
// prompt, mean conversational; string completions with a prompt mean
// explicit, without one implicit.
//
// # Bad rows
//
// Invalid JSON or CSV, invalid UTF-8, a missing field or one of the wrong
// type, an empty completion or text, identical chosen and rejected, a bad
// weight or bad token ids stop the stage with an error naming the file and the line or
// row, unless on_error = "skip": then the row is written to quarantine.jsonl
// in the stage's directory (row, file, place, reason, error and the raw
// text), counted in the stat "skipped/<reason>", and the first 3 rows of each
// reason are printed. The stats rows_in and rows_out always account for
// every row.
package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

// Version is the stage version (part of the cache key).
const Version = "1"

// New returns the load stage.
func New() sdk.Stage { return &Stage{} }

// Stage is the load stage.
type Stage struct{}

// Spec describes the stage.
func (*Stage) Spec() sdk.Spec {
	return sdk.Spec{
		Type:    "load",
		Version: Version,
		Description: "Reads preference pairs, or plain text documents (prompt_format = \"text\": columns row, text, weight, split) for sft, from JSON Lines, JSON, Parquet, Arrow IPC or CSV files (optionally gzipped) or a dataset directory. " +
			"row is the 1-based line number for JSON Lines and the 0-based record index for other formats (files of a directory are numbered as if concatenated in sorted order).",
		Config: []sdk.Attr{
			{Name: "path", Type: "string", Required: true, Path: true,
				Description: "A data file or a directory of shards (e.g. a Hugging Face dataset with data/*.parquet)."},
			{Name: "format", Type: "string", Default: sdk.Def("auto"), Enum: []string{"auto", "jsonl", "json", "parquet", "arrow", "csv"},
				Description: "The file format; auto goes by extension (.jsonl .json .parquet .arrow .csv, optionally .gz). A .json file starting with an object is read as JSON Lines."},
			{Name: "columns", Type: "map(string)",
				Description: `Source column names for the keys prompt, chosen, rejected, weight, prompt_ids, chosen_ids and rejected_ids ("messages" is an alias of prompt), e.g. { prompt = "question", chosen = "response_j", rejected = "response_k" }, or text for a text dataset ({ text = "content" }). A dotted name ("input.messages") reaches into objects.`},
			{Name: "prompt_format", Type: "string", Default: sdk.Def("auto"), Enum: []string{"auto", "explicit", "implicit", "conversational", "tokenized", "text"},
				Description: "How prompts are given: explicit strings, implicit in shared transcripts, conversational message lists or tokenized id lists; or text: plain documents (no pairs) for the sft stage. auto decides from the first row (a text field without chosen and rejected, or a mapped text column, means text)."},
			{Name: "split", Type: "any",
				Description: `Train/eval split: { eval = 0.1, seed = 7 } sends each row to eval by a hash of (seed, row), stable when rows are appended; { by = "file" } takes it from file names (train -> train; test, validation, valid, dev, eval -> eval). Without it every row is train.`},
			{Name: "on_error", Type: "string", Default: sdk.Def("fail"), Enum: []string{"fail", "skip"},
				Description: "fail stops at the first bad row; skip counts it, writes it to quarantine.jsonl and goes on."},
			{Name: "limit", Type: "number", Default: sdk.Def(0),
				Description: "Stop after this many output rows (0: all)."},
			{Name: "vocab_size", Type: "number", Default: sdk.Def(0),
				Description: "For tokenized data: ids must be below it (0: not checked here; tokenize checks against its tokenizer)."},
		},
		Output: []sdk.Column{
			{Name: "row", Type: "int64"},
			{Name: "prompt", Optional: true}, {Name: "chosen", Optional: true}, {Name: "rejected", Optional: true},
			{Name: "text", Type: "utf8", Optional: true},
			{Name: "weight", Type: "float32"},
			{Name: "split", Type: "utf8"},
		},
	}
}

type config struct {
	Path         string            `json:"path"`
	Format       string            `json:"format"`
	Columns      map[string]string `json:"columns"`
	PromptFormat string            `json:"prompt_format"`
	Split        json.RawMessage   `json:"split"`
	OnError      string            `json:"on_error"`
	Limit        float64           `json:"limit"`
	VocabSize    float64           `json:"vocab_size"`

	split splitCfg
}

type splitCfg struct {
	eval   float64
	seed   uint64
	byFile bool
}

func parseConfig(c sdk.Config) (*config, error) {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	var errs sdk.Errors
	if cfg.Path == "" {
		errs = append(errs, sdk.Errorf("path", "Missing path", "set path to a data file or directory"))
	}
	if !oneOf(cfg.Format, "auto", fmtJSONL, fmtJSON, fmtParquet, fmtArrow, fmtCSV) {
		errs = append(errs, sdk.Errorf("format", "Unknown format", "%q: use auto, jsonl, json, parquet, arrow or csv", cfg.Format))
	}
	if !oneOf(cfg.PromptFormat, pfAuto, pfExplicit, pfImplicit, pfConversational, pfTokenized, pfText) {
		errs = append(errs, sdk.Errorf("prompt_format", "Unknown prompt format", "%q: use auto, explicit, implicit, conversational, tokenized or text", cfg.PromptFormat))
	}
	if !oneOf(cfg.OnError, "fail", "skip") {
		errs = append(errs, sdk.Errorf("on_error", "Invalid on_error", "%q: use fail or skip", cfg.OnError))
	}
	if cfg.Limit < 0 || cfg.Limit != math.Trunc(cfg.Limit) {
		errs = append(errs, sdk.Errorf("limit", "Invalid limit", "%v: use a whole number, 0 for all rows", cfg.Limit))
	}
	if cfg.VocabSize < 0 || cfg.VocabSize != math.Trunc(cfg.VocabSize) || cfg.VocabSize > math.MaxInt32 {
		errs = append(errs, sdk.Errorf("vocab_size", "Invalid vocab_size", "%v: use a positive whole number, or 0 for no check", cfg.VocabSize))
	}
	keys := make([]string, 0, len(cfg.Columns))
	for k := range cfg.Columns {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !oneOf(k, columnKeys...) {
			errs = append(errs, sdk.Errorf("columns", "Unknown column key", "%q: the keys are %s", k, strings.Join(columnKeys, ", ")))
		} else if cfg.Columns[k] == "" {
			errs = append(errs, sdk.Errorf("columns", "Empty column name", "columns.%s is empty", k))
		}
	}
	if _, p := cfg.Columns["prompt"]; p {
		if _, m := cfg.Columns["messages"]; m {
			errs = append(errs, sdk.Errorf("columns", "Conflicting columns", "set prompt or messages, not both"))
		}
	}
	var pairMapped []string
	for _, k := range pairKeys {
		if _, ok := cfg.Columns[k]; ok {
			pairMapped = append(pairMapped, k)
		}
	}
	_, textMapped := cfg.Columns["text"]
	switch {
	case textMapped && len(pairMapped) > 0:
		errs = append(errs, sdk.Errorf("columns", "Conflicting columns", "text (a text dataset) cannot be mapped together with %s (preference pairs); map one or the other", strings.Join(pairMapped, ", ")))
	case cfg.PromptFormat == pfText && len(pairMapped) > 0:
		errs = append(errs, sdk.Errorf("columns", "Columns do not fit the prompt format", `prompt_format = "text" reads only text (and weight); remove %s, or map text = "..."`, strings.Join(pairMapped, ", ")))
	case textMapped && cfg.PromptFormat != pfAuto && cfg.PromptFormat != pfText:
		errs = append(errs, sdk.Errorf("columns", "Columns do not fit the prompt format", `text is read only with prompt_format = "text" (or "auto"), not %q`, cfg.PromptFormat))
	}
	if len(cfg.Split) > 0 {
		s, err := parseSplit(cfg.Split)
		if err != nil {
			errs = append(errs, err)
		}
		cfg.split = s
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &cfg, nil
}

func parseSplit(raw json.RawMessage) (splitCfg, *sdk.AttrError) {
	var s splitCfg
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return s, sdk.Errorf("split", "Invalid split", `use { eval = 0.1, seed = 7 } or { by = "file" }`)
	}
	for k, v := range m {
		switch k {
		case "eval":
			f, ok := v.(float64)
			if !ok || f < 0 || f >= 1 {
				return s, sdk.Errorf("split", "Invalid split", "eval must be a fraction in [0, 1), got %s", show(v))
			}
			s.eval = f
		case "seed":
			f, ok := v.(float64)
			if !ok || f != math.Trunc(f) || f < 0 || f > 1<<53 {
				return s, sdk.Errorf("split", "Invalid split", "seed must be a non-negative whole number, got %s", show(v))
			}
			s.seed = uint64(f)
		case "by":
			if v != "file" {
				return s, sdk.Errorf("split", "Invalid split", `by must be "file", got %s`, show(v))
			}
			s.byFile = true
		default:
			return s, sdk.Errorf("split", "Invalid split", "unknown key %q: use eval and seed, or by", k)
		}
	}
	if s.byFile && s.eval > 0 {
		return s, sdk.Errorf("split", "Invalid split", "set eval (with seed) or by, not both")
	}
	return s, nil
}

func oneOf(s string, opts ...string) bool {
	for _, o := range opts {
		if s == o {
			return true
		}
	}
	return false
}

// Configure checks the configuration.
func (*Stage) Configure(c sdk.Config) error {
	_, err := parseConfig(c)
	return err
}

// splitOfFile returns the split named by a shard's path, or "".
func splitOfFile(path string) string {
	parts := strings.FieldsFunc(strings.ToLower(filepath.ToSlash(path)), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
	split := ""
	for _, p := range parts {
		switch p {
		case "train", "training":
			split = "train"
		case "test", "validation", "valid", "val", "dev", "eval", "evaluation":
			split = "eval"
		}
	}
	return split
}

// evalRow reports whether row goes to the eval split: a splitmix64 hash of
// (seed, row) mapped to [0, 1) and compared with the eval fraction.
func evalRow(seed uint64, row int64, frac float64) bool {
	if frac <= 0 {
		return false
	}
	x := seed*0x9e3779b97f4a7c15 ^ uint64(row)
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	x ^= x >> 31
	x += seed
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11)/(1<<53) < frac
}

// skipper handles bad rows in skip mode.
type skipper struct {
	run    *sdk.Run
	counts map[string]int64
	f      *os.File
	enc    *json.Encoder
}

type quarantined struct {
	Row    int64  `json:"row"`
	File   string `json:"file"`
	Line   int64  `json:"line,omitempty"`
	Index  *int64 `json:"index,omitempty"`
	Reason string `json:"reason"`
	Error  string `json:"error"`
	Raw    string `json:"raw"`
}

func (s *skipper) skip(r *srcRow, e *rowError) error {
	s.counts[e.reason]++
	if s.counts[e.reason] <= 3 {
		s.run.Printf("skipped %s: %s", r.where(), e.msg)
	}
	s.run.SetStat("skipped/"+e.reason, s.counts[e.reason])
	if s.run.Dir == "" {
		return nil
	}
	if s.f == nil {
		if err := os.MkdirAll(s.run.Dir, 0o755); err != nil {
			return fmt.Errorf("load: %w", err)
		}
		f, err := os.Create(filepath.Join(s.run.Dir, "quarantine.jsonl"))
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		s.f = f
		s.enc = json.NewEncoder(f)
		s.enc.SetEscapeHTML(false)
	}
	q := quarantined{Row: r.row, File: r.file, Reason: e.reason, Error: e.msg, Raw: string(r.raw)}
	if r.kind == fmtJSONL {
		q.Line = r.local
	} else {
		idx := r.local
		q.Index = &idx
		q.Line = r.line
	}
	if err := s.enc.Encode(q); err != nil {
		return fmt.Errorf("load: writing quarantine.jsonl: %w", err)
	}
	return nil
}

func (s *skipper) close() error {
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

// Run reads the data and writes the pairs.
func (*Stage) Run(ctx context.Context, run *sdk.Run) error {
	cfg, err := parseConfig(run.Config)
	if err != nil {
		return err
	}
	files, format, err := listFiles(cfg.Path, cfg.Format)
	if err != nil {
		return err
	}
	in := newInterp(cfg.Columns, cfg.PromptFormat, int(cfg.VocabSize))
	limit := int64(cfg.Limit)
	sk := &skipper{run: run, counts: map[string]int64{}}
	defer sk.close()

	fileSplit := make([]string, len(files))
	if cfg.split.byFile {
		for i, f := range files {
			rel := f
			if r, err := filepath.Rel(cfg.Path, f); err == nil && r != "." {
				rel = r
			} else {
				rel = filepath.Base(f)
			}
			if fileSplit[i] = splitOfFile(rel); fileSplit[i] == "" {
				return fmt.Errorf("load: split by file: cannot tell the split of %s from its name: name shards train-*, test-* or validation-*, or use split = { eval = 0.1, seed = 7 }", f)
			}
		}
	}

	var (
		bt              *batcher
		rowsIn, rowsOut int64
		nTrain, nEval   int64
		curSplit        string
	)
	defer func() {
		if bt != nil {
			bt.release()
		}
	}()
	write := func() error {
		rec := bt.flush()
		defer rec.Release()
		return run.Write(rec)
	}
	emit := func(r *srcRow) error {
		rowsIn++
		if rowsIn%batchRows == 0 {
			run.Progress(rowsIn, 0, "rows")
		}
		p, rerr := in.convert(r)
		if rerr != nil {
			if cfg.OnError == "skip" {
				return sk.skip(r, rerr)
			}
			return fmt.Errorf("load: %s: %s: fix the row or set on_error = \"skip\"", r.where(), rerr.msg)
		}
		switch {
		case cfg.split.byFile:
			p.split = curSplit
		case evalRow(cfg.split.seed, p.row, cfg.split.eval):
			p.split = "eval"
		default:
			p.split = "train"
		}
		if p.split == "eval" {
			nEval++
		} else {
			nTrain++
		}
		if bt == nil {
			bt = newBatcher(in.format)
		}
		bt.add(p)
		rowsOut++
		if bt.n >= batchRows {
			if err := write(); err != nil {
				return err
			}
		}
		if limit > 0 && rowsOut >= limit {
			return errStop
		}
		return nil
	}
	var offset int64
	for i, f := range files {
		curSplit = fileSplit[i]
		n, err := readFile(ctx, f, f, format, offset, in.needed, emit)
		if errors.Is(err, errStop) {
			break
		}
		if err != nil {
			return err
		}
		offset += n
	}
	if bt == nil {
		f := in.format
		if f == pfAuto {
			f = pfExplicit
		}
		bt = newBatcher(f)
	}
	if bt.n > 0 || rowsOut == 0 {
		if err := write(); err != nil {
			return err
		}
	}
	if err := sk.close(); err != nil {
		return fmt.Errorf("load: closing quarantine.jsonl: %w", err)
	}
	sk.f = nil

	run.SetStat("rows_in", rowsIn)
	run.SetStat("rows_out", rowsOut)
	run.SetStat("split/train", nTrain)
	run.SetStat("split/eval", nEval)
	var skipped int64
	reasons := make([]string, 0, len(sk.counts))
	for reason, n := range sk.counts {
		skipped += n
		reasons = append(reasons, fmt.Sprintf("%s %d", reason, n))
	}
	sort.Strings(reasons)
	format = in.format
	if format == pfAuto {
		format = "no rows"
	}
	msg := fmt.Sprintf("loaded %d of %d rows from %d file(s) (%s; train %d, eval %d)", rowsOut, rowsIn, len(files), format, nTrain, nEval)
	if skipped > 0 {
		msg += fmt.Sprintf("; skipped %d: %s", skipped, strings.Join(reasons, ", "))
		if run.Dir != "" {
			msg += " (see quarantine.jsonl)"
		}
	}
	run.Printf("%s", msg)
	return nil
}
