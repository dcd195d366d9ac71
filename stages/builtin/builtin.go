// Package builtin is the registry of the stages that ship inside the dpopipe
// binary. Each runs in its own process: the host re-executes dpopipe as
// "dpopipe plugin serve TYPE".
package builtin

import (
	"sort"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

var registry = map[string]func() sdk.Stage{}

// register adds a stage type. It panics on a duplicate, a programming error.
func register(f func() sdk.Stage) {
	typ := f().Spec().Type
	if _, dup := registry[typ]; dup {
		panic("builtin: duplicate stage type " + typ)
	}
	registry[typ] = f
}

// Lookup returns a new instance of the built-in stage type typ.
func Lookup(typ string) (sdk.Stage, bool) {
	f, ok := registry[typ]
	if !ok {
		return nil, false
	}
	return f(), true
}

// Types lists the built-in stage types, sorted.
func Types() []string {
	out := make([]string, 0, len(registry))
	for t := range registry {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
