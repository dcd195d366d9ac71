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

// gemmPartsPerWorker is how many parts a large product is split into per
// worker: more than one lets a worker that is delayed (on a shared machine)
// be covered by the others. The split never changes the result: every
// element of C is computed by one BLAS call over the full k.
const gemmPartsPerWorker = 2

// gemmTask is one product split across the pool. Tasks are recycled through
// a free list so that steady-state steps do not allocate.
type gemmTask struct {
	tA, tB        bool
	m, n, k       int
	alpha, beta   float32
	a, b, c       []float32
	lda, ldb, ldc int
	step          int
	splitM        bool
	fixed         bool      // rowGemm: blocks of exactly fixedRows rows
	pa, pc        []float32 // padded last block of a rowGemm
	fn            func(worker, i int)
}

var gemmFree = freeList[gemmTask]{init: func(g *gemmTask) { g.fn = g.do }}

func (g *gemmTask) do(_, p int) {
	if g.fixed {
		g.doFixed(p)
		return
	}
	if g.splitM {
		r0 := p * g.step
		r1 := min(r0+g.step, g.m)
		ao := r0 * g.lda
		if g.tA {
			ao = r0
		}
		sgemm(g.tA, g.tB, r1-r0, g.n, g.k, g.alpha, g.a[ao:], g.lda, g.b, g.ldb, g.beta, g.c[r0*g.ldc:], g.ldc)
		return
	}
	c0 := p * g.step
	c1 := min(c0+g.step, g.n)
	bo := c0
	if g.tB {
		bo = c0 * g.ldb
	}
	sgemm(g.tA, g.tB, g.m, c1-c0, g.k, g.alpha, g.a, g.lda, g.b[bo:], g.ldb, g.beta, g.c[c0:], g.ldc)
}

// fixedRows is the row block of rowGemm.
const fixedRows = 256

// rowGemm computes C = A·Bᵀ + beta·C for the m rows of A (m×k) and B (n×k),
// in blocks of exactly fixedRows rows spread over the pool; the last block
// is padded. Every BLAS call thus has the same shape whatever m is, so a
// row's result does not depend on the batch it is in (BLAS libraries pick
// other kernels for small matrices).
func rowGemm(m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	g := getGemmTask()
	pa, pc := g.pa, g.pc
	*g = gemmTask{m: m, n: n, k: k, alpha: 1, beta: beta, a: a, b: b, c: c,
		lda: lda, ldb: ldb, ldc: ldc, fixed: true, fn: g.fn, pa: pa, pc: pc}
	workers.run((m+fixedRows-1)/fixedRows, g.fn)
	putGemmTask(g)
}

func (g *gemmTask) doFixed(p int) {
	r0 := p * fixedRows
	rb := min(fixedRows, g.m-r0)
	if rb == fixedRows {
		sgemm(false, true, rb, g.n, g.k, 1, g.a[r0*g.lda:], g.lda, g.b, g.ldb, g.beta, g.c[r0*g.ldc:], g.ldc)
		return
	}
	// only the last block is partial, so one scratch pair per task is enough
	k, n := g.k, g.n
	if len(g.pa) < fixedRows*k {
		g.pa = make([]float32, fixedRows*k)
	}
	if len(g.pc) < fixedRows*n {
		g.pc = make([]float32, fixedRows*n)
	}
	pa, pc := g.pa[:fixedRows*k], g.pc[:fixedRows*n]
	clear(pa)
	clear(pc)
	for i := 0; i < rb; i++ {
		copy(pa[i*k:i*k+k], g.a[(r0+i)*g.lda:])
		if g.beta != 0 {
			copy(pc[i*n:i*n+n], g.c[(r0+i)*g.ldc:(r0+i)*g.ldc+n])
		}
	}
	sgemm(false, true, fixedRows, n, k, 1, pa, k, g.b, g.ldb, g.beta, pc, n)
	for i := 0; i < rb; i++ {
		copy(g.c[(r0+i)*g.ldc:(r0+i)*g.ldc+n], pc[i*n:i*n+n])
	}
}

