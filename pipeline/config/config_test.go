package config

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/zclconf/go-cty/cty"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files in testdata")

// fakeSpecs stands in for the real stage types.
var fakeSpecs = map[string]sdk.Spec{
	"load": {Type: "load", Config: []sdk.Attr{
		{Name: "path", Type: "string", Required: true, Path: true, Description: "The data file or directory."},
		{Name: "columns", Type: "map(string)"},
		{Name: "split", Type: "object({eval = number, seed = number})"},
		{Name: "format", Type: "string", Enum: []string{"jsonl", "json", "parquet", "arrow", "csv"}},
	}},
	"tokenize": {Type: "tokenize", Config: []sdk.Attr{
		{Name: "tokenizer", Type: "string", Required: true, Path: true, Description: "The tokenizer model."},
		{Name: "max_length", Type: "number", Default: sdk.Def(512)},
		{Name: "max_prompt_length", Type: "number", Default: sdk.Def(128)},
		{Name: "truncation", Type: "string", Default: sdk.Def("keep_end"), Enum: []string{"keep_end", "keep_start"}},
		{Name: "add_bos", Type: "bool", Default: sdk.Def(true)},
	}},
	"reference_logprobs": {Type: "reference_logprobs", Config: []sdk.Attr{
		{Name: "model", Type: "string", Required: true, Path: true},
		{Name: "batch_size", Type: "number", Default: sdk.Def(16)},
	}},
	"dpo": {Type: "dpo", Config: []sdk.Attr{
		{Name: "model", Type: "string", Required: true, Path: true},
		{Name: "loss", Type: "any", Default: sdk.Def("sigmoid")},
		{Name: "beta", Type: "number", Default: sdk.Def(0.1)},
		{Name: "learning_rate", Type: "number", Default: sdk.Def(5e-5)},
		{Name: "batch_size", Type: "number", Default: sdk.Def(8)},
		{Name: "max_steps", Type: "number", Required: true},
		{Name: "tags", Type: "list(string)"},
	}},
	"evaluate": {Type: "evaluate", Config: []sdk.Attr{
		{Name: "model", Type: "string", Required: true, Path: true},
		{Name: "beta", Type: "number", Default: sdk.Def(0.1)},
		{Name: "losses", Type: "list(string)", Default: sdk.Def([]string{"sigmoid"})},
	}},
}

func fakeTypes() []string {
	var ts []string
	for t := range fakeSpecs {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// caseOptions reads the directives at the top of a case file:
//
//	# var: NAME=VALUE        a -var option
//	# var-file: FILE         a -var-file option, relative to the case
//	# env: NAME=VALUE        an environment entry
//	# stage-values: known    decode with known stage values, as at run time
func caseOptions(t *testing.T, path string, src []byte) (Options, bool) {
	var opts Options
	known := false
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "# ") {
			break
		}
		key, val, ok := strings.Cut(line[2:], ": ")
		if !ok {
			continue
		}
		switch key {
		case "var":
			opts.Vars = append(opts.Vars, val)
		case "var-file":
			opts.VarFiles = append(opts.VarFiles, filepath.Join(filepath.Dir(path), val))
		case "env":
			opts.Env = append(opts.Env, val)
		case "stage-values":
			known = val == "known"
		default:
			t.Fatalf("%s: unknown directive %q", path, key)
		}
	}
	return opts, known
}

