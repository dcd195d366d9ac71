package tokenizer

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dpopipe/dpopipe/internal/testassets"
)

// variedTexts exercise ASCII, Unicode, emoji, CJK, newlines, runs of
// spaces, digits, code and contractions.
var variedTexts = []string{
	"Hello world",
	"I believe the meaning of life is",
	"",
	" ",
	"   ",
	"a  b   c    d     e",
	" leading space",
	"trailing space ",
	"\n",
	"line one\nline two\n\n\nline five\n",
	"\ttabs\tand\r\nCRLF\r\n",
	"héllo wörld, ça va? Ünïcödé ß",
	"emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
	"日本語のテキストです。中文文本。한국어 텍스트",
	"Ελληνικά и русский текст",
	"digits 0123456789 3.14159 1,000,000 2024-01-31",
	"func main() {\n\tfmt.Println(\"hi\") // comment\n\tx := a[i] + b*c\n}\n",
	"I'm you're we've they'll he'd it's can't WON'T O'NEIL",
	"<s> </s> <|im_start|> [INST] literal specials",
	"\x00\x01\x7f control",
	"  \n  \n \n",
	"ﬁ ligature Ⅻ ① ２",
	"\n\nHuman: what are some pranks?\n\nAssistant: I’ll give you a couple…",
}

