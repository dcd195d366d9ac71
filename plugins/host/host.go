// Package host starts stage plugins and talks to them: it is the host side
// of the protocol in package protocol. Each Client is one plugin process.
package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dpopipe/dpopipe/pipeline/cache"
	"github.com/dpopipe/dpopipe/plugins/protocol"
	"github.com/dpopipe/dpopipe/plugins/sdk"
)

// Source says how to start a stage plugin.
type Source struct {
	// Type is the stage type the plugin serves.
	Type string
	// Path is the executable.
	Path string
	// Args are passed to it (built-in stages: plugin serve TYPE).
	Args []string
	// SHA256, when set, pins the executable's content (hex). A mismatch
	// refuses to start the plugin.
	SHA256 string
	// Builtin is true for stages served by the dpopipe binary itself.
	Builtin bool
}

// Options tunes how plugins start.
type Options struct {
	// StartTimeout bounds the handshake; 0 means 30s.
	StartTimeout time.Duration
	// Logger receives the plugin's logs; nil discards them.
	Logger hclog.Logger
	// Stderr receives plugin stderr lines that are not structured logs.
	Stderr io.Writer
}

// Client is a running stage plugin.
type Client struct {
	src    Source
	pc     *plugin.Client
	flight flight.FlightServiceClient
	pid    int
	digest string
}

// Start launches the plugin process and completes the handshake.
func Start(ctx context.Context, src Source, opts Options) (*Client, error) {
	if _, err := os.Stat(src.Path); err != nil {
		return nil, fmt.Errorf("plugin for stage type %q: executable %s not found: %w", src.Type, src.Path, err)
	}
	if st, _ := os.Stat(src.Path); st != nil && st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("plugin for stage type %q: %s is not executable; run chmod +x on it", src.Type, src.Path)
	}
	digest, err := cache.HashFile(src.Path)
	if err != nil {
		return nil, fmt.Errorf("plugin for stage type %q: %w", src.Type, err)
	}
	var secure *plugin.SecureConfig
	if src.SHA256 != "" {
		want, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(src.SHA256), "sha256:"))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("plugin for stage type %q: sha256 pin %q is not 64 hex digits", src.Type, src.SHA256)
		}
		if digest != hex.EncodeToString(want) {
			return nil, fmt.Errorf("plugin for stage type %q: %s has sha256 %s but the pipeline pins %s; rebuild the plugin or update the pin", src.Type, src.Path, digest, hex.EncodeToString(want))
		}
		secure = &plugin.SecureConfig{Checksum: want, Hash: sha256.New()}
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	cmd := exec.Command(src.Path, src.Args...)
	cmd.Env = os.Environ()
	bindToParent(cmd)
	stderr := opts.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{protocol.Version: {protocol.PluginName: &clientPlugin{}}},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Managed:          true,
		StartTimeout:     timeout,
		Logger:           logger,
		Stderr:           stderr,
		SyncStderr:       stderr,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(protocol.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(protocol.MaxMessageBytes))},
	})
	rpc, err := pc.Client()
	if err != nil {
		pc.Kill()
		return nil, startError(src, err)
	}
	raw, err := rpc.Dispense(protocol.PluginName)
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("plugin for stage type %q (%s): %w", src.Type, src.Path, err)
	}
	c := &Client{src: src, pc: pc, flight: raw.(flight.FlightServiceClient), digest: digest}
	if rc := pc.ReattachConfig(); rc != nil {
		c.pid = rc.Pid
	}
	return c, nil
}

func startError(src Source, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Incompatible API version"), strings.Contains(msg, "incompatible"):
		return fmt.Errorf("plugin for stage type %q (%s) speaks another protocol version: dpopipe speaks stage protocol %d (%v); rebuild the plugin against this dpopipe's plugins/sdk", src.Type, src.Path, protocol.Version, err)
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		return fmt.Errorf("plugin for stage type %q (%s) broke the handshake: it wrote something other than the go-plugin handshake line to stdout. A stage plugin must log to stderr only (%v)", src.Type, src.Path, err)
	case strings.Contains(msg, "timeout"):
		return fmt.Errorf("plugin for stage type %q (%s) did not complete the handshake in time; is it built with sdk.Serve? (%v)", src.Type, src.Path, err)
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("plugin for stage type %q (%s) failed its sha256 pin: %v", src.Type, src.Path, err)
	}
	return fmt.Errorf("plugin for stage type %q (%s) failed to start: %v", src.Type, src.Path, err)
}

// Pid is the plugin process id.
func (c *Client) Pid() int { return c.pid }

// Digest is the sha256 of the plugin executable.
func (c *Client) Digest() string { return c.digest }

// Source is how the plugin was started.
func (c *Client) Source() Source { return c.src }

// Kill ends the plugin process. It is safe to call more than once.
func (c *Client) Kill() { c.pc.Kill() }

// Exited reports whether the process has ended.
func (c *Client) Exited() bool { return c.pc.Exited() }

// Describe returns the stage's spec.
func (c *Client) Describe(ctx context.Context) (sdk.Spec, error) {
	var spec sdk.Spec
	body, err := c.action(ctx, protocol.ActionDescribe, nil)
	if err != nil {
		return spec, err
	}
	if err := json.Unmarshal(body, &spec); err != nil {
		return spec, fmt.Errorf("plugin %s: bad describe answer: %w", c.src.Path, err)
	}
	return spec, nil
}

