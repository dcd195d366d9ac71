package config

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

type localDecl struct {
	name string
	attr *hcl.Attribute
	deps []localDep
	bad  bool // refers to something undeclared; already reported
}

type localDep struct {
	name string
	rng  hcl.Range
}

func (f *File) decodeLocals(blocks []*hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	seen := map[string]*localDecl{}
	for _, b := range blocks {
		attrs, adiags := b.Body.JustAttributes()
		diags = append(diags, bySource(adiags)...)
		for _, a := range sortedAttrs(attrs) {
			if prev, ok := seen[a.Name]; ok {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Duplicate local value",
					Detail:   fmt.Sprintf("A local value named %q was already defined at %s. Local names must be unique.", a.Name, prev.attr.NameRange),
					Subject:  a.NameRange.Ptr(),
				})
				continue
			}
			d := &localDecl{name: a.Name, attr: a}
			seen[a.Name] = d
			f.localDecls = append(f.localDecls, d)
		}
	}
	localNames := make([]string, 0, len(f.localDecls))
	for _, d := range f.localDecls {
		localNames = append(localNames, d.name)
	}
	for _, d := range f.localDecls {
		for _, t := range d.attr.Expr.Variables() {
			switch t.RootName() {
			case "local":
				name, rng, ok := traversalStep(t, 1)
				if !ok {
					continue // reported when evaluated
				}
				if _, ok := seen[name]; !ok {
					diags = append(diags, undeclaredDiag("local value", "local.", name, rng, localNames))
					d.bad = true
					continue
				}
				d.deps = append(d.deps, localDep{name: name, rng: rng})
			case "var":
				if vd := f.checkVarRef(t); len(vd) > 0 {
					diags = append(diags, vd...)
					d.bad = true
				}
			case "stage":
				d.bad = true
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Stage reference in a local value",
					Detail:   "Local values are evaluated before any stage runs, so they cannot refer to stages. Refer to the stage directly in the stage block that needs it.",
					Subject:  t.SourceRange().Ptr(),
				})
			}
		}
	}
	return diags
}

// evalLocals evaluates the locals in dependency order, reporting cycles.
func (f *File) evalLocals() hcl.Diagnostics {
	var diags hcl.Diagnostics
	byName := map[string]*localDecl{}
	for _, d := range f.localDecls {
		byName[d.name] = d
	}
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(d *localDecl)
	visit = func(d *localDecl) {
		state[d.name] = visiting
		stack = append(stack, d.name)
		for _, dep := range d.deps {
			switch state[dep.name] {
			case visiting:
				// dep closes a cycle: the stack from dep.name to d.
				start := 0
				for i, n := range stack {
					if n == dep.name {
						start = i
					}
				}
				cycle := make([]string, 0, len(stack)-start+1)
				for _, n := range stack[start:] {
					cycle = append(cycle, "local."+n)
				}
				cycle = append(cycle, "local."+dep.name)
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Cycle in local values",
					Detail:   fmt.Sprintf("The local values refer to each other in a cycle: %s.", strings.Join(cycle, " → ")),
					Subject:  dep.rng.Ptr(),
				})
				// Poison the locals in the cycle, so that they are not evaluated.
				for _, n := range stack[start:] {
					f.Locals[n] = cty.DynamicVal
				}
			case unvisited:
				visit(byName[dep.name])
			}
		}
		stack = stack[:len(stack)-1]
		state[d.name] = done
		if _, ok := f.Locals[d.name]; ok {
			return
		}
		if d.bad {
			f.Locals[d.name] = cty.DynamicVal
			return
		}
		ctx := f.EvalContext(nil)
		val, vdiags := d.attr.Expr.Value(ctx)
		diags = append(diags, vdiags...)
		if vdiags.HasErrors() {
			val = cty.DynamicVal
		}
		f.Locals[d.name] = val
	}
	for _, d := range f.localDecls {
		if state[d.name] == unvisited {
			visit(d)
		}
	}
	return diags
}

// traversalStep returns the name in step i of a traversal (an attribute, or
// an index by a known string), and the range from the root to that step.
func traversalStep(t hcl.Traversal, i int) (string, hcl.Range, bool) {
	if len(t) <= i {
		return "", t.SourceRange(), false
	}
	rng := hcl.RangeBetween(t[0].SourceRange(), t[i].SourceRange())
	switch s := t[i].(type) {
	case hcl.TraverseAttr:
		return s.Name, rng, true
	case hcl.TraverseIndex:
		if s.Key.IsKnown() && !s.Key.IsNull() && s.Key.Type() == cty.String {
			return s.Key.AsString(), rng, true
		}
	}
	return "", rng, false
}

// checkVarRef reports a var.NAME reference to an undeclared variable.
func (f *File) checkVarRef(t hcl.Traversal) hcl.Diagnostics {
	name, rng, ok := traversalStep(t, 1)
	if !ok {
		if len(t) == 1 {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Invalid variable reference",
				Detail:   "A reference to a variable must name it, as in var.beta.",
				Subject:  rng.Ptr(),
			}}
		}
		return nil
	}
	if _, ok := f.Variables[name]; ok {
		return nil
	}
	return hcl.Diagnostics{undeclaredDiag("input variable", "var.", name, rng, f.VariableNames())}
}

func undeclaredDiag(what, prefix, name string, rng hcl.Range, names []string) *hcl.Diagnostic {
	detail := fmt.Sprintf("There is no %s named %q.", what, name)
	if sug := nameSuggestion(name, names); sug != "" {
		detail += fmt.Sprintf(" Did you mean %s%s?", prefix, sug)
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Reference to undeclared " + what,
		Detail:   detail,
		Subject:  rng.Ptr(),
	}
}

// bodyTraversals returns the traversals of every expression in a body,
// nested blocks included, in source order.
func bodyTraversals(body hcl.Body) []hcl.Traversal {
	var out []hcl.Traversal
	if sb, ok := body.(*hclsyntax.Body); ok {
		attrs := make([]*hclsyntax.Attribute, 0, len(sb.Attributes))
		for _, a := range sb.Attributes {
			attrs = append(attrs, a)
		}
		sortByStart(attrs, func(a *hclsyntax.Attribute) hcl.Pos { return a.SrcRange.Start })
		for _, a := range attrs {
			out = append(out, a.Expr.Variables()...)
		}
		for _, b := range sb.Blocks {
			out = append(out, bodyTraversals(b.Body)...)
		}
		return out
	}
	// Other syntaxes (JSON): attributes only.
	attrs, _ := body.JustAttributes()
	for _, a := range sortedAttrs(attrs) {
		out = append(out, a.Expr.Variables()...)
	}
	return out
}
