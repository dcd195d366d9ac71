package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// HF is a Hugging Face tokenizers BPE tokenizer loaded from tokenizer.json.
// Both kinds in use are supported: SentencePiece-style models with byte
// fallback (Llama 2: a Prepend "▁" + Replace " "→"▁" normalizer or a
// Metaspace pre-tokenizer, and "<0xHH>" byte pieces) and byte-level models
// (GPT-2, Llama 3, Qwen2: a ByteLevel pre-tokenizer, possibly after a Split
// with the model's regex).
//
// Supported components: normalizers Sequence, Prepend, Replace, NFC, NFD,
// NFKC, NFKD, Lowercase, Strip; pre-tokenizers ByteLevel, Metaspace, Split
// (string patterns, the GPT-2, Llama 3 and Qwen2 regexes through hand-written
// scanners, and any other regex Go's regexp accepts), Digits, Whitespace,
// WhitespaceSplit, Sequence; decoders Sequence, Replace, ByteFallback, Fuse,
// Strip, ByteLevel, Metaspace, BPEDecoder. The post-processor is read only to
// learn whether BOS is added; truncation and padding are ignored.
//
// Encode matches non-special added tokens in the text, as Hugging Face does
// even when special tokens are not split; EncodeSpecial also matches special
// ones. Added tokens marked normalized are matched in the normalized text
// against their normalized content, as Hugging Face does. Decode drops special
// tokens (as skip_special_tokens=True does) and keeps byte sequences that are
// not valid UTF-8 as raw bytes.
type HF struct {
	name         string
	vocab        map[string]int32
	pieces       []string
	merges       map[uint64]mergeRule
	unk          int32
	byteFallback bool
	fuseUnk      bool
	ignoreMerges bool
	contPrefix   string
	endSuffix    string
	byteID       [256]int32

	norm normalizer
	pre  []preTokenizer
	dec  []decoder

	added     []addedToken
	addedByID map[int32]*addedToken
	addedByS  map[string]int32
	// Matchers for added tokens: raw (non-normalized) and normalized
	// phases, each for non-special only and for all.
	rawPlain, rawAll   *addedMatcher
	normPlain, normAll *addedMatcher

	bos, eos int32
	addBOS   bool

	mu    sync.Mutex
	cache map[string][]int32
}

type mergeRule struct {
	rank int32
	id   int32
}

type addedToken struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

const (
	cacheMaxEntries = 50000
	cacheMaxKey     = 256
)

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

type hfFile struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         struct {
		Type                    string          `json:"type"`
		Vocab                   json.RawMessage `json:"vocab"`
		Merges                  json.RawMessage `json:"merges"`
		UnkToken                *string         `json:"unk_token"`
		ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
		FuseUnk                 bool            `json:"fuse_unk"`
		ByteFallback            bool            `json:"byte_fallback"`
		IgnoreMerges            bool            `json:"ignore_merges"`
	} `json:"model"`
}

// LoadHF parses a tokenizer.json; config, if not nil, is the content of a
// tokenizer_config.json (for add_bos_token, bos_token and eos_token).
func LoadHF(name string, tokenizerJSON, config []byte) (*HF, error) {
	return parseHF(name, tokenizerJSON, config)
}

func parseHF(name string, data, config []byte) (*HF, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name, err)
	}
	m := &f.Model
	if m.Type == "" && len(m.Merges) > 0 {
		m.Type = "BPE"
	}
	if m.Type != "BPE" {
		return nil, fmt.Errorf("tokenizer: %s: model type %q is not supported (only BPE)", name, m.Type)
	}
	var vocab map[string]int32
	if !isNull(m.Vocab) {
		if err := json.Unmarshal(m.Vocab, &vocab); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: model vocab: %w", name, err)
		}
	}
	t := &HF{name: name, vocab: vocab, unk: -1, byteFallback: m.ByteFallback, fuseUnk: m.FuseUnk,
		ignoreMerges: m.IgnoreMerges, addedByID: map[int32]*addedToken{}, addedByS: map[string]int32{},
		cache: map[string][]int32{}, bos: -1, eos: -1}
	if t.vocab == nil {
		t.vocab = map[string]int32{}
	}
	if m.ContinuingSubwordPrefix != nil {
		t.contPrefix = *m.ContinuingSubwordPrefix
	}
	if m.EndOfWordSuffix != nil {
		t.endSuffix = *m.EndOfWordSuffix
	}
	size := 0
	for p, id := range t.vocab {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer: %s: negative id %d for %q", name, id, p)
		}
		size = max(size, int(id)+1)
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 {
			return nil, fmt.Errorf("tokenizer: %s: negative id %d for added token %q", name, a.ID, a.Content)
		}
		size = max(size, int(a.ID)+1)
	}
	if size > 1<<24 {
		return nil, fmt.Errorf("tokenizer: %s: vocabulary of %d ids is too large", name, size)
	}
	t.pieces = make([]string, size)
	for p, id := range t.vocab {
		t.pieces[id] = p
	}
	if m.UnkToken != nil {
		if id, ok := t.vocab[*m.UnkToken]; ok {
			t.unk = id
		}
	}
	for b := 0; b < 256; b++ {
		t.byteID[b] = -1
		if id, ok := t.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteID[b] = id
		}
	}
	if err := t.loadMerges(m.Merges); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name, err)
	}
	var err error
	if t.norm, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: normalizer: %w", name, err)
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: pre_tokenizer: %w", name, err)
	}
	if t.dec, err = parseDecoder(f.Decoder); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: decoder: %w", name, err)
	}
	t.setAdded(f.AddedTokens)
	if err := t.setSpecials(f.PostProcessor, config); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name, err)
	}
	return t, nil
}

