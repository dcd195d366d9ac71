// Package config parses and evaluates dpopipe pipeline files.
//
// A pipeline file declares variables, locals, plugins and stages:
//
//	variable "beta" { type = number, default = 0.1 }
//	locals { model = "models/stories260K.bin" }
//	plugin "judge" { source = "./bin/judge", sha256 = "…" }
//	stage "dpo" "train" { input = stage.reference_logprobs.ref, beta = var.beta }
//
// Parse reads the file, gives every variable its value (default, then
// DPOPIPE_VAR_<name>, then -var-file, then -var, later sources winning),
// runs variable validations, evaluates locals and collects the stage
// references that make the pipeline's DAG. Stage bodies are decoded later,
// against each stage type's sdk.Spec, by DecodeStage.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Options carries the values given to a pipeline's variables from outside
// the file.
type Options struct {
	// Vars are "-var NAME=VALUE" values, in command line order.
	Vars []string
	// VarFiles are "-var-file FILE" paths, in command line order.
	VarFiles []string
	// Env is the environment in os.Environ form; DPOPIPE_VAR_<name> sets
	// the variable <name>.
	Env []string
}

// EnvVarPrefix prefixes the environment variables that set pipeline
// variables.
const EnvVarPrefix = "DPOPIPE_VAR_"

// File is a parsed and evaluated pipeline file.
type File struct {
	Path string
	// Dir is the absolute directory of Path; relative paths in Path
	// attributes, plugin sources and file() resolve against it.
	Dir       string
	Variables map[string]*Variable
	Locals    map[string]cty.Value
	Plugins   []*PluginDecl
	Stages    []*Stage
	// Sources holds the bytes of every file read (the pipeline file and
	// the var files), keyed by the name used in diagnostic ranges.
	Sources map[string][]byte

	localDecls  []*localDecl
	varDefaults varDefaults
	funcs       map[string]function.Function
}

// Variable is a variable declaration and, after Parse, its value.
type Variable struct {
	Name        string
	Description string
	Type        cty.Type
	// Default is cty.NilVal when the variable has no default.
	Default cty.Value
	// Value is the variable's final value.
	Value cty.Value
	// Source says where Value came from: "default", "-var",
	// "-var-file FILE" or "env DPOPIPE_VAR_NAME".
	Source      string
	Validations []*Validation
	DeclRange   hcl.Range

	typeExpr hcl.Expression
}

// Validation is a validation block of a variable.
type Validation struct {
	Condition    hcl.Expression
	ErrorMessage hcl.Expression
	DeclRange    hcl.Range
}

// PluginDecl is a plugin "NAME" { source = "…", sha256 = "…" } block.
type PluginDecl struct {
	Name string
	// Source is the absolute path of the plugin binary.
	Source string
	// SHA256 is the expected hex digest of the binary, "" when not pinned.
	SHA256    string
	DeclRange hcl.Range
}

// Stage is a stage "TYPE" "NAME" block.
type Stage struct {
	Type, Name           string
	DeclRange, TypeRange hcl.Range
	NameRange            hcl.Range
	// Input is the input = stage.TYPE.NAME attribute, nil when absent.
	Input *Ref
	// Refs lists every stage reference in the body, input included, in
	// source order. They are the stage's edges in the DAG.
	Refs []Ref
	// CacheMode is "content" (the default) or "off".
	CacheMode string
	// Timeout bounds the stage's run when set (timeout = "30m").
	Timeout time.Duration
	// Body is the stage body without input and the cache block, to be
	// decoded against the stage type's Spec.
	Body hcl.Body
}

// ID returns the stage's node id, "TYPE.NAME".
func (s *Stage) ID() string { return s.Type + "." + s.Name }

// Ref is a reference to a stage: stage.TYPE.NAME.
type Ref struct {
	Type, Name string
	Range      hcl.Range
}

// ID returns the referenced stage's node id, "TYPE.NAME".
func (r Ref) ID() string { return r.Type + "." + r.Name }

// Cache modes.
const (
	CacheContent = "content"
	CacheOff     = "off"
)

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
		{Type: "plugin", LabelNames: []string{"name"}},
		{Type: "stage", LabelNames: []string{"type", "name"}},
	},
}

