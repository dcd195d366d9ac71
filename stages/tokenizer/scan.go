package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// The split patterns of byte-level BPE tokenizers use a negative lookahead
// that Go's regexp lacks, so the known ones are implemented by hand here.
// Each scanner calls emit with consecutive byte ranges covering the whole
// input, exactly as the leftmost-first (backtracking) regex engine would
// split it.

// Known patterns, as they appear in tokenizer.json files.
const (
	patGPT2   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	patLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	patQwen2  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// scanner splits s into consecutive ranges.
type scanner func(s string, emit func(lo, hi int))

// knownScanner returns the hand-written scanner for a known pattern.
func knownScanner(pattern string) (scanner, bool) {
	switch pattern {
	case patGPT2:
		return scanGPT2, true
	case patLlama3:
		return func(s string, emit func(lo, hi int)) { scanLlama3(s, 3, emit) }, true
	case patQwen2:
		return func(s string, emit func(lo, hi int)) { scanLlama3(s, 1, emit) }, true
	}
	return nil, false
}

func isL(r rune) bool { return unicode.IsLetter(r) }
func isN(r rune) bool { return unicode.IsNumber(r) }
func isS(r rune) bool { return unicode.IsSpace(r) }

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }

// at decodes the rune at i; invalid bytes decode as utf8.RuneError of width 1.
func at(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// span advances from i over runes satisfying f, at most max runes (max < 0:
// unbounded), and returns the end.
func span(s string, i int, f func(rune) bool, max int) int {
	for n := 0; i < len(s) && n != max; n++ {
		r, w := at(s, i)
		if !f(r) {
			break
		}
		i += w
	}
	return i
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i (s[i] == '\”) and
// returns its length, or 0. fold makes it ASCII case-insensitive.
func contraction(s string, i int, fold bool) int {
	lower := func(c byte) byte {
		if fold && c >= 'A' && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	if i+1 >= len(s) {
		return 0
	}
	switch lower(s[i+1]) {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(s) && lower(s[i+2]) == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(s) && lower(s[i+2]) == 'l' {
			return 3
		}
	}
	return 0
}

// spaceTail handles \s+(?!\S)|\s+ for a whitespace run starting at i.
func spaceTail(s string, i int) int {
	j := span(s, i, isS, -1)
	if j == len(s) {
		return j
	}
	// Followed by a non-space: give back the last whitespace rune, if that
	// leaves at least one.
	_, w := utf8.DecodeLastRuneInString(s[i:j])
	if j-w > i {
		return j - w
	}
	return j
}

// scanGPT2 implements patGPT2.
func scanGPT2(s string, emit func(lo, hi int)) {
	for i := 0; i < len(s); {
		end := gpt2Next(s, i)
		emit(i, end)
		i = end
	}
}

func gpt2Next(s string, i int) int {
	if s[i] == '\'' {
		if n := contraction(s, i, false); n > 0 {
			return i + n
		}
	}
	r, w := at(s, i)
	j := i
	if r == ' ' {
		r2, w2 := at(s, i+w)
		if w2 > 0 && !isS(r2) {
			r, j = r2, i+w
			w = w2
		}
	}
	switch {
	case isL(r):
		return span(s, j, isL, -1)
	case isN(r):
		return span(s, j, isN, -1)
	case !isS(r):
		return span(s, j, isOther, -1)
	}
	return spaceTail(s, i)
}

// scanLlama3 implements patLlama3 (maxDigits 3) and patQwen2 (maxDigits 1).
func scanLlama3(s string, maxDigits int, emit func(lo, hi int)) {
	for i := 0; i < len(s); {
		end := llama3Next(s, i, maxDigits)
		emit(i, end)
		i = end
	}
}

func isCRLF(r rune) bool { return r == '\r' || r == '\n' }

func llama3Next(s string, i int, maxDigits int) int {
	if s[i] == '\'' {
		if n := contraction(s, i, true); n > 0 {
			return i + n
		}
	}
	r, w := at(s, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isL(r) {
		return span(s, i, isL, -1)
	}
	if !isCRLF(r) && !isN(r) {
		if r2, w2 := at(s, i+w); w2 > 0 && isL(r2) {
			return span(s, i+w, isL, -1)
		}
	}
	// \p{N}{1,3}
	if isN(r) {
		return span(s, i, isN, maxDigits)
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	j := i
	if r == ' ' {
		if r2, w2 := at(s, i+w); w2 > 0 && isOther(r2) {
			j = i + w
			r = r2
		}
	}
	if isOther(r) {
		k := span(s, j, isOther, -1)
		return span(s, k, isCRLF, -1)
	}
	// \s*[\r\n]+
	run := span(s, i, isS, -1)
	last := -1
	for k := i; k < run; {
		c, cw := at(s, k)
		if isCRLF(c) {
			last = k
		}
		k += cw
	}
	if last >= 0 {
		return last + 1
	}
	// \s+(?!\S)|\s+
	return spaceTail(s, i)
}

// GPT-2's reversible map between bytes and printable runes.
var (
	byteToRune [256]rune
	runeToByte map[rune]byte
)

func init() {
	runeToByte = make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// byteLevelMap maps each byte of s to its rune.
func byteLevelMap(s string) string {
	buf := make([]byte, 0, len(s)*2)
	for i := 0; i < len(s); i++ {
		buf = utf8.AppendRune(buf, byteToRune[s[i]])
	}
	return string(buf)
}

// byteLevelUnmap reverses byteLevelMap; runes outside the map are kept.
func byteLevelUnmap(s string, buf []byte) []byte {
	for _, r := range s {
		if b, ok := runeToByte[r]; ok {
			buf = append(buf, b)
		} else {
			buf = utf8.AppendRune(buf, r)
		}
	}
	return buf
}
