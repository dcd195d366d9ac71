package tokenizer

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// component is the common shape of normalizers, pre-tokenizers and decoders
// in tokenizer.json.
type component struct {
	Type string `json:"type"`
	// Sequence
	Normalizers   []json.RawMessage `json:"normalizers"`
	PreTokenizers []json.RawMessage `json:"pretokenizers"`
	Decoders      []json.RawMessage `json:"decoders"`
	// Prepend
	Prepend string `json:"prepend"`
	// Replace, Split
	Pattern *struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content  *string `json:"content"`
	Behavior string  `json:"behavior"`
	Invert   bool    `json:"invert"`
	// Strip normalizer
	StripLeft  *bool `json:"strip_left"`
	StripRight *bool `json:"strip_right"`
	// Strip decoder
	Start int `json:"start"`
	Stop  int `json:"stop"`
	// ByteLevel, Metaspace
	AddPrefixSpace *bool   `json:"add_prefix_space"`
	UseRegex       *bool   `json:"use_regex"`
	Replacement    *string `json:"replacement"`
	PrependScheme  *string `json:"prepend_scheme"`
	Split          *bool   `json:"split"`
	// Digits
	IndividualDigits bool `json:"individual_digits"`
	// BPEDecoder
	Suffix *string `json:"suffix"`
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func parseComponent(raw json.RawMessage) (component, error) {
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, err
	}
	return c, nil
}

// pattern compiles a Replace or Split pattern into a function returning match
// ranges. Known lookahead regexes use the hand-written scanners.
func (c *component) pattern() (func(string) [][2]int, string, error) {
	if c.Pattern == nil {
		return nil, "", fmt.Errorf("%s: missing pattern", c.Type)
	}
	if c.Pattern.String != nil {
		lit := *c.Pattern.String
		return func(s string) [][2]int { return literalMatches(s, lit) }, lit, nil
	}
	if c.Pattern.Regex != nil {
		src := *c.Pattern.Regex
		if sc, ok := knownScanner(src); ok {
			return func(s string) [][2]int {
				var out [][2]int
				sc(s, func(lo, hi int) { out = append(out, [2]int{lo, hi}) })
				return out
			}, "", nil
		}
		re, err := regexp.Compile(src)
		if err != nil {
			return nil, "", fmt.Errorf("%s: regex %q is not supported: %v", c.Type, src, err)
		}
		return func(s string) [][2]int {
			var out [][2]int
			for _, m := range re.FindAllStringIndex(s, -1) {
				if m[1] > m[0] {
					out = append(out, [2]int{m[0], m[1]})
				}
			}
			return out
		}, "", nil
	}
	return nil, "", fmt.Errorf("%s: pattern has neither String nor Regex", c.Type)
}

// literalMatches returns the non-overlapping occurrences of lit in s.
func literalMatches(s, lit string) [][2]int {
	if lit == "" {
		return nil
	}
	var out [][2]int
	for off := 0; ; {
		i := strings.Index(s[off:], lit)
		if i < 0 {
			return out
		}
		out = append(out, [2]int{off + i, off + i + len(lit)})
		off += i + len(lit)
	}
}

// ---- normalizers

type normalizer interface{ normalize(string) string }

type normFunc func(string) string

func (f normFunc) normalize(s string) string { return f(s) }

func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := parseComponent(raw)
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var seq []normalizer
		for _, r := range c.Normalizers {
			n, err := parseNormalizer(r)
			if err != nil {
				return nil, err
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		return normFunc(func(s string) string {
			for _, n := range seq {
				s = n.normalize(s)
			}
			return s
		}), nil
	case "Prepend":
		p := c.Prepend
		return normFunc(func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}), nil
	case "Replace":
		match, _, err := c.pattern()
		if err != nil {
			return nil, err
		}
		content := ""
		if c.Content != nil {
			content = *c.Content
		}
		return normFunc(func(s string) string { return replaceRanges(s, match(s), content) }), nil
	case "NFC":
		return normFunc(norm.NFC.String), nil
	case "NFD":
		return normFunc(norm.NFD.String), nil
	case "NFKC":
		return normFunc(norm.NFKC.String), nil
	case "NFKD":
		return normFunc(norm.NFKD.String), nil
	case "Lowercase":
		return normFunc(strings.ToLower), nil
	case "Strip":
		left := c.StripLeft == nil || *c.StripLeft
		right := c.StripRight == nil || *c.StripRight
		return normFunc(func(s string) string {
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}), nil
	}
	return nil, fmt.Errorf("normalizer type %q is not supported", c.Type)
}

