// Package generate is the generate stage: a synthetic preference task
// (string reversal, sorting, addition, upper-casing) whose chosen answer is
// correct and whose rejected answer is a plausible wrong one made by a
// systematic error, so that what DPO learns on the train split carries over
// to held-out prompts. Its output has the shape of the load stage's.
package generate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

// Version is the stage version; bump it when the rows for a configuration
// change.
const Version = "1"

// Stage is the generate stage.
type Stage struct{}

// New returns the stage.
func New() sdk.Stage { return &Stage{} }

type options struct {
	Task               string   `json:"task"`
	N                  float64  `json:"n"`
	Seed               float64  `json:"seed"`
	EvalFraction       float64  `json:"eval_fraction"`
	MinLen             int      `json:"min_len"`
	MaxLen             int      `json:"max_len"`
	Digits             int      `json:"digits"`
	Alphabet           string   `json:"alphabet"`
	SFTCorrectFraction *float64 `json:"sft_correct_fraction"`
}

// Spec describes the stage.
func (*Stage) Spec() sdk.Spec {
	var desc []string
	for _, t := range tasks {
		desc = append(desc, t.name+": "+t.description)
	}
	return sdk.Spec{
		Type:    "generate",
		Version: Version,
		Description: "Makes a synthetic preference task with a correct chosen answer and a systematically wrong rejected one, " +
			"in the load stage's output shape, with a seeded train/eval split and no prompt shared between the splits.",
		Config: []sdk.Attr{
			{Name: "task", Type: "string", Default: sdk.Def("reverse"), Enum: TaskNames(),
				Description: "The task. " + strings.Join(desc, " ")},
			{Name: "n", Type: "number", Default: sdk.Def(1000), Description: "Number of rows (distinct prompts)."},
			{Name: "seed", Type: "number", Default: sdk.Def(1), Description: "Seed of the problems and of the split."},
			{Name: "eval_fraction", Type: "number", Default: sdk.Def(0.1),
				Description: "Fraction of rows (rounded to the nearest row) whose split is eval; the rest are train."},
			{Name: "min_len", Type: "number", Default: sdk.Def(3), Description: "Shortest word (reverse, sort, upper)."},
			{Name: "max_len", Type: "number", Default: sdk.Def(6), Description: "Longest word (reverse, sort, upper)."},
			{Name: "digits", Type: "number", Default: sdk.Def(2), Description: "Largest number of digits of an operand (add)."},
			{Name: "alphabet", Type: "string", Default: sdk.Def("abcdefghijklmnopqrstuvwxyz"),
				Description: "Distinct letters the words are drawn from (reverse, sort, upper); a word never repeats a letter."},
			{Name: "sft_correct_fraction", Type: "number",
				Description: "Unset for a preference table. When set, the table is an SFT mix instead, for an sft stage with target = \"chosen\": " +
					"chosen holds the correct answer on this fraction of rows and the wrong one on the others (rejected holds the other answer)."},
		},
		Output: []sdk.Column{
			{Name: "row", Type: "int64"},
			{Name: "prompt", Type: "utf8"}, {Name: "chosen", Type: "utf8"}, {Name: "rejected", Type: "utf8"},
			{Name: "weight", Type: "float32"},
			{Name: "split", Type: "utf8"},
		},
	}
}

