package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
)

// Llama2c is a llama2.c tokenizer.bin: a SentencePiece-style BPE with piece
// scores and byte fallback. Pieces use a plain space where SentencePiece uses
// "▁". Id 1 is BOS and id 2 is EOS (their pieces are "\n<s>\n" and
// "\n</s>\n" in llama2.c exports).
//
// Encoding follows llama2.c's encode: a dummy space is prepended to non-empty
// text, each UTF-8 character becomes its piece or, when it has none, one
// byte-fallback piece per byte, and then the adjacent pair with the highest
// score whose concatenation is a piece is merged (the leftmost on ties) until
// none is left. A priority queue over a linked list keeps this O(n log n).
//
// Decoding maps "<0xHH>" pieces to bytes and drops BOS and EOS. After BOS, and
// at the start of ids, the leading space of the first piece is removed, as
// llama2.c does after BOS; this undoes the dummy prefix so that
// Decode(Encode(x)) == x.
//
// llama2.c treats all text literally: "<s>" and "</s>" in text are not
// special, so EncodeSpecial is Encode.
type Llama2c struct {
	pieces    []string
	scores    []float32
	ids       map[string]int32
	byteID    [256]int32
	isByte    []int16 // byte value+1 for "<0xHH>" pieces, else 0
	maxLen    int
	bos, eos  int32
	spaceID   int32
	hasPrefix bool
}

// LoadLlama2c reads a llama2.c tokenizer.bin.
func LoadLlama2c(path string) (*Llama2c, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return ParseLlama2c(path, data)
}

// ParseLlama2c parses the content of a llama2.c tokenizer.bin; name is used in
// errors. The layout is an int32 max_token_length and then, for each token, a
// float32 score, an int32 length and that many bytes, all little-endian. The
// number of tokens is whatever the file holds.
func ParseLlama2c(name string, data []byte) (*Llama2c, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("tokenizer: %s: too short for a llama2.c tokenizer (%d bytes)", name, len(data))
	}
	maxLen := int64(int32(binary.LittleEndian.Uint32(data)))
	if maxLen < 0 || maxLen > int64(len(data)) {
		return nil, fmt.Errorf("tokenizer: %s: max_token_length %d is outside 0..%d (file size)", name, maxLen, len(data))
	}
	t := &Llama2c{maxLen: int(maxLen), spaceID: -1}
	// Every token takes at least 8 bytes, which bounds the allocation.
	capHint := (len(data) - 4) / 8
	t.pieces = make([]string, 0, capHint)
	t.scores = make([]float32, 0, capHint)
	off := 4
	for off < len(data) {
		if len(data)-off < 8 {
			return nil, fmt.Errorf("tokenizer: %s: token %d header at offset %d is truncated (file size %d)", name, len(t.pieces), off, len(data))
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int64(int32(binary.LittleEndian.Uint32(data[off+4:])))
		off += 8
		if n < 0 || n > int64(len(data)-off) {
			return nil, fmt.Errorf("tokenizer: %s: token %d length %d at offset %d exceeds the file (size %d)", name, len(t.pieces), n, off-4, len(data))
		}
		t.pieces = append(t.pieces, string(data[off:off+int(n)]))
		t.scores = append(t.scores, score)
		off += int(n)
	}
	if len(t.pieces) == 0 {
		return nil, fmt.Errorf("tokenizer: %s: no tokens", name)
	}
	t.init()
	return t, nil
}

func (t *Llama2c) init() {
	n := len(t.pieces)
	t.ids = make(map[string]int32, n)
	t.isByte = make([]int16, n)
	for i := n - 1; i >= 0; i-- { // lowest id wins for duplicate pieces
		t.ids[t.pieces[i]] = int32(i)
	}
	for b := range t.byteID {
		t.byteID[b] = -1
	}
	for i, p := range t.pieces {
		if b, ok := parseByteFallback(p); ok {
			t.isByte[i] = int16(b) + 1
			if t.byteID[b] < 0 && p[3] <= 'F' && p[4] <= 'F' { // "<0xHH>", upper case
				t.byteID[b] = int32(i)
			}
		}
	}
	for b := 0; b < 256; b++ {
		if t.byteID[b] >= 0 {
			continue
		} else if b+3 < n {
			t.byteID[b] = int32(b + 3) // llama2.c's assumption
		} else {
			t.byteID[b] = 0 // <unk>
		}
	}
	t.bos, t.eos = -1, -1
	if n > 1 {
		t.bos = 1
	}
	if n > 2 {
		t.eos = 2
	}
	if id, ok := t.ids[" "]; ok {
		t.spaceID = id
	}
}

