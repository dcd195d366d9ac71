package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "type"},
		{Name: "default"},
		{Name: "description"},
		{Name: "sensitive"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "condition", Required: true},
		{Name: "error_message", Required: true},
	},
}

// varDefaults keeps the optional-attribute defaults of each variable's type.
type varDefaults = map[string]*typeexpr.Defaults

func (f *File) decodeVariables(blocks []*hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, b := range blocks {
		name := b.Labels[0]
		if !hclsyntax.ValidIdentifier(name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid variable name",
				Detail:   "A variable name must start with a letter or underscore and contain only letters, digits, underscores and dashes.",
				Subject:  b.LabelRanges[0].Ptr(),
			})
			continue
		}
		if prev, ok := f.Variables[name]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate variable declaration",
				Detail:   fmt.Sprintf("A variable named %q was already declared at %s. Variable names must be unique.", name, prev.DeclRange),
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		v := &Variable{
			Name:      name,
			Type:      cty.DynamicPseudoType,
			DeclRange: b.DefRange,
		}
		f.Variables[name] = v

		content, cdiags := b.Body.Content(variableSchema)
		diags = append(diags, bySource(cdiags)...)

		var defaults *typeexpr.Defaults
		if a, ok := content.Attributes["type"]; ok {
			ty, d, tdiags := typeexpr.TypeConstraintWithDefaults(a.Expr)
			diags = append(diags, tdiags...)
			if !tdiags.HasErrors() {
				v.Type, defaults = ty, d
			}
			v.typeExpr = a.Expr
		}
		if defaults != nil {
			if f.varDefaults == nil {
				f.varDefaults = varDefaults{}
			}
			f.varDefaults[name] = defaults
		}
		if a, ok := content.Attributes["description"]; ok {
			val, ddiags := a.Expr.Value(nil)
			diags = append(diags, ddiags...)
			if !ddiags.HasErrors() {
				if s, err := convert.Convert(val, cty.String); err == nil && s.IsKnown() && !s.IsNull() {
					v.Description = s.AsString()
				} else {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid variable description",
						Detail:   "The description must be a string.",
						Subject:  a.Expr.Range().Ptr(),
					})
				}
			}
		}
		if a, ok := content.Attributes["default"]; ok {
			val, ddiags := a.Expr.Value(nil)
			diags = append(diags, ddiags...)
			if !ddiags.HasErrors() {
				if defaults != nil {
					val = defaults.Apply(val)
				}
				cv, err := convert.Convert(val, v.Type)
				if err != nil {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid default value for variable",
						Detail:   fmt.Sprintf("This default value is not compatible with the variable's type constraint: %s.", errText(err)),
						Subject:  a.Expr.Range().Ptr(),
					})
					cv = cty.UnknownVal(v.Type)
				}
				v.Default = cv
			} else {
				v.Default = cty.UnknownVal(v.Type)
			}
		}
		for _, vb := range content.Blocks {
			vc, vdiags := vb.Body.Content(validationSchema)
			diags = append(diags, bySource(vdiags)...)
			if vdiags.HasErrors() {
				continue
			}
			v.Validations = append(v.Validations, &Validation{
				Condition:    vc.Attributes["condition"].Expr,
				ErrorMessage: vc.Attributes["error_message"].Expr,
				DeclRange:    vb.DefRange,
			})
		}
	}
	return diags
}

// assignment is one value given to a variable from outside the file.
type assignment struct {
	source string // "-var", "-var-file F" or "env DPOPIPE_VAR_x"
	desc   string // how the detail of a diagnostic names the source
	raw    string // for -var and env values
	expr   hcl.Expression
}

