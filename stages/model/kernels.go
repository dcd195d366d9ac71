package model

import "math"

// rmsnormRows normalises rows [lo, hi) of x (width d) into out and stores the
// inverse RMS of each row in r.
func rmsnormRows(out, r, x, w []float32, d, lo, hi int, eps float32) {
	for i := lo; i < hi; i++ {
		xr := x[i*d : i*d+d]
		var ss float32
		for _, v := range xr {
			ss += v * v
		}
		inv := float32(1 / math.Sqrt(float64(ss/float32(d)+eps)))
		r[i] = inv
		or := out[i*d : i*d+d]
		for j, v := range xr {
			or[j] = v * inv * w[j]
		}
	}
}

// rmsnormBackRows accumulates into dx the gradient through y = x·r·w for rows
// [lo, hi), given dy, and accumulates d(w) into dw.
func rmsnormBackRows(dx, dw, dy, x, r, w []float32, d, lo, hi int) {
	fd := float32(d)
	for i := lo; i < hi; i++ {
		xr := x[i*d : i*d+d]
		dyr := dy[i*d : i*d+d]
		dxr := dx[i*d : i*d+d]
		inv := r[i]
		var dot float32
		for j, v := range xr {
			g := dyr[j] * w[j]
			dot += g * v
			dw[j] += dyr[j] * v * inv
		}
		c := dot * inv * inv * inv / fd
		for j, v := range xr {
			dxr[j] += dyr[j]*w[j]*inv - v*c
		}
	}
}

// ropeTable holds cos and sin of pos·θ^(-2i/hs) for i < hs/2.
type ropeTable struct {
	half     int
	cos, sin []float32
	npos     int
}

func (t *ropeTable) ensure(npos, headSize int, theta float32) {
	if t.npos >= npos && t.half == headSize/2 {
		return
	}
	t.half = headSize / 2
	t.npos = npos
	t.cos = make([]float32, npos*t.half)
	t.sin = make([]float32, npos*t.half)
	for p := 0; p < npos; p++ {
		for i := 0; i < t.half; i++ {
			freq := math.Pow(float64(theta), -float64(2*i)/float64(headSize))
			s, c := math.Sincos(float64(p) * freq)
			t.cos[p*t.half+i] = float32(c)
			t.sin[p*t.half+i] = float32(s)
		}
	}
}

// ropeRow rotates the heads of one row of width nh·hs at position pos. With
// inverse it applies the transposed rotation (for the backward pass).
func (t *ropeTable) rotate(row []float32, nh, hs, pos int, style RopeStyle, inverse bool) {
	half := t.half
	cs := t.cos[pos*half : pos*half+half]
	sn := t.sin[pos*half : pos*half+half]
	for h := 0; h < nh; h++ {
		v := row[h*hs : h*hs+hs]
		if style == RopeAdjacent {
			for i := 0; i < half; i++ {
				c, s := cs[i], sn[i]
				if inverse {
					s = -s
				}
				a, b := v[2*i], v[2*i+1]
				v[2*i] = a*c - b*s
				v[2*i+1] = a*s + b*c
			}
		} else {
			for i := 0; i < half; i++ {
				c, s := cs[i], sn[i]
				if inverse {
					s = -s
				}
				a, b := v[i], v[i+half]
				v[i] = a*c - b*s
				v[i+half] = a*s + b*c
			}
		}
	}
}

// silu and its derivative.
func sigmoid(x float32) float32 { return 1 / (1 + expf(-x)) }