// Parse reads, parses and evaluates the pipeline file at path.
//
// The returned File is never nil; when the diagnostics hold errors it may be
// incomplete, and its Sources are always filled for rendering them.
func Parse(path string, opts Options) (*File, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		f := newFile(path)
		return f, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read pipeline file",
			Detail:   fmt.Sprintf("The pipeline file %q could not be read: %s.", path, errText(err)),
		}}
	}
	return ParseSource(path, src, opts)
}

// ParseSource is Parse for a file whose bytes are already in memory; path
// names it in diagnostics and fixes File.Dir.
func ParseSource(path string, src []byte, opts Options) (*File, hcl.Diagnostics) {
	f := newFile(path)
	f.Sources[path] = src

	hf, diags := parseBytes(src, path)
	if diags.HasErrors() || hf == nil {
		return f, diags
	}
	content, cdiags := hf.Body.Content(rootSchema)
	diags = append(diags, bySource(cdiags)...)

	var varBlocks, localBlocks, pluginBlocks, stageBlocks []*hcl.Block
	for _, b := range content.Blocks {
		switch b.Type {
		case "variable":
			varBlocks = append(varBlocks, b)
		case "locals":
			localBlocks = append(localBlocks, b)
		case "plugin":
			pluginBlocks = append(pluginBlocks, b)
		case "stage":
			stageBlocks = append(stageBlocks, b)
		}
	}

	diags = append(diags, f.decodeVariables(varBlocks)...)
	diags = append(diags, f.assignVariables(opts)...)
	diags = append(diags, f.validateVariables()...)
	diags = append(diags, f.decodeLocals(localBlocks)...)
	diags = append(diags, f.evalLocals()...)
	diags = append(diags, f.decodePlugins(pluginBlocks)...)
	diags = append(diags, f.decodeStages(stageBlocks)...)
	diags = append(diags, f.checkRefs()...)
	return f, diags
}

func newFile(path string) *File {
	dir := filepath.Dir(path)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	f := &File{
		Path:      path,
		Dir:       dir,
		Variables: map[string]*Variable{},
		Locals:    map[string]cty.Value{},
		Sources:   map[string][]byte{},
	}
	f.funcs = f.functions()
	return f
}

// parseBytes parses native syntax, or JSON syntax for names ending .json.
func parseBytes(src []byte, name string) (*hcl.File, hcl.Diagnostics) {
	if strings.HasSuffix(name, ".json") {
		return json.Parse(src, name)
	}
	return hclsyntax.ParseConfig(src, name, hcl.InitialPos)
}

// StageByID returns the stage with id "TYPE.NAME", or nil.
func (f *File) StageByID(id string) *Stage {
	for _, s := range f.Stages {
		if s.ID() == id {
			return s
		}
	}
	return nil
}

// StageByName returns the stage named name (names are unique), or nil.
func (f *File) StageByName(name string) *Stage {
	for _, s := range f.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Plugin returns the plugin declaration named name, or nil.
func (f *File) Plugin(name string) *PluginDecl {
	for _, p := range f.Plugins {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// VariableNames returns the declared variable names, sorted.
func (f *File) VariableNames() []string {
	names := make([]string, 0, len(f.Variables))
	for n := range f.Variables {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CheckTypes reports every stage whose type known rejects, at the type
// label, suggesting the closest of suggestions.
func (f *File) CheckTypes(known func(typ string) bool, suggestions []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, s := range f.Stages {
		if known(s.Type) {
			continue
		}
		detail := fmt.Sprintf("There is no stage type %q.", s.Type)
		if sug := nameSuggestion(s.Type, suggestions); sug != "" {
			detail += fmt.Sprintf(" Did you mean %q?", sug)
		} else if len(suggestions) > 0 {
			sorted := append([]string(nil), suggestions...)
			sort.Strings(sorted)
			detail += " The known types are " + quoteList(sorted, "and") + "."
		}
		r := s.TypeRange
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Unknown stage type",
			Detail:   detail,
			Subject:  &r,
			Context:  s.DeclRange.Ptr(),
		})
	}
	return diags
}

func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

func quoteList(xs []string, conj string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	switch len(q) {
	case 0:
		return ""
	case 1:
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " " + conj + " " + q[len(q)-1]
}