// Configure asks the stage to check cfg and returns its attribute errors.
func (c *Client) Configure(ctx context.Context, cfg json.RawMessage) ([]protocol.AttrError, error) {
	body, err := c.action(ctx, protocol.ActionConfigure, cfg)
	if err != nil {
		return nil, err
	}
	var res protocol.ConfigureResult
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("plugin %s: bad configure answer: %w", c.src.Path, err)
	}
	return res.Errors, nil
}

func (c *Client) action(ctx context.Context, typ string, body []byte) ([]byte, error) {
	stream, err := c.flight.DoAction(ctx, &flight.Action{Type: typ, Body: body})
	if err != nil {
		return nil, c.wrap(err)
	}
	res, err := stream.Recv()
	if err != nil {
		return nil, c.wrap(err)
	}
	return res.Body, nil
}

// wrap turns a gRPC error into one that says what happened to the plugin.
func (c *Client) wrap(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		time.Sleep(50 * time.Millisecond)
		if c.pc.Exited() {
			return fmt.Errorf("plugin process %d exited unexpectedly (crashed or was killed)", c.pid)
		}
		return fmt.Errorf("plugin process %d became unreachable: %s", c.pid, st.Message())
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	}
	return errors.New(st.Message())
}

// RunResult is what a finished run reports.
type RunResult struct {
	Stats map[string]int64
	Meta  map[string]string
	// Schema is the output schema, nil when the stage wrote no table.
	Schema *arrow.Schema
}

// Run executes the stage. Input may be nil. Each output batch is passed to
// out (and released after out returns); events go to onEvent.
func (c *Client) Run(ctx context.Context, req protocol.RunRequest, input array.RecordReader,
	out func(arrow.RecordBatch) error, onEvent func(protocol.Event)) (*RunResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req.HasInput = input != nil
	cmd, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	stream, err := c.flight.DoExchange(ctx)
	if err != nil {
		return nil, c.wrap(err)
	}
	if err := stream.Send(&flight.FlightData{FlightDescriptor: &flight.FlightDescriptor{
		Type: flight.DescriptorCMD, Cmd: cmd}}); err != nil {
		return nil, c.wrap(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- sendInput(stream, input)
	}()

	res := &RunResult{}
	done := false
	msgs := &eventFilter{recv: stream.Recv, onEvent: func(ev protocol.Event) {
		if ev.Kind == protocol.EventDone {
			done = true
			res.Stats = ev.Stats
			res.Meta = ev.Meta
			return
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}}
	first, err := msgs.Message()
	switch {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, c.runError(ctx, err)
	default:
		msgs.peeked = first
		rdr, err := ipc.NewReaderFromMessageReader(msgs, ipc.WithAllocator(memory.DefaultAllocator))
		if err != nil {
			return nil, c.runError(ctx, err)
		}
		res.Schema = rdr.Schema()
		for rdr.Next() {
			if err := out(rdr.RecordBatch()); err != nil {
				rdr.Release()
				cancel()
				return nil, err
			}
		}
		err = rdr.Err()
		rdr.Release()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, c.runError(ctx, err)
		}
	}
	if err := <-sendErr; err != nil && !errors.Is(err, io.EOF) {
		return nil, c.runError(ctx, err)
	}
	if !done {
		return nil, c.runError(ctx, errors.New("the plugin ended the run without finishing it"))
	}
	return res, nil
}

func (c *Client) runError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return c.wrap(err)
}

func sendInput(stream flight.FlightService_DoExchangeClient, input array.RecordReader) error {
	defer stream.CloseSend()
	if input == nil {
		return nil
	}
	w := flight.NewRecordWriter(stream, ipc.WithSchema(input.Schema()))
	for input.Next() {
		for _, part := range sdk.SplitBatch(input.RecordBatch(), protocol.MaxBatchBytes) {
			err := w.Write(part)
			part.Release()
			if err != nil {
				return err
			}
		}
	}
	if err := input.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return w.Close()
}

// eventFilter adapts the exchange stream to an ipc.MessageReader, passing
// metadata-only messages to onEvent.
type eventFilter struct {
	recv    func() (*flight.FlightData, error)
	onEvent func(protocol.Event)
	peeked  *ipc.Message
	msg     *ipc.Message
	mu      sync.Mutex
}

func (f *eventFilter) Message() (*ipc.Message, error) {
	if f.peeked != nil {
		m := f.peeked
		f.peeked = nil
		return m, nil
	}
	for {
		fd, err := f.recv()
		if err != nil {
			return nil, err
		}
		if len(fd.DataHeader) == 0 {
			if len(fd.AppMetadata) > 0 {
				var ev protocol.Event
				if json.Unmarshal(fd.AppMetadata, &ev) == nil {
					f.onEvent(ev)
				}
			}
			continue
		}
		f.mu.Lock()
		if f.msg != nil {
			f.msg.Release()
		}
		f.msg = ipc.NewMessage(memory.NewBufferBytes(fd.DataHeader), memory.NewBufferBytes(fd.DataBody))
		f.mu.Unlock()
		return f.msg, nil
	}
}

func (f *eventFilter) Retain()  {}
func (f *eventFilter) Release() {}

// clientPlugin is the host side of the go-plugin registration.
type clientPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (clientPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host: the server side lives in the plugin")
}

func (clientPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return flight.NewFlightServiceClient(cc), nil
}

// CleanupAll ends every plugin process still running. Call it on exit.
func CleanupAll() { plugin.CleanupClients() }
