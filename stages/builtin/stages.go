package builtin

import (
	"github.com/dpopipe/dpopipe/stages/evaluate"
	"github.com/dpopipe/dpopipe/stages/generate"
	"github.com/dpopipe/dpopipe/stages/judge"
	"github.com/dpopipe/dpopipe/stages/load"
	"github.com/dpopipe/dpopipe/stages/reference"
	"github.com/dpopipe/dpopipe/stages/report"
	"github.com/dpopipe/dpopipe/stages/tokenize"
	"github.com/dpopipe/dpopipe/stages/train"
)

func init() {
	register(evaluate.New)
	register(generate.New)
	register(judge.New)
	register(load.New)
	register(reference.New)
	register(report.New)
	register(tokenize.New)
	register(train.NewDPO)
	register(train.NewSFT)
}
