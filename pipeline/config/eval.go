package config

import (
	"io"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// maxFileFuncSize bounds what file() reads.
const maxFileFuncSize = 16 << 20

// EvalContext returns the context stage bodies are evaluated in: var.*,
// local.*, stage.TYPE.NAME and the functions. stageValues, keyed
// "TYPE.NAME", gives the stages' values (an artifact path, say, or
// cty.UnknownVal(cty.String) when validating); a declared stage missing from
// it is an unknown value of any type.
func (f *File) EvalContext(stageValues map[string]cty.Value) *hcl.EvalContext {
	locals := make(map[string]cty.Value, len(f.localDecls))
	for _, d := range f.localDecls {
		if v, ok := f.Locals[d.name]; ok {
			locals[d.name] = v
		}
	}
	byType := map[string]map[string]cty.Value{}
	for _, s := range f.Stages {
		m := byType[s.Type]
		if m == nil {
			m = map[string]cty.Value{}
			byType[s.Type] = m
		}
		v, ok := stageValues[s.ID()]
		if !ok || v == cty.NilVal {
			v = cty.DynamicVal
		}
		m[s.Name] = v
	}
	stages := make(map[string]cty.Value, len(byType))
	for t, m := range byType {
		stages[t] = cty.ObjectVal(m)
	}
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":   f.varsObject(),
			"local": cty.ObjectVal(locals),
			"stage": cty.ObjectVal(stages),
		},
		Functions: f.funcs,
	}
}

// FunctionNames lists the functions available in a pipeline file.
func (f *File) FunctionNames() []string {
	names := make([]string, 0, len(f.funcs))
	for n := range f.funcs {
		names = append(names, n)
	}
	return names
}

func (f *File) functions() map[string]function.Function {
	return map[string]function.Function{
		"abs":        stdlib.AbsoluteFunc,
		"can":        tryfunc.CanFunc,
		"ceil":       stdlib.CeilFunc,
		"coalesce":   stdlib.CoalesceFunc,
		"concat":     stdlib.ConcatFunc,
		"contains":   stdlib.ContainsFunc,
		"file":       f.fileFunc(),
		"floor":      stdlib.FloorFunc,
		"format":     stdlib.FormatFunc,
		"join":       stdlib.JoinFunc,
		"jsondecode": stdlib.JSONDecodeFunc,
		"jsonencode": stdlib.JSONEncodeFunc,
		"keys":       stdlib.KeysFunc,
		"length":     stdlib.LengthFunc,
		"lookup":     stdlib.LookupFunc,
		"lower":      stdlib.LowerFunc,
		"max":        stdlib.MaxFunc,
		"merge":      stdlib.MergeFunc,
		"min":        stdlib.MinFunc,
		"regex":      stdlib.RegexFunc,
		"replace":    stdlib.ReplaceFunc,
		"split":      stdlib.SplitFunc,
		"tobool":     stdlib.MakeToFunc(cty.Bool),
		"tolist":     stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"tomap":      stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"tonumber":   stdlib.MakeToFunc(cty.Number),
		"tostring":   stdlib.MakeToFunc(cty.String),
		"trimspace":  stdlib.TrimSpaceFunc,
		"try":        tryfunc.TryFunc,
		"upper":      stdlib.UpperFunc,
		"values":     stdlib.ValuesFunc,
	}
}

// fileFunc reads a UTF-8 text file, relative paths resolving against the
// pipeline file's directory.
func (f *File) fileFunc() function.Function {
	return function.New(&function.Spec{
		Description: "Reads the contents of a text file, relative to the pipeline file's directory.",
		Params:      []function.Parameter{{Name: "path", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if !filepath.IsAbs(p) {
				p = filepath.Join(f.Dir, p)
			}
			fh, err := os.Open(p)
			if err != nil {
				return cty.DynamicVal, function.NewArgErrorf(0, "cannot read %s: %s", p, errText(err))
			}
			defer fh.Close()
			st, err := fh.Stat()
			if err != nil {
				return cty.DynamicVal, function.NewArgErrorf(0, "cannot read %s: %s", p, errText(err))
			}
			if !st.Mode().IsRegular() {
				return cty.DynamicVal, function.NewArgErrorf(0, "%s is not a regular file", p)
			}
			b, err := io.ReadAll(io.LimitReader(fh, maxFileFuncSize+1))
			if err != nil {
				return cty.DynamicVal, function.NewArgErrorf(0, "cannot read %s: %s", p, errText(err))
			}
			if len(b) > maxFileFuncSize {
				return cty.DynamicVal, function.NewArgErrorf(0, "%s is larger than %d bytes", p, maxFileFuncSize)
			}
			if !utf8.Valid(b) {
				return cty.DynamicVal, function.NewArgErrorf(0, "%s is not UTF-8 text", p)
			}
			return cty.StringVal(string(b)), nil
		},
	})
}
