package arrowio

import (
	"bytes"
	"io"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func sampleBatch(t testing.TB) arrow.RecordBatch {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "text", Type: arrow.BinaryTypes.String},
		{Name: "ids", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 2}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"a", "b\n"}, nil)
	lb := b.Field(2).(*array.ListBuilder)
	vb := lb.ValueBuilder().(*array.Int32Builder)
	lb.Append(true)
	vb.AppendValues([]int32{1, 2, 3}, nil)
	lb.Append(true)
	return b.NewRecordBatch()
}

func encode(t testing.TB, file bool) []byte {
	rec := sampleBatch(t)
	defer rec.Release()
	var buf bytes.Buffer
	if file {
		w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(rec.Schema()))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(rec)
		w.Close()
	} else {
		w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
		w.Write(rec)
		w.Close()
	}
	return buf.Bytes()
}

func TestCat(t *testing.T) {
	want := "{\"ids\":[1,2,3],\"row\":1,\"text\":\"a\"}\n{\"ids\":[],\"row\":2,\"text\":\"b\\n\"}\n"
	for _, tc := range []struct {
		name string
		file bool
	}{{"file", true}, {"stream", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Cat(encode(t, tc.file), &out); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Fatalf("got %q\nwant %q", out.String(), want)
			}
		})
	}
	if err := Cat([]byte("not arrow"), io.Discard); err == nil {
		t.Fatal("garbage input: want an error")
	}
}

func FuzzCat(f *testing.F) {
	f.Add(encode(f, true))
	f.Add(encode(f, false))
	f.Add([]byte("ARROW1\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = Cat(data, io.Discard)
	})
}
