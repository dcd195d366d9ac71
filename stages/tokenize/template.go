package tokenize

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

// Message is one chat turn.
type Message struct {
	Role    string
	Content string
}

// segKind says where a piece of rendered text came from.
type segKind int

const (
	segTemplate segKind = iota // template text: literal special tokens in it count
	segContent                 // message content: always plain text
	segBOS                     // the tokenizer's BOS token
	segEOS                     // the tokenizer's EOS token
)

// seg is a piece of a rendered conversation.
type seg struct {
	kind segKind
	text string
}

// Template renders conversations as text for a tokenizer.
//
// A template is a format string per role with the placeholders
//
//	{{role}}     the message's role (user, assistant, system, tool)
//	{{content}}  the message's content, verbatim
//	{{bos}}      the tokenizer's BOS token
//	{{eos}}      the tokenizer's EOS token
//
// A custom chat_template is one such string used for every role, for example
// "<|{{role}}|>\n{{content}}{{eos}}\n". Literal special tokens in template
// text ("<|im_start|>", "<s>", "</s>") become their ids when the tokenizer
// knows them (SpecialID); in message content they are always plain text.
//
// The prompt is its messages rendered in turn, followed by the generation
// prompt: the assistant format up to {{content}}. A completion is the
// assistant format from {{content}} on, with any white space that ends it
// removed (it separates turns, and no turn follows). A single space just
// before {{content}} belongs to the completion, not the prompt, so
// "\n\nAssistant: {{content}}" gives the prompt "...\n\nAssistant:" and the
// completion " I'm sorry", as in HH-RLHF. A completion of several messages
// renders its first message as a completion and the others in full.
type Template struct {
	Name  string
	roles map[string]string // role -> format; "*" for any role
	// sysIntoUser, when set, renders a system message into the first
	// user message's content with this format (Llama 2).
	sysIntoUser string
}

// Built-in templates.
var builtins = map[string]*Template{
	"plain": {Name: "plain", roles: map[string]string{
		"system":    "{{content}}",
		"user":      "\n\nHuman: {{content}}",
		"assistant": "\n\nAssistant: {{content}}",
		"tool":      "\n\nTool: {{content}}",
	}},
	"chatml": {Name: "chatml", roles: map[string]string{
		"*": "<|im_start|>{{role}}\n{{content}}<|im_end|>\n",
	}},
	"llama-2": {Name: "llama-2", roles: map[string]string{
		"user":      "<s>[INST] {{content}} [/INST]",
		"assistant": " {{content}} </s>",
		"tool":      "<s>[INST] {{content}} [/INST]",
	}, sysIntoUser: "<<SYS>>\n{{content}}\n<</SYS>>\n\n"},
	"zephyr": {Name: "zephyr", roles: map[string]string{
		"*": "<|{{role}}|>\n{{content}}</s>\n",
	}},
}

// BuiltinTemplates lists the names of the built-in templates.
func BuiltinTemplates() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var placeholderRE = regexp.MustCompile(`\{\{[^{}]*\}\}`)

// ParseTemplate returns the built-in template name, or parses a custom
// template string.
func ParseTemplate(s string) (*Template, error) {
	if t, ok := builtins[s]; ok {
		return t, nil
	}
	for _, ph := range placeholderRE.FindAllString(s, -1) {
		switch ph {
		case "{{role}}", "{{content}}", "{{bos}}", "{{eos}}":
		default:
			return nil, fmt.Errorf("unknown placeholder %s: use {{role}}, {{content}}, {{bos}} and {{eos}}", ph)
		}
	}
	if n := strings.Count(s, "{{content}}"); n != 1 {
		if !strings.Contains(s, "{{") {
			return nil, fmt.Errorf("%q is neither a built-in template (%s) nor a template string with {{content}}", s, strings.Join(BuiltinTemplates(), ", "))
		}
		return nil, fmt.Errorf("a template must contain {{content}} exactly once (found %d)", n)
	}
	return &Template{Name: "custom", roles: map[string]string{"*": s}}, nil
}

func (t *Template) format(role string) string {
	if f, ok := t.roles[role]; ok {
		return f
	}
	if f, ok := t.roles["*"]; ok {
		return f
	}
	return t.roles["user"]
}

