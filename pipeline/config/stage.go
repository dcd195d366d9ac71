package config

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

var pluginSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "source", Required: true},
		{Name: "sha256"},
	},
}

var stageSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "input"}, {Name: "timeout"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "cache"}},
}

var cacheSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "mode"}},
}

var cacheModes = []string{CacheContent, CacheOff}

func (f *File) decodePlugins(blocks []*hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	ctx := f.EvalContext(nil)
	for _, b := range blocks {
		name := b.Labels[0]
		if !hclsyntax.ValidIdentifier(name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid plugin name",
				Detail:   "A plugin name must start with a letter or underscore and contain only letters, digits, underscores and dashes.",
				Subject:  b.LabelRanges[0].Ptr(),
			})
			continue
		}
		if prev := f.Plugin(name); prev != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate plugin declaration",
				Detail:   fmt.Sprintf("A plugin named %q was already declared at %s.", name, prev.DeclRange),
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		content, cdiags := b.Body.Content(pluginSchema)
		diags = append(diags, bySource(cdiags)...)
		p := &PluginDecl{Name: name, DeclRange: b.DefRange}
		if a, ok := content.Attributes["source"]; ok {
			src, sdiags := evalString(a.Expr, ctx, "source")
			diags = append(diags, sdiags...)
			if !sdiags.HasErrors() {
				if src == "" {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid plugin source",
						Detail:   "The source must be the path of the plugin's executable.",
						Subject:  a.Expr.Range().Ptr(),
					})
				} else {
					p.Source = f.resolve(src)
				}
			}
		}
		if a, ok := content.Attributes["sha256"]; ok {
			sum, sdiags := evalString(a.Expr, ctx, "sha256")
			diags = append(diags, sdiags...)
			if !sdiags.HasErrors() {
				sum = strings.ToLower(sum)
				if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid plugin digest",
						Detail:   "The sha256 must be 64 hexadecimal digits, as printed by sha256sum.",
						Subject:  a.Expr.Range().Ptr(),
					})
				} else {
					p.SHA256 = sum
				}
			}
		}
		f.Plugins = append(f.Plugins, p)
	}
	return diags
}

// evalString evaluates an expression that must give a known string.
func evalString(expr hcl.Expression, ctx *hcl.EvalContext, what string) (string, hcl.Diagnostics) {
	val, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return "", diags
	}
	sv, err := convert.Convert(val, cty.String)
	if err == nil && (!sv.IsKnown() || sv.IsNull()) {
		err = fmt.Errorf("the value must be known when the pipeline is read, and not null")
	}
	if err != nil {
		return "", append(diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     fmt.Sprintf("Invalid %s", what),
			Detail:      fmt.Sprintf("The %s must be a string: %s.", what, errText(err)),
			Subject:     expr.Range().Ptr(),
			Expression:  expr,
			EvalContext: ctx,
		})
	}
	return sv.AsString(), diags
}

// resolve makes a path absolute against the pipeline file's directory.
func (f *File) resolve(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(f.Dir, p)
}