func (t *HF) loadMerges(raw json.RawMessage) error {
	t.merges = map[uint64]mergeRule{}
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var pairs [][2]string
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		pairs = make([][2]string, len(strs))
		for i, s := range strs {
			p, ok := t.splitMerge(s)
			if !ok {
				return fmt.Errorf("merge %d %q is not two vocabulary pieces separated by a space", i, s)
			}
			pairs[i] = p
		}
	} else if err := json.Unmarshal(raw, &pairs); err != nil {
		return fmt.Errorf("merges: %w", err)
	}
	return t.setMerges(pairs)
}

// splitMerge splits an "a b" merge. Pieces that themselves contain spaces
// (some SentencePiece conversions have unreachable raw-space pieces) make the
// string ambiguous; the first split whose halves and concatenation are all
// in the vocabulary is taken.
func (t *HF) splitMerge(s string) ([2]string, bool) {
	if a, b, ok := strings.Cut(s, " "); ok && !strings.Contains(b, " ") {
		return [2]string{a, b}, true
	}
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			continue
		}
		a, b := s[:i], s[i+1:]
		_, okA := t.vocab[a]
		_, okB := t.vocab[b]
		_, okAB := t.vocab[a+strings.TrimPrefix(b, t.contPrefix)]
		if okA && okB && okAB {
			return [2]string{a, b}, true
		}
	}
	return [2]string{}, false
}

func (t *HF) setMerges(pairs [][2]string) error {
	t.merges = make(map[uint64]mergeRule, len(pairs))
	for rank, p := range pairs {
		a, ok1 := t.vocab[p[0]]
		b, ok2 := t.vocab[p[1]]
		if !ok1 || !ok2 {
			return fmt.Errorf("merge %d (%q, %q) uses a piece missing from the vocabulary", rank, p[0], p[1])
		}
		merged := p[0] + strings.TrimPrefix(p[1], t.contPrefix)
		id, ok := t.vocab[merged]
		if !ok {
			return fmt.Errorf("merge %d (%q, %q): %q is missing from the vocabulary", rank, p[0], p[1], merged)
		}
		k := pairKey(a, b)
		if _, dup := t.merges[k]; !dup {
			t.merges[k] = mergeRule{rank: int32(rank), id: id}
		}
	}
	return nil
}

func (t *HF) setAdded(added []addedToken) {
	t.added = added
	t.rawPlain, t.rawAll = newAddedMatcher(), newAddedMatcher()
	t.normPlain, t.normAll = newAddedMatcher(), newAddedMatcher()
	for i := range t.added {
		a := &t.added[i]
		t.addedByID[a.ID] = a
		if _, ok := t.addedByS[a.Content]; !ok {
			t.addedByS[a.Content] = a.ID
		}
		t.pieces[a.ID] = a.Content
		if a.Content == "" {
			continue
		}
		if a.Normalized {
			// Matched in normalized text against normalized content.
			c := a.Content
			if t.norm != nil {
				c = t.norm.normalize(c)
			}
			t.normAll.add(c, a)
			if !a.Special {
				t.normPlain.add(c, a)
			}
		} else {
			t.rawAll.add(a.Content, a)
			if !a.Special {
				t.rawPlain.add(a.Content, a)
			}
		}
	}
}

// tokenName reads a token given as a string, {"content": ...} or null.
func tokenName(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Content != "" {
		return o.Content, true
	}
	return "", false
}

func (t *HF) idOf(s string) (int32, bool) {
	if id, ok := t.addedByS[s]; ok {
		return id, true
	}
	id, ok := t.vocab[s]
	return id, ok
}