// parseByteFallback recognizes "<0xHH>" pieces.
func parseByteFallback(p string) (byte, bool) {
	if len(p) != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexVal(p[3])
	lo, ok2 := hexVal(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// MaxTokenLength is the header's max_token_length.
func (t *Llama2c) MaxTokenLength() int { return t.maxLen }

// Score returns the merge score of id.
func (t *Llama2c) Score(id int32) float32 {
	if id < 0 || int(id) >= len(t.scores) {
		return 0
	}
	return t.scores[id]
}

// sym is a symbol of the working text during merging.
type sym struct {
	start, end int   // byte range in the working text
	id         int32 // current id
	prev, next int   // linked list, -1 at the ends
	mergeable  bool  // false for byte-fallback symbols
}

type cand struct {
	score float32
	left  int32 // index of the left symbol; also its start order
	right int32
	size  int32 // end-start of the merged piece, to detect stale entries
	id    int32
}

func candLess(a, b *cand) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

// Encode encodes text as llama2.c does, without BOS or EOS.
func (t *Llama2c) Encode(text string) []int32 {
	if text == "" {
		return nil
	}
	w := " " + text
	syms := make([]sym, 0, len(w))
	add := func(s sym) {
		s.prev = len(syms) - 1
		s.next = -1
		if s.prev >= 0 {
			syms[s.prev].next = len(syms)
		}
		syms = append(syms, s)
	}
	// The dummy prefix.
	if t.spaceID >= 0 {
		add(sym{start: 0, end: 1, id: t.spaceID, mergeable: true})
	} else {
		add(sym{start: 0, end: 1, id: t.byteID[' ']})
	}
	// Characters: a lead byte and up to three continuation bytes, as
	// llama2.c groups them.
	for i := 1; i < len(w); {
		j := i + 1
		for j < len(w) && j-i < 4 && w[j]&0xC0 == 0x80 {
			j++
		}
		if id, ok := t.ids[w[i:j]]; ok {
			add(sym{start: i, end: j, id: id, mergeable: true})
		} else {
			for k := i; k < j; k++ {
				add(sym{start: k, end: k + 1, id: t.byteID[w[k]]})
			}
		}
		i = j
	}
	h := pq[cand]{items: make([]cand, 0, len(syms)), less: candLess}
	try := func(l int) {
		r := syms[l].next
		if r < 0 || !syms[l].mergeable || !syms[r].mergeable {
			return
		}
		id, ok := t.ids[w[syms[l].start:syms[r].end]]
		if !ok {
			return
		}
		h.push(cand{score: t.scores[id], left: int32(l), right: int32(r), size: int32(syms[r].end - syms[l].start), id: id})
	}
	for i := range syms {
		try(i)
	}
	for h.len() > 0 {
		c := h.pop()
		l := &syms[c.left]
		if l.end < 0 || l.next != int(c.right) || int32(syms[c.right].end-l.start) != c.size {
			continue // stale
		}
		r := &syms[c.right]
		l.end, l.id = r.end, c.id
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = int(c.left)
		}
		r.end = -1 // dead
		if l.prev >= 0 {
			try(l.prev)
		}
		try(int(c.left))
	}
	out := make([]int32, 0, len(syms))
	for i := 0; i >= 0; i = syms[i].next {
		out = append(out, syms[i].id)
	}
	return out
}

// EncodeSpecial is Encode: llama2.c treats "<s>" and "</s>" in text
// literally.
func (t *Llama2c) EncodeSpecial(text string) []int32 { return t.Encode(text) }

// Decode returns the text of ids; see the type's documentation.
func (t *Llama2c) Decode(ids []int32) string {
	buf := make([]byte, 0, len(ids)*4)
	afterBOS := true
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.pieces) {
			continue
		}
		if id == t.bos {
			afterBOS = true
			continue
		}
		if id == t.eos {
			continue
		}
		start := len(buf)
		if b := t.isByte[id]; b != 0 {
			buf = append(buf, byte(b-1))
		} else {
			buf = append(buf, t.pieces[id]...)
		}
		if afterBOS && len(buf) > start && buf[start] == ' ' {
			buf = append(buf[:start], buf[start+1:]...)
		}
		afterBOS = false
	}
	return string(buf)
}

// Piece returns the raw piece of id (a space stands for "▁").
func (t *Llama2c) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// VocabSize is the number of tokens in the file.
func (t *Llama2c) VocabSize() int { return len(t.pieces) }

// BOS is 1.
func (t *Llama2c) BOS() int32 { return t.bos }

// EOS is 2.
func (t *Llama2c) EOS() int32 { return t.eos }

// AddBOS is true, as in llama2.c.
func (t *Llama2c) AddBOS() bool { return t.bos >= 0 }

// SpecialID knows "<s>" (BOS), "</s>" (EOS) and "<unk>" (id 0), and the exact
// pieces of ids 0..2.
func (t *Llama2c) SpecialID(s string) (int32, bool) {
	switch s {
	case "<unk>":
		return 0, true
	case "<s>":
		return t.bos, t.bos >= 0
	case "</s>":
		return t.eos, t.eos >= 0
	}
	for i := 0; i < 3 && i < len(t.pieces); i++ {
		if t.pieces[i] == s {
			return int32(i), true
		}
	}
	return 0, false
}