// expand appends the segments of format f with role and content
// substituted; part selects the whole format (0), the part before
// {{content}} (1) or the part from {{content}} on (2).
func expand(out []seg, f, role, content string, part int) []seg {
	i := strings.Index(f, "{{content}}")
	switch part {
	case 1:
		f = f[:i]
		// A space just before {{content}} goes to the completion.
		f = strings.TrimSuffix(f, " ")
	case 2:
		pre := f[:i]
		f = f[i:]
		if strings.HasSuffix(pre, " ") {
			f = " " + f
		}
	}
	for f != "" {
		loc := placeholderRE.FindStringIndex(f)
		if loc == nil {
			out = append(out, seg{segTemplate, f})
			break
		}
		if loc[0] > 0 {
			out = append(out, seg{segTemplate, f[:loc[0]]})
		}
		switch f[loc[0]:loc[1]] {
		case "{{role}}":
			out = append(out, seg{segTemplate, role})
		case "{{content}}":
			out = append(out, seg{segContent, content})
		case "{{bos}}":
			out = append(out, seg{kind: segBOS})
		case "{{eos}}":
			out = append(out, seg{kind: segEOS})
		}
		f = f[loc[1]:]
	}
	return out
}

// RenderPrompt renders prompt messages and the generation prompt.
func (t *Template) RenderPrompt(msgs []Message) []seg {
	var out []seg
	sys := ""
	for _, m := range msgs {
		content := m.Content
		if t.sysIntoUser != "" {
			if m.Role == "system" {
				sys = m.Content
				continue
			}
			if sys != "" && m.Role == "user" {
				content = strings.Replace(t.sysIntoUser, "{{content}}", sys, 1) + content
				sys = ""
			}
		}
		out = expand(out, t.format(m.Role), m.Role, content, 0)
	}
	if sys != "" { // a system message with no user message after it
		out = expand(out, t.format("user"), "user", strings.Replace(t.sysIntoUser, "{{content}}", sys, 1), 0)
	}
	return expand(out, t.format("assistant"), "assistant", "", 1)
}

// RenderCompletion renders completion messages.
func (t *Template) RenderCompletion(msgs []Message) []seg {
	var out []seg
	for i, m := range msgs {
		part := 0
		if i == 0 {
			part = 2
		}
		out = expand(out, t.format(m.Role), m.Role, m.Content, part)
	}
	// Trailing white space of the template separates turns: drop it.
	for len(out) > 0 {
		last := &out[len(out)-1]
		if last.kind != segTemplate {
			break
		}
		last.text = strings.TrimRight(last.text, " \t\r\n")
		if last.text != "" {
			break
		}
		out = out[:len(out)-1]
	}
	return out
}

// specialRE finds candidate special tokens in template text.
var specialRE = regexp.MustCompile(`<[^<>\s]{1,40}>`)

// encodeSegs encodes rendered segments. Literal special tokens in template
// text that tok knows become their ids; text between ids (template text and
// content alike) is encoded with one Encode call per run, so content joins
// the template text around it as it would in a single string.
func encodeSegs(tok tokenizer.Tokenizer, segs []seg) []int32 {
	var out []int32
	var run strings.Builder
	flush := func() {
		if run.Len() > 0 {
			out = append(out, tok.Encode(run.String())...)
			run.Reset()
		}
	}
	special := func(id int32) {
		flush()
		out = append(out, id)
	}
	for _, s := range segs {
		switch s.kind {
		case segContent:
			run.WriteString(s.text)
		case segBOS:
			if id := tok.BOS(); id >= 0 {
				special(id)
			}
		case segEOS:
			if id := tok.EOS(); id >= 0 {
				special(id)
			}
		case segTemplate:
			text := s.text
			for text != "" {
				loc, id := findSpecial(tok, text)
				if loc == nil {
					run.WriteString(text)
					break
				}
				run.WriteString(text[:loc[0]])
				special(id)
				text = text[loc[1]:]
			}
		}
	}
	flush()
	return out
}

// findSpecial finds the first special token tok knows in text.
func findSpecial(tok tokenizer.Tokenizer, text string) ([]int, int32) {
	for _, loc := range specialRE.FindAllStringIndex(text, -1) {
		if id, ok := tok.SpecialID(text[loc[0]:loc[1]]); ok {
			return loc, id
		}
	}
	return nil, 0
}

// segsText shows segments as text, with {{bos}} and {{eos}} for the
// tokenizer's tokens (used by goldens and `explain`).
func segsText(segs []seg) string {
	var sb strings.Builder
	for _, s := range segs {
		switch s.kind {
		case segBOS:
			sb.WriteString("{{bos}}")
		case segEOS:
			sb.WriteString("{{eos}}")
		default:
			sb.WriteString(s.text)
		}
	}
	return sb.String()
}
