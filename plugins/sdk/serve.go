package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dpopipe/dpopipe/plugins/protocol"
)

// Serve runs stage as a plugin process and returns when the host is done
// with it. Call it from main. Logs written with Run.Log go to the host.
func Serve(stage Stage) {
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       stage.Spec().Type,
		Level:      hclog.Debug,
		Output:     os.Stderr,
		JSONFormat: true,
	})
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			protocol.Version: {protocol.PluginName: &grpcPlugin{stage: stage, log: logger}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts,
				grpc.MaxRecvMsgSize(protocol.MaxMessageBytes),
				grpc.MaxSendMsgSize(protocol.MaxMessageBytes))
			return grpc.NewServer(opts...)
		},
		Logger: logger,
	})
}

// grpcPlugin is the plugin side of the go-plugin registration.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	stage Stage
	log   hclog.Logger
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	flight.RegisterFlightServiceServer(s, &flightServer{stage: p.stage, log: p.log})
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk: the client side lives in the host")
}

// flightServer serves one stage over Arrow Flight.
type flightServer struct {
	flight.BaseFlightServer
	stage Stage
	log   hclog.Logger
}

func (s *flightServer) DoAction(act *flight.Action, stream flight.FlightService_DoActionServer) error {
	var body []byte
	switch act.Type {
	case protocol.ActionDescribe:
		b, err := json.Marshal(s.stage.Spec())
		if err != nil {
			return status.Errorf(codes.Internal, "encoding spec: %v", err)
		}
		body = b
	case protocol.ActionConfigure:
		res := Configure(s.stage, act.Body)
		b, err := json.Marshal(res)
		if err != nil {
			return status.Errorf(codes.Internal, "encoding configure result: %v", err)
		}
		body = b
	default:
		return status.Errorf(codes.Unimplemented, "unknown action %q", act.Type)
	}
	return stream.Send(&flight.Result{Body: body})
}

// Configure checks cfg against the stage, as the configure action does.
func Configure(stage Stage, cfgJSON []byte) protocol.ConfigureResult {
	var res protocol.ConfigureResult
	cfg, err := NewConfig(stage.Spec(), cfgJSON)
	if err != nil {
		res.Errors = append(res.Errors, protocol.AttrError{Summary: "Invalid configuration", Detail: err.Error()})
		return res
	}
	c, ok := stage.(Configurer)
	if !ok {
		return res
	}
	err = c.Configure(cfg)
	var ae *AttrError
	var aes Errors
	switch {
	case err == nil:
	case errors.As(err, &aes):
		for _, e := range aes {
			res.Errors = append(res.Errors, protocol.AttrError{Attr: e.Attr, Summary: e.Summary, Detail: e.Detail})
		}
	case errors.As(err, &ae):
		res.Errors = append(res.Errors, protocol.AttrError{Attr: ae.Attr, Summary: ae.Summary, Detail: ae.Detail})
	default:
		res.Errors = append(res.Errors, protocol.AttrError{Summary: "Invalid configuration", Detail: err.Error()})
	}
	return res
}

func (s *flightServer) DoExchange(stream flight.FlightService_DoExchangeServer) (err error) {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.FlightDescriptor == nil || len(first.FlightDescriptor.Cmd) == 0 {
		return status.Error(codes.InvalidArgument, "run: the first message must carry a RunRequest")
	}
	var req protocol.RunRequest
	if err := json.Unmarshal(first.FlightDescriptor.Cmd, &req); err != nil {
		return status.Errorf(codes.InvalidArgument, "run: bad RunRequest: %v", err)
	}
	cfg, err := NewConfig(s.stage.Spec(), req.Config)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	out := &streamSink{stream: stream}
	var counter *countingReader
	run := &Run{
		Config: cfg, Dir: req.Dir, RunDir: req.RunDir, CacheDir: req.CacheDir,
		NoCache: req.NoCache, Resume: req.Resume, Stage: req.Stage, Log: s.log, sink: out,
	}
	if req.HasInput {
		rdr, err := ipc.NewReaderFromMessageReader(&flightMessages{recv: stream.Recv})
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "run: reading input schema: %v", err)
		}
		defer rdr.Release()
		counter = &countingReader{RecordReader: rdr}
		run.Input = counter
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("stage panicked", "panic", r, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "stage panicked: %v", r)
		}
	}()
	if err := s.stage.Run(stream.Context(), run); err != nil {
		if stream.Context().Err() != nil {
			return status.Error(codes.Canceled, "stage cancelled")
		}
		return status.Error(codes.Unknown, err.Error())
	}
	if run.Input != nil {
		// Drain what the stage did not read so the host's sender finishes.
		for run.Input.Next() {
		}
		out.event(event{Kind: "stat", Name: StatRowsReceived, Value: counter.rows})
	}
	return out.finish()
}

