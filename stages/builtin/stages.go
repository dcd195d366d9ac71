package builtin

import (
	"github.com/dpopipe/dpopipe/stages/generate"
)

func init() {
	register(generate.New)
}
