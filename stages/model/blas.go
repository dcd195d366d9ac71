package model

import (
	"runtime"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
)

// impl is the single-threaded sgemm provider selected at init by the build
// (blas_gonum.go or blas_openblas.go).
var impl blas.Float32

// gemm computes C = alpha·op(A)·op(B) + beta·C (row-major, as blas32), splitting
// large products across the worker pool along the larger of m and n.
func gemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	nw := workers.n
	flops := 2 * float64(m) * float64(n) * float64(k)
	if nw == 1 || flops < 1<<20 {
		sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if m >= n {
		step := (m + nw - 1) / nw
		step = (step + 15) &^ 15
		parts := (m + step - 1) / step
		workers.run(parts, func(_, p int) {
			r0 := p * step
			r1 := min(r0+step, m)
			ao := r0 * lda
			if tA {
				ao = r0
			}
			sgemm(tA, tB, r1-r0, n, k, alpha, a[ao:], lda, b, ldb, beta, c[r0*ldc:], ldc)
		})
		return
	}
	step := (n + nw - 1) / nw
	step = (step + 15) &^ 15
	parts := (n + step - 1) / step
	workers.run(parts, func(_, p int) {
		c0 := p * step
		c1 := min(c0+step, n)
		bo := c0
		if tB {
			bo = c0 * ldb
		}
		sgemm(tA, tB, m, c1-c0, k, alpha, a, lda, b[bo:], ldb, beta, c[c0:], ldc)
	})
}

// sgemm calls the BLAS on the current goroutine. Slices may extend past the
// last element the product touches; they are trimmed to the exact extent BLAS
// implementations check.
func sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	ar, ac := m, k
	if tA {
		ta = blas.Trans
		ar, ac = k, m
	}
	br, bc := k, n
	if tB {
		tb = blas.Trans
		br, bc = n, k
	}
	if k == 0 {
		// BLAS still scales C; keep that behaviour for beta != 1.
		if beta != 1 {
			for i := 0; i < m; i++ {
				row := c[i*ldc : i*ldc+n]
				for j := range row {
					row[j] *= beta
				}
			}
		}
		return
	}
	impl.Sgemm(ta, tb, m, n, k, alpha, a[:(ar-1)*lda+ac], lda, b[:(br-1)*ldb+bc], ldb, beta, c[:(m-1)*ldc+n], ldc)
}

// pool is a fixed set of goroutines that run index ranges of a job.
type pool struct {
	n    int
	jobs chan *job
}

type job struct {
	fn   func(worker, i int)
	n    int
	next atomic.Int64
	wg   sync.WaitGroup
}

var workers = newPool(runtime.GOMAXPROCS(0))

func newPool(n int) *pool {
	if n < 1 {
		n = 1
	}
	p := &pool{n: n, jobs: make(chan *job, n)}
	for w := 1; w < n; w++ {
		go func(w int) {
			for j := range p.jobs {
				j.work(w)
				j.wg.Done()
			}
		}(w)
	}
	return p
}

func (j *job) work(w int) {
	for {
		i := int(j.next.Add(1) - 1)
		if i >= j.n {
			return
		}
		j.fn(w, i)
	}
}

var jobPool = sync.Pool{New: func() any { return new(job) }}

// run calls fn(worker, i) for every i in [0, n), spread over the pool. The
// worker index is in [0, p.n) and is unique among concurrent calls, so it can
// select per-worker scratch buffers. run must not be nested.
func (p *pool) run(n int, fn func(worker, i int)) {
	if n <= 0 {
		return
	}
	if p.n == 1 || n == 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	j := jobPool.Get().(*job)
	j.fn, j.n = fn, n
	j.next.Store(0)
	helpers := min(p.n, n) - 1
	j.wg.Add(helpers)
	for w := 0; w < helpers; w++ {
		p.jobs <- j
	}
	j.work(0)
	j.wg.Wait()
	j.fn = nil
	jobPool.Put(j)
}

// rows runs fn over [0, n) split into contiguous ranges, one per part.
func (p *pool) rows(n, minPer int, fn func(worker, lo, hi int)) {
	parts := p.n
	if minPer < 1 {
		minPer = 1
	}
	if n/minPer < parts {
		parts = max(1, n/minPer)
	}
	step := (n + parts - 1) / parts
	p.run(parts, func(w, i int) {
		lo := i * step
		hi := min(lo+step, n)
		if lo < hi {
			fn(w, lo, hi)
		}
	})
}
