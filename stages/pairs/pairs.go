// Package pairs converts between the Arrow tables that flow between the
// built-in stages and Go values: tokenized preference pairs, with or without
// reference log-probs. Column names follow the contract in DESIGN.md.
package pairs

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Column names.
const (
	ColRow              = "row"
	ColPromptIDs        = "prompt_ids"
	ColChosenIDs        = "chosen_ids"
	ColRejectedIDs      = "rejected_ids"
	ColWeight           = "weight"
	ColSplit            = "split"
	ColRefChosen        = "ref_chosen_logp"
	ColRefRejected      = "ref_rejected_logp"
	ColChosenTokens     = "chosen_tokens"
	ColRejectedTokens   = "rejected_tokens"
	ColRefChosenTokLps  = "ref_chosen_token_logps"
	ColRefRejectedTokLp = "ref_rejected_token_logps"
)

// Split names.
const (
	SplitTrain = "train"
	SplitEval  = "eval"
)

// Pair is one tokenized preference pair, optionally with its reference
// log-probs.
type Pair struct {
	Row      int64
	Prompt   []int32
	Chosen   []int32
	Rejected []int32
	Weight   float32
	Split    string

	HasRef                 bool
	RefChosen, RefRejected float64
	ChosenTokens           int32
	RejectedTokens         int32
	RefChosenTokenLogps    []float32
	RefRejectedTokenLogps  []float32
}

// ChosenSeq returns prompt+chosen and the index of the first completion
// token. A pair with an empty prompt scores from the second token on: the
// first token has no context to be predicted from.
func (p *Pair) ChosenSeq() ([]int32, int) { return concat(p.Prompt, p.Chosen) }

// RejectedSeq is ChosenSeq for the rejected completion.
func (p *Pair) RejectedSeq() ([]int32, int) { return concat(p.Prompt, p.Rejected) }

func concat(prompt, completion []int32) ([]int32, int) {
	ids := make([]int32, 0, len(prompt)+len(completion))
	ids = append(ids, prompt...)
	ids = append(ids, completion...)
	start := len(prompt)
	if start < 1 {
		start = 1
	}
	return ids, start
}

