// Package judge is the built-in rule judge. It reads the generation samples
// of the evaluate stage (row, prompt, chosen, reference_completion,
// policy_completion), scores each completion by a rule and decides which of
// the reference's and the policy's completions wins. A user's own judge (a
// reward-model service, an LLM judge) is any stage plugin that reads the
// same columns and writes the same verdict table.
//
// Rules:
//   - exact: score 1 when the completion equals the expected answer
//     (chosen) after trimming surrounding white space, else 0;
//   - regex: score 1 when the completion matches pattern, else 0;
//   - length: the score is the completion's length in characters, and the
//     shorter (or longer, by prefer) completion wins.
package judge

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/internal/jsonfile"
)

// Version is the stage version (part of the cache key).
const Version = "1"

// File names in the artifact directory.
const (
	SummaryFile  = "summary.json"
	VerdictsFile = "verdicts.jsonl"
)

// Winners.
const (
	WinPolicy    = "policy"
	WinReference = "reference"
	WinTie       = "tie"
)

// Stage is the judge stage.
type Stage struct{}

// New returns the stage.
func New() sdk.Stage { return &Stage{} }

type options struct {
	Rule    string `json:"rule"`
	Pattern string `json:"pattern"`
	Prefer  string `json:"prefer"`

	re *regexp.Regexp
}

// Spec describes the stage.
func (*Stage) Spec() sdk.Spec {
	return sdk.Spec{
		Type:    "judge",
		Version: Version,
		Description: "Judges the evaluate stage's generation samples by a rule (exact answer, regex or length) and reports the policy's win rate over the reference " +
			"(ties count half) and, for exact and regex, each model's accuracy.",
		Config: []sdk.Attr{
			{Name: "rule", Type: "string", Default: sdk.Def("exact"), Enum: []string{"exact", "regex", "length"},
				Description: "exact: the completion equals the expected answer (chosen) after trimming white space. regex: the completion matches pattern. length: the shorter or longer completion wins (prefer)."},
			{Name: "pattern", Type: "string", Description: "The regular expression (Go RE2 syntax) of the regex rule; it matches anywhere unless anchored with ^ and $."},
			{Name: "prefer", Type: "string", Default: sdk.Def("shorter"), Enum: []string{"shorter", "longer"}, Description: "Which completion the length rule prefers."},
		},
		Input: []sdk.Column{
			{Name: "row", Type: "int64"},
			{Name: "prompt", Type: "utf8", Optional: true},
			{Name: "chosen", Type: "utf8"},
			{Name: "reference_completion", Type: "utf8", Optional: true},
			{Name: "policy_completion", Type: "utf8"},
		},
		Output: []sdk.Column{
			{Name: "row", Type: "int64"},
			{Name: "reference_score", Type: "float64"},
			{Name: "policy_score", Type: "float64"},
			{Name: "winner", Type: "utf8"},
		},
	}
}

func parse(c sdk.Config) (*options, error) {
	var o options
	if err := c.Decode(&o); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	switch o.Rule {
	case "exact":
	case "regex":
		if o.Pattern == "" {
			return nil, sdk.Errorf("pattern", "Missing pattern", "the regex rule needs pattern, e.g. pattern = \"^[a-z]+$\"")
		}
		re, err := regexp.Compile(o.Pattern)
		if err != nil {
			return nil, sdk.Errorf("pattern", "Invalid pattern", "%v", err)
		}
		o.re = re
	case "length":
		if o.Prefer != "shorter" && o.Prefer != "longer" {
			return nil, sdk.Errorf("prefer", "Invalid prefer", "%q: use \"shorter\" or \"longer\"", o.Prefer)
		}
	default:
		return nil, sdk.Errorf("rule", "Unknown rule", "%q: use exact, regex or length", o.Rule)
	}
	return &o, nil
}

// Configure checks the configuration.
func (*Stage) Configure(c sdk.Config) error {
	_, err := parse(c)
	return err
}

// Sample is one input row.
type Sample struct {
	Row       int64
	Prompt    string
	Chosen    string
	Reference *string // nil when the evaluate stage had no reference model
	Policy    string
}

