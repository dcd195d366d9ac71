package arrowio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Arrow's IPC reader trusts the sizes and counts in the flatbuffer metadata
// and allocates what they promise: a few lying bytes can ask for gigabytes
// and crash the process. Validate checks, before the reader sees the data,
// that every message, vector and body it would read lies inside the input,
// and rejects compressed batches (whose declared uncompressed sizes are
// equally unchecked). dpopipe's own files always pass.

// limits on what Validate accepts.
const (
	maxNesting = 64      // field nesting depth
	maxFields  = 1 << 16 // fields in a schema, all levels
)

var errTruncated = errors.New("metadata points outside the data")

// fb is a bounds-checked flatbuffer reader.
type fb []byte

func (b fb) u16(p int) (int, error) {
	if p < 0 || p+2 > len(b) {
		return 0, errTruncated
	}
	return int(binary.LittleEndian.Uint16(b[p:])), nil
}

func (b fb) u32(p int) (int, error) {
	if p < 0 || p+4 > len(b) {
		return 0, errTruncated
	}
	return int(binary.LittleEndian.Uint32(b[p:])), nil
}

func (b fb) i64(p int) (int64, error) {
	if p < 0 || p+8 > len(b) {
		return 0, errTruncated
	}
	return int64(binary.LittleEndian.Uint64(b[p:])), nil
}

// table is a flatbuffer table at position pos.
type table struct {
	b   fb
	pos int
	vt  int
	vts int
}

func (b fb) table(pos int) (table, error) {
	if pos < 0 || pos+4 > len(b) {
		return table{}, errTruncated
	}
	soff := int(int32(binary.LittleEndian.Uint32(b[pos:])))
	vt := pos - soff
	vts, err := b.u16(vt)
	if err != nil || vts < 4 || vt+vts > len(b) {
		return table{}, errTruncated
	}
	return table{b: b, pos: pos, vt: vt, vts: vts}, nil
}

// root returns the root table of a flatbuffer.
func (b fb) root() (table, error) {
	off, err := b.u32(0)
	if err != nil {
		return table{}, err
	}
	return b.table(off)
}

// field returns the absolute position of field i, or 0 when absent.
func (t table) field(i int) (int, error) {
	o := 4 + 2*i
	if o+2 > t.vts {
		return 0, nil
	}
	off, err := t.b.u16(t.vt + o)
	if err != nil || off == 0 {
		return 0, err
	}
	return t.pos + off, nil
}

// ref follows the offset stored in field i, or returns 0 when absent.
func (t table) ref(i int) (int, error) {
	p, err := t.field(i)
	if err != nil || p == 0 {
		return 0, err
	}
	off, err := t.b.u32(p)
	if err != nil {
		return 0, err
	}
	return p + off, nil
}

// sub returns the table that field i refers to.
func (t table) sub(i int) (table, bool, error) {
	p, err := t.ref(i)
	if err != nil || p == 0 {
		return table{}, false, err
	}
	st, err := t.b.table(p)
	return st, err == nil, err
}

// vector checks the vector in field i, whose elements are elem bytes, and
// returns its start (after the length) and length.
func (t table) vector(i, elem int) (start, n int, err error) {
	p, err := t.ref(i)
	if err != nil || p == 0 {
		return 0, 0, err
	}
	n, err = t.b.u32(p)
	if err != nil {
		return 0, 0, err
	}
	if n > (len(t.b)-p-4)/elem {
		return 0, 0, fmt.Errorf("a vector of %d elements does not fit in %d bytes of metadata", n, len(t.b))
	}
	return p + 4, n, nil
}

// tables checks a vector of tables in field i and calls fn on each.
func (t table) tables(i int, fn func(table) error) error {
	start, n, err := t.vector(i, 4)
	if err != nil {
		return err
	}
	for k := 0; k < n; k++ {
		p := start + 4*k
		off, err := t.b.u32(p)
		if err != nil {
			return err
		}
		st, err := t.b.table(p + off)
		if err != nil {
			return err
		}
		if err := fn(st); err != nil {
			return err
		}
	}
	return nil
}

func checkKeyValues(t table, i int) error {
	return t.tables(i, func(kv table) error {
		for f := 0; f < 2; f++ {
			if _, _, err := kv.vector(f, 1); err != nil {
				return err
			}
		}
		return nil
	})
}

// checkSchema checks a Schema table: fields (recursively) and metadata.
func checkSchema(s table) error {
	count := 0
	var field func(f table, depth int) error
	field = func(f table, depth int) error {
		count++
		if depth > maxNesting || count > maxFields {
			return fmt.Errorf("schema nests deeper than %d levels or has more than %d fields", maxNesting, maxFields)
		}
		if _, _, err := f.vector(0, 1); err != nil { // name
			return err
		}
		if _, _, err := f.sub(3); err != nil { // type
			return err
		}
		if _, _, err := f.sub(4); err != nil { // dictionary encoding
			return err
		}
		if err := checkKeyValues(f, 6); err != nil {
			return err
		}
		return f.tables(5, func(c table) error { return field(c, depth+1) })
	}
	if err := s.tables(1, func(f table) error { return field(f, 1) }); err != nil {
		return err
	}
	if _, _, err := s.vector(3, 8); err != nil { // features
		return err
	}
	return checkKeyValues(s, 2)
}