// runCase parses a case file and renders everything Parse and DecodeStage
// make of it.
func runCase(t *testing.T, path string) string {
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts, knownStages := caseOptions(t, path, src)
	f, diags := Parse(path, opts)
	diags = append(diags, f.CheckTypes(func(typ string) bool { _, ok := fakeSpecs[typ]; return ok }, fakeTypes())...)

	var stageValues map[string]cty.Value
	if knownStages {
		stageValues = map[string]cty.Value{}
		for _, s := range f.Stages {
			stageValues[s.ID()] = cty.StringVal("/artifacts/" + s.ID())
		}
	}
	decoded := map[string]Decoded{}
	if !diags.HasErrors() {
		ctx := f.EvalContext(stageValues)
		for _, s := range f.Stages {
			d, ddiags := f.DecodeStage(s, fakeSpecs[s.Type], ctx)
			diags = append(diags, ddiags...)
			decoded[s.ID()] = d
		}
	}

	var out strings.Builder
	if len(diags) > 0 {
		out.WriteString("== diagnostics\n")
		WriteDiagnostics(&out, diags, f.Sources, false)
	}
	if diags.HasErrors() {
		return scrub(out.String(), f.Dir)
	}
	if len(f.Variables) > 0 {
		out.WriteString("== variables\n")
		for _, name := range f.VariableNames() {
			v := f.Variables[name]
			fmt.Fprintf(&out, "%s: %s = %s (from %s)\n", name, typeexpr.TypeString(v.Type), showValue(v.Value), v.Source)
		}
	}
	if len(f.Locals) > 0 {
		out.WriteString("== locals\n")
		for _, d := range f.localDecls {
			fmt.Fprintf(&out, "%s = %s\n", d.name, showValue(f.Locals[d.name]))
		}
	}
	if len(f.Plugins) > 0 {
		out.WriteString("== plugins\n")
		for _, p := range f.Plugins {
			fmt.Fprintf(&out, "%s: source %s, sha256 %q, at %s\n", p.Name, p.Source, p.SHA256, p.DeclRange)
		}
	}
	out.WriteString("== stages\n")
	for _, s := range f.Stages {
		fmt.Fprintf(&out, "stage.%s at %s, type at %s\n", s.ID(), s.DeclRange, s.TypeRange)
		if s.Input != nil {
			fmt.Fprintf(&out, "  input: stage.%s at %s\n", s.Input.ID(), s.Input.Range)
		}
		for _, r := range s.Refs {
			fmt.Fprintf(&out, "  ref: stage.%s at %s\n", r.ID(), r.Range)
		}
		fmt.Fprintf(&out, "  cache: %s\n", s.CacheMode)
		if s.Timeout > 0 {
			fmt.Fprintf(&out, "  timeout: %s\n", s.Timeout)
		}
		d := decoded[s.ID()]
		fmt.Fprintf(&out, "  known: %t\n", d.Known)
		if d.Known {
			fmt.Fprintf(&out, "  json: %s\n", d.JSON)
		} else {
			fmt.Fprintf(&out, "  value: %s\n", showValue(d.Value))
		}
		for _, k := range sortedKeys(d.Paths) {
			fmt.Fprintf(&out, "  path %s: %s\n", k, d.Paths[k])
		}
		for _, k := range sortedKeys(d.AttrRanges) {
			fmt.Fprintf(&out, "  range %s: %s\n", k, d.AttrRanges[k])
		}
	}
	return scrub(out.String(), f.Dir)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// showValue renders a value as JSON, with unknown parts as "(unknown)".
func showValue(v cty.Value) string {
	if v == cty.NilVal {
		return "(nil)"
	}
	if !v.IsKnown() {
		return "(unknown)"
	}
	if v.IsWhollyKnown() {
		js, err := MarshalJSON(v)
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return string(js)
	}
	var parts []string
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		ks := k.GoString()
		if k.Type() == cty.String {
			ks = fmt.Sprintf("%q", k.AsString())
		}
		parts = append(parts, ks+": "+showValue(ev))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func scrub(s, dir string) string {
	return strings.ReplaceAll(s, dir, "$DIR")
}

func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *rewrite {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -rewrite to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -rewrite regenerates it)\n--- want\n%s\n--- got\n%s", golden, want, got)
	}
}

