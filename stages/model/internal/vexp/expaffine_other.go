//go:build !amd64 || purego

package vexp

// ExpAffine sets dst[i] = exp(a·src[i] + b) and returns the sum of the
// results, accumulated in order.
func ExpAffine(dst, src []float32, a, b float32) float32 {
	dst = dst[:len(src)]
	var sum float32
	for i, x := range src {
		e := Expf(a*x + b)
		dst[i] = e
		sum += e
	}
	return sum
}