func parse(c sdk.Config) (*options, error) {
	var o options
	if err := c.Decode(&o); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	var errs sdk.Errors
	if _, ok := lookupTask(o.Task); !ok {
		errs = append(errs, sdk.Errorf("task", "Unknown task", "%q: use one of %s", o.Task, strings.Join(TaskNames(), ", ")))
	}
	if o.N < 1 || o.N != math.Trunc(o.N) || o.N > 1e7 {
		errs = append(errs, sdk.Errorf("n", "Invalid n", "%v: use a whole number between 1 and 10000000", o.N))
	}
	if o.Seed < 0 || o.Seed != math.Trunc(o.Seed) {
		errs = append(errs, sdk.Errorf("seed", "Invalid seed", "%v: use a non-negative whole number", o.Seed))
	}
	if !(o.EvalFraction >= 0 && o.EvalFraction <= 1) {
		errs = append(errs, sdk.Errorf("eval_fraction", "Invalid eval_fraction", "%v: use a number in [0, 1]", o.EvalFraction))
	}
	if o.MinLen < 2 || o.MaxLen < o.MinLen || o.MaxLen > 64 {
		errs = append(errs, sdk.Errorf("max_len", "Invalid lengths", "min_len %d, max_len %d: need 2 <= min_len <= max_len <= 64", o.MinLen, o.MaxLen))
	}
	if o.Digits < 1 || o.Digits > 9 {
		errs = append(errs, sdk.Errorf("digits", "Invalid digits", "%d: use 1 to 9", o.Digits))
	}
	if len(o.Alphabet) < 2 || len(o.Alphabet) < o.MaxLen {
		errs = append(errs, sdk.Errorf("alphabet", "Alphabet too small", "words are made of distinct letters: give at least max(2, max_len) distinct letters"))
	}
	seen := map[byte]bool{}
	for i := 0; i < len(o.Alphabet); i++ {
		if seen[o.Alphabet[i]] {
			errs = append(errs, sdk.Errorf("alphabet", "Repeated letter", "%q appears twice in alphabet", o.Alphabet[i:i+1]))
			break
		}
		seen[o.Alphabet[i]] = true
	}
	for i := 0; i < len(o.Alphabet); i++ {
		if c := o.Alphabet[i]; c < 0x21 || c > 0x7e || c == '=' {
			errs = append(errs, sdk.Errorf("alphabet", "Invalid letter", "%q: use printable ASCII letters other than space and '='", o.Alphabet[i:i+1]))
			break
		}
	}
	if f := o.SFTCorrectFraction; f != nil && !(*f >= 0 && *f <= 1) {
		errs = append(errs, sdk.Errorf("sft_correct_fraction", "Invalid sft_correct_fraction", "%v: use a number in [0, 1]", *f))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &o, nil
}

// Configure checks the configuration.
func (*Stage) Configure(c sdk.Config) error {
	_, err := parse(c)
	return err
}

// Row is one generated row.
type Row struct {
	Row                      int64
	Prompt, Chosen, Rejected string
	Split                    string
}

// generate makes the rows for a configuration.
func generate(o *options) ([]Row, error) {
	t, _ := lookupTask(o.Task)
	n := int(o.N)
	seed := uint64(o.Seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed0f9e7e4a7e01))
	seen := make(map[string]bool, n)
	rows := make([]Row, 0, n)
	misses := 0
	for len(rows) < n {
		ex := t.make(rng, o)
		if seen[ex.Prompt] {
			misses++
			if misses > 100*n+1000 {
				return nil, fmt.Errorf("task %s has fewer than %d distinct prompts with these settings (got %d); lower n or widen min_len/max_len/digits/alphabet", o.Task, n, len(rows))
			}
			continue
		}
		seen[ex.Prompt] = true
		rows = append(rows, Row{Row: int64(len(rows)), Prompt: ex.Prompt, Chosen: ex.Correct, Rejected: ex.Wrong, Split: "train"})
	}
	// The split: a seeded permutation; its first round(n·eval_fraction)
	// rows are eval.
	split := rand.New(rand.NewPCG(seed, 0x59117e7a1f00d5ed))
	perm := split.Perm(n)
	nEval := int(math.Round(float64(n) * o.EvalFraction))
	for _, i := range perm[:nEval] {
		rows[i].Split = "eval"
	}
	if f := o.SFTCorrectFraction; f != nil {
		mix := rand.New(rand.NewPCG(seed, 0x3f7c0ffee1234567))
		perm := mix.Perm(n)
		nCorrect := int(math.Round(float64(n) * *f))
		for k, i := range perm {
			if k >= nCorrect {
				rows[i].Chosen, rows[i].Rejected = rows[i].Rejected, rows[i].Chosen
			}
		}
	}
	return rows, nil
}

// Schema is the output schema.
func Schema() *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "prompt", Type: arrow.BinaryTypes.String},
		{Name: "chosen", Type: arrow.BinaryTypes.String},
		{Name: "rejected", Type: arrow.BinaryTypes.String},
		{Name: "weight", Type: arrow.PrimitiveTypes.Float32},
		{Name: "split", Type: arrow.BinaryTypes.String},
	}, nil)
}

func toRecord(rows []Row) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, Schema())
	defer b.Release()
	for _, r := range rows {
		b.Field(0).(*array.Int64Builder).Append(r.Row)
		b.Field(1).(*array.StringBuilder).Append(r.Prompt)
		b.Field(2).(*array.StringBuilder).Append(r.Chosen)
		b.Field(3).(*array.StringBuilder).Append(r.Rejected)
		b.Field(4).(*array.Float32Builder).Append(1)
		b.Field(5).(*array.StringBuilder).Append(r.Split)
	}
	return b.NewRecordBatch()
}

// Run writes the table.
func (*Stage) Run(ctx context.Context, run *sdk.Run) error {
	o, err := parse(run.Config)
	if err != nil {
		return err
	}
	rows, err := generate(o)
	if err != nil {
		return err
	}
	const batch = 4096
	for lo := 0; lo < len(rows); lo += batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec := toRecord(rows[lo:min(lo+batch, len(rows))])
		err := run.Write(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	nEval := 0
	for _, r := range rows {
		if r.Split == "eval" {
			nEval++
		}
	}
	run.SetStat("rows_train", int64(len(rows)-nEval))
	run.SetStat("rows_eval", int64(nEval))
	run.Printf("%s: %d rows (%d train, %d eval), e.g. %q -> chosen %q, rejected %q",
		o.Task, len(rows), len(rows)-nEval, nEval, rows[0].Prompt, rows[0].Chosen, rows[0].Rejected)
	return nil
}
