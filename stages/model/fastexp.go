package model

import "math"

// expf is a float32 exp accurate to a few ulp over the range we use
// (arguments ≤ ~88; results below 2^-126 flush to zero). It splits
// x·log2(e) into an integer n and a fraction f in [-0.5, 0.5] and evaluates
// 2^f with a degree-6 polynomial, which is much cheaper than math.Exp.
func expf(x float32) float32 {
	if x < -87 {
		return 0
	}
	if x > 88.7 {
		return float32(math.Inf(1))
	}
	const log2e = 1.4426950408889634
	t := x * log2e
	// round to nearest
	var n float32
	if t >= 0 {
		n = float32(int32(t + 0.5))
	} else {
		n = float32(int32(t - 0.5))
	}
	// f·ln2 computed in two parts for accuracy
	r := x - n*0.693145751953125
	r -= n * 1.428606765330187e-06
	// exp(r) for |r| <= ln2/2
	p := float32(1.0 / 720)
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	return math.Float32frombits(math.Float32bits(p) + uint32(int32(n))<<23)
}
