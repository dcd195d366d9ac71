package model

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// Llama2cMagic is the magic number of llama2.c version-1 checkpoints ("ak42").
const Llama2cMagic = 0x616b3432

// Llama2cHeader describes a llama2.c checkpoint header.
type Llama2cHeader struct {
	Version    int // 0 for the legacy header, 1 for the v1 header
	Config     Config
	HeaderSize int64 // bytes before the first weight
	Shared     bool  // classifier shares the token embedding
}

// DataSize is the number of weight bytes the header promises.
func (h Llama2cHeader) DataSize() int64 {
	c := h.Config
	n := int64(c.NumParams()) - qkvBiasCount(c)
	if h.Version == 0 {
		// legacy files also carry freq_cis_real and freq_cis_imag
		n += int64(c.SeqLen) * int64(c.HeadSize())
	}
	return 4 * n
}

func qkvBiasCount(c Config) int64 {
	if !c.QKVBias {
		return 0
	}
	return int64(c.NLayers) * int64(c.Dim+2*c.KVDim())
}

// ParseLlama2cHeader reads and validates the header of a llama2.c checkpoint
// of the given total size (legacy or version 1, float32 weights) and checks
// that the file holds every weight the header promises.
func ParseLlama2cHeader(r io.ReaderAt, size int64) (Llama2cHeader, error) {
	var h Llama2cHeader
	var buf [256]byte
	if size < 28 {
		return h, fmt.Errorf("llama2.c checkpoint: file of %d bytes is too short for a header", size)
	}
	nb := int64(len(buf))
	if size < nb {
		nb = size
	}
	if _, err := r.ReadAt(buf[:nb], 0); err != nil && !errors.Is(err, io.EOF) {
		return h, fmt.Errorf("llama2.c checkpoint: reading header: %w", err)
	}
	le := binary.LittleEndian
	var p [7]int32
	if le.Uint32(buf[0:]) == Llama2cMagic {
		if size < 256 {
			return h, fmt.Errorf("llama2.c checkpoint: v1 header needs 256 bytes, file has %d", size)
		}
		v := int32(le.Uint32(buf[4:]))
		if v != 1 {
			return h, fmt.Errorf("llama2.c checkpoint: unsupported version %d (only float32 version 1 and the legacy format are supported)", v)
		}
		for i := range p {
			p[i] = int32(le.Uint32(buf[8+4*i:]))
		}
		h.Version = 1
		h.HeaderSize = 256
		switch buf[36] {
		case 0:
		case 1:
			h.Shared = true
		default:
			return h, fmt.Errorf("llama2.c checkpoint: shared_classifier flag is %d, want 0 or 1", buf[36])
		}
		if p[5] < 0 {
			return h, fmt.Errorf("llama2.c checkpoint: negative vocab_size %d in a v1 header", p[5])
		}
	} else {
		for i := range p {
			p[i] = int32(le.Uint32(buf[4*i:]))
		}
		h.HeaderSize = 28
		h.Shared = p[5] > 0
		if p[5] < 0 {
			p[5] = -p[5]
		}
	}
	h.Config = Config{
		Dim: int(p[0]), HiddenDim: int(p[1]), NLayers: int(p[2]), NHeads: int(p[3]), NKVHeads: int(p[4]),
		VocabSize: int(p[5]), SeqLen: int(p[6]),
		NormEps: 1e-5, RopeTheta: 10000, Rope: RopeAdjacent, TiedEmbeddings: h.Shared,
		BOS: 1, EOS: 2,
	}
	if h.Config.VocabSize <= 2 {
		h.Config.BOS, h.Config.EOS = -1, -1
	}
	if err := h.Config.Validate(); err != nil {
		return h, fmt.Errorf("llama2.c checkpoint: bad header: %w", err)
	}
	want := h.HeaderSize + h.DataSize()
	if size < want {
		return h, fmt.Errorf("llama2.c checkpoint: truncated: header promises %d bytes of weights, file has %d after the %d-byte header", h.DataSize(), size-h.HeaderSize, h.HeaderSize)
	}
	if size > want {
		return h, fmt.Errorf("llama2.c checkpoint: %d unexpected trailing bytes after the weights (is it a quantized or another format?)", size-want)
	}
	return h, nil
}

