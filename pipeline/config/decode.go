package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// Decoded is a stage body decoded against its Spec.
type Decoded struct {
	// Value is an object with one attribute per Spec.Config entry: the
	// given value converted to the attribute's type, else its default,
	// else null. Path attributes hold resolved paths.
	Value cty.Value
	// JSON is Value encoded as JSON with object keys sorted (a canonical
	// form, fit for cache keys), nil when Value is not wholly known.
	JSON json.RawMessage
	// Known is true when Value is wholly known (it is not at validate
	// time when the body refers to other stages).
	Known bool
	// AttrRanges maps each attribute present in the body to the range of
	// its value.
	AttrRanges map[string]hcl.Range
	// Paths maps each Path attribute with a known string value to its
	// resolved path.
	Paths map[string]string
}

// DecodeStage decodes the body of s against spec in ctx (f.EvalContext(nil)
// when ctx is nil).
func (f *File) DecodeStage(s *Stage, spec sdk.Spec, ctx *hcl.EvalContext) (Decoded, hcl.Diagnostics) {
	dec := Decoded{
		Value:      cty.EmptyObjectVal,
		AttrRanges: map[string]hcl.Range{},
		Paths:      map[string]string{},
	}
	if s == nil || s.Body == nil {
		return dec, nil
	}
	if ctx == nil {
		ctx = f.EvalContext(nil)
	}
	// The cache block is listed (the stage body hides it) so that
	// "cache = ..." gets hcl's hint to write a block instead.
	schema := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "cache"}}}
	for _, a := range spec.Config {
		schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: a.Name})
	}
	content, diags := s.Body.Content(schema)
	suggestAttributes(diags, spec)
	diags = bySource(diags)

	vals := make(map[string]cty.Value, len(spec.Config))
	for _, attr := range spec.Config {
		ty, tdiags := specType(spec, attr, s)
		diags = append(diags, tdiags...)

		var val cty.Value
		a, present := content.Attributes[attr.Name]
		if present {
			dec.AttrRanges[attr.Name] = a.Expr.Range()
			v, vdiags := a.Expr.Value(ctx)
			diags = append(diags, vdiags...)
			switch {
			case vdiags.HasErrors():
				val = cty.UnknownVal(ty)
			case v.IsNull():
				present = false // null means absent, as in Terraform
			default:
				cv, err := convert.Convert(v, ty)
				if err != nil {
					diags = append(diags, &hcl.Diagnostic{
						Severity:    hcl.DiagError,
						Summary:     "Incorrect attribute value type",
						Detail:      fmt.Sprintf("Inappropriate value for attribute %q: %s.", attr.Name+pathString(err), errText(err)),
						Subject:     a.Expr.Range().Ptr(),
						Expression:  a.Expr,
						EvalContext: ctx,
					})
					cv = cty.UnknownVal(ty)
				}
				val = cv
			}
		}
		if !present {
			switch {
			case attr.Required:
				rng := s.DeclRange
				if a != nil {
					rng = a.Expr.Range()
				}
				detail := fmt.Sprintf("The stage type %q requires the attribute %q.", s.Type, attr.Name)
				if attr.Description != "" {
					detail += fmt.Sprintf("\n\n%s: %s", attr.Name, attr.Description)
				}
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Missing required attribute",
					Detail:   detail,
					Subject:  rng.Ptr(),
				})
				val = cty.UnknownVal(ty)
			case len(attr.Default) > 0:
				dv, err := defaultValue(attr.Default, ty)
				if err != nil {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid stage specification",
						Detail:   fmt.Sprintf("The stage type %q gives attribute %q the default %s, which does not fit its type %s: %s.", s.Type, attr.Name, attr.Default, typeexpr.TypeString(ty), errText(err)),
						Subject:  s.TypeRange.Ptr(),
					})
					dv = cty.UnknownVal(ty)
				}
				val = dv
			default:
				val = cty.NullVal(ty)
			}
		}

		if len(attr.Enum) > 0 && val.IsKnown() && !val.IsNull() && val.Type() == cty.String {
			if sv := val.AsString(); !contains(attr.Enum, sv) {
				rng := s.DeclRange
				if present {
					rng = a.Expr.Range()
				}
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid value for attribute",
					Detail: fmt.Sprintf("The attribute %q must be %s; got %q.%s",
						attr.Name, quoteList(attr.Enum, "or"), sv, didYouMean(sv, attr.Enum)),
					Subject: rng.Ptr(),
				})
			}
		}
		if attr.Path && val.IsKnown() && !val.IsNull() && val.Type() == cty.String && val.AsString() != "" {
			p := f.resolve(val.AsString())
			dec.Paths[attr.Name] = p
			val = cty.StringVal(p)
		}
		vals[attr.Name] = val
	}
	if len(vals) > 0 {
		dec.Value = cty.ObjectVal(vals)
	}
	dec.Known = dec.Value.IsWhollyKnown()
	if dec.Known {
		js, err := MarshalJSON(dec.Value)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unrepresentable stage configuration",
				Detail:   fmt.Sprintf("The configuration of stage.%s cannot be passed to its plugin: %s.", s.ID(), err),
				Subject:  s.DeclRange.Ptr(),
			})
			dec.Known = false
		} else {
			dec.JSON = js
		}
	}
	return dec, diags
}