// llama2Dialogues returns up to n texts from the HH-RLHF asset, or nil.
func hhTexts(t testing.TB, n int) []string {
	t.Helper()
	dir, ok := testassets.Root()
	if !ok {
		return nil
	}
	f, err := os.Open(filepath.Join(dir, "prefs", "hh-rlhf", "harmless-base-test.jsonl"))
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	var out []string
	for sc.Scan() && len(out) < n {
		var rec struct{ Chosen, Rejected string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		out = append(out, rec.Chosen, rec.Rejected)
	}
	return out
}

func loadAsset(t *testing.T, rel string) Tokenizer {
	t.Helper()
	tok, err := Load(testassets.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestStories260KReference(t *testing.T) {
	tok := loadAsset(t, "models/stories260K/tok512.bin")
	if tok.VocabSize() != 512 || tok.BOS() != 1 || tok.EOS() != 2 || !tok.AddBOS() {
		t.Fatalf("VocabSize %d BOS %d EOS %d AddBOS %v", tok.VocabSize(), tok.BOS(), tok.EOS(), tok.AddBOS())
	}
	n := 0
	for _, r := range testassets.ReferenceLogprobs(t) {
		text, want := r.Text, r.IDs
		got := append([]int32{tok.BOS()}, tok.Encode(text)...)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %v, want %v", text, got, want)
		}
		if d := tok.Decode(got); d != text {
			t.Errorf("Decode = %q, want %q", d, text)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("found %d reference texts, want 3", n)
	}
}

func TestLlama2Known(t *testing.T) {
	want := []int32{306, 4658, 278, 6593, 310, 2834, 338}
	for _, rel := range []string{"tokenizers/llama2/tokenizer.bin", "tokenizers/llama2-hf/tokenizer.json", "tokenizers/llama2-hf"} {
		t.Run(rel, func(t *testing.T) {
			tok := loadAsset(t, rel)
			if got := tok.Encode("I believe the meaning of life is"); !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
			if !tok.AddBOS() || tok.BOS() != 1 || tok.EOS() != 2 || tok.VocabSize() != 32000 {
				t.Errorf("AddBOS %v BOS %d EOS %d VocabSize %d", tok.AddBOS(), tok.BOS(), tok.EOS(), tok.VocabSize())
			}
			if got := tok.Decode(append([]int32{1}, want...)); got != "I believe the meaning of life is" {
				t.Errorf("Decode = %q", got)
			}
			if id, ok := tok.SpecialID("</s>"); !ok || id != 2 {
				t.Errorf("SpecialID(</s>) = %d, %v", id, ok)
			}
		})
	}
}

func TestLlama2BinAndHFAgree(t *testing.T) {
	bin := loadAsset(t, "tokenizers/llama2/tokenizer.bin")
	hf := loadAsset(t, "tokenizers/llama2-hf/tokenizer.json")
	texts := append(append([]string{}, variedTexts...), hhTexts(t, 100)...)
	for _, s := range texts {
		a, b := bin.Encode(s), hf.Encode(s)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%.60q:\n bin %v\n hf  %v", s, a, b)
		}
	}
	// Pieces agree too, up to the "▁" spelling.
	for _, id := range []int32{0, 3, 13, 259, 306, 29871, 31999} {
		if a, b := bin.Piece(id), strings.ReplaceAll(hf.Piece(id), "▁", " "); a != b && id > 2 {
			t.Errorf("Piece(%d): bin %q, hf %q", id, a, b)
		}
	}
}

func TestGPT2Known(t *testing.T) {
	// Expected ids derived by hand from vocab.json and merges.txt (merge
	// ranks are 0-based lines after "#version"). The GPT-2 regex first
	// splits the text; each piece is mapped byte→rune (space is "Ġ",
	// newline "Ċ", é's bytes C3 A9 are "Ã©"), then merged by rank.
	cases := []struct {
		text string
		want []int32
	}{
		// "Hello" | " world": "Hello" = 15496 and "Ġworld" = 995 are whole
		// vocabulary entries (Ġ w #10, o r #17, Ġw or #220, l d #79,
		// Ġwor ld #739; H e #1288, l l #41, l o ... to "Hello").
		{"Hello world", []int32{15496, 995}},
		// "I" | "'m": I = 40, 'm = 1101 (' m #845). Contractions split
		// off before letters.
		{"I'm", []int32{40, 1101}},
		// "don" | "'t": don = 9099 (o n #5, d on #8843), 't = 470.
		{"don't", []int32{9099, 470}},
		// Three trailing spaces are one piece (\s+ to the end); "Ġ Ġ" is
		// not a merge in GPT-2, so each stays Ġ = 220.
		{"   ", []int32{220, 220, 220}},
		// "a" | " " | " b": in a run of two spaces before a letter,
		// \s+(?!\S) takes the first, the second joins the word: a = 64,
		// Ġ = 220, Ġb = 275.
		{"a  b", []int32{64, 220, 275}},
		// Digits are one piece; 1 2 #809, 12 3 #9907, 4 5 #1975, and no
		// "123 45" merge: 123 = 10163, 45 = 2231.
		{"12345", []int32{10163, 2231}},
		// " 2024": Ġ2024 = 48609 is a single token.
		{"in 2024", []int32{259, 48609}},
		// "héllo" is one letters piece h Ã © l l o: l l #41, Ã © #2378,
		// ll o #18542 → h = 71, Ã© = 2634, llo = 18798.
		{"héllo", []int32{71, 2634, 18798}},
		// "\n\n" is one whitespace piece; Ċ Ċ #372 → ĊĊ = 628.
		{"\n\n", []int32{628}},
		// "hello" | " " | " world" = 31373, 220, 995.
		{"hello  world", []int32{31373, 220, 995}},
		// Special tokens are literal text for Encode.
		{"<|endoftext|>", []int32{27, 91, 437, 1659, 5239, 91, 29}},
	}
	paths := []string{"tokenizers/gpt2-hf/tokenizer.json", "tokenizers/gpt2-hf/vocab.json", "tokenizers/gpt2-hf"}
	for _, rel := range paths {
		t.Run(rel, func(t *testing.T) {
			tok := loadAsset(t, rel)
			for _, c := range cases {
				if got := tok.Encode(c.text); !reflect.DeepEqual(got, c.want) {
					t.Errorf("%q: got %v, want %v", c.text, got, c.want)
				}
			}
			if tok.AddBOS() || tok.BOS() != 50256 || tok.EOS() != 50256 || tok.VocabSize() != 50257 {
				t.Errorf("AddBOS %v BOS %d EOS %d VocabSize %d", tok.AddBOS(), tok.BOS(), tok.EOS(), tok.VocabSize())
			}
			if got := tok.(SpecialEncoder).EncodeSpecial("a<|endoftext|>"); !reflect.DeepEqual(got, []int32{64, 50256}) {
				t.Errorf("EncodeSpecial = %v", got)
			}
			if p := tok.Piece(995); p != "Ġworld" {
				t.Errorf("Piece(995) = %q", p)
			}
		})
	}
}

// TestGPT2FilesAgree cross-checks tokenizer.json against vocab.json +
// merges.txt on the varied set and real dialogues.
func TestGPT2FilesAgree(t *testing.T) {
	a := loadAsset(t, "tokenizers/gpt2-hf/tokenizer.json")
	b, err := LoadGPT2Files(testassets.Path(t, "tokenizers/gpt2-hf/vocab.json"), testassets.Path(t, "tokenizers/gpt2-hf/merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(append([]string{}, variedTexts...), hhTexts(t, 100)...) {
		if x, y := a.Encode(s), b.Encode(s); !reflect.DeepEqual(x, y) {
			t.Errorf("%.60q:\n json  %v\n files %v", s, x, y)
		}
	}
}

// allTokenizers returns the fixtures and, when present, the assets.
func allTokenizers(t *testing.T) map[string]Tokenizer {
	m := map[string]Tokenizer{"bytes": NewBytes()}
	for name := range fixtureGens {
		m[name] = loadFixture(t, name)
	}
	if dir, ok := testassets.Root(); ok {
		for _, rel := range []string{"models/stories260K/tok512.bin", "tokenizers/llama2/tokenizer.bin",
			"tokenizers/llama2-hf", "tokenizers/gpt2-hf"} {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err != nil {
				continue
			}
			tok, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			m[rel] = tok
		}
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	texts := append(append([]string{}, variedTexts...), hhTexts(t, 20)...)
	for name, tok := range allTokenizers(t) {
		t.Run(name, func(t *testing.T) {
			for _, s := range texts {
				if name == "tiny-metaspace.json" && strings.HasPrefix(s, " ") {
					// Hugging Face's Metaspace does not prepend "▁" to
					// text that already starts with one, so a leading
					// space is lost there, as in the reference.
					continue
				}
				ids := tok.Encode(s)
				if got := tok.Decode(ids); got != s {
					t.Errorf("Decode(Encode(%.60q)) = %.60q (ids %v)", s, got, ids)
				}
				if tok.BOS() >= 0 {
					if got := tok.Decode(append([]int32{tok.BOS()}, ids...)); got != s {
						t.Errorf("Decode(BOS+Encode(%.60q)) = %.60q", s, got)
					}
				}
				for _, id := range ids {
					if id < 0 || int(id) >= tok.VocabSize() {
						t.Fatalf("id %d out of range", id)
					}
				}
			}
		})
	}
}

func TestEncodeSpecial(t *testing.T) {
	gpt := loadFixture(t, "tiny-gpt2.json").(*HF)
	start, _ := gpt.SpecialID("<|im_start|>")
	end, _ := gpt.SpecialID("<|im_end|>")
	text := "<|im_start|>user\nhi<|im_end|>"
	got := gpt.EncodeSpecial(text)
	if len(got) < 3 || got[0] != start || got[len(got)-1] != end {
		t.Errorf("EncodeSpecial = %v", got)
	}
	if mid := gpt.Encode("user\nhi"); !reflect.DeepEqual(got[1:len(got)-1], mid) {
		t.Errorf("middle %v, want %v", got[1:len(got)-1], mid)
	}
	for _, id := range gpt.Encode(text) {
		if id == start || id == end {
			t.Errorf("Encode split out a special token: %v", gpt.Encode(text))
		}
	}
	if d := gpt.Decode(got); d != "user\nhi" {
		t.Errorf("Decode drops specials: got %q", d)
	}
	if h := EncodeWithSpecials(gpt, text, []string{"<|im_start|>", "<|im_end|>", "<|unknown|>"}); !reflect.DeepEqual(h, got) {
		t.Errorf("EncodeWithSpecials = %v, want %v", h, got)
	}

	l3 := loadFixture(t, "tiny-llama3.json")
	if eot, _ := l3.SpecialID("<|endoftext|>"); !l3.AddBOS() || l3.BOS() != eot {
		t.Errorf("llama3 fixture: AddBOS %v BOS %d", l3.AddBOS(), l3.BOS())
	}

	// llama2.c: text "<s>" is not special.
	bin := loadFixture(t, "tiny-llama2c.bin")
	if a, b := bin.(SpecialEncoder).EncodeSpecial("<s>hi</s>"), bin.Encode("<s>hi</s>"); !reflect.DeepEqual(a, b) {
		t.Errorf("llama2.c EncodeSpecial %v != Encode %v", a, b)
	}
	// ... but the helper can split them when asked to.
	if h := EncodeWithSpecials(bin, "<s>hi", []string{"<s>"}); h[0] != 1 || !reflect.DeepEqual(h[1:], bin.Encode("hi")) {
		t.Errorf("EncodeWithSpecials = %v", h)
	}

	// The tiny SentencePiece-style HF file marks <s> and </s> normalized,
	// like the Llama 2 tokenizer.json: they are matched against their
	// normalized form "▁<s>", as Hugging Face does.
	sp := loadFixture(t, "tiny-sp.json").(*HF)
	if got := sp.EncodeSpecial("<s>hi"); len(got) == 0 || got[0] != 1 {
		t.Errorf("sp EncodeSpecial(<s>hi) = %v", got)
	}

	b := NewBytes().(Bytes)
	if got := b.EncodeSpecial("<s>a</s><pad>"); !reflect.DeepEqual(got, []int32{256, 'a', 257, 258}) {
		t.Errorf("bytes EncodeSpecial = %v", got)
	}
}

func TestLlama2HFSpecials(t *testing.T) {
	hf := loadAsset(t, "tokenizers/llama2-hf").(*HF)
	// "<s>" at the start normalizes to "▁<s>", which is the normalized
	// content of the added token.
	got := hf.EncodeSpecial("<s>[INST] hi [/INST]")
	if len(got) == 0 || got[0] != 1 {
		t.Errorf("EncodeSpecial = %v", got)
	}
	if got := hf.Encode("<s>[INST] hi [/INST]"); got[0] == 1 {
		t.Errorf("Encode split out <s>: %v", got)
	}
}

func TestBytes(t *testing.T) {
	b := NewBytes()
	if b.VocabSize() != 259 || b.BOS() != 256 || b.EOS() != 257 || !b.AddBOS() {
		t.Fatal("bad byte tokenizer constants")
	}
	if got := b.Encode("hé"); !reflect.DeepEqual(got, []int32{'h', 0xC3, 0xA9}) {
		t.Errorf("Encode = %v", got)
	}
	if got := b.Decode([]int32{256, 'h', 0xC3, 0xA9, 257, 258, 999, -1}); got != "hé" {
		t.Errorf("Decode = %q", got)
	}
	if id, ok := b.SpecialID("<pad>"); !ok || id != 258 {
		t.Errorf("SpecialID(<pad>) = %d %v", id, ok)
	}
	if b.Piece(258) != "<pad>" || b.Piece('a') != "a" || b.Piece(259) != "" {
		t.Error("bad pieces")
	}
}

func TestLoadAndDigest(t *testing.T) {
	for _, name := range []string{"bytes", "byte"} {
		tok, err := Load(name)
		if err != nil || tok.VocabSize() != 259 {
			t.Fatalf("Load(%q) = %v, %v", name, tok, err)
		}
		d, err := Digest(name)
		want := sha256.Sum256([]byte(bytesDigestSeed))
		if err != nil || d != hex.EncodeToString(want[:]) {
			t.Errorf("Digest(%q) = %q, %v", name, d, err)
		}
	}
	p := filepath.Join("testdata", "tiny-llama2c.bin")
	data, _ := os.ReadFile(p)
	sum := sha256.Sum256(data)
	if d, err := Digest(p); err != nil || d != hex.EncodeToString(sum[:]) {
		t.Errorf("Digest(%s) = %q, %v; want the file's sha256", p, d, err)
	}
	// A directory with tokenizer.json and tokenizer_config.json: both count.
	dir := t.TempDir()
	js, _ := os.ReadFile(filepath.Join("testdata", "tiny-gpt2.json"))
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), js, 0o644)
	d1, err := Digest(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil || tok.AddBOS() {
		t.Fatalf("Load(dir) = %v, %v", tok, err)
	}
	os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"add_bos_token": true, "bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}}`), 0o644)
	d2, _ := Digest(dir)
	d3, _ := Digest(filepath.Join(dir, "tokenizer.json"))
	if d1 == d2 || d2 != d3 {
		t.Errorf("digests: without config %s, with %s, via file %s", d1, d2, d3)
	}
	tok, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := tok.SpecialID("<|im_start|>"); !tok.AddBOS() || tok.BOS() != s || tok.Piece(tok.EOS()) != "<|im_end|>" {
		t.Errorf("config ignored: AddBOS %v BOS %d EOS %d", tok.AddBOS(), tok.BOS(), tok.EOS())
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), t.TempDir()} {
		if _, err := Load(bad); err == nil {
			t.Errorf("Load(%s) succeeded", bad)
		}
		if _, err := Digest(bad); err == nil {
			t.Errorf("Digest(%s) succeeded", bad)
		}
	}
	// Unsupported components are errors, not silent misbehaviour.
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model":{"type":"Unigram","vocab":[]}}`), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "Unigram") {
		t.Errorf("Unigram: %v", err)
	}
}

func TestParseLlama2cErrors(t *testing.T) {
	le := func(vs ...int32) []byte {
		var b []byte
		for _, v := range vs {
			b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
		}
		return b
	}
	cases := map[string][]byte{
		"empty":          nil,
		"short":          {1, 2},
		"negative max":   le(-1),
		"huge max":       le(1 << 30),
		"no tokens":      le(4),
		"truncated head": append(le(4), 0, 0, 0),
		"huge length":    le(4, 0, 1<<30),
		"negative len":   le(4, 0, -5),
		"long token":     append(le(4, 0, 5), "abc"...),
	}
	for name, data := range cases {
		_, err := ParseLlama2c("x/tok.bin", data)
		if err == nil || !strings.Contains(err.Error(), "x/tok.bin") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	tok, err := ParseLlama2c("ok", append(le(1, 0, 1), 'a'))
	if err != nil || tok.VocabSize() != 1 || tok.BOS() != -1 || tok.EOS() != -1 || tok.AddBOS() {
		t.Fatalf("one-token file: %v", err)
	}
	tok.Decode(tok.Encode("a b")) // degenerate, but must not panic
}

func TestScanners(t *testing.T) {
	split := func(sc scanner, s string) []string {
		var out []string
		sc(s, func(lo, hi int) { out = append(out, s[lo:hi]) })
		return out
	}
	llama3, _ := knownScanner(patLlama3)
	qwen, _ := knownScanner(patQwen2)
	cases := []struct {
		sc   scanner
		in   string
		want []string
	}{
		{scanGPT2, "Hello world", []string{"Hello", " world"}},
		{scanGPT2, "a  b", []string{"a", " ", " b"}},
		{scanGPT2, "a \n b", []string{"a", " \n", " b"}},
		{scanGPT2, "x   ", []string{"x", "   "}},
		{scanGPT2, "I'm OK'S", []string{"I", "'m", " OK", "'", "S"}},
		{scanGPT2, " 12ab!? ", []string{" 12", "ab", "!?", " "}},
		{scanGPT2, "日本 語", []string{"日本", " 語"}},
		{llama3, "I'M 12345 (hello)\n\n  x", []string{"I", "'M", " ", "123", "45", " (", "hello", ")\n\n", " ", " x"}},
		{llama3, "a \n\n b", []string{"a", " \n\n", " b"}},
		{llama3, "x  \t", []string{"x", "  \t"}},
		{llama3, "x.\r\ny", []string{"x", ".\r\n", "y"}},
		{qwen, "1234", []string{"1", "2", "3", "4"}},
	}
	for _, c := range cases {
		if got := split(c.sc, c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzBytesRoundTrip(f *testing.F) {
	for _, s := range variedTexts {
		f.Add(s)
	}
	tok := NewBytes()
	f.Fuzz(func(t *testing.T, s string) {
		if got := tok.Decode(tok.Encode(s)); got != s {
			t.Fatalf("round trip %q → %q", s, got)
		}
	})
}

func FuzzLlama2cRoundTrip(f *testing.F) {
	for _, s := range variedTexts {
		f.Add(s)
	}
	tok := loadFixture(f, "tiny-llama2c.bin")
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s)
		got := tok.Decode(ids)
		if utf8.ValidString(s) && got != s {
			t.Fatalf("round trip %q → %q (%v)", s, got, ids)
		}
	})
}

func FuzzHFByteLevelRoundTrip(f *testing.F) {
	for _, s := range variedTexts {
		f.Add(s)
	}
	gpt := loadFixture(f, "tiny-gpt2.json")
	l3 := loadFixture(f, "tiny-llama3.json")
	sp := loadFixture(f, "tiny-sp.json")
	f.Fuzz(func(t *testing.T, s string) {
		// Byte-level tokenizers round-trip any bytes, valid UTF-8 or not.
		for _, tok := range []Tokenizer{gpt, l3} {
			if got := tok.Decode(tok.Encode(s)); got != s {
				t.Fatalf("round trip %q → %q", s, got)
			}
		}
		if got := sp.Decode(sp.Encode(s)); utf8.ValidString(s) && got != s {
			t.Fatalf("sp round trip %q → %q", s, got)
		}
	})
}

func FuzzLoadTokenizerBin(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("testdata", "tiny-llama2c.bin"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:100])
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 127})
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseLlama2c("fuzz.bin", data)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.bin") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// Whatever parsed must encode and decode without panicking.
		tok.Decode(tok.Encode("hello wörld 日本 \n"))
		tok.Decode([]int32{-1, 0, 1, 2, int32(tok.VocabSize()), 1 << 30})
	})
}

func BenchmarkEncodeLlama2(b *testing.B) {
	p := testassets.Path(b, "tokenizers/llama2/tokenizer.bin")
	testassets.Path(b, "prefs/hh-rlhf/harmless-base-test.jsonl")
	tok, err := Load(p)
	if err != nil {
		b.Fatal(err)
	}
	texts := hhTexts(b, 200)
	n := 0
	for _, s := range texts {
		n += len(s)
	}
	b.SetBytes(int64(n))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, s := range texts {
			tok.Encode(s)
		}
	}
	b.ReportMetric(float64(len(texts)*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func TestConcurrentEncode(t *testing.T) {
	tok := loadFixture(t, "tiny-gpt2.json")
	want := make([][]int32, len(variedTexts))
	for i, s := range variedTexts {
		want[i] = tok.Encode(s)
	}
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func() {
			var err error
			for r := 0; r < 20; r++ {
				for i, s := range variedTexts {
					if got := tok.Encode(s); !reflect.DeepEqual(got, want[i]) && err == nil {
						err = fmt.Errorf("%q: %v != %v", s, got, want[i])
					}
				}
			}
			done <- err
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