// Verdict is one output row.
type Verdict struct {
	Row            int64    `json:"row"`
	Prompt         string   `json:"prompt"`
	Chosen         string   `json:"chosen"`
	Reference      *string  `json:"reference_completion"`
	Policy         string   `json:"policy_completion"`
	ReferenceScore *float64 `json:"reference_score"`
	PolicyScore    float64  `json:"policy_score"`
	Winner         string   `json:"winner,omitempty"`
}

// score scores one completion.
func (o *options) score(completion, answer string) float64 {
	switch o.Rule {
	case "exact":
		if strings.TrimSpace(completion) == strings.TrimSpace(answer) {
			return 1
		}
		return 0
	case "regex":
		if o.re.MatchString(completion) {
			return 1
		}
		return 0
	default:
		return float64(utf8.RuneCountInString(completion))
	}
}

// Judge decides one sample.
func (o *options) Judge(s Sample) Verdict {
	v := Verdict{Row: s.Row, Prompt: s.Prompt, Chosen: s.Chosen, Reference: s.Reference, Policy: s.Policy}
	v.PolicyScore = o.score(s.Policy, s.Chosen)
	if s.Reference == nil {
		return v
	}
	rs := o.score(*s.Reference, s.Chosen)
	v.ReferenceScore = &rs
	better := func(a, b float64) bool { // a beats b
		if o.Rule == "length" && o.Prefer == "shorter" {
			return a < b
		}
		return a > b
	}
	switch {
	case better(v.PolicyScore, rs):
		v.Winner = WinPolicy
	case better(rs, v.PolicyScore):
		v.Winner = WinReference
	default:
		v.Winner = WinTie
	}
	return v
}

// Summary is summary.json.
type Summary struct {
	Rule               string   `json:"rule"`
	Samples            int      `json:"samples"`
	Compared           int      `json:"compared"`
	Wins               int      `json:"wins"`
	Losses             int      `json:"losses"`
	Ties               int      `json:"ties"`
	WinRate            *float64 `json:"win_rate"`
	PolicyMeanScore    float64  `json:"policy_mean_score"`
	ReferenceMeanScore *float64 `json:"reference_mean_score"`
	PolicyAccuracy     *float64 `json:"policy_accuracy,omitempty"`
	ReferenceAccuracy  *float64 `json:"reference_accuracy,omitempty"`
}

// Summarize aggregates verdicts: the policy's win rate over the reference
// with ties counting half, and, for the exact and regex rules, the fraction
// of completions scoring 1 (accuracy).
func Summarize(rule string, vs []Verdict) Summary {
	s := Summary{Rule: rule, Samples: len(vs)}
	var ps, rs float64
	for _, v := range vs {
		ps += v.PolicyScore
		if v.ReferenceScore == nil {
			continue
		}
		s.Compared++
		rs += *v.ReferenceScore
		switch v.Winner {
		case WinPolicy:
			s.Wins++
		case WinReference:
			s.Losses++
		default:
			s.Ties++
		}
	}
	if len(vs) > 0 {
		s.PolicyMeanScore = ps / float64(len(vs))
	}
	if s.Compared > 0 {
		wr := (float64(s.Wins) + 0.5*float64(s.Ties)) / float64(s.Compared)
		s.WinRate = &wr
		rm := rs / float64(s.Compared)
		s.ReferenceMeanScore = &rm
	}
	if rule == "exact" || rule == "regex" {
		if len(vs) > 0 {
			pa := s.PolicyMeanScore
			s.PolicyAccuracy = &pa
		}
		if s.ReferenceMeanScore != nil {
			ra := *s.ReferenceMeanScore
			s.ReferenceAccuracy = &ra
		}
	}
	return s
}

