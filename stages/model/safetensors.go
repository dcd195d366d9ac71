package model

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// maxSafetensorsHeader bounds the JSON header we are willing to read.
const maxSafetensorsHeader = 100 << 20

// SafetensorsTensor describes one tensor of a safetensors file. Begin and
// End are absolute byte offsets in the file.
type SafetensorsTensor struct {
	Name       string
	DType      string
	Shape      []int
	Begin, End int64
}

// SafetensorsHeader is the parsed header of a safetensors file.
type SafetensorsHeader struct {
	HeaderSize int64 // 8 + length of the JSON header; data starts here
	Metadata   map[string]string
	Tensors    map[string]SafetensorsTensor
}

func dtypeSize(dt string) int {
	switch dt {
	case "F64", "I64", "U64":
		return 8
	case "F32", "I32", "U32":
		return 4
	case "F16", "BF16", "I16", "U16":
		return 2
	case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2":
		return 1
	}
	return 0
}

// ParseSafetensorsHeader reads and validates the header of a safetensors
// file of the given size: the JSON must be well formed, every tensor's
// dtype known, its byte range must match its shape and lie inside the file,
// and ranges must not overlap. Nothing is allocated in proportion to sizes
// the file claims before they are checked against size.
func ParseSafetensorsHeader(r io.ReaderAt, size int64) (*SafetensorsHeader, error) {
	if size < 8 {
		return nil, fmt.Errorf("safetensors: file of %d bytes is too short for the 8-byte header length", size)
	}
	var lb [8]byte
	if _, err := r.ReadAt(lb[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > uint64(size-8) {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the %d bytes after it (truncated file?)", n, size-8)
	}
	if n > maxSafetensorsHeader {
		return nil, fmt.Errorf("safetensors: header length %d is larger than the %d-byte limit", n, maxSafetensorsHeader)
	}
	if n < 2 {
		return nil, fmt.Errorf("safetensors: header length %d is too small for a JSON object", n)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading %d-byte header: %w", n, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf, &raw); err != nil {
		return nil, fmt.Errorf("safetensors: header is not a JSON object: %w", err)
	}
	h := &SafetensorsHeader{HeaderSize: 8 + int64(n), Tensors: make(map[string]SafetensorsTensor, len(raw))}
	dataSize := size - h.HeaderSize
	type rng struct {
		b, e int64
		name string
	}
	var ranges []rng
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		var ti struct {
			DType       string  `json:"dtype"`
			Shape       []int64 `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &ti); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		es := dtypeSize(ti.DType)
		if es == 0 {
			return nil, fmt.Errorf("safetensors: tensor %q has unknown dtype %q", name, ti.DType)
		}
		if len(ti.DataOffsets) != 2 {
			return nil, fmt.Errorf("safetensors: tensor %q needs 2 data_offsets, has %d", name, len(ti.DataOffsets))
		}
		b, e := ti.DataOffsets[0], ti.DataOffsets[1]
		if b < 0 || e < b {
			return nil, fmt.Errorf("safetensors: tensor %q has bad data_offsets [%d, %d]", name, b, e)
		}
		if e > dataSize {
			return nil, fmt.Errorf("safetensors: tensor %q ends at byte %d of the data but the file holds only %d data bytes (truncated file?)", name, e, dataSize)
		}
		count := int64(1)
		shape := make([]int, len(ti.Shape))
		for i, s := range ti.Shape {
			if s < 0 || (s > 0 && count > (math.MaxInt64/int64(es))/s) {
				return nil, fmt.Errorf("safetensors: tensor %q has bad shape %v", name, ti.Shape)
			}
			count *= s
			shape[i] = int(s)
		}
		if count*int64(es) != e-b {
			return nil, fmt.Errorf("safetensors: tensor %q of shape %v and dtype %s needs %d bytes, its data_offsets span %d", name, ti.Shape, ti.DType, count*int64(es), e-b)
		}
		h.Tensors[name] = SafetensorsTensor{Name: name, DType: ti.DType, Shape: shape, Begin: h.HeaderSize + b, End: h.HeaderSize + e}
		if e > b {
			ranges = append(ranges, rng{b, e, name})
		}
	}
	sort.Slice(ranges, func(i, j int) bool { return ranges[i].b < ranges[j].b })
	for i := 1; i < len(ranges); i++ {
		if ranges[i].b < ranges[i-1].e {
			return nil, fmt.Errorf("safetensors: tensors %q and %q overlap", ranges[i-1].name, ranges[i].name)
		}
	}
	return h, nil
}

// readTensorF32 reads tensor t of file r into dst, converting F16/BF16/F64.
func readTensorF32(r io.ReaderAt, t SafetensorsTensor, dst []float32) error {
	es := dtypeSize(t.DType)
	if int64(len(dst))*int64(es) != t.End-t.Begin {
		return fmt.Errorf("tensor %q holds %d bytes, want %d values", t.Name, t.End-t.Begin, len(dst))
	}
	switch t.DType {
	case "F32", "F16", "BF16", "F64":
	default:
		return fmt.Errorf("tensor %q has dtype %s; only F32, F16, BF16 and F64 are supported", t.Name, t.DType)
	}
	sr := io.NewSectionReader(r, t.Begin, t.End-t.Begin)
	var buf [1 << 15]byte
	le := binary.LittleEndian
	for len(dst) > 0 {
		k := min(len(dst), len(buf)/es)
		if _, err := io.ReadFull(sr, buf[:k*es]); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		for i := 0; i < k; i++ {
			switch t.DType {
			case "F32":
				dst[i] = math.Float32frombits(le.Uint32(buf[4*i:]))
			case "F64":
				dst[i] = float32(math.Float64frombits(le.Uint64(buf[8*i:])))
			case "BF16":
				dst[i] = math.Float32frombits(uint32(le.Uint16(buf[2*i:])) << 16)
			case "F16":
				dst[i] = f16ToF32(le.Uint16(buf[2*i:]))
			}
		}
		dst = dst[k:]
	}
	return nil
}

func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: value = mant · 2^-24
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// namedTensor is one tensor to write.
type namedTensor struct {
	name  string
	shape []int
	data  []float32
}

// safetensorsHeaderJSON renders the header for F32 tensors in the given
// order, padded with spaces to a multiple of 8 bytes.
func safetensorsHeaderJSON(meta map[string]string, ts []namedTensor) ([]byte, error) {
	var sb strings.Builder
	sb.WriteByte('{')
	if len(meta) > 0 {
		mb, err := json.Marshal(meta) // map keys are sorted
		if err != nil {
			return nil, err
		}
		sb.WriteString(`"__metadata__":`)
		sb.Write(mb)
	}
	var off int64
	for i, t := range ts {
		if i > 0 || len(meta) > 0 {
			sb.WriteByte(',')
		}
		nb, _ := json.Marshal(t.name)
		sb.Write(nb)
		sb.WriteString(`:{"dtype":"F32","shape":[`)
		for j, s := range t.shape {
			if j > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, "%d", s)
		}
		end := off + 4*int64(len(t.data))
		fmt.Fprintf(&sb, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	sb.WriteByte('}')
	for sb.Len()%8 != 0 {
		sb.WriteByte(' ')
	}
	return []byte(sb.String()), nil
}

func writeSafetensors(w io.Writer, meta map[string]string, ts []namedTensor) error {
	hdr, err := safetensorsHeaderJSON(meta, ts)
	if err != nil {
		return err
	}
	var lb [8]byte
	binary.LittleEndian.PutUint64(lb[:], uint64(len(hdr)))
	if _, err := w.Write(lb[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, t := range ts {
		if err := writeF32(w, t.data); err != nil {
			return err
		}
	}
	return nil
}
