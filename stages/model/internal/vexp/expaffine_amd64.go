//go:build !purego

package vexp

import "golang.org/x/sys/cpu"

var haveExpAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func expAffineAVX2(dst, src *float32, n int, a, b float32) float32

// ExpAffine sets dst[i] = exp(a·src[i] + b) and returns the sum of the
// results. The sum's order is fixed (eight lanes, then the tail), so the
// result never depends on scheduling.
func ExpAffine(dst, src []float32, a, b float32) float32 {
	n := len(src)
	dst = dst[:n]
	if !haveExpAVX2 {
		var sum float32
		for i, x := range src {
			e := Expf(a*x + b)
			dst[i] = e
			sum += e
		}
		return sum
	}
	var sum float32
	v := n &^ 7
	if v > 0 {
		sum = expAffineAVX2(&dst[0], &src[0], v, a, b)
	}
	if v < n {
		// the tail goes through the same kernel, so that an element's
		// value never depends on where a slice starts or ends
		var buf [8]float32
		copy(buf[:], src[v:])
		expAffineAVX2(&buf[0], &buf[0], 8, a, b)
		for i := v; i < n; i++ {
			dst[i] = buf[i-v]
			sum += buf[i-v]
		}
	}
	return sum
}
