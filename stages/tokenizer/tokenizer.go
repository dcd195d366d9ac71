// Package tokenizer provides the tokenizers used on DPO data: llama2.c
// tokenizer.bin files, Hugging Face tokenizer.json files (BPE models, both
// SentencePiece-style with byte fallback and GPT-2 style byte-level), GPT-2
// vocab.json+merges.txt pairs, and a built-in byte-level tokenizer for models
// trained from scratch.
//
// All tokenizers are safe for concurrent use.
//
// Conventions shared by every implementation:
//
//   - Encode never adds BOS or EOS. Callers that want them consult AddBOS and
//     prepend BOS themselves.
//   - Encode treats special tokens literally: the text "</s>" is encoded as
//     ordinary text. EncodeSpecial (on the concrete types, or the generic
//     EncodeWithSpecials helper) splits out special tokens that appear
//     literally in the text, as chat templates require.
//   - Decode drops BOS, EOS and other special tokens, so that
//     Decode(Encode(x)) == x for every valid UTF-8 x, and byte sequences that
//     are not valid UTF-8 (a model may emit half of a character) are returned
//     as raw bytes rather than replaced by U+FFFD.
package tokenizer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Tokenizer turns text into token ids and back.
type Tokenizer interface {
	// Encode returns ids for text. It never adds BOS/EOS itself; callers use
	// BOS()/EOS() and AddBOS().
	Encode(text string) []int32
	// Decode returns the text of ids. decode(encode(x)) == x for valid UTF-8
	// x. SentencePiece-style tokenizers remove the single leading space that
	// the dummy prefix adds (after a BOS, or at the start of ids), as the
	// reference implementations do. Special tokens are dropped.
	Decode(ids []int32) string
	// Piece returns the raw vocabulary piece of id (e.g. "▁the", "<0x0A>",
	// "Ġthe"), or "" when id is out of range.
	Piece(id int32) string
	// VocabSize is the number of ids, including added tokens.
	VocabSize() int
	// BOS is the beginning-of-sequence id, -1 if none.
	BOS() int32
	// EOS is the end-of-sequence id, -1 if none.
	EOS() int32
	// AddBOS reports whether sequences should start with BOS.
	AddBOS() bool
	// SpecialID looks up special or added tokens like "<|im_end|>".
	SpecialID(s string) (int32, bool)
}

// SpecialEncoder is implemented by the tokenizers of this package: it
// encodes text while splitting out the special tokens that appear literally in
// it. See each type for which tokens count.
type SpecialEncoder interface {
	EncodeSpecial(text string) []int32
}

// bytesDigestSeed is hashed to give the Digest of the built-in byte
// tokenizer. Change its version whenever the byte tokenizer's ids change.
const bytesDigestSeed = "dpopipe/tokenizer/bytes/v1: ids 0..255 bytes, 256 BOS, 257 EOS, 258 PAD"

// isBytesName reports whether path names the built-in byte tokenizer.
func isBytesName(path string) bool { return path == "bytes" || path == "byte" }

// Load reads the tokenizer at path. It recognizes:
//
//   - "bytes" or "byte": the built-in byte tokenizer (NewBytes); these names
//     win over files of the same name in the working directory.
//   - a Hugging Face tokenizer.json file, or a directory containing
//     tokenizer.json and optionally tokenizer_config.json. A file named
//     tokenizer.json also picks up a tokenizer_config.json beside it.
//   - a GPT-2 vocab.json (with merges.txt beside it), or a directory holding
//     both but no tokenizer.json.
//   - otherwise, a llama2.c tokenizer.bin (or a directory holding one).
func Load(path string) (Tokenizer, error) {
	if isBytesName(path) {
		return NewBytes(), nil
	}
	files, kind, err := resolve(path)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindHF:
		data, err := os.ReadFile(files[0])
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		var cfg []byte
		if len(files) > 1 {
			if cfg, err = os.ReadFile(files[1]); err != nil {
				return nil, fmt.Errorf("tokenizer: %w", err)
			}
		}
		return parseHF(files[0], data, cfg)
	case kindGPT2:
		return LoadGPT2Files(files[0], files[1])
	default:
		return LoadLlama2c(files[0])
	}
}

type fileKind int

const (
	kindLlama2c fileKind = iota
	kindHF
	kindGPT2
)