func (f *File) decodeStages(blocks []*hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	byName := map[string]*Stage{}
	ctx := f.EvalContext(nil)
	for _, b := range blocks {
		typ, name := b.Labels[0], b.Labels[1]
		bad := false
		for i, what := range []string{"type", "name"} {
			if !hclsyntax.ValidIdentifier(b.Labels[i]) {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid stage " + what,
					Detail:   fmt.Sprintf("A stage %s must start with a letter or underscore and contain only letters, digits, underscores and dashes, so that stage.TYPE.NAME can refer to it.", what),
					Subject:  b.LabelRanges[i].Ptr(),
				})
				bad = true
			}
		}
		if bad {
			continue
		}
		if prev, ok := byName[name]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate stage name",
				Detail: fmt.Sprintf("A stage named %q was already declared at %s, as stage.%s.%s. Stage names must be unique: each names its directory in the run.",
					name, prev.DeclRange, prev.Type, prev.Name),
				Subject: b.LabelRanges[1].Ptr(),
				Context: b.DefRange.Ptr(),
			})
			continue
		}
		s := &Stage{
			Type:      typ,
			Name:      name,
			DeclRange: b.DefRange,
			TypeRange: b.LabelRanges[0],
			NameRange: b.LabelRanges[1],
			CacheMode: CacheContent,
		}
		byName[name] = s
		f.Stages = append(f.Stages, s)

		// References, from the whole body.
		for _, t := range bodyTraversals(b.Body) {
			switch t.RootName() {
			case "stage":
				ref, rdiags := stageRef(t)
				diags = append(diags, rdiags...)
				if !rdiags.HasErrors() {
					s.Refs = append(s.Refs, ref)
				}
			case "var":
				diags = append(diags, f.checkVarRef(t)...)
			case "local":
				if name, rng, ok := traversalStep(t, 1); ok {
					if _, declared := f.Locals[name]; !declared {
						diags = append(diags, undeclaredDiag("local value", "local.", name, rng, f.localNames()))
					}
				}
			}
		}

		content, rest, cdiags := b.Body.PartialContent(stageSchema)
		diags = append(diags, bySource(cdiags)...)
		s.Body = rest
		if a, ok := content.Attributes["input"]; ok {
			t, tdiags := hcl.AbsTraversalForExpr(a.Expr)
			switch {
			case !tdiags.HasErrors() && t.RootName() == "stage":
				if ref, rdiags := stageRef(t); !rdiags.HasErrors() {
					if len(t) > 3 {
						diags = append(diags, &hcl.Diagnostic{
							Severity: hcl.DiagError,
							Summary:  "Invalid input",
							Detail:   fmt.Sprintf("The input is a stage, not a part of one: write input = stage.%s.%s.", ref.Type, ref.Name),
							Subject:  a.Expr.Range().Ptr(),
						})
					} else {
						s.Input = &ref
					}
				} // otherwise reported with the references
			default:
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid input",
					Detail:   "The input must be a reference to a stage, as in input = stage.load.prefs.",
					Subject:  a.Expr.Range().Ptr(),
				})
			}
		}
		if a, ok := content.Attributes["timeout"]; ok {
			text, tdiags := evalString(a.Expr, ctx, "timeout")
			diags = append(diags, tdiags...)
			if !tdiags.HasErrors() {
				d, err := time.ParseDuration(text)
				if err != nil || d <= 0 {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid timeout",
						Detail:   fmt.Sprintf("The timeout must be a positive duration such as \"90s\", \"30m\" or \"2h\"; got %q.", text),
						Subject:  a.Expr.Range().Ptr(),
					})
				} else {
					s.Timeout = d
				}
			}
		}
		for i, cb := range content.Blocks {
			if i > 0 {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Duplicate cache block",
					Detail:   fmt.Sprintf("A stage has at most one cache block; the first is at %s.", content.Blocks[0].DefRange),
					Subject:  cb.DefRange.Ptr(),
				})
				continue
			}
			cc, ccdiags := cb.Body.Content(cacheSchema)
			diags = append(diags, bySource(ccdiags)...)
			a, ok := cc.Attributes["mode"]
			if !ok {
				continue
			}
			mode, mdiags := evalString(a.Expr, ctx, "cache mode")
			diags = append(diags, mdiags...)
			if mdiags.HasErrors() {
				continue
			}
			if mode != CacheContent && mode != CacheOff {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid cache mode",
					Detail:   fmt.Sprintf("The cache mode must be %s; got %q.%s", quoteList(cacheModes, "or"), mode, didYouMean(mode, cacheModes)),
					Subject:  a.Expr.Range().Ptr(),
				})
				continue
			}
			s.CacheMode = mode
		}
	}
	return diags
}

func (f *File) localNames() []string {
	names := make([]string, 0, len(f.localDecls))
	for _, d := range f.localDecls {
		names = append(names, d.name)
	}
	return names
}

// stageRef reads stage.TYPE.NAME from the start of a traversal.
func stageRef(t hcl.Traversal) (Ref, hcl.Diagnostics) {
	typ, _, ok1 := traversalStep(t, 1)
	name, rng, ok2 := traversalStep(t, 2)
	if !ok1 || !ok2 {
		return Ref{}, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid stage reference",
			Detail:   "A reference to a stage names its type and its name, as in stage.load.prefs.",
			Subject:  rng.Ptr(),
		}}
	}
	return Ref{Type: typ, Name: name, Range: rng}, nil
}

// checkRefs reports references to stages that are not declared.
func (f *File) checkRefs() hcl.Diagnostics {
	var diags hcl.Diagnostics
	ids := make([]string, len(f.Stages))
	for i, s := range f.Stages {
		ids[i] = s.ID()
	}
	for _, s := range f.Stages {
		for _, r := range s.Refs {
			if f.StageByID(r.ID()) != nil {
				continue
			}
			detail := fmt.Sprintf("There is no stage %q %q in this pipeline.", r.Type, r.Name)
			if other := f.StageByName(r.Name); other != nil {
				detail += fmt.Sprintf(" Did you mean stage.%s?", other.ID())
			} else if sug := nameSuggestion(r.ID(), ids); sug != "" {
				detail += fmt.Sprintf(" Did you mean stage.%s?", sug)
			}
			rng := r.Range
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Reference to undeclared stage",
				Detail:   detail,
				Subject:  &rng,
			})
		}
	}
	return diags
}
