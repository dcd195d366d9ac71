//go:build openblas

package model

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int num_threads);
*/
import "C"

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"
)

// BLASName names the BLAS implementation compiled in.
const BLASName = "openblas"

func init() {
	// OpenBLAS runs single-threaded: our own worker pool splits every large
	// matrix product across cores, and a single-threaded OpenBLAS never
	// leaves threads spinning between calls.
	C.openblas_set_num_threads(1)
	blas32.Use(netlib.Implementation{})
	impl = netlib.Implementation{}
}
