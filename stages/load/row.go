package load

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Prompt formats.
const (
	pfAuto           = "auto"
	pfExplicit       = "explicit"
	pfImplicit       = "implicit"
	pfConversational = "conversational"
	pfTokenized      = "tokenized"
	pfText           = "text"
)

// message is one chat turn.
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// pair is one preference pair in the output shape. Which fields are used
// depends on the prompt format.
type pair struct {
	row                 int64
	prompt, chosen, rej string
	pMsgs, cMsgs, rMsgs []message
	pIDs, cIDs, rIDs    []int32
	text                string // prompt_format "text": the document
	weight              float32
	split               string
}

// logical keys that columns may map, and the source names tried when a key
// is not mapped (first found wins; dotted names descend into objects).
var defaultNames = map[string][]string{
	"prompt":       {"prompt", "input.messages", "messages", "conversations"},
	"chosen":       {"chosen", "preferred_output"},
	"rejected":     {"rejected", "non_preferred_output"},
	"weight":       {"weight"},
	"prompt_ids":   {"prompt_ids"},
	"chosen_ids":   {"chosen_ids"},
	"rejected_ids": {"rejected_ids"},
	"text":         {"text"},
}

// columnKeys lists the keys columns accepts ("messages" is an alias of
// "prompt").
var columnKeys = []string{"prompt", "chosen", "rejected", "weight", "prompt_ids", "chosen_ids", "rejected_ids", "messages", "text"}

// pairKeys are the keys of preference data; a text dataset maps none of them.
var pairKeys = []string{"prompt", "chosen", "rejected", "prompt_ids", "chosen_ids", "rejected_ids", "messages"}

// interp turns decoded rows into pairs.
type interp struct {
	names     map[string][]string // logical key -> candidate source names
	mapped    map[string]bool     // keys the user mapped
	format    string              // resolved prompt format ("auto" until the first good row)
	vocabSize int
}

func newInterp(columns map[string]string, format string, vocabSize int) *interp {
	in := &interp{names: map[string][]string{}, mapped: map[string]bool{}, format: format, vocabSize: vocabSize}
	for k, v := range defaultNames {
		in.names[k] = v
	}
	if format != pfAuto && format != pfText {
		delete(in.names, "text") // never read a text column for pairs
	}
	for k, v := range columns {
		if k == "messages" {
			k = "prompt"
		}
		in.names[k] = []string{v}
		in.mapped[k] = true
	}
	return in
}

// needed reports whether a top-level source column may be read.
func (in *interp) needed(col string) bool {
	for _, names := range in.names {
		for _, n := range names {
			if n == col || strings.HasPrefix(n, col+".") {
				return true
			}
		}
	}
	return false
}

// lookup finds logical key in row: the value and the source name it came
// from, or ok=false. A null value counts as absent.
func (in *interp) lookup(val map[string]any, key string) (v any, name string, ok bool) {
	for _, n := range in.names[key] {
		if v, ok := val[n]; ok && v != nil {
			return v, n, true
		}
		if strings.Contains(n, ".") {
			cur := any(val)
			found := true
			for _, part := range strings.Split(n, ".") {
				m, isMap := cur.(map[string]any)
				if !isMap {
					found = false
					break
				}
				if cur, found = m[part]; !found || cur == nil {
					found = false
					break
				}
			}
			if found {
				return cur, n, true
			}
		}
	}
	return nil, "", false
}

// detect picks the prompt format from a row.
func (in *interp) detect(r *srcRow) string {
	if in.mapped["text"] {
		return pfText // columns maps text (and, checked, no pair key)
	}
	if _, _, ok := in.lookup(r.val, "chosen_ids"); ok {
		return pfTokenized
	}
	c, _, ok := in.lookup(r.val, "chosen")
	if !ok {
		_, _, hasRej := in.lookup(r.val, "rejected")
		if _, _, hasText := in.lookup(r.val, "text"); hasText && !hasRej {
			return pfText
		}
		return ""
	}
	switch c.(type) {
	case []any, map[string]any:
		return pfConversational
	}
	if p, _, ok := in.lookup(r.val, "prompt"); ok {
		if _, isList := p.([]any); isList {
			return pfConversational
		}
		return pfExplicit
	}
	return pfImplicit
}

