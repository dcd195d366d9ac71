package runner

import (
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

func TestResumeVars(t *testing.T) {
	recorded := map[string]any{"beta": 0.3, "model": "m.bin", "losses": []any{"ipo", "sigmoid"}, "on": true}
	got := resumeVars(recorded, []string{"beta=0.5"})
	want := []string{`losses=["ipo","sigmoid"]`, "model=m.bin", "on=true"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("resumeVars = %q, want %q (an explicit -var wins, the rest come back as written)", got, want)
	}
}

func TestCheckSchema(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "ids", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
		{Name: "w", Type: arrow.PrimitiveTypes.Float32},
	}, nil)
	cases := []struct {
		name string
		want []sdk.Column
		err  string
	}{
		{"all present", []sdk.Column{{Name: "row", Type: "int64"}, {Name: "ids", Type: "list<int32>"}, {Name: "w", Type: "float32"}}, ""},
		{"arrow's own spelling", []sdk.Column{{Name: "ids", Type: "list<item: int32, nullable>"}}, ""},
		{"any type", []sdk.Column{{Name: "w"}}, ""},
		{"optional absent", []sdk.Column{{Name: "split", Optional: true}}, ""},
		{"missing", []sdk.Column{{Name: "split"}}, `missing column "split"`},
		{"wrong type", []sdk.Column{{Name: "row", Type: "int32"}}, `column "row" is int64, want int32`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSchema(tc.want, schema)
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("checkSchema: %v, want %q", err, tc.err)
			}
		})
	}
}

func TestIsBuiltinName(t *testing.T) {
	for p, want := range map[string]bool{"/x/bytes": true, "/x/byte": true, "/x/tok.bin": false, "bytes": true} {
		if got := isBuiltinName(p); got != want {
			t.Errorf("isBuiltinName(%q) = %v, want %v", p, got, want)
		}
	}
}