func replaceRanges(s string, ms [][2]int, content string) string {
	if len(ms) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + len(ms)*len(content))
	last := 0
	for _, m := range ms {
		b.WriteString(s[last:m[0]])
		b.WriteString(content)
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// ---- pre-tokenizers

// piece is a pre-tokenized piece; atStart tells whether it begins the
// original input (for Metaspace's prepend_scheme "first").
type piece struct {
	s       string
	atStart bool
}

type preTokenizer interface{ preTokenize([]piece) []piece }

type preFunc func([]piece) []piece

func (f preFunc) preTokenize(p []piece) []piece { return f(p) }

// eachPiece builds a pre-tokenizer that splits every piece into ranges.
func eachPiece(split func(s string) [][2]int) preTokenizer {
	return preFunc(func(in []piece) []piece {
		out := make([]piece, 0, len(in))
		for _, p := range in {
			for i, r := range split(p.s) {
				if r[1] > r[0] {
					out = append(out, piece{p.s[r[0]:r[1]], p.atStart && i == 0 && r[0] == 0})
				}
			}
		}
		return out
	})
}

func parsePreTokenizer(raw json.RawMessage) ([]preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := parseComponent(raw)
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		return parseSequence(c.PreTokenizers, parsePreTokenizer)
	case "ByteLevel":
		prefix := c.AddPrefixSpace != nil && *c.AddPrefixSpace
		useRegex := c.UseRegex == nil || *c.UseRegex
		return []preTokenizer{preFunc(func(in []piece) []piece {
			out := make([]piece, 0, len(in))
			for _, p := range in {
				s := p.s
				if prefix && !strings.HasPrefix(s, " ") {
					s = " " + s
				}
				if !useRegex {
					out = append(out, piece{byteLevelMap(s), p.atStart})
					continue
				}
				scanGPT2(s, func(lo, hi int) {
					out = append(out, piece{byteLevelMap(s[lo:hi]), p.atStart && lo == 0})
				})
			}
			return out
		})}, nil
	case "Metaspace":
		rep := "▁"
		if c.Replacement != nil {
			rep = *c.Replacement
		}
		scheme := "always"
		if c.PrependScheme != nil {
			scheme = *c.PrependScheme
		} else if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
			scheme = "never"
		}
		split := c.Split == nil || *c.Split
		return []preTokenizer{preFunc(func(in []piece) []piece {
			out := make([]piece, 0, len(in))
			for _, p := range in {
				s := strings.ReplaceAll(p.s, " ", rep)
				if (scheme == "always" || scheme == "first" && p.atStart) && !strings.HasPrefix(s, rep) {
					s = rep + s
				}
				if !split || rep == "" {
					out = append(out, piece{s, p.atStart})
					continue
				}
				// Split before each replacement, which starts the next piece.
				for i, r := range splitBehavior(s, literalMatches(s, rep), "MergedWithNext", false) {
					out = append(out, piece{s[r[0]:r[1]], p.atStart && i == 0})
				}
			}
			return out
		})}, nil
	case "Split":
		match, _, err := c.pattern()
		if err != nil {
			return nil, err
		}
		behavior := c.Behavior
		invert := c.Invert
		switch behavior {
		case "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous":
		default:
			return nil, fmt.Errorf("Split behavior %q is not supported", behavior)
		}
		return []preTokenizer{eachPiece(func(s string) [][2]int {
			return splitBehavior(s, match(s), behavior, invert)
		})}, nil
	case "Digits":
		individual := c.IndividualDigits
		return []preTokenizer{eachPiece(func(s string) [][2]int {
			var ms [][2]int
			for i := 0; i < len(s); {
				r, w := utf8.DecodeRuneInString(s[i:])
				if unicode.IsNumber(r) {
					ms = append(ms, [2]int{i, i + w})
				}
				i += w
			}
			b := "Contiguous"
			if individual {
				b = "Isolated"
			}
			return splitBehavior(s, ms, b, false)
		})}, nil
	case "WhitespaceSplit":
		return []preTokenizer{eachPiece(func(s string) [][2]int {
			var out [][2]int
			for i := 0; i < len(s); {
				j := span(s, i, func(r rune) bool { return !isS(r) }, -1)
				if j > i {
					out = append(out, [2]int{i, j})
				}
				i = span(s, j, isS, -1)
			}
			return out
		})}, nil
	case "Whitespace":
		re := regexp.MustCompile(`[\p{L}\p{N}\p{M}_]+|[^\p{L}\p{N}\p{M}_\s]+`)
		return []preTokenizer{eachPiece(func(s string) [][2]int {
			var out [][2]int
			for _, m := range re.FindAllStringIndex(s, -1) {
				out = append(out, [2]int{m[0], m[1]})
			}
			return out
		})}, nil
	}
	return nil, fmt.Errorf("pre-tokenizer type %q is not supported", c.Type)
}