// convert interprets a decoded row as a pair in the resolved format.
func (in *interp) convert(r *srcRow) (*pair, *rowError) {
	if r.err != nil {
		return nil, r.err
	}
	format := in.format
	if format == pfAuto {
		if format = in.detect(r); format == "" {
			e := in.missing(r, "chosen")
			e.msg += `, or for a text dataset map its documents with columns = { text = "..." }`
			return nil, e
		}
	}
	p := &pair{row: r.row, weight: 1}
	var err *rowError
	switch format {
	case pfExplicit:
		err = in.explicit(r, p)
	case pfImplicit:
		err = in.implicit(r, p)
	case pfConversational:
		err = in.conversational(r, p)
	case pfTokenized:
		err = in.tokenized(r, p)
	case pfText:
		err = in.plainText(r, p)
	}
	if err != nil {
		return nil, err
	}
	if w, name, ok := in.lookup(r.val, "weight"); ok {
		f, ok := number(w, r.csv)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > math.MaxFloat32 {
			return nil, badRow("bad_weight", "%s is not a finite, non-negative number (got %s)", name, show(w))
		}
		p.weight = float32(f)
	} else if in.mapped["weight"] {
		return nil, in.missing(r, "weight")
	}
	if in.format == pfAuto {
		in.format = format
	}
	return p, nil
}

func (in *interp) missing(r *srcRow, key string) *rowError {
	names := in.names[key]
	what := strings.Join(names, `" or "`)
	var have []string
	for k := range r.val {
		have = append(have, k)
	}
	sortStrings(have)
	return badRow("missing_field", "missing field %q (the row has %s); map it with columns = { %s = \"...\" }", what, quoteList(have), key)
}

func (in *interp) str(r *srcRow, key string) (string, *rowError) {
	v, name, ok := in.lookup(r.val, key)
	if !ok {
		return "", in.missing(r, key)
	}
	s, isStr := v.(string)
	if !isStr {
		return "", badRow("not_string", "field %q is a %s, not a string", name, jsonKind(v))
	}
	return s, nil
}

func (in *interp) explicit(r *srcRow, p *pair) *rowError {
	var err *rowError
	if p.prompt, err = in.str(r, "prompt"); err != nil {
		return err
	}
	if p.chosen, err = in.str(r, "chosen"); err != nil {
		return err
	}
	if p.rej, err = in.str(r, "rejected"); err != nil {
		return err
	}
	return checkCompletions(p.chosen, p.rej)
}

func checkCompletions(c, r string) *rowError {
	switch {
	case c == "":
		return badRow("empty_completion", "chosen is empty")
	case r == "":
		return badRow("empty_completion", "rejected is empty")
	case c == r:
		return badRow("identical", "chosen and rejected are identical")
	}
	return nil
}

// assistantMarker ends the prompt of an HH-RLHF style transcript.
const assistantMarker = "\n\nAssistant:"

func (in *interp) implicit(r *srcRow, p *pair) *rowError {
	c, err := in.str(r, "chosen")
	if err != nil {
		return err
	}
	rj, err := in.str(r, "rejected")
	if err != nil {
		return err
	}
	if c == rj {
		return badRow("identical", "chosen and rejected are identical")
	}
	p.prompt, p.chosen, p.rej = splitImplicit(c, rj)
	return checkCompletions(p.chosen, p.rej)
}

// splitImplicit splits two transcripts sharing a prefix into the prompt and
// the two completions. When the shared prefix contains "\n\nAssistant:"
// (HH-RLHF) the prompt runs up to and including the last one; otherwise it is
// the longest common prefix cut at the start of its last run of white space,
// so that completions start with that white space (" yes"), as in HH-RLHF.
func splitImplicit(c, r string) (prompt, chosen, rejected string) {
	n := 0
	for n < len(c) && n < len(r) && c[n] == r[n] {
		n++
	}
	for n > 0 && n < len(c) && !utf8.RuneStart(c[n]) {
		n--
	}
	common := c[:n]
	if i := strings.LastIndex(common, assistantMarker); i >= 0 {
		cut := i + len(assistantMarker)
		return c[:cut], c[cut:], r[cut:]
	}
	ws := strings.LastIndexFunc(common, unicode.IsSpace)
	if ws < 0 {
		return "", c, r
	}
	// Back up to the start of that run of white space.
	for ws > 0 {
		r1, s := utf8.DecodeLastRuneInString(common[:ws])
		if !unicode.IsSpace(r1) {
			break
		}
		ws -= s
	}
	cut := ws
	return c[:cut], c[cut:], r[cut:]
}

