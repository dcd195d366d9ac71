package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/zclconf/go-cty/cty"
)

// FuzzParse feeds arbitrary bytes to the parser as a pipeline file: it must
// report diagnostics, never panic.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "parse", "*.hcl"))
	for _, p := range seeds {
		if src, err := os.ReadFile(p); err == nil {
			f.Add(src)
		}
	}
	f.Add([]byte(`stage "a" "b" { input = stage[0] }`))
	f.Add([]byte(`locals { x = local.x }`))
	anySpec := sdk.Spec{Config: []sdk.Attr{{Name: "x", Type: "any", Default: sdk.Def(1)}, {Name: "p", Type: "string", Path: true}}}
	opts := Options{
		Vars: []string{"beta=0.5", "n=[1,2]", "bad"},
		Env:  []string{"DPOPIPE_VAR_model=m.bin"},
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		file, diags := ParseSource("fuzz.hcl", src, opts)
		diags = append(diags, file.CheckTypes(func(typ string) bool { _, ok := fakeSpecs[typ]; return ok }, fakeTypes())...)
		values := map[string]cty.Value{}
		for _, s := range file.Stages {
			values[s.ID()] = cty.StringVal("/a/" + s.ID())
		}
		for _, sv := range []map[string]cty.Value{nil, values} {
			ctx := file.EvalContext(sv)
			for _, s := range file.Stages {
				spec, ok := fakeSpecs[s.Type]
				if !ok {
					spec = anySpec
				}
				d, ddiags := file.DecodeStage(s, spec, ctx)
				diags = append(diags, ddiags...)
				for name := range d.AttrRanges {
					_ = file.AttrRange(s, name+".k")
				}
				_ = file.AttrRange(s, "input")
			}
		}
		WriteDiagnostics(io.Discard, diags, file.Sources, true)
	})
}