// setSpecials works out BOS, EOS and AddBOS from tokenizer_config.json, the
// post-processor and, failing those, well-known token names.
func (t *HF) setSpecials(post json.RawMessage, config []byte) error {
	var cfg map[string]json.RawMessage
	if len(config) > 0 {
		if err := json.Unmarshal(config, &cfg); err != nil {
			return fmt.Errorf("tokenizer_config.json: %w", err)
		}
	}
	bosSet, eosSet, addSet := false, false, false
	if raw, ok := cfg["bos_token"]; ok {
		bosSet = true
		if s, ok := tokenName(raw); ok {
			if id, ok := t.idOf(s); ok {
				t.bos = id
			}
		}
	}
	if raw, ok := cfg["eos_token"]; ok {
		eosSet = true
		if s, ok := tokenName(raw); ok {
			if id, ok := t.idOf(s); ok {
				t.eos = id
			}
		}
	}
	if raw, ok := cfg["add_bos_token"]; ok {
		var b bool
		if json.Unmarshal(raw, &b) == nil {
			t.addBOS, addSet = b, true
		}
	}
	// The post-processor: a TemplateProcessing (possibly inside a Sequence)
	// whose single template starts with a special token adds BOS.
	if first, ok := templateFirstSpecial(post); ok {
		if !addSet {
			t.addBOS, addSet = true, true
		}
		if !bosSet {
			t.bos, bosSet = first, true
		}
	}
	if !bosSet {
		for _, s := range []string{"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"} {
			if id, ok := t.addedByS[s]; ok {
				t.bos = id
				break
			}
		}
	}
	if !eosSet {
		for _, s := range []string{"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"} {
			if id, ok := t.addedByS[s]; ok {
				t.eos = id
				break
			}
		}
	}
	if t.bos < 0 {
		t.addBOS = false
	}
	return nil
}

func templateFirstSpecial(raw json.RawMessage) (int32, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false
	}
	var p struct {
		Type       string            `json:"type"`
		Processors []json.RawMessage `json:"processors"`
		Single     []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
		} `json:"single"`
		SpecialTokens map[string]struct {
			IDs []int32 `json:"ids"`
		} `json:"special_tokens"`
	}
	if json.Unmarshal(raw, &p) != nil {
		return 0, false
	}
	switch p.Type {
	case "Sequence":
		for _, q := range p.Processors {
			if id, ok := templateFirstSpecial(q); ok {
				return id, true
			}
		}
	case "TemplateProcessing":
		if len(p.Single) > 0 && p.Single[0].SpecialToken != nil {
			st, ok := p.SpecialTokens[p.Single[0].SpecialToken.ID]
			if ok && len(st.IDs) > 0 {
				return st.IDs[0], true
			}
		}
	case "BertProcessing", "RobertaProcessing":
		var q struct {
			Cls [2]json.RawMessage `json:"cls"`
		}
		if json.Unmarshal(raw, &q) == nil {
			var id int32
			if json.Unmarshal(q.Cls[1], &id) == nil {
				return id, true
			}
		}
	}
	return 0, false
}

// Encode returns the ids of text; only non-special added tokens are matched.
func (t *HF) Encode(text string) []int32 { return t.encode(text, false) }

// EncodeSpecial is Encode, but all added tokens, special ones included, that
// appear literally in text become their ids, as Hugging Face does.
func (t *HF) EncodeSpecial(text string) []int32 { return t.encode(text, true) }

func (t *HF) encode(text string, special bool) []int32 {
	raw, norm := t.rawPlain, t.normPlain
	if special {
		raw, norm = t.rawAll, t.normAll
	}
	var out []int32
	// Phase 1: non-normalized added tokens, in the raw text.
	raw.split(text, func(sec string, off int, id int32, isTok bool) {
		if isTok {
			out = append(out, id)
			return
		}
		if t.norm != nil {
			sec = t.norm.normalize(sec)
		}
		// Phase 2: normalized added tokens, in the normalized text.
		norm.split(sec, func(sub string, off2 int, id int32, isTok bool) {
			if isTok {
				out = append(out, id)
				return
			}
			out = t.encodeNormalized(out, sub, off == 0 && off2 == 0)
		})
	})
	return out
}

// encodeNormalized pre-tokenizes normalized text and runs the model on each
// piece. atStart tells whether the text begins the original input.
func (t *HF) encodeNormalized(out []int32, s string, atStart bool) []int32 {
	if s == "" {
		return out
	}
	pieces := []piece{{s, atStart}}
	for _, p := range t.pre {
		pieces = p.preTokenize(pieces)
	}
	for _, p := range pieces {
		out = t.bpe(out, p.s)
	}
	return out
}

