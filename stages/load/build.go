package load

import (
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// batchRows is the most rows in one output batch.
const batchRows = 4096

// MessageType is the Arrow type of a chat message.
var MessageType = arrow.StructOf(
	arrow.Field{Name: "role", Type: arrow.BinaryTypes.String},
	arrow.Field{Name: "content", Type: arrow.BinaryTypes.String},
)

// MessagesType is the Arrow type of a conversational prompt or completion.
var MessagesType = arrow.ListOf(MessageType)

// IDsType is the Arrow type of pre-tokenized columns.
var IDsType = arrow.ListOf(arrow.PrimitiveTypes.Int32)

// Schema returns the output schema for a prompt format.
func Schema(format string) *arrow.Schema {
	if format == pfText {
		return arrow.NewSchema([]arrow.Field{
			{Name: "row", Type: arrow.PrimitiveTypes.Int64},
			{Name: "text", Type: arrow.BinaryTypes.String},
			{Name: "weight", Type: arrow.PrimitiveTypes.Float32},
			{Name: "split", Type: arrow.BinaryTypes.String},
		}, nil)
	}
	var t arrow.DataType = arrow.BinaryTypes.String
	names := [3]string{"prompt", "chosen", "rejected"}
	switch format {
	case pfConversational:
		t = MessagesType
	case pfTokenized:
		t = IDsType
		names = [3]string{"prompt_ids", "chosen_ids", "rejected_ids"}
	}
	return arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: names[0], Type: t},
		{Name: names[1], Type: t},
		{Name: names[2], Type: t},
		{Name: "weight", Type: arrow.PrimitiveTypes.Float32},
		{Name: "split", Type: arrow.BinaryTypes.String},
	}, nil)
}

// batcher accumulates pairs into Arrow record batches.
type batcher struct {
	format string
	b      *array.RecordBuilder
	n      int
}

func newBatcher(format string) *batcher {
	return &batcher{format: format, b: array.NewRecordBuilder(memory.DefaultAllocator, Schema(format))}
}

func (bt *batcher) add(p *pair) {
	b := bt.b
	b.Field(0).(*array.Int64Builder).Append(p.row)
	if bt.format == pfText {
		b.Field(1).(*array.StringBuilder).Append(p.text)
		b.Field(2).(*array.Float32Builder).Append(p.weight)
		b.Field(3).(*array.StringBuilder).Append(p.split)
		bt.n++
		return
	}
	switch bt.format {
	case pfConversational:
		appendMsgs(b.Field(1).(*array.ListBuilder), p.pMsgs)
		appendMsgs(b.Field(2).(*array.ListBuilder), p.cMsgs)
		appendMsgs(b.Field(3).(*array.ListBuilder), p.rMsgs)
	case pfTokenized:
		appendIDs(b.Field(1).(*array.ListBuilder), p.pIDs)
		appendIDs(b.Field(2).(*array.ListBuilder), p.cIDs)
		appendIDs(b.Field(3).(*array.ListBuilder), p.rIDs)
	default:
		b.Field(1).(*array.StringBuilder).Append(p.prompt)
		b.Field(2).(*array.StringBuilder).Append(p.chosen)
		b.Field(3).(*array.StringBuilder).Append(p.rej)
	}
	b.Field(4).(*array.Float32Builder).Append(p.weight)
	b.Field(5).(*array.StringBuilder).Append(p.split)
	bt.n++
}

func appendMsgs(lb *array.ListBuilder, ms []message) {
	lb.Append(true)
	sb := lb.ValueBuilder().(*array.StructBuilder)
	role := sb.FieldBuilder(0).(*array.StringBuilder)
	content := sb.FieldBuilder(1).(*array.StringBuilder)
	for _, m := range ms {
		sb.Append(true)
		role.Append(m.Role)
		content.Append(m.Content)
	}
}

func appendIDs(lb *array.ListBuilder, ids []int32) {
	lb.Append(true)
	lb.ValueBuilder().(*array.Int32Builder).AppendValues(ids, nil)
}

// flush returns the accumulated batch (possibly empty); the caller releases it.
func (bt *batcher) flush() arrow.RecordBatch {
	bt.n = 0
	return bt.b.NewRecordBatch()
}

func (bt *batcher) release() { bt.b.Release() }

func sortStrings(s []string) { sort.Strings(s) }