// checkRecordBatch checks a RecordBatch table against its body size.
func checkRecordBatch(rb table, body int64) error {
	if p, err := rb.field(3); err != nil || p != 0 {
		if err != nil {
			return err
		}
		return errors.New("compressed record batches are not supported")
	}
	limit := body*8 + 64 // every row of a non-null column takes at least a bit
	if p, err := rb.field(0); err != nil {
		return err
	} else if p != 0 {
		n, err := rb.b.i64(p)
		if err != nil {
			return err
		}
		if n < 0 || n > limit {
			return fmt.Errorf("a batch claims %d rows in a %d-byte body", n, body)
		}
	}
	start, n, err := rb.vector(1, 16) // nodes: length, null_count
	if err != nil {
		return err
	}
	for k := 0; k < n; k++ {
		l, _ := rb.b.i64(start + 16*k)
		nulls, _ := rb.b.i64(start + 16*k + 8)
		if l < 0 || l > limit || nulls < 0 || nulls > l {
			return fmt.Errorf("a column claims %d rows (%d null) in a %d-byte body", l, nulls, body)
		}
	}
	start, n, err = rb.vector(2, 16) // buffers: offset, length
	if err != nil {
		return err
	}
	for k := 0; k < n; k++ {
		off, _ := rb.b.i64(start + 16*k)
		l, _ := rb.b.i64(start + 16*k + 8)
		if off < 0 || l < 0 || off > body || l > body-off {
			return fmt.Errorf("a buffer [%d, +%d) lies outside the %d-byte body", off, l, body)
		}
	}
	_, _, err = rb.vector(4, 8)
	return err
}

// checkMessage checks one IPC message's metadata and returns its body
// length.
func checkMessage(meta fb) (int64, error) {
	m, err := meta.root()
	if err != nil {
		return 0, err
	}
	var body int64
	if p, err := m.field(3); err != nil {
		return 0, err
	} else if p != 0 {
		if body, err = meta.i64(p); err != nil {
			return 0, err
		}
		if body < 0 {
			return 0, fmt.Errorf("negative body length %d", body)
		}
	}
	if err := checkKeyValues(m, 4); err != nil {
		return 0, err
	}
	kind := 0
	if p, err := m.field(1); err != nil {
		return 0, err
	} else if p != 0 {
		if p >= len(meta) {
			return 0, errTruncated
		}
		kind = int(meta[p])
	}
	h, ok, err := m.sub(2)
	if err != nil {
		return 0, err
	}
	if !ok {
		return body, nil
	}
	switch kind {
	case 1:
		err = checkSchema(h)
	case 2: // DictionaryBatch: its data is a RecordBatch
		var rb table
		if rb, ok, err = h.sub(1); err == nil && ok {
			err = checkRecordBatch(rb, body)
		}
	case 3:
		err = checkRecordBatch(h, body)
	default:
		err = fmt.Errorf("unsupported message type %d", kind)
	}
	return body, err
}

// checkStream walks the messages of an IPC stream in data[pos:].
func checkStream(data []byte, pos int) error {
	for pos < len(data) {
		if pos+4 > len(data) {
			return errTruncated
		}
		n := int(int32(binary.LittleEndian.Uint32(data[pos:])))
		pos += 4
		if n == -1 { // continuation marker
			if pos+4 > len(data) {
				return errTruncated
			}
			n = int(int32(binary.LittleEndian.Uint32(data[pos:])))
			pos += 4
		}
		if n == 0 {
			return nil // end of stream
		}
		if n < 0 || n > len(data)-pos {
			return fmt.Errorf("a message of %d bytes at offset %d runs past the end (%d bytes)", n, pos, len(data))
		}
		body, err := checkMessage(fb(data[pos : pos+n]))
		if err != nil {
			return fmt.Errorf("message at offset %d: %w", pos, err)
		}
		pos += n
		if body > int64(len(data)-pos) {
			return fmt.Errorf("a message body of %d bytes at offset %d runs past the end", body, pos)
		}
		pos += int(body)
	}
	return nil
}

// checkFile checks an IPC file: its footer, and every block it lists.
func checkFile(data []byte) error {
	const magic = 6
	n := len(data)
	if n < 2*magic+4+2 {
		return errTruncated
	}
	flen := int(int32(binary.LittleEndian.Uint32(data[n-magic-4:])))
	fstart := n - magic - 4 - flen
	if flen <= 0 || fstart < magic+2 {
		return fmt.Errorf("footer of %d bytes does not fit", flen)
	}
	footer := fb(data[fstart : n-magic-4])
	f, err := footer.root()
	if err != nil {
		return fmt.Errorf("footer: %w", err)
	}
	if s, ok, err := f.sub(1); err != nil {
		return fmt.Errorf("footer schema: %w", err)
	} else if ok {
		if err := checkSchema(s); err != nil {
			return fmt.Errorf("footer schema: %w", err)
		}
	}
	if err := checkKeyValues(f, 4); err != nil {
		return err
	}
	for _, field := range []int{2, 3} {
		start, count, err := f.vector(field, 24)
		if err != nil {
			return fmt.Errorf("footer: %w", err)
		}
		for k := 0; k < count; k++ {
			off, _ := footer.i64(start + 24*k)
			mlen, _ := footer.u32(start + 24*k + 8)
			body, _ := footer.i64(start + 24*k + 16)
			if off < 0 || body < 0 || off > int64(fstart) || int64(mlen) > int64(fstart)-off || body > int64(fstart)-off-int64(mlen) {
				return fmt.Errorf("a block at offset %d (%d+%d bytes) lies outside the file", off, mlen, body)
			}
			if err := checkStream(data[off:off+int64(mlen)+body], 0); err != nil {
				return fmt.Errorf("block at offset %d: %w", off, err)
			}
		}
	}
	return checkStream(data[:fstart], 8)
}