// bpe appends the ids of one pre-tokenized word.
func (t *HF) bpe(out []int32, word string) []int32 {
	if word == "" {
		return out
	}
	if len(word) <= cacheMaxKey {
		t.mu.Lock()
		ids, ok := t.cache[word]
		t.mu.Unlock()
		if ok {
			return append(out, ids...)
		}
	}
	ids := t.bpeWord(word)
	if len(word) <= cacheMaxKey {
		t.mu.Lock()
		if len(t.cache) >= cacheMaxEntries {
			clear(t.cache)
		}
		t.cache[word] = ids
		t.mu.Unlock()
	}
	return append(out, ids...)
}

type bsym struct {
	id         int32
	prev, next int
	alive      bool
}

type bcand struct {
	rank int32
	pos  int
	id   int32
}

func bcandLess(a, b *bcand) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.pos < b.pos
}

func (t *HF) bpeWord(word string) []int32 {
	if t.ignoreMerges {
		if id, ok := t.vocab[word]; ok {
			return []int32{id}
		}
	}
	syms := make([]bsym, 0, len(word))
	push := func(id int32) {
		syms = append(syms, bsym{id: id, prev: len(syms) - 1, next: -1, alive: true})
		if n := len(syms); n > 1 {
			syms[n-2].next = n - 1
		}
	}
	for i := 0; i < len(word); {
		_, w := utf8.DecodeRuneInString(word[i:])
		ch := word[i : i+w]
		key := ch
		if i > 0 && t.contPrefix != "" {
			key = t.contPrefix + key
		}
		if i+w == len(word) && t.endSuffix != "" {
			key += t.endSuffix
		}
		i += w
		if id, ok := t.vocab[key]; ok {
			push(id)
			continue
		}
		if t.byteFallback {
			okAll := true
			for k := 0; k < len(ch); k++ {
				okAll = okAll && t.byteID[ch[k]] >= 0
			}
			if okAll {
				for k := 0; k < len(ch); k++ {
					push(t.byteID[ch[k]])
				}
				continue
			}
		}
		if t.unk >= 0 {
			if t.fuseUnk && len(syms) > 0 && syms[len(syms)-1].id == t.unk {
				continue
			}
			push(t.unk)
		}
	}
	h := pq[bcand]{items: make([]bcand, 0, len(syms)), less: bcandLess}
	try := func(l int) {
		r := syms[l].next
		if r < 0 {
			return
		}
		if m, ok := t.merges[pairKey(syms[l].id, syms[r].id)]; ok {
			h.push(bcand{rank: m.rank, pos: l, id: m.id})
		}
	}
	for i := range syms {
		try(i)
	}
	for h.len() > 0 {
		c := h.pop()
		l := &syms[c.pos]
		if !l.alive || l.next < 0 {
			continue
		}
		r := &syms[l.next]
		if m, ok := t.merges[pairKey(l.id, r.id)]; !ok || m.id != c.id {
			continue
		}
		l.id = c.id
		r.alive = false
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = c.pos
		}
		if l.prev >= 0 {
			try(l.prev)
		}
		try(c.pos)
	}
	out := make([]int32, 0, len(syms))
	for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
		out = append(out, syms[i].id)
	}
	return out
}

// Decode returns the text of ids, dropping special tokens; see the type's
// documentation.
func (t *HF) Decode(ids []int32) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.pieces) {
			continue
		}
		if a, ok := t.addedByID[id]; ok && a.Special || id == t.bos || id == t.eos {
			continue
		}
		toks = append(toks, t.pieces[id])
	}
	for _, d := range t.dec {
		toks = d.decode(toks)
	}
	var b bytes.Buffer
	for _, s := range toks {
		b.WriteString(s)
	}
	return b.String()
}

// Piece returns the vocabulary piece or added token content of id.
func (t *HF) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// VocabSize is one more than the largest id, added tokens included.
func (t *HF) VocabSize() int { return len(t.pieces) }

// BOS is the bos_token of tokenizer_config.json, else the first special
// token of the TemplateProcessing post-processor, else a well-known added
// token ("<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"), else -1.
func (t *HF) BOS() int32 { return t.bos }

// EOS is the eos_token of tokenizer_config.json, else a well-known added
// token ("</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"), else -1.
func (t *HF) EOS() int32 { return t.eos }

// AddBOS is add_bos_token of tokenizer_config.json, else whether the
// post-processor's single template starts with a special token.
func (t *HF) AddBOS() bool { return t.addBOS }

// SpecialID looks up added tokens by content.
func (t *HF) SpecialID(s string) (int32, bool) {
	id, ok := t.addedByS[s]
	return id, ok
}

// AddedTokens returns the contents of the added tokens, ordered by id.
func (t *HF) AddedTokens() []string {
	a := append([]addedToken(nil), t.added...)
	sort.Slice(a, func(i, j int) bool { return a[i].ID < a[j].ID })
	out := make([]string, len(a))
	for i := range a {
		out[i] = a[i].Content
	}
	return out
}
