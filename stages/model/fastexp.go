package model

import "github.com/dpopipe/dpopipe/stages/model/internal/vexp"

// expf is vexp.Expf: a branch-free float32 exp with a relative error
// below 1e-6 (see there).
func expf(x float32) float32 { return vexp.Expf(x) }

// expAffine sets dst[i] = exp(a·src[i] + b) and returns the sum of the
// results, summed in a fixed order.
func expAffine(dst, src []float32, a, b float32) float32 { return vexp.ExpAffine(dst, src, a, b) }