// splitBehavior turns the matches of a Split pattern into pieces following
// Hugging Face's SplitDelimiterBehavior.
func splitBehavior(s string, ms [][2]int, behavior string, invert bool) [][2]int {
	type seg struct {
		lo, hi int
		match  bool
	}
	var segs []seg
	last := 0
	for _, m := range ms {
		if m[0] > last {
			segs = append(segs, seg{last, m[0], invert})
		}
		if m[1] > m[0] {
			segs = append(segs, seg{m[0], m[1], !invert})
		}
		last = m[1]
	}
	if last < len(s) {
		segs = append(segs, seg{last, len(s), invert})
	}
	var out [][2]int
	switch behavior {
	case "Removed":
		for _, g := range segs {
			if !g.match {
				out = append(out, [2]int{g.lo, g.hi})
			}
		}
	case "Isolated":
		for _, g := range segs {
			out = append(out, [2]int{g.lo, g.hi})
		}
	case "MergedWithPrevious":
		prevMatch := false
		for _, g := range segs {
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1][1] = g.hi
			} else {
				out = append(out, [2]int{g.lo, g.hi})
			}
			prevMatch = g.match
		}
	case "MergedWithNext":
		prevMatch := false
		for i := len(segs) - 1; i >= 0; i-- {
			g := segs[i]
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1][0] = g.lo
			} else {
				out = append(out, [2]int{g.lo, g.hi})
			}
			prevMatch = g.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case "Contiguous":
		for i, g := range segs {
			if i > 0 && segs[i-1].match == g.match {
				out[len(out)-1][1] = g.hi
			} else {
				out = append(out, [2]int{g.lo, g.hi})
			}
		}
	}
	return out
}

// ---- decoders

type decoder interface{ decode([]string) []string }

type decFunc func([]string) []string

func (f decFunc) decode(t []string) []string { return f(t) }

func parseDecoder(raw json.RawMessage) ([]decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := parseComponent(raw)
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		return parseSequence(c.Decoders, parseDecoder)
	case "Replace":
		match, _, err := c.pattern()
		if err != nil {
			return nil, err
		}
		content := ""
		if c.Content != nil {
			content = *c.Content
		}
		return []decoder{decFunc(func(toks []string) []string {
			for i, s := range toks {
				toks[i] = replaceRanges(s, match(s), content)
			}
			return toks
		})}, nil
	case "ByteFallback":
		return []decoder{decFunc(decodeByteFallback)}, nil
	case "Fuse":
		return []decoder{decFunc(func(toks []string) []string {
			return []string{strings.Join(toks, "")}
		})}, nil
	case "Strip":
		content := " "
		if c.Content != nil {
			content = *c.Content
		}
		start, stop := c.Start, c.Stop
		return []decoder{decFunc(func(toks []string) []string {
			for i, s := range toks {
				for n := 0; n < start && content != "" && strings.HasPrefix(s, content); n++ {
					s = s[len(content):]
				}
				for n := 0; n < stop && content != "" && strings.HasSuffix(s, content); n++ {
					s = s[:len(s)-len(content)]
				}
				toks[i] = s
			}
			return toks
		})}, nil
	case "ByteLevel":
		return []decoder{decFunc(func(toks []string) []string {
			var buf []byte
			for _, s := range toks {
				buf = byteLevelUnmap(s, buf)
			}
			return []string{string(buf)}
		})}, nil
	case "Metaspace":
		rep := "▁"
		if c.Replacement != nil {
			rep = *c.Replacement
		}
		strip := true
		if c.PrependScheme != nil {
			strip = *c.PrependScheme != "never"
		} else if c.AddPrefixSpace != nil {
			strip = *c.AddPrefixSpace
		}
		return []decoder{decFunc(func(toks []string) []string {
			for i, s := range toks {
				s = strings.ReplaceAll(s, rep, " ")
				if i == 0 && strip {
					s = strings.TrimPrefix(s, " ")
				}
				toks[i] = s
			}
			return toks
		})}, nil
	case "BPEDecoder":
		suffix := "</w>"
		if c.Suffix != nil {
			suffix = *c.Suffix
		}
		return []decoder{decFunc(func(toks []string) []string {
			for i, s := range toks {
				rep := " "
				if i == len(toks)-1 {
					rep = ""
				}
				toks[i] = strings.ReplaceAll(s, suffix, rep)
			}
			return toks
		})}, nil
	}
	return nil, fmt.Errorf("decoder type %q is not supported", c.Type)
}