func getGemmTask() *gemmTask { return gemmFree.get() }

func putGemmTask(g *gemmTask) {
	g.a, g.b, g.c = nil, nil, nil
	gemmFree.put(g)
}

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
	g := getGemmTask()
	pa, pc := g.pa, g.pc
	*g = gemmTask{tA: tA, tB: tB, m: m, n: n, k: k, alpha: alpha, beta: beta, a: a, b: b, c: c,
		lda: lda, ldb: ldb, ldc: ldc, splitM: m >= n, fn: g.fn, pa: pa, pc: pc}
	ext := n
	if g.splitM {
		ext = m
	}
	// parts of at least 64 rows or columns, aligned to 16
	parts := max(1, min(nw*gemmPartsPerWorker, ext/64))
	step := (ext + parts - 1) / parts
	step = (step + 15) &^ 15
	g.step = step
	workers.run((ext+step-1)/step, g.fn)
	putGemmTask(g)
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
	rfn  func(part, lo, hi int) // set for rows: part i covers [i·step, (i+1)·step)
	step int
	size int
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
		j.call(w, i)
	}
}

func (j *job) call(w, i int) {
	if j.rfn == nil {
		j.fn(w, i)
		return
	}
	lo := i * j.step
	hi := min(lo+j.step, j.size)
	if lo < hi {
		j.rfn(i, lo, hi)
	}
}

// freeList recycles values of T (a free list rather than a sync.Pool, which
// a GC would empty, so that steady-state steps never allocate). init, if
// set, prepares a newly allocated value.
type freeList[T any] struct {
	mu   sync.Mutex
	l    []*T
	init func(*T)
}

func (f *freeList[T]) get() *T {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.l); n > 0 {
		v := f.l[n-1]
		f.l = f.l[:n-1]
		return v
	}
	v := new(T)
	if f.init != nil {
		f.init(v)
	}
	return v
}

func (f *freeList[T]) put(v *T) {
	f.mu.Lock()
	f.l = append(f.l, v)
	f.mu.Unlock()
}

var jobFree freeList[job]

func getJob() *job { return jobFree.get() }

func putJob(j *job) {
	j.fn, j.rfn = nil, nil
	jobFree.put(j)
}

// run calls fn(worker, i) for every i in [0, n), spread over the pool. The
// worker index is in [0, p.n) and is unique among concurrent calls, so it can
// select per-worker scratch buffers (but results that depend on which worker
// ran which i must not be combined: use rows and its part index for
// deterministic partial sums). run must not be nested. fn should be a
// function value made once (a stored method value), so that calling run does
// not allocate.
func (p *pool) run(n int, fn func(worker, i int)) {
	p.start(n, fn, nil, 0, 0)
}

func (p *pool) start(n int, fn func(worker, i int), rfn func(part, lo, hi int), step, size int) {
	if n <= 0 {
		return
	}
	j := getJob()
	j.fn, j.rfn, j.step, j.size, j.n = fn, rfn, step, size, n
	if p.n == 1 || n == 1 {
		for i := 0; i < n; i++ {
			j.call(0, i)
		}
		putJob(j)
		return
	}
	j.next.Store(0)
	helpers := min(p.n, n) - 1
	j.wg.Add(helpers)
	for w := 0; w < helpers; w++ {
		p.jobs <- j
	}
	j.work(0)
	j.wg.Wait()
	putJob(j)
}

// rows runs fn over [0, n) split into at most p.n contiguous ranges. The
// part index (< p.n) depends only on n and minPer, never on scheduling, so
// per-part partial results combined in part order are deterministic.
func (p *pool) rows(n, minPer int, fn func(part, lo, hi int)) {
	parts := p.n
	if minPer < 1 {
		minPer = 1
	}
	if n/minPer < parts {
		parts = max(1, n/minPer)
	}
	step := (n + parts - 1) / parts
	p.start(parts, nil, fn, step, n)
}
