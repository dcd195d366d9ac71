package sdk

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

type echo struct{}

func (echo) Spec() Spec {
	return Spec{Type: "echo", Version: "1", Config: []Attr{
		{Name: "n", Type: "number", Default: Def(3)},
		{Name: "name", Type: "string", Required: true},
	}, Input: []Column{{Name: "x", Type: "int64"}}}
}

func (echo) Configure(c Config) error {
	var cfg struct {
		N int `json:"n"`
	}
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.N < 0 {
		return Errors{Errorf("n", "Negative n", "n must be 0 or more; got %d.", cfg.N)}
	}
	return nil
}

func (echo) Run(ctx context.Context, run *Run) error {
	var cfg struct {
		N    int    `json:"n"`
		Name string `json:"name"`
	}
	if err := run.Config.Decode(&cfg); err != nil {
		return err
	}
	for run.Input.Next() {
		if err := run.Write(run.Input.RecordBatch()); err != nil {
			return err
		}
	}
	run.SetStat("n", int64(cfg.N))
	run.SetMeta("name", cfg.Name)
	run.Printf("hello %s", cfg.Name)
	return run.Input.Err()
}

func ints(n int) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil))
	defer b.Release()
	for i := 0; i < n; i++ {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
	}
	return b.NewRecordBatch()
}

func TestRunLocal(t *testing.T) {
	in := ints(10)
	defer in.Release()
	res, err := RunLocal(context.Background(), echo{}, map[string]any{"name": "x"}, LocalOptions{Input: []arrow.RecordBatch{in}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if len(res.Output) != 1 || res.Output[0].NumRows() != 10 {
		t.Fatalf("output %v", res.Output)
	}
	if res.Stats["n"] != 3 || res.Meta["name"] != "x" || len(res.Prints) != 1 || res.Prints[0] != "hello x" {
		t.Fatalf("stats %v meta %v prints %v: the default of n should apply", res.Stats, res.Meta, res.Prints)
	}
}

func TestConfigureErrorsNameTheAttribute(t *testing.T) {
	res := Configure(echo{}, []byte(`{"name":"x","n":-1}`))
	if len(res.Errors) != 1 || res.Errors[0].Attr != "n" || !strings.Contains(res.Errors[0].Detail, "got -1") {
		t.Fatalf("errors %+v", res.Errors)
	}
	_, err := RunLocal(context.Background(), echo{}, `{"name":"x","n":-1}`, LocalOptions{})
	var es Errors
	if !errors.As(err, &es) || es[0].Attr != "n" {
		t.Fatalf("RunLocal error %v", err)
	}
	if res := Configure(echo{}, []byte(`[1]`)); len(res.Errors) != 1 {
		t.Fatalf("a non-object config must be an error: %+v", res)
	}
}

func TestNewConfigDefaultsAndNulls(t *testing.T) {
	c, err := NewConfig(echo{}.Spec(), []byte(`{"n": null, "name": "a"}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Raw("n")) != "3" || !c.Has("name") || c.Has("missing") {
		t.Fatalf("config %s", c.JSON())
	}
}

func TestSplitBatch(t *testing.T) {
	rec := ints(1000) // 8000 bytes of values
	defer rec.Release()
	for _, tc := range []struct {
		max      int64
		minParts int
	}{{1 << 20, 1}, {4000, 2}, {800, 10}, {1, 1000}} {
		parts := SplitBatch(rec, tc.max)
		var rows int64
		for _, p := range parts {
			rows += p.NumRows()
			if p.NumRows() > 1 && p.NumRows()*8 > tc.max {
				t.Errorf("max %d: a part of %d rows holds %d value bytes", tc.max, p.NumRows(), p.NumRows()*8)
			}
			p.Release()
		}
		if len(parts) < tc.minParts || rows != 1000 {
			t.Errorf("max %d: %d parts, %d rows; want at least %d parts and every row", tc.max, len(parts), rows, tc.minParts)
		}
	}
}
