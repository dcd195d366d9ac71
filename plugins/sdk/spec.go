package sdk

import (
	"encoding/json"
	"fmt"
)

// ProtocolVersion is the version of the stage protocol spoken between the
// dpopipe host and a stage plugin. A plugin built against another version is
// refused at the handshake with an error naming both versions.
const ProtocolVersion = 1

// Spec describes a stage type: its name, version, configuration schema and
// the Arrow columns it consumes and produces. The host uses it to decode and
// validate the stage's HCL block before any stage starts, to document the
// stage (`dpopipe stages`) and to compute cache keys.
type Spec struct {
	// Type is the stage type used in HCL: stage "TYPE" "NAME" { ... }.
	Type string `json:"type"`
	// Version is the stage implementation's version. It is part of the cache
	// key: bump it when the stage's output for the same input changes.
	Version string `json:"version"`
	// Description is one or two sentences for `dpopipe stages`.
	Description string `json:"description"`
	// Config lists the attributes the stage's HCL block accepts. "input" and
	// the "cache" block are handled by the host and must not be listed.
	Config []Attr `json:"config"`
	// Input lists the columns the stage needs in its input table. Empty
	// means the stage takes no table input.
	Input []Column `json:"input,omitempty"`
	// Output lists the columns the stage writes (informational; the schema
	// of the streamed output is authoritative).
	Output []Column `json:"output,omitempty"`
	// InputOptional is true when the stage works with or without an input.
	InputOptional bool `json:"input_optional,omitempty"`
}

// Attr is one configuration attribute of a stage.
type Attr struct {
	Name string `json:"name"`
	// Type is an HCL type expression: string, number, bool, any,
	// list(string), map(number), object({...}) and so on.
	Type        string `json:"type"`
	Required    bool   `json:"required,omitempty"`
	Description string `json:"description,omitempty"`
	// Default is the JSON value used when the attribute is absent.
	Default json.RawMessage `json:"default,omitempty"`
	// Path marks a string attribute naming a file or directory the stage
	// reads (model weights, a tokenizer, a data file). The host resolves it
	// relative to the pipeline file and keys the cache on its content, never
	// on its path or modification time.
	Path bool `json:"path,omitempty"`
	// Enum restricts a string attribute to these values.
	Enum []string `json:"enum,omitempty"`
}

// Column names an Arrow column and its type, written as Arrow prints it
// (for example "int64", "utf8", "list<item: int32, nullable>" or just
// "list<int32>"). An empty Type accepts any type.
type Column struct {
	Name     string `json:"name"`
	Type     string `json:"type,omitempty"`
	Optional bool   `json:"optional,omitempty"`
}

// Def returns the JSON encoding of v for use as Attr.Default. It panics on a
// value that cannot be encoded, which is a programming error.
func Def(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sdk.Def(%v): %v", v, err))
	}
	return b
}

// Attr returns the attribute named name, if the spec has one.
func (s Spec) Attr(name string) (Attr, bool) {
	for _, a := range s.Config {
		if a.Name == name {
			return a, true
		}
	}
	return Attr{}, false
}
