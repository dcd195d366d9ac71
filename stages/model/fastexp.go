package model

import (
	"math"

	"github.com/dpopipe/dpopipe/stages/model/internal/vexp"
)

// expf is a branch-free float32 exp with a relative error below 1e-6. It
// writes x·log2(e) = n + f with integer n (rounded with the 1.5·2^23 trick,
// which also leaves n in the low mantissa bits) and evaluates e^(f·ln2) with
// a degree-6 polynomial. Arguments are clamped to [-87, 88.5], so results
// below e^-87 ≈ 1.6e-38 are returned as that value rather than flushed.
func expf(x float32) float32 {
	const (
		log2e = 1.4426950408889634
		magic = 12582912 // 1.5·2^23
		ln2hi = 0.693145751953125
		ln2lo = 1.428606765330187e-06
	)
	x = max(x, -87)
	x = min(x, 88.5)
	t := x*log2e + magic
	n := t - magic
	r := x - n*ln2hi
	r -= n * ln2lo
	p := float32(1.0 / 720)
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	return math.Float32frombits(math.Float32bits(p) + (math.Float32bits(t)-0x4b400000)<<23)
}

// expAffine sets dst[i] = exp(a·src[i] + b) and returns the sum of the
// results, summed in a fixed order.
func expAffine(dst, src []float32, a, b float32) float32 { return vexp.ExpAffine(dst, src, a, b) }
