//go:build dpopipedeps

// Package deps pins the modules the project builds on.
package deps

import (
	_ "github.com/apache/arrow-go/v18/arrow/flight"
	_ "github.com/apache/arrow-go/v18/parquet/pqarrow"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/go-plugin"
	_ "github.com/hashicorp/hcl/v2/hclsyntax"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/spf13/cobra"
	_ "go4.org/unsafe/assume-no-moving-gc"
	_ "gonum.org/v1/gonum/blas/gonum"
	_ "gonum.org/v1/netlib/blas/netlib"
	_ "gonum.org/v1/plot"
	_ "gorgonia.org/gorgonia"
)
