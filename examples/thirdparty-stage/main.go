// Command dpopipe-stage-length_filter is an example third-party stage plugin
// built on the dpopipe SDK. It drops tokenized preference pairs whose chosen
// and rejected completions differ too much in length, a common source of a
// length bias in DPO, and passes every column of the other rows through.
//
// Build it as dpopipe-stage-length_filter, put it on $DPOPIPE_PLUGIN_PATH
// (or declare it with a plugin block) and use it from HCL:
//
//	stage "length_filter" "balanced" {
//	  input     = stage.tokenize.tok
//	  max_ratio = 2.5
//	}
package main

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

func main() { sdk.Serve(&LengthFilter{}) }

// LengthFilter is the stage.
type LengthFilter struct{}

var (
	_ sdk.Stage      = (*LengthFilter)(nil)
	_ sdk.Configurer = (*LengthFilter)(nil)
)

type config struct {
	MaxRatio  float64 `json:"max_ratio"`
	MinTokens int     `json:"min_tokens"`
}

// Spec describes the stage to the host.
func (*LengthFilter) Spec() sdk.Spec {
	return sdk.Spec{
		Type:        "length_filter",
		Version:     "1.0.0",
		Description: "Drops pairs whose longer completion is more than max_ratio times the shorter one, or whose completions are shorter than min_tokens.",
		Config: []sdk.Attr{
			{Name: "max_ratio", Type: "number", Default: sdk.Def(3.0), Description: "largest allowed ratio of the longer completion's token count to the shorter's"},
			{Name: "min_tokens", Type: "number", Default: sdk.Def(1), Description: "drop pairs with a completion shorter than this"},
		},
		Input: []sdk.Column{
			{Name: "chosen_ids", Type: "list<item: int32, nullable>"},
			{Name: "rejected_ids", Type: "list<item: int32, nullable>"},
		},
		Output: []sdk.Column{{Name: "chosen_ids"}, {Name: "rejected_ids"}},
	}
}

// Configure checks the attributes.
func (*LengthFilter) Configure(c sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	var errs sdk.Errors
	if cfg.MaxRatio < 1 {
		errs = append(errs, sdk.Errorf("max_ratio", "Ratio below 1", "max_ratio is %g; it compares the longer completion with the shorter, so it must be at least 1.", cfg.MaxRatio))
	}
	if cfg.MinTokens < 0 {
		errs = append(errs, sdk.Errorf("min_tokens", "Negative token count", "min_tokens must be 0 or more."))
	}
	return errs.Err()
}

// Run filters the input batch by batch.
func (*LengthFilter) Run(ctx context.Context, run *sdk.Run) error {
	var cfg config
	if err := run.Config.Decode(&cfg); err != nil {
		return err
	}
	var kept, dropped int64
	for run.Input.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec := run.Input.RecordBatch()
		chosen, err := listColumn(rec, "chosen_ids")
		if err != nil {
			return err
		}
		rejected, err := listColumn(rec, "rejected_ids")
		if err != nil {
			return err
		}
		mask := array.NewBooleanBuilder(compute.GetAllocator(ctx))
		for i := 0; i < int(rec.NumRows()); i++ {
			c, r := listLen(chosen, i), listLen(rejected, i)
			short, long := min(c, r), max(c, r)
			keep := short >= cfg.MinTokens && short > 0 && float64(long) <= cfg.MaxRatio*float64(short)
			mask.Append(keep)
			if keep {
				kept++
			} else {
				dropped++
			}
		}
		m := mask.NewBooleanArray()
		mask.Release()
		out, err := compute.FilterRecordBatch(ctx, rec, m, compute.DefaultFilterOptions())
		m.Release()
		if err != nil {
			return err
		}
		err = run.Write(out)
		out.Release()
		if err != nil {
			return err
		}
	}
	if err := run.Input.Err(); err != nil {
		return err
	}
	run.SetStat("dropped/length_ratio", dropped)
	run.Printf("kept %d pairs, dropped %d with a length ratio above %g", kept, dropped, cfg.MaxRatio)
	return nil
}

func listColumn(rec arrow.RecordBatch, name string) (*array.List, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("input has no %q column", name)
	}
	l, ok := rec.Column(idx[0]).(*array.List)
	if !ok {
		return nil, fmt.Errorf("column %q is %s, want a list", name, rec.Column(idx[0]).DataType())
	}
	return l, nil
}

func listLen(l *array.List, i int) int {
	s, e := l.ValueOffsets(i)
	return int(e - s)
}