func (f *File) assignVariables(opts Options) hcl.Diagnostics {
	var diags hcl.Diagnostics
	given := map[string]assignment{}

	for _, e := range opts.Env {
		if !strings.HasPrefix(e, EnvVarPrefix) {
			continue
		}
		k, val, ok := strings.Cut(e, "=")
		if !ok {
			continue
		}
		name := k[len(EnvVarPrefix):]
		if _, declared := f.Variables[name]; !declared {
			continue // as Terraform does, unrelated environment is ignored
		}
		given[name] = assignment{
			source: "env " + k,
			desc:   "by the environment variable " + k,
			raw:    val,
		}
	}

	for _, path := range opts.VarFiles {
		src, err := os.ReadFile(path)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Failed to read variables file",
				Detail:   fmt.Sprintf("The variables file %q given with -var-file could not be read: %s.", path, errText(err)),
			})
			continue
		}
		f.Sources[path] = src
		hf, pdiags := parseBytes(src, path)
		diags = append(diags, pdiags...)
		if pdiags.HasErrors() || hf == nil {
			continue
		}
		attrs, adiags := hf.Body.JustAttributes()
		diags = append(diags, bySource(adiags)...)
		for _, a := range sortedAttrs(attrs) {
			if _, declared := f.Variables[a.Name]; !declared {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagWarning,
					Summary:  "Value for undeclared variable",
					Detail: fmt.Sprintf("The variables file %q assigns %q, but the pipeline declares no variable of that name; the value is ignored.%s",
						path, a.Name, didYouMean(a.Name, f.VariableNames())),
					Subject: a.NameRange.Ptr(),
				})
				continue
			}
			given[a.Name] = assignment{
				source: "-var-file " + path,
				desc:   fmt.Sprintf("in the variables file %q", path),
				expr:   a.Expr,
			}
		}
	}

	for _, kv := range opts.Vars {
		name, val, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid -var option",
				Detail:   fmt.Sprintf("The option -var %q is not of the form NAME=VALUE, as in -var beta=0.1.", kv),
			})
			continue
		}
		if _, declared := f.Variables[name]; !declared {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Value for undeclared variable",
				Detail: fmt.Sprintf("The option -var %q sets a variable that the pipeline does not declare; add a variable %q block to use it.%s",
					kv, name, didYouMean(name, f.VariableNames())),
			})
			continue
		}
		given[name] = assignment{
			source: "-var",
			desc:   fmt.Sprintf("by -var %q", kv),
			raw:    val,
		}
	}

	for _, name := range f.VariableNames() {
		v := f.Variables[name]
		a, ok := given[name]
		if !ok {
			if v.Default == cty.NilVal {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "No value for required variable",
					Detail: fmt.Sprintf("The variable %q has no default, so the pipeline needs a value for it: give one with -var %s=VALUE, in a -var-file, or in the environment variable %s%s.",
						name, name, EnvVarPrefix, name),
					Subject: v.DeclRange.Ptr(),
				})
				v.Value = cty.UnknownVal(v.Type)
				continue
			}
			v.Value, v.Source = v.Default, "default"
			continue
		}
		v.Source = a.source
		var (
			val   cty.Value
			vdiag hcl.Diagnostics
			subj  = v.DeclRange
		)
		if a.expr != nil {
			val, vdiag = a.expr.Value(nil)
			subj = a.expr.Range()
		} else {
			val, vdiag = f.parseRawValue(a.raw, v.Type, name, a.source)
		}
		diags = append(diags, vdiag...)
		if vdiag.HasErrors() {
			v.Value = cty.UnknownVal(v.Type)
			continue
		}
		if d := f.varDefaults[name]; d != nil {
			val = d.Apply(val)
		}
		cv, err := convert.Convert(val, v.Type)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid value for variable",
				Detail: fmt.Sprintf("The value given %s is not suitable for variable %q, declared at %s: %s.",
					a.desc, name, v.DeclRange, errText(err)),
				Subject: subj.Ptr(),
			})
			cv = cty.UnknownVal(v.Type)
		}
		v.Value = cv
	}
	return diags
}

