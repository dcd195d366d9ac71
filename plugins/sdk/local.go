package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/hashicorp/go-hclog"
)

// LocalResult is what RunLocal collects from a stage run.
type LocalResult struct {
	Output []arrow.RecordBatch
	Stats  map[string]int64
	Prints []string
	Meta   map[string]string
}

// Release releases the output batches.
func (r *LocalResult) Release() {
	for _, rec := range r.Output {
		rec.Release()
	}
}

// LocalOptions configures RunLocal.
type LocalOptions struct {
	Input    []arrow.RecordBatch // nil for a stage without input
	Dir      string              // artifact directory; required if the stage writes files
	RunDir   string
	CacheDir string
	NoCache  bool
	Log      hclog.Logger
}

// RunLocal runs stage in this process, without a plugin process: for stage
// unit tests. cfg is a JSON object or a value that encodes to one. The
// configuration goes through Configure first, as the host does.
func RunLocal(ctx context.Context, stage Stage, cfg any, opts LocalOptions) (*LocalResult, error) {
	var raw json.RawMessage
	switch c := cfg.(type) {
	case json.RawMessage:
		raw = c
	case []byte:
		raw = c
	case string:
		raw = json.RawMessage(c)
	default:
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		raw = b
	}
	if res := Configure(stage, raw); len(res.Errors) > 0 {
		var es Errors
		for _, e := range res.Errors {
			es = append(es, &AttrError{Attr: e.Attr, Summary: e.Summary, Detail: e.Detail})
		}
		return nil, es
	}
	config, err := NewConfig(stage.Spec(), raw)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	sink := &localSink{stats: map[string]int64{}, meta: map[string]string{}}
	run := &Run{Config: config, Dir: opts.Dir, RunDir: opts.RunDir, CacheDir: opts.CacheDir,
		NoCache: opts.NoCache, Stage: stage.Spec().Type + ".local", Log: log, sink: sink}
	if opts.Input != nil {
		if len(opts.Input) == 0 {
			return nil, fmt.Errorf("sdk: RunLocal: empty input needs at least one (possibly empty) batch for its schema")
		}
		rdr, err := array.NewRecordReader(opts.Input[0].Schema(), opts.Input)
		if err != nil {
			return nil, err
		}
		defer rdr.Release()
		run.Input = rdr
	}
	if err := stage.Run(ctx, run); err != nil {
		sink.release()
		return nil, err
	}
	return &LocalResult{Output: sink.out, Stats: sink.stats, Prints: sink.prints, Meta: sink.meta}, nil
}

type localSink struct {
	mu     sync.Mutex
	out    []arrow.RecordBatch
	stats  map[string]int64
	prints []string
	meta   map[string]string
}

func (s *localSink) write(rec arrow.RecordBatch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.out) > 0 && !s.out[0].Schema().Equal(rec.Schema()) {
		return fmt.Errorf("sdk: output batch schema %v differs from the first batch's %v", rec.Schema(), s.out[0].Schema())
	}
	rec.Retain()
	s.out = append(s.out, rec)
	return nil
}

func (s *localSink) event(ev event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.Kind {
	case "stat":
		s.stats[ev.Name] = ev.Value
	case "print":
		s.prints = append(s.prints, ev.Message)
	case "meta":
		s.meta[ev.Name] = ev.Message
	}
	return nil
}

func (s *localSink) release() {
	for _, rec := range s.out {
		rec.Release()
	}
}
