//go:build !openblas

package model

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/gonum"
)

// BLASName names the BLAS implementation compiled in.
const BLASName = "gonum"

func init() {
	blas32.Use(gonum.Implementation{})
	impl = gonum.Implementation{}
}