// parseRawValue turns a -var or environment string into a value, the way
// Terraform does: for a primitive type the string is taken literally (and
// converted afterwards); for a collection or structural type it is an HCL
// expression; for "any" it is an expression when it parses as a constant
// one and a string otherwise.
func (f *File) parseRawValue(raw string, ty cty.Type, name, source string) (cty.Value, hcl.Diagnostics) {
	if ty.IsPrimitiveType() {
		return cty.StringVal(raw), nil
	}
	filename := fmt.Sprintf("<value for var.%s from %s>", name, source)
	expr, diags := hclsyntax.ParseExpression([]byte(raw), filename, hcl.InitialPos)
	if !diags.HasErrors() {
		var vdiags hcl.Diagnostics
		var val cty.Value
		val, vdiags = expr.Value(nil)
		diags = append(diags, vdiags...)
		if !diags.HasErrors() {
			return val, nil
		}
	}
	if ty == cty.DynamicPseudoType {
		return cty.StringVal(raw), nil
	}
	f.Sources[filename] = []byte(raw)
	return cty.DynamicVal, diags
}

// varsObject returns the var.* object.
func (f *File) varsObject() cty.Value {
	vals := make(map[string]cty.Value, len(f.Variables))
	for name, v := range f.Variables {
		val := v.Value
		if val == cty.NilVal {
			val = cty.UnknownVal(v.Type)
		}
		vals[name] = val
	}
	return cty.ObjectVal(vals)
}

func (f *File) validateVariables() hcl.Diagnostics {
	var diags hcl.Diagnostics
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": f.varsObject()},
		Functions: f.funcs,
	}
	for _, name := range f.VariableNames() {
		v := f.Variables[name]
		if v.Value == cty.NilVal || !v.Value.IsWhollyKnown() {
			continue
		}
		for _, rule := range v.Validations {
			diags = append(diags, f.checkValidation(v, rule, ctx)...)
		}
	}
	return diags
}

func (f *File) checkValidation(v *Variable, rule *Validation, ctx *hcl.EvalContext) hcl.Diagnostics {
	cond, diags := rule.Condition.Value(ctx)
	if diags.HasErrors() {
		return diags
	}
	if !cond.IsKnown() {
		return diags
	}
	cond, err := convert.Convert(cond, cty.Bool)
	if err != nil || cond.IsNull() {
		msg := "the condition is null"
		if err != nil {
			msg = errText(err)
		}
		return append(diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     "Invalid validation condition",
			Detail:      fmt.Sprintf("A validation condition must be true or false: %s.", msg),
			Subject:     rule.Condition.Range().Ptr(),
			Expression:  rule.Condition,
			EvalContext: ctx,
		})
	}
	if cond.True() {
		return diags
	}
	msg := fmt.Sprintf("The value of variable %q is not valid.", v.Name)
	mv, mdiags := rule.ErrorMessage.Value(ctx)
	if !mdiags.HasErrors() {
		if s, err := convert.Convert(mv, cty.String); err == nil && s.IsKnown() && !s.IsNull() {
			msg = strings.TrimSpace(s.AsString())
		}
	} else {
		diags = append(diags, mdiags...)
	}
	return append(diags, &hcl.Diagnostic{
		Severity:    hcl.DiagError,
		Summary:     "Invalid value for variable",
		Detail:      fmt.Sprintf("%s\n\nThe value of var.%s came from %s; the rule is at %s.", msg, v.Name, sourcePhrase(v.Source), rule.DeclRange),
		Subject:     rule.Condition.Range().Ptr(),
		Expression:  rule.Condition,
		EvalContext: ctx,
	})
}

// sourcePhrase turns a Variable.Source into words.
func sourcePhrase(source string) string {
	switch {
	case source == "default":
		return "its default"
	case strings.HasPrefix(source, "env "):
		return "the environment variable " + strings.TrimPrefix(source, "env ")
	}
	return source
}