func TestParseGolden(t *testing.T) {
	cases, err := filepath.Glob(filepath.Join("testdata", "parse", "*.hcl"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, path := range cases {
		name := strings.TrimSuffix(filepath.Base(path), ".hcl")
		t.Run(name, func(t *testing.T) {
			checkGolden(t, strings.TrimSuffix(path, ".hcl")+".golden", runCase(t, path))
		})
	}
}

func TestAttrRange(t *testing.T) {
	src := `stage "load" "prefs" {
  path  = "data/prefs.jsonl"
  split = { eval = 0.1, seed = 7 }
}
stage "tokenize" "tok" {
  input     = stage.load.prefs
  tokenizer = "tok.bin"
}
`
	f, diags := ParseSource("p.hcl", []byte(src), Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	load, tok := f.StageByName("prefs"), f.StageByName("tok")
	for _, c := range []struct {
		s    *Stage
		attr string
		want string
	}{
		{load, "path", "p.hcl:2,11-29"},
		{load, "split", "p.hcl:3,11-35"},
		{load, "split.seed", "p.hcl:3,32-33"},
		{load, "split.nope", "p.hcl:3,11-35"},
		{load, "columns", "p.hcl:1,1-21"},
		{tok, "input", "p.hcl:6,15-31"},
		{tok, "tokenizer", "p.hcl:7,15-24"},
	} {
		if got := f.AttrRange(c.s, c.attr).String(); got != c.want {
			t.Errorf("AttrRange(%s, %q) = %s, want %s", c.s.ID(), c.attr, got, c.want)
		}
	}
}

func TestEvalContextFunctions(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prompt.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `locals {
  a = abs(-2) + min(1, 2) + max(1, 2) + floor(1.5) + ceil(1.5)
  b = length(concat([1], [2, 3]))
  c = lookup(merge({x = 1}, {y = 2}), "y", 0)
  d = upper("a") + lower("B") == "" ? "" : format("%s-%d", join(",", split(" ", "a b")), 3)
  e = replace(trimspace(file("prompt.txt")), "l", "L")
  f = jsondecode(jsonencode({k = [1, 2]})).k[1]
  g = tostring(1) == "1" && tonumber("2") == 2
  h = length(tolist(["a"])) + length(tomap({a = 1}))
  i = coalesce(null, "fallback")
}
`
	path := filepath.Join(dir, "p.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, diags := Parse(path, Options{})
	// upper("a") + lower("B") is an error: strings do not add.
	if !diags.HasErrors() {
		t.Fatal("want the error of adding strings")
	}
	want := map[string]string{
		"a": "8", "b": "3", "c": "2", "e": `"heLLo"`, "f": "2", "g": "true", "h": "2", "i": `"fallback"`,
	}
	for k, w := range want {
		if got := showValue(f.Locals[k]); got != w {
			t.Errorf("local.%s = %s, want %s", k, got, w)
		}
	}
	if got := showValue(f.Locals["d"]); got != "(unknown)" {
		t.Errorf("local.d = %s, want unknown after its error", got)
	}
}

func TestMarshalJSON(t *testing.T) {
	v := cty.ObjectVal(map[string]cty.Value{
		"z":    cty.NumberIntVal(3),
		"a":    cty.NumberFloatVal(5e-5),
		"s":    cty.StringVal("<a&b>"),
		"n":    cty.NullVal(cty.DynamicPseudoType),
		"l":    cty.ListVal([]cty.Value{cty.True, cty.False}),
		"m":    cty.MapVal(map[string]cty.Value{"y": cty.NumberFloatVal(0.1), "x": cty.NumberIntVal(-1)}),
		"big":  cty.MustParseNumberVal("123456789012345678901234567890"),
		"huge": cty.MustParseNumberVal("1e300"),
	})
	got, err := MarshalJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":5e-05,"big":123456789012345678901234567890,"huge":1e+300,"l":[true,false],"m":{"x":-1,"y":0.1},"n":null,"s":"<a&b>","z":3}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := MarshalJSON(cty.UnknownVal(cty.String)); err == nil {
		t.Error("an unknown value encoded")
	}
	if _, err := MarshalJSON(cty.PositiveInfinity); err == nil {
		t.Error("an infinite number encoded")
	}
}