// readSamples reads the input table.
func readSamples(r array.RecordReader) ([]Sample, error) {
	var out []Sample
	for r.Next() {
		rec := r.RecordBatch()
		col := func(name string, required bool) (*array.String, error) {
			idx := rec.Schema().FieldIndices(name)
			if len(idx) == 0 {
				if required {
					return nil, fmt.Errorf("the input has no %q column: use the evaluate stage's output as input", name)
				}
				return nil, nil
			}
			c, ok := rec.Column(idx[0]).(*array.String)
			if !ok {
				return nil, fmt.Errorf("column %q is %s, want utf8", name, rec.Column(idx[0]).DataType())
			}
			return c, nil
		}
		idx := rec.Schema().FieldIndices("row")
		if len(idx) == 0 {
			return nil, fmt.Errorf("the input has no \"row\" column: use the evaluate stage's output as input")
		}
		rows, ok := rec.Column(idx[0]).(*array.Int64)
		if !ok {
			return nil, fmt.Errorf("column \"row\" is %s, want int64", rec.Column(idx[0]).DataType())
		}
		chosen, err := col("chosen", true)
		if err != nil {
			return nil, err
		}
		policy, err := col("policy_completion", true)
		if err != nil {
			return nil, err
		}
		ref, err := col("reference_completion", false)
		if err != nil {
			return nil, err
		}
		prompt, err := col("prompt", false)
		if err != nil {
			return nil, err
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			s := Sample{Row: rows.Value(i), Chosen: chosen.Value(i), Policy: policy.Value(i)}
			if prompt != nil {
				s.Prompt = prompt.Value(i)
			}
			if ref != nil && ref.IsValid(i) {
				v := ref.Value(i)
				s.Reference = &v
			}
			out = append(out, s)
		}
	}
	return out, r.Err()
}

// VerdictSchema is the schema of the output table.
func VerdictSchema() *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "reference_score", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "policy_score", Type: arrow.PrimitiveTypes.Float64},
		{Name: "winner", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
}

// Run judges the samples.
func (*Stage) Run(ctx context.Context, run *sdk.Run) error {
	o, err := parse(run.Config)
	if err != nil {
		return err
	}
	if run.Input == nil {
		return fmt.Errorf("judge needs an input: the evaluate stage's samples (input = stage.evaluate.NAME)")
	}
	samples, err := readSamples(run.Input)
	if err != nil {
		return err
	}
	vs := make([]Verdict, len(samples))
	for i, s := range samples {
		vs[i] = o.Judge(s)
	}
	sum := Summarize(o.Rule, vs)
	if run.Dir != "" {
		if err := os.MkdirAll(run.Dir, 0o755); err != nil {
			return err
		}
		if err := jsonfile.Write(filepath.Join(run.Dir, SummaryFile), sum); err != nil {
			return err
		}
		if err := writeVerdicts(filepath.Join(run.Dir, VerdictsFile), vs); err != nil {
			return err
		}
	}
	switch {
	case sum.WinRate != nil && sum.PolicyAccuracy != nil:
		run.Printf("%s: policy win rate %.3f over %d samples (%d wins, %d ties, %d losses); accuracy reference %.3f, policy %.3f",
			o.Rule, *sum.WinRate, sum.Compared, sum.Wins, sum.Ties, sum.Losses, *sum.ReferenceAccuracy, *sum.PolicyAccuracy)
	case sum.WinRate != nil:
		run.Printf("%s: policy win rate %.3f over %d samples (%d wins, %d ties, %d losses)", o.Rule, *sum.WinRate, sum.Compared, sum.Wins, sum.Ties, sum.Losses)
	case sum.PolicyAccuracy != nil:
		run.Printf("%s: policy accuracy %.3f over %d samples (no reference completions to compare with)", o.Rule, *sum.PolicyAccuracy, sum.Samples)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, VerdictSchema())
	defer b.Release()
	for _, v := range vs {
		b.Field(0).(*array.Int64Builder).Append(v.Row)
		if v.ReferenceScore != nil {
			b.Field(1).(*array.Float64Builder).Append(*v.ReferenceScore)
		} else {
			b.Field(1).(*array.Float64Builder).AppendNull()
		}
		b.Field(2).(*array.Float64Builder).Append(v.PolicyScore)
		if v.Winner != "" {
			b.Field(3).(*array.StringBuilder).Append(v.Winner)
		} else {
			b.Field(3).(*array.StringBuilder).AppendNull()
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := ctx.Err(); err != nil {
		return err
	}
	return run.Write(rec)
}

func writeVerdicts(path string, vs []Verdict) error { return jsonfile.WriteLines(path, vs) }

// ReadVerdicts reads verdicts.jsonl back.
func ReadVerdicts(path string) ([]Verdict, error) { return jsonfile.ReadLines[Verdict](path) }