func loadLlama2c(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h, err := ParseLlama2cHeader(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := newModel(h.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	br := bufio.NewReaderSize(io.NewSectionReader(f, h.HeaderSize, st.Size()-h.HeaderSize), 1<<20)
	rd := func(dst []float32) error { return readF32(br, dst) }
	l := &m.lay
	c := h.Config
	P := m.Params
	seg := func(off, n int) []float32 { return P[off : off+n] }
	var order [][]float32
	nl := c.NLayers
	if h.Version == 0 {
		order = [][]float32{
			seg(l.tokEmb, l.v*l.d), seg(l.rmsAtt, nl*l.d), seg(l.wq, nl*l.sizeWq), seg(l.wk, nl*l.sizeWkv),
			seg(l.wv, nl*l.sizeWkv), seg(l.wo, nl*l.sizeWq), seg(l.rmsFFN, nl*l.d), seg(l.w1, nl*l.sizeW1),
			seg(l.w2, nl*l.sizeW1), seg(l.w3, nl*l.sizeW1), seg(l.rmsFinal, l.d),
			make([]float32, c.SeqLen*c.HeadSize()), // freq_cis_real and _imag, unused
		}
	} else {
		order = [][]float32{
			seg(l.rmsAtt, nl*l.d), seg(l.rmsFFN, nl*l.d), seg(l.rmsFinal, l.d), seg(l.tokEmb, l.v*l.d),
			seg(l.wq, nl*l.sizeWq), seg(l.wk, nl*l.sizeWkv), seg(l.wv, nl*l.sizeWkv), seg(l.wo, nl*l.sizeWq),
			seg(l.w1, nl*l.sizeW1), seg(l.w2, nl*l.sizeW1), seg(l.w3, nl*l.sizeW1),
		}
	}
	if !h.Shared {
		order = append(order, seg(l.wcls, l.v*l.d))
	}
	for _, dst := range order {
		if err := rd(dst); err != nil {
			return nil, fmt.Errorf("%s: reading weights: %w", path, err)
		}
	}
	return m, nil
}

func readF32(r io.Reader, dst []float32) error {
	var buf [4096]byte
	for len(dst) > 0 {
		n := min(len(dst), len(buf)/4)
		if _, err := io.ReadFull(r, buf[:4*n]); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		dst = dst[n:]
	}
	return nil
}

func writeF32(w io.Writer, src []float32) error {
	var buf [4096]byte
	for len(src) > 0 {
		n := min(len(src), len(buf)/4)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(src[i]))
		}
		if _, err := w.Write(buf[:4*n]); err != nil {
			return err
		}
		src = src[n:]
	}
	return nil
}

// SaveLlama2c writes the model as a llama2.c version-1 float32 checkpoint,
// atomically. llama2.c files have no q/k/v biases, and llama2.c applies
// adjacent-pair RoPE with theta 10000 and eps 1e-5; other settings are
// rejected rather than silently lost.
func (m *Model) SaveLlama2c(path string) error {
	c := m.Config
	if c.QKVBias {
		return errors.New("model: llama2.c format cannot hold q/k/v biases")
	}
	if c.Rope != RopeAdjacent {
		return errors.New("model: llama2.c format uses adjacent-pair RoPE; this model uses rotate-half")
	}
	return atomicWrite(path, func(w io.Writer) error {
		var hdr [256]byte
		le := binary.LittleEndian
		le.PutUint32(hdr[0:], Llama2cMagic)
		le.PutUint32(hdr[4:], 1)
		for i, v := range []int{c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKVHeads, c.VocabSize, c.SeqLen} {
			le.PutUint32(hdr[8+4*i:], uint32(int32(v)))
		}
		if c.TiedEmbeddings {
			hdr[36] = 1
		}
		if _, err := w.Write(hdr[:]); err != nil {
			return err
		}
		l := &m.lay
		P := m.Params
		nl := c.NLayers
		seg := func(off, n int) []float32 { return P[off : off+n] }
		order := [][]float32{
			seg(l.rmsAtt, nl*l.d), seg(l.rmsFFN, nl*l.d), seg(l.rmsFinal, l.d), seg(l.tokEmb, l.v*l.d),
			seg(l.wq, nl*l.sizeWq), seg(l.wk, nl*l.sizeWkv), seg(l.wv, nl*l.sizeWkv), seg(l.wo, nl*l.sizeWq),
			seg(l.w1, nl*l.sizeW1), seg(l.w2, nl*l.sizeW1), seg(l.w3, nl*l.sizeW1),
		}
		if !c.TiedEmbeddings {
			order = append(order, seg(l.wcls, l.v*l.d))
		}
		for _, s := range order {
			if err := writeF32(w, s); err != nil {
				return err
			}
		}
		return nil
	})
}

// atomicWrite writes a file through a temporary file in the same directory,
// fsyncs it and renames it into place.
func atomicWrite(path string, fn func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err = fn(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, e := os.Open(dir); e == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
