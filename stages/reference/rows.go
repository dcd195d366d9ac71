package reference

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/pipeline/cache"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// rowKeyMagic starts every hashed row key, so row keys never collide with
// other sha256 digests in the cache.
const rowKeyMagic = "dpopipe.reference_logprobs.row\x00"

// RowKey returns the row key of p under the model with content digest
// modelDigest: the hex sha256 of
//
//	magic, field(stage version), field(dtype), field(model digest),
//	ids(prompt), ids(chosen), ids(rejected)
//
// where field(s) is len(s) as uint64 then s, and ids(x) is len(x) as uint64
// then each id as int32, all little-endian. Every part is length-prefixed,
// so distinct inputs never share an encoding (moving a token from the
// prompt to a completion changes the key).
func RowKey(modelDigest, dtype string, p *pairs.Pair) string {
	h := sha256.New()
	h.Write([]byte(rowKeyMagic))
	for _, s := range []string{Version, dtype, modelDigest} {
		writeLen(h, len(s))
		h.Write([]byte(s))
	}
	buf := make([]byte, 0, 4*(len(p.Prompt)+len(p.Chosen)+len(p.Rejected)))
	for _, ids := range [][]int32{p.Prompt, p.Chosen, p.Rejected} {
		writeLen(h, len(ids))
		buf = buf[:0]
		for _, id := range ids {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(id))
		}
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeLen(h hash.Hash, n int) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
}

// segmentSchema is the schema of a row segment: row_key, then the reference
// columns.
func segmentSchema() *arrow.Schema {
	fields := []arrow.Field{{Name: cache.RowKeyColumn, Type: arrow.BinaryTypes.String}}
	fields = append(fields, pairs.RefFields()...)
	return arrow.NewSchema(fields, nil)
}

// segmentRecord builds the row segment of the pairs ps[idx] (scored) with
// their keys. The caller releases it.
func segmentRecord(ps []pairs.Pair, idx []int, keys []string) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, segmentSchema())
	defer b.Release()
	kb := b.Field(0).(*array.StringBuilder)
	rc := b.Field(1).(*array.Float64Builder)
	rr := b.Field(2).(*array.Float64Builder)
	nc := b.Field(3).(*array.Int32Builder)
	nr := b.Field(4).(*array.Int32Builder)
	lc := b.Field(5).(*array.ListBuilder)
	lr := b.Field(6).(*array.ListBuilder)
	for _, i := range idx {
		p := &ps[i]
		kb.Append(keys[i])
		rc.Append(p.RefChosen)
		rr.Append(p.RefRejected)
		nc.Append(p.ChosenTokens)
		nr.Append(p.RejectedTokens)
		lc.Append(true)
		lc.ValueBuilder().(*array.Float32Builder).AppendValues(p.RefChosenTokenLogps, nil)
		lr.Append(true)
		lr.ValueBuilder().(*array.Float32Builder).AppendValues(p.RefRejectedTokenLogps, nil)
	}
	return b.NewRecordBatch()
}

// segCols are the typed reference columns of one loaded segment record; nil
// when the record does not have them with the expected types.
type segCols struct {
	refC, refR *array.Float64
	nc, nr     *array.Int32
	lc, lr     *array.List
	vc, vr     *array.Float32
}

// segmentReader fills pairs from loaded segment records, caching each
// record's typed columns.
type segmentReader struct {
	cols map[arrow.RecordBatch]*segCols
}

func newSegmentReader() *segmentReader {
	return &segmentReader{cols: map[arrow.RecordBatch]*segCols{}}
}

func (r *segmentReader) columns(rec arrow.RecordBatch) *segCols {
	if c, ok := r.cols[rec]; ok {
		return c
	}
	var c *segCols
	get := func(name string) arrow.Array {
		idx := rec.Schema().FieldIndices(name)
		if len(idx) != 1 {
			return nil
		}
		return rec.Column(idx[0])
	}
	refC, ok1 := get(pairs.ColRefChosen).(*array.Float64)
	refR, ok2 := get(pairs.ColRefRejected).(*array.Float64)
	nc, ok3 := get(pairs.ColChosenTokens).(*array.Int32)
	nr, ok4 := get(pairs.ColRejectedTokens).(*array.Int32)
	lc, ok5 := get(pairs.ColRefChosenTokLps).(*array.List)
	lr, ok6 := get(pairs.ColRefRejectedTokLp).(*array.List)
	if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 {
		vc, ok7 := lc.ListValues().(*array.Float32)
		vr, ok8 := lr.ListValues().(*array.Float32)
		if ok7 && ok8 {
			c = &segCols{refC: refC, refR: refR, nc: nc, nr: nr, lc: lc, lr: lr, vc: vc, vr: vr}
		}
	}
	r.cols[rec] = c
	return c
}

// fill copies the stored scores of row into p. It returns false, leaving p
// alone, when the stored row is malformed or does not fit p (its token
// counts differ from p's completions); such a row is scored again.
func (r *segmentReader) fill(rec arrow.RecordBatch, row int, p *pairs.Pair) bool {
	c := r.columns(rec)
	if c == nil || row < 0 || row >= int(rec.NumRows()) {
		return false
	}
	if c.refC.IsNull(row) || c.refR.IsNull(row) || c.nc.IsNull(row) || c.nr.IsNull(row) || c.lc.IsNull(row) || c.lr.IsNull(row) {
		return false
	}
	_, cs := p.ChosenSeq()
	_, rs := p.RejectedSeq()
	wantC := completionTokens(len(p.Prompt)+len(p.Chosen), cs)
	wantR := completionTokens(len(p.Prompt)+len(p.Rejected), rs)
	if int(c.nc.Value(row)) != wantC || int(c.nr.Value(row)) != wantR {
		return false
	}
	s0, e0 := c.lc.ValueOffsets(row)
	s1, e1 := c.lr.ValueOffsets(row)
	if int(e0-s0) != wantC || int(e1-s1) != wantR {
		return false
	}
	p.HasRef = true
	p.RefChosen, p.RefRejected = c.refC.Value(row), c.refR.Value(row)
	p.ChosenTokens, p.RejectedTokens = int32(wantC), int32(wantR)
	p.RefChosenTokenLogps = append([]float32{}, c.vc.Float32Values()[s0:e0]...)
	p.RefRejectedTokenLogps = append([]float32{}, c.vr.Float32Values()[s1:e1]...)
	return true
}

// completionTokens is the number of scored tokens of a sequence of n tokens
// whose completion starts at start.
func completionTokens(n, start int) int {
	return max(0, n-start)
}
