package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// KeyParts are the components of a cache key, in the order they are hashed.
type KeyParts struct {
	FormatVersion int               `json:"format_version"`
	StageType     string            `json:"stage_type"`
	PluginSHA256  string            `json:"plugin_sha256"`
	PluginVersion string            `json:"plugin_version"`
	Config        json.RawMessage   `json:"config,omitempty"` // canonical JSON of the evaluated config
	Inputs        []string          `json:"inputs,omitempty"` // cache keys of upstream outputs, in a fixed order
	Files         map[string]string `json:"files,omitempty"`  // attribute name → content digest
}

// Component is one named key component, as printed by `dpopipe explain`.
type Component struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// keyMagic starts the hashed encoding, so that a key can never collide with
// the digest of some other structure.
const keyMagic = "dpopipe-cache-key\x00"

// Components returns every key component in hashing order:
// format_version, stage_type, plugin_sha256, plugin_version, config,
// inputs[0], inputs[1]..., then files.<attribute> sorted by attribute.
// The config is shown in canonical form (or verbatim if it is not valid JSON).
func (k KeyParts) Components() []Component {
	cfg := "null"
	if len(bytes.TrimSpace(k.Config)) > 0 {
		if c, err := Canonical(k.Config); err == nil {
			cfg = string(c)
		} else {
			cfg = string(k.Config)
		}
	}
	comps := []Component{
		{"format_version", strconv.Itoa(k.FormatVersion)},
		{"stage_type", k.StageType},
		{"plugin_sha256", k.PluginSHA256},
		{"plugin_version", k.PluginVersion},
		{"config", cfg},
	}
	for i, in := range k.Inputs {
		comps = append(comps, Component{fmt.Sprintf("inputs[%d]", i), in})
	}
	names := make([]string, 0, len(k.Files))
	for name := range k.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		comps = append(comps, Component{"files." + name, k.Files[name]})
	}
	return comps
}

// Key returns the lowercase hex sha256 of an unambiguous encoding of the
// components: the magic string, the number of components, then for each
// component its name and its value, every one prefixed by its length as a
// big-endian uint64. Component names are unique (inputs are indexed, files
// are prefixed), so distinct KeyParts never share an encoding.
func (k KeyParts) Key() string {
	h := sha256.New()
	comps := k.Components()
	io.WriteString(h, keyMagic)
	writeUint(h, uint64(len(comps)))
	for _, c := range comps {
		writeField(h, c.Name)
		writeField(h, c.Value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeUint(w io.Writer, n uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	w.Write(b[:])
}

func writeField(w io.Writer, s string) {
	writeUint(w, uint64(len(s)))
	io.WriteString(w, s)
}

// Canonical re-encodes a JSON value canonically: object keys sorted by their
// UTF-8 bytes, no insignificant whitespace, strings re-escaped the same way
// every time, and numbers normalised so equal values are spelled alike
// (1.0, 1, 1e0 and 10e-1 all become 1; 0.50 becomes 0.5; -0 becomes 0;
// 1e21 becomes 1e21). Numbers keep their exact decimal value: no rounding
// through float64. Duplicate object keys and trailing data are errors.
func Canonical(v json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var buf bytes.Buffer
	if err := canonValue(dec, &buf, 0); err != nil {
		return nil, fmt.Errorf("canonical JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("canonical JSON: trailing data after the value")
	}
	return json.RawMessage(buf.Bytes()), nil
}

const maxCanonDepth = 10000

func canonValue(dec *json.Decoder, buf *bytes.Buffer, depth int) error {
	if depth > maxCanonDepth {
		return errors.New("nesting too deep")
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return errors.New("unexpected end of input")
		}
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			buf.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					buf.WriteByte(',')
				}
				if err := canonValue(dec, buf, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil { // ']'
				return err
			}
			buf.WriteByte(']')
		case '{':
			type member struct {
				key string
				val []byte
			}
			var members []member
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key, ok := kt.(string)
				if !ok {
					return fmt.Errorf("object key is %T", kt)
				}
				if seen[key] {
					return fmt.Errorf("duplicate object key %q", key)
				}
				seen[key] = true
				var vb bytes.Buffer
				if err := canonValue(dec, &vb, depth+1); err != nil {
					return err
				}
				members = append(members, member{key, vb.Bytes()})
			}
			if _, err := dec.Token(); err != nil { // '}'
				return err
			}
			sort.Slice(members, func(i, j int) bool { return members[i].key < members[j].key })
			buf.WriteByte('{')
			for i, m := range members {
				if i > 0 {
					buf.WriteByte(',')
				}
				writeString(buf, m.key)
				buf.WriteByte(':')
				buf.Write(m.val)
			}
			buf.WriteByte('}')
		default:
			return fmt.Errorf("unexpected %v", t)
		}
	case string:
		writeString(buf, t)
	case json.Number:
		n, err := canonNumber(string(t))
		if err != nil {
			return err
		}
		buf.WriteString(n)
	case bool:
		if t {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case nil:
		buf.WriteString("null")
	default:
		return fmt.Errorf("unexpected token %T", tok)
	}
	return nil
}

// writeString writes s as a JSON string: only '"', '\\' and control
// characters are escaped; everything else, including non-ASCII, is literal.
func writeString(buf *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	buf.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			buf.WriteString(`\"`)
		case c == '\\':
			buf.WriteString(`\\`)
		case c == '\n':
			buf.WriteString(`\n`)
		case c == '\r':
			buf.WriteString(`\r`)
		case c == '\t':
			buf.WriteString(`\t`)
		case c == '\b':
			buf.WriteString(`\b`)
		case c == '\f':
			buf.WriteString(`\f`)
		case c < 0x20:
			buf.WriteString(`\u00`)
			buf.WriteByte(hexDigits[c>>4])
			buf.WriteByte(hexDigits[c&0xf])
		default:
			buf.WriteByte(c)
		}
	}
	buf.WriteByte('"')
}