// flightMessages adapts a FlightData stream to an ipc.MessageReader,
// skipping metadata-only messages.
type flightMessages struct {
	recv func() (*flight.FlightData, error)
	msg  *ipc.Message
}

func (m *flightMessages) Message() (*ipc.Message, error) {
	for {
		fd, err := m.recv()
		if err != nil {
			return nil, err
		}
		if len(fd.DataHeader) == 0 {
			continue
		}
		if m.msg != nil {
			m.msg.Release()
		}
		m.msg = ipc.NewMessage(memoryBytes(fd.DataHeader), memoryBytes(fd.DataBody))
		return m.msg, nil
	}
}

func (m *flightMessages) Retain() {}
func (m *flightMessages) Release() {
	if m.msg != nil {
		m.msg.Release()
		m.msg = nil
	}
}

// streamSink sends a run's output and events on the exchange stream.
type streamSink struct {
	mu     sync.Mutex
	stream flight.DataStreamWriter
	w      *flight.Writer
	schema *arrow.Schema
	stats  map[string]int64
	meta   map[string]string
}

func (s *streamSink) write(rec arrow.RecordBatch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		s.schema = rec.Schema()
		s.w = flight.NewRecordWriter(s.stream, ipc.WithSchema(rec.Schema()))
	} else if !s.schema.Equal(rec.Schema()) {
		return fmt.Errorf("sdk: output batch schema %v differs from the first batch's %v", rec.Schema(), s.schema)
	}
	for _, part := range SplitBatch(rec, protocol.MaxBatchBytes) {
		err := s.w.Write(part)
		part.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *streamSink) event(ev event) error {
	pev := protocol.Event{Kind: ev.Kind, Done: ev.Done, Total: ev.Total, Unit: ev.Unit,
		Name: ev.Name, Value: ev.Value, Message: ev.Message}
	if ev.Kind == "meta" {
		s.mu.Lock()
		if s.meta == nil {
			s.meta = map[string]string{}
		}
		s.meta[ev.Name] = ev.Message
		s.mu.Unlock()
		return nil
	}
	if ev.Kind == "stat" {
		s.mu.Lock()
		if s.stats == nil {
			s.stats = map[string]int64{}
		}
		s.stats[ev.Name] = ev.Value
		s.mu.Unlock()
	}
	b, err := json.Marshal(pev)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(&flight.FlightData{AppMetadata: b})
}

func (s *streamSink) finish() error {
	s.mu.Lock()
	if s.w != nil {
		if err := s.w.Close(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	stats, meta := s.stats, s.meta
	s.mu.Unlock()
	b, _ := json.Marshal(protocol.Event{Kind: protocol.EventDone, Stats: stats, Meta: meta})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(&flight.FlightData{AppMetadata: b})
}

// SplitBatch slices rec into batches whose buffers hold at most maxBytes
// (at least one row each). Each returned batch must be released.
func SplitBatch(rec arrow.RecordBatch, maxBytes int64) []arrow.RecordBatch {
	n := rec.NumRows()
	size := batchBytes(rec)
	if size <= maxBytes || n <= 1 {
		rec.Retain()
		return []arrow.RecordBatch{rec}
	}
	rows := n * maxBytes / size
	if rows < 1 {
		rows = 1
	}
	var out []arrow.RecordBatch
	for off := int64(0); off < n; off += rows {
		end := min(off+rows, n)
		out = append(out, rec.NewSlice(off, end))
	}
	return out
}

func batchBytes(rec arrow.RecordBatch) int64 {
	var total int64
	for _, col := range rec.Columns() {
		total += int64(arraySize(col.Data()))
	}
	return total
}

func arraySize(d arrow.ArrayData) int {
	total := 0
	for _, b := range d.Buffers() {
		if b != nil {
			total += b.Len()
		}
	}
	for _, c := range d.Children() {
		total += arraySize(c)
	}
	return total
}

// ReadAll reads every batch of r. The caller releases them.
func ReadAll(r array.RecordReader) ([]arrow.RecordBatch, error) {
	var recs []arrow.RecordBatch
	for r.Next() {
		rec := r.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
	}
	if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
		for _, rec := range recs {
			rec.Release()
		}
		return nil, err
	}
	return recs, nil
}

// StatRowsReceived is the stat the SDK reports with the number of input rows
// the plugin received, so that the host can check nothing was lost.
const StatRowsReceived = "rows_received"

// countingReader counts the rows a stage reads.
type countingReader struct {
	array.RecordReader
	rows int64
}

func (c *countingReader) Next() bool {
	if !c.RecordReader.Next() {
		return false
	}
	c.rows += c.RecordReader.RecordBatch().NumRows()
	return true
}
