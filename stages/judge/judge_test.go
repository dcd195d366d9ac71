package judge

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

func sp(s string) *string { return &s }

func TestRules(t *testing.T) {
	cases := []struct {
		name             string
		cfg              map[string]any
		chosen, ref, pol string
		refScore, pScore float64
		winner           string
	}{
		{"exact both right", map[string]any{"rule": "exact"}, "cba", "cba", " cba\n", 1, 1, WinTie},
		{"exact policy right", map[string]any{"rule": "exact"}, "cba", "abc", "cba", 0, 1, WinPolicy},
		{"exact reference right", map[string]any{"rule": "exact"}, "cba", "cba", "cb", 1, 0, WinReference},
		{"exact both wrong", map[string]any{"rule": "exact"}, "cba", "abc", "bca", 0, 0, WinTie},
		{"exact is case sensitive", map[string]any{"rule": "exact"}, "ABC", "abc", "ABC", 0, 1, WinPolicy},
		{"regex", map[string]any{"rule": "regex", "pattern": `^[0-9]+$`}, "", "12a", "123", 0, 1, WinPolicy},
		{"regex unanchored", map[string]any{"rule": "regex", "pattern": `sorry`}, "", "I am sorry", "ok", 1, 0, WinReference},
		{"length shorter", map[string]any{"rule": "length"}, "", "héllo", "hi", 5, 2, WinPolicy},
		{"length longer", map[string]any{"rule": "length", "prefer": "longer"}, "", "héllo", "hi", 5, 2, WinReference},
		{"length tie", map[string]any{"rule": "length", "prefer": "longer"}, "", "ab", "cd", 2, 2, WinTie},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := sdk.NewConfig(New().Spec(), mustJSON(c.cfg))
			if err != nil {
				t.Fatal(err)
			}
			o, err := parse(cfg)
			if err != nil {
				t.Fatal(err)
			}
			v := o.Judge(Sample{Row: 1, Chosen: c.chosen, Reference: sp(c.ref), Policy: c.pol})
			if v.ReferenceScore == nil || *v.ReferenceScore != c.refScore || v.PolicyScore != c.pScore || v.Winner != c.winner {
				t.Fatalf("got ref %v policy %v winner %q; want %v %v %q", deref(v.ReferenceScore), v.PolicyScore, v.Winner, c.refScore, c.pScore, c.winner)
			}
		})
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func sampleRecord(ss []Sample) arrow.RecordBatch {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "prompt", Type: arrow.BinaryTypes.String},
		{Name: "chosen", Type: arrow.BinaryTypes.String},
		{Name: "reference_completion", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "policy_completion", Type: arrow.BinaryTypes.String},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, s := range ss {
		b.Field(0).(*array.Int64Builder).Append(s.Row)
		b.Field(1).(*array.StringBuilder).Append(s.Prompt)
		b.Field(2).(*array.StringBuilder).Append(s.Chosen)
		if s.Reference != nil {
			b.Field(3).(*array.StringBuilder).Append(*s.Reference)
		} else {
			b.Field(3).(*array.StringBuilder).AppendNull()
		}
		b.Field(4).(*array.StringBuilder).Append(s.Policy)
	}
	return b.NewRecordBatch()
}

func TestWinRateWithTies(t *testing.T) {
	// 2 policy wins, 1 loss, 2 ties (one both right, one both wrong)
	ss := []Sample{
		{Row: 1, Prompt: "rev ab=", Chosen: "ba", Reference: sp("ab"), Policy: "ba"},
		{Row: 2, Prompt: "rev cd=", Chosen: "dc", Reference: sp("cd"), Policy: "dc"},
		{Row: 3, Prompt: "rev ef=", Chosen: "fe", Reference: sp("fe"), Policy: "ef"},
		{Row: 4, Prompt: "rev gh=", Chosen: "hg", Reference: sp("hg"), Policy: "hg"},
		{Row: 5, Prompt: "rev ij=", Chosen: "ji", Reference: sp("ij"), Policy: "jj"},
	}
	in := sampleRecord(ss)
	defer in.Release()
	dir := t.TempDir()
	res, err := sdk.RunLocal(context.Background(), New(), map[string]any{"rule": "exact"},
		sdk.LocalOptions{Input: []arrow.RecordBatch{in}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	var sum Summary
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Wins != 2 || sum.Losses != 1 || sum.Ties != 2 || sum.Compared != 5 {
		t.Fatalf("summary %+v", sum)
	}
	if want := (2 + 0.5*2) / 5.0; sum.WinRate == nil || math.Abs(*sum.WinRate-want) > 1e-12 {
		t.Fatalf("win rate %v, want %v", deref(sum.WinRate), want)
	}
	if sum.PolicyAccuracy == nil || *sum.PolicyAccuracy != 3.0/5 || sum.ReferenceAccuracy == nil || *sum.ReferenceAccuracy != 2.0/5 {
		t.Fatalf("accuracies %v %v", deref(sum.PolicyAccuracy), deref(sum.ReferenceAccuracy))
	}
	rec := res.Output[0]
	if !rec.Schema().Equal(VerdictSchema()) || rec.NumRows() != 5 {
		t.Fatalf("output %v rows %d", rec.Schema(), rec.NumRows())
	}
	winners := rec.Column(3).(*array.String)
	for i, want := range []string{WinPolicy, WinPolicy, WinReference, WinTie, WinTie} {
		if winners.Value(i) != want {
			t.Errorf("row %d winner %q, want %q", i+1, winners.Value(i), want)
		}
	}
	vs, err := ReadVerdicts(filepath.Join(dir, VerdictsFile))
	if err != nil || len(vs) != 5 || vs[2].Winner != WinReference || *vs[0].Reference != "ab" {
		t.Fatalf("verdicts.jsonl: %v %+v", err, vs)
	}
}

func TestWithoutReference(t *testing.T) {
	in := sampleRecord([]Sample{{Row: 1, Chosen: "x", Policy: "x"}, {Row: 2, Chosen: "y", Policy: "z"}})
	defer in.Release()
	dir := t.TempDir()
	res, err := sdk.RunLocal(context.Background(), New(), nil, sdk.LocalOptions{Input: []arrow.RecordBatch{in}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	b, _ := os.ReadFile(filepath.Join(dir, SummaryFile))
	var sum Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.WinRate != nil || sum.ReferenceAccuracy != nil || sum.PolicyAccuracy == nil || *sum.PolicyAccuracy != 0.5 {
		t.Fatalf("summary %s", b)
	}
	if res.Output[0].Column(3).NullN() != 2 || res.Output[0].Column(1).NullN() != 2 {
		t.Fatal("want null winners and reference scores")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []map[string]any{
		{"rule": "nope"},
		{"rule": "regex"},
		{"rule": "regex", "pattern": "("},
		{"rule": "length", "prefer": "middle"},
	} {
		c, _ := sdk.NewConfig(New().Spec(), mustJSON(cfg))
		if err := New().(sdk.Configurer).Configure(c); err == nil {
			t.Errorf("%v: no error", cfg)
		}
	}
}