// roles maps ShareGPT and other role names to chat roles.
var roles = map[string]string{
	"user": "user", "human": "user", "prompter": "user",
	"assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
	"system": "system", "tool": "tool", "function": "tool", "ipython": "tool",
}

// messages converts a value to a message list: a list of {role, content} or
// {from, value} objects, a single such object, or (for completions) a plain
// string taken as one message of defaultRole.
func messages(v any, name, defaultRole string, fromCSV bool) ([]message, *rowError) {
	if s, ok := v.(string); ok && fromCSV {
		var dec any
		if json.Unmarshal([]byte(s), &dec) == nil {
			if _, isStr := dec.(string); !isStr {
				v = dec
			}
		}
	}
	switch x := v.(type) {
	case string:
		return []message{{Role: defaultRole, Content: x}}, nil
	case map[string]any:
		m, err := oneMessage(x, name, 0)
		if err != nil {
			return nil, err
		}
		return []message{m}, nil
	case []any:
		out := make([]message, 0, len(x))
		for i, e := range x {
			obj, ok := e.(map[string]any)
			if !ok {
				return nil, badRow("bad_messages", "%s[%d] is a %s, not a {role, content} message", name, i, jsonKind(e))
			}
			m, err := oneMessage(obj, name, i)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	return nil, badRow("wrong_type", "field %q is a %s, not a message list", name, jsonKind(v))
}

func oneMessage(obj map[string]any, name string, i int) (message, *rowError) {
	role, rk := obj["role"], "role"
	if role == nil {
		role, rk = obj["from"], "from"
	}
	content, ck := obj["content"], "content"
	if _, ok := obj["content"]; !ok {
		content, ck = obj["value"], "value"
	}
	rs, ok := role.(string)
	if !ok {
		return message{}, badRow("bad_messages", "%s[%d] has no string role (or from)", name, i)
	}
	r, known := roles[strings.ToLower(strings.TrimSpace(rs))]
	if !known {
		return message{}, badRow("bad_messages", "%s[%d].%s is %q: not a known role (user, assistant, system; ShareGPT human, gpt)", name, i, rk, rs)
	}
	var text string
	switch c := content.(type) {
	case string:
		text = c
	case nil:
		text = ""
	case []any: // OpenAI content parts
		var sb strings.Builder
		for j, part := range c {
			pm, ok := part.(map[string]any)
			t, isStr := pm["text"].(string)
			if !ok || !isStr {
				return message{}, badRow("bad_messages", "%s[%d].%s[%d] is not a text part", name, i, ck, j)
			}
			sb.WriteString(t)
		}
		text = sb.String()
	default:
		return message{}, badRow("bad_messages", "%s[%d].%s is a %s, not a string", name, i, ck, jsonKind(content))
	}
	return message{Role: r, Content: text}, nil
}

func (in *interp) conversational(r *srcRow, p *pair) *rowError {
	cv, cname, ok := in.lookup(r.val, "chosen")
	if !ok {
		return in.missing(r, "chosen")
	}
	rv, rname, ok := in.lookup(r.val, "rejected")
	if !ok {
		return in.missing(r, "rejected")
	}
	var err *rowError
	if p.cMsgs, err = messages(cv, cname, "assistant", r.csv); err != nil {
		return err
	}
	if p.rMsgs, err = messages(rv, rname, "assistant", r.csv); err != nil {
		return err
	}
	if pv, pname, ok := in.lookup(r.val, "prompt"); ok {
		if p.pMsgs, err = messages(pv, pname, "user", r.csv); err != nil {
			return err
		}
	} else if in.mapped["prompt"] {
		return in.missing(r, "prompt")
	} else {
		// No prompt: it is the messages the two share, all but the last
		// at most.
		n := 0
		for n < len(p.cMsgs)-1 && n < len(p.rMsgs)-1 && p.cMsgs[n] == p.rMsgs[n] {
			n++
		}
		p.pMsgs = p.cMsgs[:n:n]
		p.cMsgs, p.rMsgs = p.cMsgs[n:], p.rMsgs[n:]
	}
	if p.pMsgs == nil {
		p.pMsgs = []message{}
	}
	empty := func(ms []message) bool {
		for _, m := range ms {
			if m.Content != "" {
				return false
			}
		}
		return true
	}
	switch {
	case empty(p.cMsgs):
		return badRow("empty_completion", "chosen is empty")
	case empty(p.rMsgs):
		return badRow("empty_completion", "rejected is empty")
	case equalMsgs(p.cMsgs, p.rMsgs):
		return badRow("identical", "chosen and rejected are identical")
	}
	return nil
}

func equalMsgs(a, b []message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// plainText reads the document of a text row (prompt_format "text").
func (in *interp) plainText(r *srcRow, p *pair) *rowError {
	var err *rowError
	if p.text, err = in.str(r, "text"); err != nil {
		return err
	}
	if p.text == "" {
		return badRow("empty_text", "text is empty")
	}
	return nil
}

func (in *interp) tokenized(r *srcRow, p *pair) *rowError {
	get := func(key string) ([]int32, *rowError) {
		v, name, ok := in.lookup(r.val, key)
		if !ok {
			return nil, in.missing(r, key)
		}
		return ids(v, name, r.csv, in.vocabSize)
	}
	var err *rowError
	if p.pIDs, err = get("prompt_ids"); err != nil {
		return err
	}
	if p.cIDs, err = get("chosen_ids"); err != nil {
		return err
	}
	if p.rIDs, err = get("rejected_ids"); err != nil {
		return err
	}
	switch {
	case len(p.cIDs) == 0:
		return badRow("empty_completion", "chosen_ids is empty")
	case len(p.rIDs) == 0:
		return badRow("empty_completion", "rejected_ids is empty")
	case equalIDs(p.cIDs, p.rIDs):
		return badRow("identical", "chosen_ids and rejected_ids are identical")
	}
	return nil
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ids converts a list of integers (in CSV: a JSON list, or integers
// separated by spaces or commas) to token ids.
func ids(v any, name string, fromCSV bool, vocab int) ([]int32, *rowError) {
	if s, ok := v.(string); ok && fromCSV {
		s = strings.TrimSpace(s)
		if strings.HasPrefix(s, "[") {
			var dec []any
			if err := json.Unmarshal([]byte(s), &dec); err != nil {
				return nil, badRow("bad_ids", "field %q is not a JSON list of integers: %v", name, err)
			}
			v = dec
		} else {
			fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
			list := make([]any, len(fields))
			for i, f := range fields {
				list[i] = f
			}
			v = list
		}
	}
	list, ok := v.([]any)
	if !ok {
		return nil, badRow("wrong_type", "field %q is a %s, not a list of token ids", name, jsonKind(v))
	}
	out := make([]int32, len(list))
	for i, e := range list {
		f, ok := number(e, fromCSV)
		if !ok || f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
			return nil, badRow("bad_ids", "%s[%d] is %s, not a token id (a non-negative integer)", name, i, show(e))
		}
		if vocab > 0 && int(f) >= vocab {
			return nil, badRow("out_of_vocab", "%s[%d] is %d, outside the vocabulary (vocab_size %d)", name, i, int64(f), vocab)
		}
		out[i] = int32(f)
	}
	return out, nil
}

// number reads a JSON number, or (from CSV) a numeric string.
func number(v any, fromCSV bool) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		if fromCSV {
			f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return jsonKind(v)
	}
	if len(b) > 40 {
		return string(b[:37]) + "..."
	}
	return string(b)
}

func quoteList(s []string) string {
	if len(s) == 0 {
		return "no fields"
	}
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, ", ")
}
