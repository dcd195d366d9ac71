package tokenize

import (
	"testing"

	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

// FuzzTemplate: any template string either fails to parse or renders and
// encodes any conversation without panicking, with content kept verbatim.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"plain", "chatml", "llama-2", "zephyr", "{{bos}}<|{{role}}|>\n{{content}}{{eos}}\n", "{{content}}", " {{content}} </s>", "{{", "}}{{content}}{{"} {
		f.Add(s, "hello <s>", "a</s>")
	}
	bt := tokenizer.NewBytes()
	f.Fuzz(func(t *testing.T, tmpl, prompt, completion string) {
		tp, err := ParseTemplate(tmpl)
		if err != nil {
			return
		}
		_ = encodeSegs(bt, tp.RenderPrompt([]Message{{"system", "s"}, {"user", prompt}}))
		c := encodeSegs(bt, tp.RenderCompletion([]Message{{"assistant", completion}}))
		// The content's bytes appear verbatim in the completion.
		if completion != "" && !containsBytes(c, completion) {
			t.Fatalf("completion %q not found verbatim in %v", completion, c)
		}
	})
}

func containsBytes(ids []int32, s string) bool {
	for i := 0; i+len(s) <= len(ids); i++ {
		ok := true
		for j := 0; j < len(s); j++ {
			if ids[i+j] != int32(s[j]) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
