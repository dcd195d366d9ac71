// Package sdk is what a stage plugin author imports. Implement Stage, then
// call Serve from main:
//
//	func main() { sdk.Serve(&MyStage{}) }
//
// Build the binary as dpopipe-stage-NAME and put it on $DPOPIPE_PLUGIN_PATH,
// or declare it in the pipeline file with a plugin block.
package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/hashicorp/go-hclog"
)

// Stage is one stage type.
type Stage interface {
	// Spec describes the stage. It must not depend on configuration.
	Spec() Spec
	// Run executes the stage with a configuration the host has already
	// checked against Spec (and Configure, if implemented).
	Run(ctx context.Context, run *Run) error
}

// Configurer is implemented by stages that check their configuration beyond
// what Spec expresses. Return Errors (or a single *AttrError) so that the
// host points at the attribute's position in the pipeline file.
type Configurer interface {
	Configure(cfg Config) error
}

// Config is a stage's evaluated configuration, with the Spec's defaults
// applied.
type Config struct {
	raw map[string]json.RawMessage
}

// NewConfig builds a Config from the JSON object the host sent, applying the
// defaults of spec for absent or null attributes.
func NewConfig(spec Spec, data json.RawMessage) (Config, error) {
	raw := map[string]json.RawMessage{}
	if len(data) > 0 && string(data) != "null" {
		if err := json.Unmarshal(data, &raw); err != nil {
			return Config{}, fmt.Errorf("config is not a JSON object: %w", err)
		}
	}
	for k, v := range raw {
		if string(v) == "null" {
			delete(raw, k)
		}
	}
	for _, a := range spec.Config {
		if _, ok := raw[a.Name]; !ok && len(a.Default) > 0 {
			raw[a.Name] = a.Default
		}
	}
	return Config{raw: raw}, nil
}

// Decode unmarshals the configuration into v, a pointer to a struct whose
// fields carry json tags named like the attributes.
func (c Config) Decode(v any) error {
	b, err := json.Marshal(c.raw)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Has reports whether attribute name is set (or has a default).
func (c Config) Has(name string) bool { _, ok := c.raw[name]; return ok }

// Raw returns the JSON of attribute name, or nil.
func (c Config) Raw(name string) json.RawMessage { return c.raw[name] }

// JSON returns the whole configuration as a JSON object.
func (c Config) JSON() json.RawMessage {
	b, _ := json.Marshal(c.raw)
	return b
}

// AttrError is a configuration error tied to one attribute.
type AttrError struct {
	Attr    string
	Summary string
	Detail  string
}

func (e *AttrError) Error() string {
	msg := e.Summary
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Attr != "" {
		return e.Attr + ": " + msg
	}
	return msg
}

// Errorf returns an *AttrError for attribute attr. The summary is terse; the
// detail, formatted from format and args, is a sentence saying what to do.
func Errorf(attr, summary, format string, args ...any) *AttrError {
	return &AttrError{Attr: attr, Summary: summary, Detail: fmt.Sprintf(format, args...)}
}

// Errors collects several attribute errors.
type Errors []*AttrError

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Err returns es as an error, or nil when it is empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Run is one execution of a stage.
type Run struct {
	// Config is the evaluated configuration.
	Config Config
	// Input streams the input table, or is nil for a stage without input.
	Input array.RecordReader
	// Dir is where the stage writes its artifact: any files it produces
	// (a model directory, metrics.jsonl, report.html). The host stores the
	// directory in the cache and copies it into the run directory.
	Dir string
	// RunDir is the stage's directory in the run directory, for logs that
	// are not part of the cached artifact.
	RunDir string
	// CacheDir is the cache root, for stages with their own row-level reuse.
	CacheDir string
	// NoCache asks row-level reuse to read nothing from the cache.
	NoCache bool
	// Resume asks a stage that checkpoints to continue from the last
	// checkpoint in RunDir.
	Resume bool
	// Stage names this stage in messages ("TYPE.NAME").
	Stage string
	// Log writes to the stage log, which the host collects.
	Log hclog.Logger

	sink sink
}

// sink receives what a running stage emits.
type sink interface {
	write(rec arrow.RecordBatch) error
	event(ev event) error
}

type event struct {
	Kind    string
	Done    int64
	Total   int64
	Unit    string
	Name    string
	Value   int64
	Message string
}

// Write appends rec to the stage's output table. Every batch must have the
// same schema. Large batches are split before they are sent.
func (r *Run) Write(rec arrow.RecordBatch) error {
	if r.sink == nil {
		return fmt.Errorf("sdk: Run has no output")
	}
	return r.sink.write(rec)
}

// Progress reports that done of total units are complete. total may be 0
// when unknown.
func (r *Run) Progress(done, total int64, unit string) {
	if r.sink != nil {
		_ = r.sink.event(event{Kind: "progress", Done: done, Total: total, Unit: unit})
	}
}

// SetStat records a counter for run.json, such as rows_reused,
// rows_computed or dropped/too_long.
func (r *Run) SetStat(name string, v int64) {
	if r.sink != nil {
		_ = r.sink.event(event{Kind: "stat", Name: name, Value: v})
	}
}

// SetMeta records a short string annotation for the stage's cache entry,
// such as "model_digest" (shown by dpopipe cache ls).
func (r *Run) SetMeta(name, value string) {
	if r.sink != nil {
		_ = r.sink.event(event{Kind: "meta", Name: name, Message: value})
	}
}

// Printf shows a line on the console under the stage's name (metrics lines,
// diagnostics summaries). It also goes to the stage log.
func (r *Run) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.Log != nil {
		r.Log.Info(msg)
	}
	if r.sink != nil {
		_ = r.sink.event(event{Kind: "print", Message: msg})
	}
}