// canonNumber normalises a JSON number literal to digits×10^exp with no
// leading or trailing zeros in digits, then spells it: plain integer when
// it has at most 21 digits, plain decimal when the point falls within the
// digits or at most 6 zeros after it, scientific (d.ddde±x) otherwise.
func canonNumber(s string) (string, error) {
	neg := false
	rest := s
	if strings.HasPrefix(rest, "-") {
		neg = true
		rest = rest[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(rest), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := intPart + frac
	var exp int64
	if hasExp {
		e, err := strconv.ParseInt(strings.TrimPrefix(expPart, "+"), 10, 64)
		if err != nil || e > 1<<40 || e < -(1<<40) {
			return "", fmt.Errorf("number %q: exponent out of range", s)
		}
		exp = e
	}
	exp -= int64(len(frac))
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", fmt.Errorf("invalid number %q", s)
		}
	}
	digits = strings.TrimLeft(digits, "0")
	if digits == "" {
		return "0", nil
	}
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	digits = trimmed

	var out strings.Builder
	if neg {
		out.WriteByte('-')
	}
	n := int64(len(digits))
	point := n + exp // position of the decimal point relative to digits[0]
	switch {
	case exp >= 0 && point <= 21:
		out.WriteString(digits)
		out.WriteString(strings.Repeat("0", int(exp)))
	case exp < 0 && point > 0:
		out.WriteString(digits[:point])
		out.WriteByte('.')
		out.WriteString(digits[point:])
	case exp < 0 && point > -6:
		out.WriteString("0.")
		out.WriteString(strings.Repeat("0", int(-point)))
		out.WriteString(digits)
	default:
		out.WriteByte(digits[0])
		if n > 1 {
			out.WriteByte('.')
			out.WriteString(digits[1:])
		}
		out.WriteByte('e')
		e := point - 1
		if e >= 0 {
			out.WriteByte('+')
		}
		out.WriteString(strconv.FormatInt(e, 10))
	}
	return out.String(), nil
}
