package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// LoadGPT2Files builds a byte-level BPE tokenizer from the original GPT-2
// files: vocab.json (piece → id) and merges.txt (one "a b" merge a line, by
// rank, after an optional "#version" line). It uses the GPT-2 split regex and
// the byte-level alphabet, as a GPT-2 tokenizer.json does; "<|endoftext|>",
// when in the vocabulary, is the special BOS and EOS token, and AddBOS is
// false.
func LoadGPT2Files(vocabPath, mergesPath string) (*HF, error) {
	vdata, err := os.ReadFile(vocabPath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	mdata, err := os.ReadFile(mergesPath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var vocab map[string]int32
	if err := json.Unmarshal(vdata, &vocab); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", vocabPath, err)
	}
	var pairs [][2]string
	sc := bufio.NewScanner(bytes.NewReader(mdata))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if n == 1 && strings.HasPrefix(line, "#version") || line == "" {
			continue
		}
		a, b, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(b, " ") {
			return nil, fmt.Errorf("tokenizer: %s:%d: %q is not two pieces separated by a space", mergesPath, n, line)
		}
		pairs = append(pairs, [2]string{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", mergesPath, err)
	}
	mergesJSON, err := json.Marshal(pairs)
	if err != nil {
		return nil, err
	}
	vocabJSON, err := json.Marshal(vocab)
	if err != nil {
		return nil, err
	}
	var added string
	if id, ok := vocab["<|endoftext|>"]; ok {
		added = fmt.Sprintf(`{"id":%d,"content":"<|endoftext|>","special":true}`, id)
	}
	doc := fmt.Sprintf(`{"added_tokens":[%s],"normalizer":null,
"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
"decoder":{"type":"ByteLevel"},
"model":{"type":"BPE","vocab":%s,"merges":%s}}`, added, vocabJSON, mergesJSON)
	return parseHF(vocabPath, []byte(doc), nil)
}