// specType parses an attribute's type expression.
func specType(spec sdk.Spec, attr sdk.Attr, s *Stage) (cty.Type, hcl.Diagnostics) {
	if strings.TrimSpace(attr.Type) == "" {
		return cty.DynamicPseudoType, nil
	}
	expr, diags := hclsyntax.ParseExpression([]byte(attr.Type), "<type of "+spec.Type+"."+attr.Name+">", hcl.InitialPos)
	if !diags.HasErrors() {
		var ty cty.Type
		ty, diags = typeexpr.TypeConstraint(expr)
		if !diags.HasErrors() {
			return ty, nil
		}
	}
	return cty.DynamicPseudoType, hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Invalid stage specification",
		Detail:   fmt.Sprintf("The stage type %q declares attribute %q with the type %q, which is not a type expression: %s", spec.Type, attr.Name, attr.Type, diags.Error()),
		Subject:  s.TypeRange.Ptr(),
	}}
}

// defaultValue decodes a JSON default into a value of type ty.
func defaultValue(raw json.RawMessage, ty cty.Type) (cty.Value, error) {
	impl, err := ctyjson.ImpliedType(raw)
	if err != nil {
		return cty.NilVal, err
	}
	v, err := ctyjson.Unmarshal(raw, impl)
	if err != nil {
		return cty.NilVal, err
	}
	return convert.Convert(v, ty)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// pathString renders the path of a cty.PathError as a suffix such as
// ".split.eval" or "[2]".
func pathString(err error) string {
	pe, ok := err.(cty.PathError)
	if !ok {
		return ""
	}
	var b strings.Builder
	for _, step := range pe.Path {
		switch s := step.(type) {
		case cty.GetAttrStep:
			b.WriteString("." + s.Name)
		case cty.IndexStep:
			switch {
			case !s.Key.IsKnown() || s.Key.IsNull():
				b.WriteString("[?]")
			case s.Key.Type() == cty.String:
				b.WriteString("." + s.Key.AsString())
			case s.Key.Type() == cty.Number:
				b.WriteString("[" + s.Key.AsBigFloat().Text('f', -1) + "]")
			}
		}
	}
	return b.String()
}

// MarshalJSON encodes a wholly known value as plain JSON: nulls as null,
// objects and maps with sorted keys, numbers in their shortest form.
func MarshalJSON(v cty.Value) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeJSON(buf *bytes.Buffer, v cty.Value) error {
	v, _ = v.UnmarkDeep()
	if !v.IsKnown() {
		return fmt.Errorf("value is not known")
	}
	if v.IsNull() {
		buf.WriteString("null")
		return nil
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		return writeJSONString(buf, v.AsString())
	case ty == cty.Bool:
		buf.WriteString(strconv.FormatBool(v.True()))
	case ty == cty.Number:
		bf := v.AsBigFloat()
		if bf.IsInf() {
			return fmt.Errorf("infinite number")
		}
		if bf.IsInt() && bf.MantExp(nil) <= 128 {
			buf.WriteString(bf.Text('f', 0))
			return nil
		}
		f64, _ := bf.Float64()
		buf.WriteString(strconv.FormatFloat(f64, 'g', -1, 64))
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		buf.WriteByte('[')
		i := 0
		for it := v.ElementIterator(); it.Next(); i++ {
			if i > 0 {
				buf.WriteByte(',')
			}
			_, ev := it.Element()
			if err := writeJSON(buf, ev); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case ty.IsMapType() || ty.IsObjectType():
		buf.WriteByte('{')
		i := 0
		for it := v.ElementIterator(); it.Next(); i++ {
			if i > 0 {
				buf.WriteByte(',')
			}
			k, ev := it.Element()
			if err := writeJSONString(buf, k.AsString()); err != nil {
				return err
			}
			buf.WriteByte(':')
			if err := writeJSON(buf, ev); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("a value of type %s has no JSON form", ty.FriendlyName())
	}
	return nil
}

func writeJSONString(buf *bytes.Buffer, s string) error {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
	return nil
}

// AttrRange returns the range of an attribute's value in the stage body,
// so that errors a plugin reports about an attribute point into the file.
// attr may name a nested key of an object, as in "split.eval". It falls
// back to the stage's declaration range.
func (f *File) AttrRange(s *Stage, attr string) hcl.Range {
	if s == nil {
		return hcl.Range{Filename: f.Path}
	}
	parts := strings.Split(attr, ".")
	if parts[0] == "input" && s.Input != nil {
		return s.Input.Range
	}
	if s.Body == nil || parts[0] == "" {
		return s.DeclRange
	}
	content, _, _ := s.Body.PartialContent(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: parts[0]}},
	})
	a, ok := content.Attributes[parts[0]]
	if !ok {
		return s.DeclRange
	}
	expr := a.Expr
	for _, key := range parts[1:] {
		obj, ok := expr.(*hclsyntax.ObjectConsExpr)
		if !ok {
			break
		}
		var next hcl.Expression
		for _, item := range obj.Items {
			kv, diags := item.KeyExpr.Value(nil)
			if diags.HasErrors() || !kv.IsKnown() || kv.IsNull() || kv.Type() != cty.String {
				continue
			}
			if kv.AsString() == key {
				next = item.ValueExpr
				break
			}
		}
		if next == nil {
			break
		}
		expr = next
	}
	return expr.Range()
}

// suggestAttributes adds "Did you mean" to hcl's unsupported-argument
// diagnostics, naming the closest attribute the stage declares.
func suggestAttributes(diags hcl.Diagnostics, spec sdk.Spec) {
	names := make([]string, len(spec.Config))
	for i, a := range spec.Config {
		names[i] = a.Name
	}
	for _, d := range diags {
		if d.Summary != "Unsupported argument" || d.Subject == nil || strings.Contains(d.Detail, "Did you mean") {
			continue
		}
		const prefix = `An argument named "`
		i := strings.Index(d.Detail, prefix)
		if i < 0 {
			continue
		}
		rest := d.Detail[i+len(prefix):]
		j := strings.Index(rest, `"`)
		if j < 0 {
			continue
		}
		d.Detail += didYouMean(rest[:j], names)
	}
}