// resolve finds the files making up the tokenizer at path and its kind.
func resolve(path string) ([]string, fileKind, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("tokenizer: %w", err)
	}
	exists := func(p string) bool {
		s, err := os.Stat(p)
		return err == nil && !s.IsDir()
	}
	if st.IsDir() {
		tj := filepath.Join(path, "tokenizer.json")
		if exists(tj) {
			files := []string{tj}
			if cfg := filepath.Join(path, "tokenizer_config.json"); exists(cfg) {
				files = append(files, cfg)
			}
			return files, kindHF, nil
		}
		vj, mt := filepath.Join(path, "vocab.json"), filepath.Join(path, "merges.txt")
		if exists(vj) && exists(mt) {
			return []string{vj, mt}, kindGPT2, nil
		}
		tb := filepath.Join(path, "tokenizer.bin")
		if exists(tb) {
			return []string{tb}, kindLlama2c, nil
		}
		return nil, 0, fmt.Errorf("tokenizer: directory %s holds no tokenizer.json, vocab.json+merges.txt or tokenizer.bin", path)
	}
	base := filepath.Base(path)
	if base == "vocab.json" {
		mt := filepath.Join(filepath.Dir(path), "merges.txt")
		if !exists(mt) {
			return nil, 0, fmt.Errorf("tokenizer: %s has no merges.txt beside it", path)
		}
		return []string{path, mt}, kindGPT2, nil
	}
	if looksJSON(path) {
		files := []string{path}
		if base == "tokenizer.json" {
			if cfg := filepath.Join(filepath.Dir(path), "tokenizer_config.json"); exists(cfg) {
				files = append(files, cfg)
			}
		}
		return files, kindHF, nil
	}
	return []string{path}, kindLlama2c, nil
}

// looksJSON reports whether the file at path starts, after white space, with
// '{'. A llama2.c tokenizer.bin starts with a small little-endian int32, whose
// first byte is never '{' followed by JSON.
func looksJSON(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, _ := io.ReadFull(f, buf)
	b := bytes.TrimLeft(buf[:n], " \t\r\n\ufeff")
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) < 2 || b[0] != '{' {
		return false
	}
	// A llama2.c max_token_length of 123 ('{') would be followed by three
	// zero bytes; JSON would not.
	return b[1] != 0
}

// Digest returns the sha256 (hex) of the content of the tokenizer at path,
// for cache keys. For a single file it is the file's plain sha256; when the
// tokenizer is made of several files (tokenizer.json with
// tokenizer_config.json, vocab.json with merges.txt) it is the sha256 of each
// file's base name, length and content in turn. For "bytes" it is the sha256
// of a fixed string naming the byte tokenizer's layout.
func Digest(path string) (string, error) {
	if isBytesName(path) {
		sum := sha256.Sum256([]byte(bytesDigestSeed))
		return hex.EncodeToString(sum[:]), nil
	}
	files, _, err := resolve(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return "", fmt.Errorf("tokenizer: %w", err)
		}
		if len(files) > 1 {
			st, err := f.Stat()
			if err != nil {
				f.Close()
				return "", fmt.Errorf("tokenizer: %w", err)
			}
			name := filepath.Base(p)
			var hdr [8]byte
			binary.LittleEndian.PutUint64(hdr[:], uint64(len(name)))
			h.Write(hdr[:])
			h.Write([]byte(name))
			binary.LittleEndian.PutUint64(hdr[:], uint64(st.Size()))
			h.Write(hdr[:])
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("tokenizer: reading %s: %w", p, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// EncodeWithSpecials encodes text with t, except that every occurrence of one
// of specials (leftmost, longest first) that t knows through SpecialID becomes
// that single id. The text between specials is encoded with t.Encode, segment
// by segment, so a SentencePiece-style tokenizer adds its dummy prefix space
// to each segment. Specials that t does not know are encoded as text.
func EncodeWithSpecials(t Tokenizer, text string, specials []string) []int32 {
	m := newMatcher()
	for _, s := range specials {
		if id, ok := t.SpecialID(s); ok && s != "" {
			m.add(s, id)
		}
	}
	var out []int32
	start := 0
	m.scan(text, func(lo, hi int, id int32) {
		if lo > start {
			out = append(out, t.Encode(text[start:lo])...)
		}
		out = append(out, id)
		start = hi
	})
	if start < len(text) {
		out = append(out, t.Encode(text[start:])...)
	}
	return out
}

// matcher finds literal tokens in text, leftmost and then longest first.
type matcher struct {
	byFirst map[byte][]matchTok
}

type matchTok struct {
	s  string
	id int32
}

func newMatcher() *matcher { return &matcher{byFirst: map[byte][]matchTok{}} }

func (m *matcher) add(s string, id int32) {
	if s == "" {
		return
	}
	l := append(m.byFirst[s[0]], matchTok{s, id})
	sort.SliceStable(l, func(i, j int) bool { return len(l[i].s) > len(l[j].s) })
	m.byFirst[s[0]] = l
}

func (m *matcher) empty() bool { return len(m.byFirst) == 0 }

// scan calls f for each non-overlapping match, left to right.
func (m *matcher) scan(text string, f func(lo, hi int, id int32)) {
	if m.empty() {
		return
	}
	for i := 0; i < len(text); {
		cands := m.byFirst[text[i]]
		matched := false
		for _, c := range cands {
			if strings.HasPrefix(text[i:], c.s) {
				f(i, i+len(c.s), c.id)
				i += len(c.s)
				matched = true
				break
			}
		}
		if !matched {
			i++
		}
	}
}
