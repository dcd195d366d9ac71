package tokenizer

// Ids of the built-in byte tokenizer's special tokens.
const (
	BytesBOS int32 = 256
	BytesEOS int32 = 257
	BytesPAD int32 = 258
)

// Bytes is the built-in byte-level tokenizer for models trained from scratch:
// ids 0..255 are the bytes, 256 is BOS "<s>", 257 is EOS "</s>" and 258 is PAD
// "<pad>".
type Bytes struct{}

// NewBytes returns the built-in byte-level tokenizer.
func NewBytes() Tokenizer { return Bytes{} }

var bytesSpecials = [...]string{"<s>", "</s>", "<pad>"}

// Encode returns the bytes of text as ids.
func (Bytes) Encode(text string) []int32 {
	ids := make([]int32, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = int32(text[i])
	}
	return ids
}

// EncodeSpecial is Encode, except that the literal texts "<s>", "</s>" and
// "<pad>" become BOS, EOS and PAD.
func (b Bytes) EncodeSpecial(text string) []int32 {
	return EncodeWithSpecials(b, text, bytesSpecials[:])
}

// Decode concatenates the bytes of ids, dropping BOS, EOS, PAD and ids out of
// range.
func (Bytes) Decode(ids []int32) string {
	buf := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < 256 {
			buf = append(buf, byte(id))
		}
	}
	return string(buf)
}

// Piece returns the single byte of ids 0..255 (as a raw, possibly invalid
// UTF-8 string) and "<s>", "</s>", "<pad>" for the special ids.
func (Bytes) Piece(id int32) string {
	switch {
	case id >= 0 && id < 256:
		return string([]byte{byte(id)})
	case id >= 256 && id < 259:
		return bytesSpecials[id-256]
	}
	return ""
}

// VocabSize is 259.
func (Bytes) VocabSize() int { return 259 }

// BOS is 256.
func (Bytes) BOS() int32 { return BytesBOS }

// EOS is 257.
func (Bytes) EOS() int32 { return BytesEOS }

// AddBOS is true: sequences start with BOS.
func (Bytes) AddBOS() bool { return true }

// SpecialID knows "<s>", "</s>" and "<pad>".
func (Bytes) SpecialID(s string) (int32, bool) {
	for i, p := range bytesSpecials {
		if p == s {
			return int32(256 + i), true
		}
	}
	return 0, false
}