// decodeByteFallback turns runs of "<0xHH>" tokens into the bytes they
// stand for. Unlike Hugging Face, runs that are not valid UTF-8 are kept as
// raw bytes instead of U+FFFD.
func decodeByteFallback(toks []string) []string {
	out := toks[:0]
	var run []byte
	inRun := false
	for _, s := range toks {
		if b, ok := parseByteFallback(s); ok {
			run = append(run, b)
			inRun = true
			continue
		}
		if inRun {
			out = append(out, string(run))
			run, inRun = run[:0], false
		}
		out = append(out, s)
	}
	if inRun {
		out = append(out, string(run))
	}
	return out
}

// ---- added tokens

// addedMatcher finds added tokens in text, leftmost and then longest first,
// honouring lstrip, rstrip and single_word.
type addedMatcher struct {
	byFirst map[byte][]addedMatch
}

type addedMatch struct {
	s   string
	tok *addedToken
}

func newAddedMatcher() *addedMatcher { return &addedMatcher{byFirst: map[byte][]addedMatch{}} }

func (m *addedMatcher) add(s string, tok *addedToken) {
	if s == "" {
		return
	}
	l := append(m.byFirst[s[0]], addedMatch{s, tok})
	sort.SliceStable(l, func(i, j int) bool { return len(l[i].s) > len(l[j].s) })
	m.byFirst[s[0]] = l
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

// split calls f with the text sections and matched tokens of text, in order.
// Empty text sections are skipped.
func (m *addedMatcher) split(text string, f func(sec string, off int, id int32, isTok bool)) {
	if len(m.byFirst) == 0 {
		if text != "" {
			f(text, 0, 0, false)
		}
		return
	}
	start := 0 // start of the pending text section
	for i := 0; i < len(text); {
		var hit *addedMatch
		for k, c := range m.byFirst[text[i]] {
			if !strings.HasPrefix(text[i:], c.s) {
				continue
			}
			if c.tok.SingleWord {
				if r, _ := utf8.DecodeLastRuneInString(text[:i]); i > 0 && isWordRune(r) {
					continue
				}
				if r, _ := utf8.DecodeRuneInString(text[i+len(c.s):]); i+len(c.s) < len(text) && isWordRune(r) {
					continue
				}
			}
			hit = &m.byFirst[text[i]][k]
			break
		}
		if hit == nil {
			i++
			continue
		}
		lo, hi := i, i+len(hit.s)
		if hit.tok.LStrip {
			lo = start + len(strings.TrimRightFunc(text[start:lo], unicode.IsSpace))
		}
		if hit.tok.RStrip {
			hi = len(text) - len(strings.TrimLeftFunc(text[hi:], unicode.IsSpace))
		}
		if lo > start {
			f(text[start:lo], start, 0, false)
		}
		f("", lo, hit.tok.ID, true)
		start, i = hi, hi
	}
	if start < len(text) {
		f(text[start:], start, 0, false)
	}
}

// parseSequence parses the members of a Sequence component, flattening
// nested sequences.
func parseSequence[T any](raws []json.RawMessage, parse func(json.RawMessage) ([]T, error)) ([]T, error) {
	var seq []T
	for _, r := range raws {
		items, err := parse(r)
		if err != nil {
			return nil, err
		}
		seq = append(seq, items...)
	}
	return seq, nil
}