// TokenColumns are the columns of a tokenized table, in order.
func TokenFields() []arrow.Field {
	return []arrow.Field{
		{Name: ColRow, Type: arrow.PrimitiveTypes.Int64},
		{Name: ColPromptIDs, Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
		{Name: ColChosenIDs, Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
		{Name: ColRejectedIDs, Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
		{Name: ColWeight, Type: arrow.PrimitiveTypes.Float32},
		{Name: ColSplit, Type: arrow.BinaryTypes.String},
	}
}

// RefFields are the columns the reference stage adds.
func RefFields() []arrow.Field {
	return []arrow.Field{
		{Name: ColRefChosen, Type: arrow.PrimitiveTypes.Float64},
		{Name: ColRefRejected, Type: arrow.PrimitiveTypes.Float64},
		{Name: ColChosenTokens, Type: arrow.PrimitiveTypes.Int32},
		{Name: ColRejectedTokens, Type: arrow.PrimitiveTypes.Int32},
		{Name: ColRefChosenTokLps, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
		{Name: ColRefRejectedTokLp, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
	}
}

// Schema returns the schema of a tokenized table, with the reference
// columns when withRef is set. meta may be nil.
func Schema(withRef bool, meta *arrow.Metadata) *arrow.Schema {
	fields := TokenFields()
	if withRef {
		fields = append(fields, RefFields()...)
	}
	return arrow.NewSchema(fields, meta)
}

// ReadAll reads every pair from r. Reference columns are read when present.
func ReadAll(r array.RecordReader) ([]Pair, error) {
	var out []Pair
	for r.Next() {
		ps, err := FromRecord(r.RecordBatch())
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// FromRecord converts one batch.
func FromRecord(rec arrow.RecordBatch) ([]Pair, error) {
	col := func(name string) arrow.Array {
		idx := rec.Schema().FieldIndices(name)
		if len(idx) == 0 {
			return nil
		}
		return rec.Column(idx[0])
	}
	need := func(name string) (arrow.Array, error) {
		c := col(name)
		if c == nil {
			return nil, fmt.Errorf("input has no %q column (columns: %v)", name, fieldNames(rec.Schema()))
		}
		return c, nil
	}
	var err error
	var rowC, pC, cC, rC arrow.Array
	if rowC, err = need(ColRow); err != nil {
		return nil, err
	}
	if pC, err = need(ColPromptIDs); err != nil {
		return nil, err
	}
	if cC, err = need(ColChosenIDs); err != nil {
		return nil, err
	}
	if rC, err = need(ColRejectedIDs); err != nil {
		return nil, err
	}
	rows, ok := rowC.(*array.Int64)
	if !ok {
		return nil, fmt.Errorf("column %q is %s, want int64", ColRow, rowC.DataType())
	}
	prompts, err := int32Lists(ColPromptIDs, pC)
	if err != nil {
		return nil, err
	}
	chosen, err := int32Lists(ColChosenIDs, cC)
	if err != nil {
		return nil, err
	}
	rejected, err := int32Lists(ColRejectedIDs, rC)
	if err != nil {
		return nil, err
	}
	n := int(rec.NumRows())
	out := make([]Pair, n)
	var weights *array.Float32
	if c := col(ColWeight); c != nil {
		if weights, ok = c.(*array.Float32); !ok {
			return nil, fmt.Errorf("column %q is %s, want float", ColWeight, c.DataType())
		}
	}
	var splits *array.String
	if c := col(ColSplit); c != nil {
		if splits, ok = c.(*array.String); !ok {
			return nil, fmt.Errorf("column %q is %s, want utf8", ColSplit, c.DataType())
		}
	}
	for i := 0; i < n; i++ {
		p := &out[i]
		p.Row = rows.Value(i)
		p.Prompt, p.Chosen, p.Rejected = prompts[i], chosen[i], rejected[i]
		p.Weight = 1
		if weights != nil && weights.IsValid(i) {
			p.Weight = weights.Value(i)
		}
		p.Split = SplitTrain
		if splits != nil && splits.IsValid(i) {
			p.Split = splits.Value(i)
		}
	}
	if col(ColRefChosen) == nil {
		return out, nil
	}
	refC, ok1 := col(ColRefChosen).(*array.Float64)
	refR, ok2 := col(ColRefRejected).(*array.Float64)
	nc, ok3 := col(ColChosenTokens).(*array.Int32)
	nr, ok4 := col(ColRejectedTokens).(*array.Int32)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, fmt.Errorf("reference columns have unexpected types: %v", rec.Schema())
	}
	var tc, tr [][]float32
	if c := col(ColRefChosenTokLps); c != nil {
		if tc, err = float32Lists(ColRefChosenTokLps, c); err != nil {
			return nil, err
		}
	}
	if c := col(ColRefRejectedTokLp); c != nil {
		if tr, err = float32Lists(ColRefRejectedTokLp, c); err != nil {
			return nil, err
		}
	}
	for i := 0; i < n; i++ {
		p := &out[i]
		p.HasRef = true
		p.RefChosen, p.RefRejected = refC.Value(i), refR.Value(i)
		p.ChosenTokens, p.RejectedTokens = nc.Value(i), nr.Value(i)
		if tc != nil {
			p.RefChosenTokenLogps = tc[i]
		}
		if tr != nil {
			p.RefRejectedTokenLogps = tr[i]
		}
	}
	return out, nil
}

func fieldNames(s *arrow.Schema) []string {
	out := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		out[i] = f.Name
	}
	return out
}

func int32Lists(name string, a arrow.Array) ([][]int32, error) {
	l, ok := a.(*array.List)
	if !ok {
		return nil, fmt.Errorf("column %q is %s, want list<int32>", name, a.DataType())
	}
	vals, ok := l.ListValues().(*array.Int32)
	if !ok {
		return nil, fmt.Errorf("column %q is %s, want list<int32>", name, a.DataType())
	}
	out := make([][]int32, l.Len())
	for i := range out {
		if l.IsNull(i) {
			continue
		}
		s, e := l.ValueOffsets(i)
		out[i] = append([]int32(nil), vals.Int32Values()[s:e]...)
	}
	return out, nil
}

func float32Lists(name string, a arrow.Array) ([][]float32, error) {
	l, ok := a.(*array.List)
	if !ok {
		return nil, fmt.Errorf("column %q is %s, want list<float>", name, a.DataType())
	}
	vals, ok := l.ListValues().(*array.Float32)
	if !ok {
		return nil, fmt.Errorf("column %q is %s, want list<float>", name, a.DataType())
	}
	out := make([][]float32, l.Len())
	for i := range out {
		if l.IsNull(i) {
			continue
		}
		s, e := l.ValueOffsets(i)
		out[i] = append([]float32(nil), vals.Float32Values()[s:e]...)
	}
	return out, nil
}

// ToRecord builds a batch from ps, with the reference columns when withRef
// is set. meta may be nil. The caller releases the batch.
func ToRecord(ps []Pair, withRef bool, meta *arrow.Metadata) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, Schema(withRef, meta))
	defer b.Release()
	rows := b.Field(0).(*array.Int64Builder)
	lists := []*array.ListBuilder{b.Field(1).(*array.ListBuilder), b.Field(2).(*array.ListBuilder), b.Field(3).(*array.ListBuilder)}
	weights := b.Field(4).(*array.Float32Builder)
	splits := b.Field(5).(*array.StringBuilder)
	for i := range ps {
		p := &ps[i]
		rows.Append(p.Row)
		for j, ids := range [][]int32{p.Prompt, p.Chosen, p.Rejected} {
			lists[j].Append(true)
			lists[j].ValueBuilder().(*array.Int32Builder).AppendValues(ids, nil)
		}
		weights.Append(p.Weight)
		splits.Append(p.Split)
		if !withRef {
			continue
		}
		b.Field(6).(*array.Float64Builder).Append(p.RefChosen)
		b.Field(7).(*array.Float64Builder).Append(p.RefRejected)
		b.Field(8).(*array.Int32Builder).Append(p.ChosenTokens)
		b.Field(9).(*array.Int32Builder).Append(p.RejectedTokens)
		for j, lps := range [][]float32{p.RefChosenTokenLogps, p.RefRejectedTokenLogps} {
			lb := b.Field(10 + j).(*array.ListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.Float32Builder).AppendValues(lps, nil)
		}
	}
	return b.NewRecordBatch()
}
