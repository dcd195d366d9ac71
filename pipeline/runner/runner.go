// Package runner executes a pipeline: it resolves stage types, checks every
// stage's configuration, then runs the stage graph with each stage in its
// own plugin process, reusing cached outputs by content.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/dpopipe/dpopipe/pipeline/arrowio"
	"github.com/dpopipe/dpopipe/pipeline/cache"
	"github.com/dpopipe/dpopipe/pipeline/config"
	"github.com/dpopipe/dpopipe/pipeline/graph"
	"github.com/dpopipe/dpopipe/plugins/host"
	"github.com/dpopipe/dpopipe/plugins/protocol"
	"github.com/dpopipe/dpopipe/plugins/sdk"
)

// Options configures a run.
type Options struct {
	File   string
	Config config.Options
	// RunDir is the run directory; empty means runs/NAME-TIMESTAMP.
	RunDir string
	// Resume continues the run in this directory.
	Resume string
	// NoCache neither reads nor writes the cache.
	NoCache  bool
	CacheDir string
	// Console receives progress and summaries; Err receives diagnostics.
	Console io.Writer
	// TTY draws progress bars instead of log lines.
	TTY bool
	// StartTimeout bounds a plugin's handshake.
	StartTimeout time.Duration
	// StageTimeout bounds each stage's run (0: none, unless the stage block
	// sets timeout).
	StageTimeout time.Duration
}

// DiagError carries HCL diagnostics and their sources for rendering.
type DiagError struct {
	Diags   hcl.Diagnostics
	Sources map[string][]byte
}

func (e *DiagError) Error() string { return e.Diags.Error() }

// Plan is a checked pipeline, ready to run.
type Plan struct {
	File    *config.File
	Graph   *graph.Graph
	Catalog *Catalog
	Types   map[string]*StageType // by stage id
}

// Load parses, resolves and checks a pipeline file without running it. All
// errors that can be found before any stage starts are returned as a
// *DiagError.
func Load(ctx context.Context, path string, copts config.Options, hopts host.Options) (*Plan, error) {
	f, diags := config.Parse(path, copts)
	if diags.HasErrors() {
		return nil, &DiagError{Diags: diags, Sources: sources(f)}
	}
	cat, err := NewCatalog(f)
	if err != nil {
		return nil, err
	}
	known := cat.Types()
	diags = append(diags, f.CheckTypes(cat.Has, known)...)
	g, gdiags := graph.Build(f)
	diags = append(diags, gdiags...)
	if diags.HasErrors() {
		return nil, &DiagError{Diags: diags, Sources: f.Sources}
	}
	p := &Plan{File: f, Graph: g, Catalog: cat, Types: map[string]*StageType{}}
	for _, s := range f.Stages {
		st, err := cat.Get(ctx, s.Type, hopts)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot start stage plugin",
				Detail: err.Error(), Subject: s.TypeRange.Ptr()})
			continue
		}
		p.Types[s.ID()] = st
		diags = append(diags, checkInput(f, s, st, p)...)
		// Decode with upstream outputs unknown: types, names, required
		// attributes and enums are all checked here.
		vals := map[string]cty.Value{}
		for _, r := range s.Refs {
			vals[r.ID()] = cty.UnknownVal(cty.String)
		}
		dec, ddiags := f.DecodeStage(s, st.Spec, f.EvalContext(vals))
		diags = append(diags, ddiags...)
		if ddiags.HasErrors() || !dec.Known {
			continue
		}
		// The stage checks the rest of its configuration: built-in stages
		// in-process, external ones through their plugin. Configurations
		// that depend on upstream outputs are checked when the stage starts.
		if st.Source.Builtin {
			diags = append(diags, configureBuiltin(f, s, st, dec)...)
		} else {
			diags = append(diags, configureExternal(ctx, f, s, st, dec, hopts)...)
		}
	}
	if diags.HasErrors() {
		return nil, &DiagError{Diags: diags, Sources: f.Sources}
	}
	return p, nil
}

func sources(f *config.File) map[string][]byte {
	if f == nil {
		return nil
	}
	return f.Sources
}

// checkInput checks that a stage with a required input has one, and the
// reverse.
func checkInput(f *config.File, s *config.Stage, st *StageType, p *Plan) hcl.Diagnostics {
	needs := len(st.Spec.Input) > 0
	switch {
	case needs && s.Input == nil && !st.Spec.InputOptional:
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Missing input",
			Detail:  fmt.Sprintf("Stage type %q reads a table with columns %s; set input = stage.TYPE.NAME.", s.Type, columnList(st.Spec.Input)),
			Subject: s.DeclRange.Ptr()}}
	case !needs && s.Input != nil && !st.Spec.InputOptional:
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Unexpected input",
			Detail:  fmt.Sprintf("Stage type %q takes no input table; remove the input attribute.", s.Type),
			Subject: s.Input.Range.Ptr()}}
	}
	return nil
}

func columnList(cols []sdk.Column) string {
	var names []string
	for _, c := range cols {
		if !c.Optional {
			names = append(names, c.Name)
		}
	}
	return strings.Join(names, ", ")
}

func configureBuiltin(f *config.File, s *config.Stage, st *StageType, dec config.Decoded) hcl.Diagnostics {
	impl, ok := lookupBuiltin(s.Type)
	if !ok {
		return nil
	}
	res := sdk.Configure(impl, dec.JSON)
	return attrDiags(f, s, res.Errors)
}

func configureExternal(ctx context.Context, f *config.File, s *config.Stage, st *StageType, dec config.Decoded, hopts host.Options) hcl.Diagnostics {
	cl, err := host.Start(ctx, st.Source, hopts)
	if err != nil {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot start stage plugin",
			Detail: err.Error(), Subject: s.TypeRange.Ptr()}}
	}
	defer cl.Kill()
	errs, err := cl.Configure(ctx, dec.JSON)
	if err != nil {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Stage plugin failed to check its configuration",
			Detail: err.Error(), Subject: s.TypeRange.Ptr()}}
	}
	return attrDiags(f, s, errs)
}

func attrDiags(f *config.File, s *config.Stage, errs []protocol.AttrError) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, e := range errs {
		rng := s.DeclRange
		if e.Attr != "" {
			rng = f.AttrRange(s, e.Attr)
		}
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: e.Summary,
			Detail: e.Detail, Subject: rng.Ptr()})
	}
	return diags
}

// result is what a finished stage hands to its dependents.
type result struct {
	key      string
	output   string // Arrow IPC file, "" if none
	artifact string // artifact directory, "" if none
	digest   string // digest of the output and artifact, for dependents' keys
	rows     int64
	err      error
}

// Runner runs one plan.
type Runner struct {
	plan   *Plan
	opts   Options
	cache  *cache.Cache
	runDir string
	record *RunRecord
	mu     sync.Mutex
	con    *console
}

// Run runs the pipeline in path and returns its record. The record is also
// written to RUN_DIR/run.json as the run goes.
func Run(ctx context.Context, opts Options) (*RunRecord, string, error) {
	hopts := host.Options{StartTimeout: opts.StartTimeout}
	path := opts.File
	runDir := opts.RunDir
	if opts.Resume != "" {
		runDir = opts.Resume
		prev, err := readRecord(filepath.Join(runDir, "run.json"))
		if err != nil {
			return nil, "", fmt.Errorf("cannot resume %s: %w", runDir, err)
		}
		if path == "" {
			path = prev.Pipeline
		}
		// The resumed run uses the variable values of the run it continues,
		// unless -var sets one again.
		opts.Config.Vars = append(resumeVars(prev.Vars, opts.Config.Vars), opts.Config.Vars...)
	}
	plan, err := Load(ctx, path, opts.Config, hopts)
	if err != nil {
		return nil, "", err
	}
	if runDir == "" {
		base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		runDir = filepath.Join("runs", base+"-"+time.Now().Format("20060102-150405"))
	}
	if abs, err := filepath.Abs(runDir); err == nil {
		runDir = abs
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, "", err
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		cacheDir = cache.DefaultDir()
	}
	var copts cache.Options
	if v := os.Getenv("DPOPIPE_CACHE_MAX_WRITE_BYTES"); v != "" {
		// Simulates a full disk, for fault-injection tests.
		fmt.Sscan(v, &copts.MaxWriteBytes)
	}
	c, err := cache.OpenWith(cacheDir, copts)
	if err != nil {
		return nil, runDir, fmt.Errorf("opening the cache at %s: %w", cacheDir, err)
	}
	abs, _ := filepath.Abs(path)
	r := &Runner{plan: plan, opts: opts, cache: c, runDir: runDir,
		record: &RunRecord{Pipeline: abs, Started: time.Now().UTC(), Status: "running", Vars: varValues(plan.File)},
		con:    newConsole(opts.Console, opts.TTY)}
	for _, w := range plan.Catalog.Warnings {
		r.con.printf("warning: %s\n", w)
	}
	for _, id := range plan.Graph.Order() {
		s := plan.File.StageByID(id)
		r.record.Stages = append(r.record.Stages, &StageRecord{Type: s.Type, Name: s.Name, Status: "pending", Outputs: []string{}})
	}
	r.save()
	err = r.execute(ctx)
	now := time.Now().UTC()
	r.mu.Lock()
	r.record.Finished = &now
	switch {
	case err == nil:
		r.record.Status = "ok"
	case errors.Is(err, context.Canceled):
		r.record.Status = "cancelled"
		r.record.Error = "interrupted"
	default:
		r.record.Status = "failed"
		r.record.Error = err.Error()
	}
	r.mu.Unlock()
	r.save()
	return r.record, runDir, err
}

// resumeVars turns the variable values recorded in run.json into -var
// arguments, leaving out the names that explicit holds.
func resumeVars(recorded map[string]any, explicit []string) []string {
	given := map[string]bool{}
	for _, kv := range explicit {
		if name, _, ok := strings.Cut(kv, "="); ok {
			given[strings.TrimSpace(name)] = true
		}
	}
	var names []string
	for name := range recorded {
		if !given[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []string
	for _, name := range names {
		v := recorded[name]
		if str, ok := v.(string); ok {
			out = append(out, name+"="+str)
			continue
		}
		b, err := json.Marshal(v)
		if err == nil {
			out = append(out, name+"="+string(b))
		}
	}
	return out
}

func varValues(f *config.File) map[string]any {
	out := map[string]any{}
	for name, v := range f.Variables {
		if v.Value.IsKnown() && !v.Value.IsNull() {
			if b, err := ctyJSON(v.Value); err == nil {
				var x any
				if json.Unmarshal(b, &x) == nil {
					out[name] = x
				}
			}
		}
	}
	return out
}

func (r *Runner) save() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.record.write(filepath.Join(r.runDir, "run.json")); err != nil {
		r.con.printf("warning: writing run.json: %v\n", err)
	}
}

func (r *Runner) stageRecord(s *config.Stage) *StageRecord {
	for _, sr := range r.record.Stages {
		if sr.Type == s.Type && sr.Name == s.Name {
			return sr
		}
	}
	return nil
}

// execute runs every stage once its dependencies are done; independent
// stages run in parallel. The first failure cancels the rest.
func (r *Runner) execute(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	order := r.plan.Graph.Order()
	done := map[string]chan struct{}{}
	results := map[string]*result{}
	for _, id := range order {
		done[id] = make(chan struct{})
	}
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	var resMu sync.Mutex
	for _, id := range order {
		id := id
		s := r.plan.File.StageByID(id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[id])
			deps := map[string]*result{}
			for _, d := range r.plan.Graph.Deps(id) {
				select {
				case <-done[d]:
				case <-ctx.Done():
				}
				resMu.Lock()
				res := results[d]
				resMu.Unlock()
				if res == nil || res.err != nil {
					r.finishStage(s, "skipped", nil)
					resMu.Lock()
					results[id] = &result{err: errors.New("skipped")}
					resMu.Unlock()
					return
				}
				deps[d] = res
			}
			if ctx.Err() != nil {
				r.finishStage(s, "cancelled", nil)
				resMu.Lock()
				results[id] = &result{err: context.Cause(ctx)}
				resMu.Unlock()
				return
			}
			res := r.runStage(ctx, s, deps)
			resMu.Lock()
			results[id] = res
			resMu.Unlock()
			if res.err != nil {
				errOnce.Do(func() {
					firstErr = res.err
					cancel(res.err)
				})
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func (r *Runner) finishStage(s *config.Stage, status string, err error) {
	r.mu.Lock()
	sr := r.stageRecord(s)
	sr.Status = status
	if err != nil {
		sr.Error = err.Error()
	}
	r.mu.Unlock()
	r.save()
}

// StageError is a failed stage.
type StageError struct {
	Stage string
	Err   error
}

func (e *StageError) Error() string { return fmt.Sprintf("stage %s: %v", e.Stage, e.Err) }
func (e *StageError) Unwrap() error { return e.Err }

func (r *Runner) runStage(ctx context.Context, s *config.Stage, deps map[string]*result) *result {
	start := time.Now()
	sr := r.stageRecord(s)
	r.mu.Lock()
	sr.Status = "running"
	r.mu.Unlock()
	r.save()
	res, err := r.doStage(ctx, s, deps, sr)
	r.mu.Lock()
	sr.DurationS = time.Since(start).Seconds()
	r.mu.Unlock()
	if err != nil {
		status := "failed"
		if errors.Is(err, context.Canceled) {
			status = "cancelled"
		}
		var de *DiagError
		if !errors.As(err, &de) {
			err = &StageError{Stage: s.ID(), Err: err}
		}
		r.finishStage(s, status, err)
		r.con.stageLine(s.ID(), "%s: %v", status, err)
		return &result{err: err}
	}
	r.finishStage(s, "ok", nil)
	return res
}

// prepared is a stage's evaluated configuration and cache key.
type prepared struct {
	st      *StageType
	dec     config.Decoded
	parts   cache.KeyParts
	key     string
	digest  string // plugin executable digest
	timeout time.Duration
}

// prepare evaluates the stage's configuration against its upstream results
// and computes its cache key.
func (r *Runner) prepare(s *config.Stage, deps map[string]*result) (*prepared, error) {
	st := r.plan.Types[s.ID()]
	f := r.plan.File
	vals := map[string]cty.Value{}
	for id, d := range deps {
		v := d.artifact
		if v == "" {
			v = d.output
		}
		vals[id] = cty.StringVal(v)
	}
	dec, diags := f.DecodeStage(s, st.Spec, f.EvalContext(vals))
	if diags.HasErrors() {
		return nil, &DiagError{Diags: diags, Sources: f.Sources}
	}
	digest, err := cache.HashFile(st.Source.Path)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", st.Source.Path, err)
	}
	files := map[string]string{}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(dec.JSON, &cfg); err != nil {
		return nil, err
	}
	for attr, p := range dec.Paths {
		if p == "" {
			continue
		}
		if isBuiltinName(p) {
			continue
		}
		d, err := cache.HashTree(p)
		if err != nil {
			rng := f.AttrRange(s, attr)
			return nil, &DiagError{Sources: f.Sources, Diags: hcl.Diagnostics{{Severity: hcl.DiagError,
				Summary: "Cannot read " + attr, Detail: fmt.Sprintf("%v. Check the path; relative paths resolve against the pipeline file's directory.", err),
				Subject: rng.Ptr()}}}
		}
		files[attr] = d
		delete(cfg, attr) // the content digest stands for the path
	}
	cfgJSON, _ := json.Marshal(cfg)
	canon, err := cache.Canonical(cfgJSON)
	if err != nil {
		return nil, err
	}
	var inputs []string
	seen := map[string]bool{}
	addInput := func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		inputs = append(inputs, id+"="+deps[id].digest)
	}
	if s.Input != nil {
		addInput(s.Input.ID())
	}
	var ids []string
	for id := range deps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		addInput(id)
	}
	parts := cache.KeyParts{FormatVersion: cache.FormatVersion, StageType: s.Type,
		PluginSHA256: digest, PluginVersion: st.Spec.Version, Config: canon, Inputs: inputs, Files: files}
	p := &prepared{st: st, dec: dec, parts: parts, key: parts.Key(), digest: digest, timeout: r.opts.StageTimeout}
	if s.Timeout > 0 {
		p.timeout = s.Timeout
	}
	return p, nil
}

// isBuiltinName reports whether a path attribute names a built-in resource
// instead of a file (the "bytes" tokenizer).
func isBuiltinName(p string) bool {
	base := filepath.Base(p)
	_, err := os.Stat(p)
	return err != nil && (base == "bytes" || base == "byte")
}

func (r *Runner) doStage(ctx context.Context, s *config.Stage, deps map[string]*result, sr *StageRecord) (*result, error) {
	p, err := r.prepare(s, deps)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	sr.CacheKey = p.key
	sr.Plugin = &PluginRecord{Path: p.st.Source.Path, SHA256: p.digest, Protocol: protocol.Version,
		Version: p.st.Spec.Version, Builtin: p.st.Source.Builtin}
	if s.Input != nil {
		sr.RowsIn = deps[s.Input.ID()].rows
	}
	r.mu.Unlock()
	stageDir := filepath.Join(r.runDir, s.Name)
	if err := os.MkdirAll(stageDir, 0o755); err != nil {
		return nil, err
	}
	useCache := !r.opts.NoCache && s.CacheMode != config.CacheOff
	r.mu.Lock()
	sr.CacheMode = config.CacheContent
	if !useCache {
		sr.CacheMode = config.CacheOff
	}
	r.mu.Unlock()
	if useCache {
		e, ok, reason, err := r.cache.Lookup(p.key)
		if err != nil {
			return nil, err
		}
		if ok {
			return r.fromCache(s, sr, e, stageDir)
		}
		if reason != "" && reason != "no entry" {
			r.con.stageLine(s.ID(), "cache miss: %s", reason)
		}
	}
	return r.execStage(ctx, s, deps, sr, p, stageDir, useCache)
}

func (r *Runner) fromCache(s *config.Stage, sr *StageRecord, e *cache.Entry, stageDir string) (*result, error) {
	res := entryResult(e)
	outputs, err := materialize(res, stageDir)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	sr.CacheHit = true
	sr.RowsOut = e.Rows
	sr.Outputs = outputs
	if v, ok := e.Meta["stats"]; ok {
		var stats map[string]int64
		if json.Unmarshal([]byte(v), &stats) == nil {
			sr.Stats = stats
		}
	}
	if sr.Stats != nil {
		if _, ok := sr.Stats["rows_computed"]; ok {
			z := int64(0)
			reused := e.Rows
			sr.RowsComputed = &z
			sr.RowsReused = &reused
		}
	}
	r.mu.Unlock()
	r.con.stageLine(s.ID(), "cache hit %s: %d rows", short(e.Key), e.Rows)
	return res, nil
}

// entryResult is what a cache entry hands to the stages that depend on it.
// Its digest covers the output table and the artifact.
func entryResult(e *cache.Entry) *result {
	res := &result{key: e.Key, rows: e.Rows}
	var digests []string
	if e.Output != nil {
		res.output = e.Output.Path
		digests = append(digests, e.Output.Digest)
	}
	if e.Artifact != nil {
		res.artifact = e.Artifact.Path
		digests = append(digests, e.Artifact.Digest)
	}
	res.digest = strings.Join(digests, "+")
	return res
}

// materialize copies a stage's output table (as output.arrow) and artifact
// files into its run directory, and returns the paths it wrote.
func materialize(res *result, stageDir string) ([]string, error) {
	var outputs []string
	if res.output != "" {
		dst := filepath.Join(stageDir, "output.arrow")
		if err := copyFile(res.output, dst); err != nil {
			return nil, err
		}
		outputs = append(outputs, dst)
	}
	if res.artifact != "" {
		names, err := copyTree(res.artifact, stageDir)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			outputs = append(outputs, filepath.Join(stageDir, n))
		}
	}
	return outputs, nil
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

func (r *Runner) execStage(ctx context.Context, s *config.Stage, deps map[string]*result, sr *StageRecord,
	p *prepared, stageDir string, useCache bool) (*result, error) {
	tmp, err := r.cache.TempDir("stage-" + s.Name + "-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	artifactDir := filepath.Join(tmp, "artifact")
	if err := os.MkdirAll(artifactDir, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(stageDir, "stage.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	logger := hclog.New(&hclog.LoggerOptions{Name: s.ID(), Output: logFile, Level: hclog.Debug})
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	cl, err := host.Start(ctx, p.st.Source, host.Options{StartTimeout: r.opts.StartTimeout, Logger: logger, Stderr: logFile})
	if err != nil {
		return nil, err
	}
	defer cl.Kill()
	r.mu.Lock()
	sr.Pid = cl.Pid()
	r.mu.Unlock()
	r.save()
	if !p.st.Source.Builtin {
		errs, err := cl.Configure(ctx, p.dec.JSON)
		if err != nil {
			return nil, err
		}
		if diags := attrDiags(r.plan.File, s, errs); diags.HasErrors() {
			return nil, &DiagError{Diags: diags, Sources: r.plan.File.Sources}
		}
	}
	var input array.RecordReader
	var inputRows int64
	if s.Input != nil {
		up := deps[s.Input.ID()]
		if up.output == "" {
			return nil, fmt.Errorf("input stage %s produced no table", s.Input.ID())
		}
		fr, err := arrowio.Open(up.output)
		if err != nil {
			return nil, fmt.Errorf("reading input %s: %w", up.output, err)
		}
		defer fr.Release()
		if err := checkSchema(p.st.Spec.Input, fr.Schema()); err != nil {
			return nil, fmt.Errorf("input from %s: %w", s.Input.ID(), err)
		}
		inputRows = up.rows
		input = fr
	}
	outPath := filepath.Join(tmp, "output.arrow")
	var ow *outputWriter
	req := protocol.RunRequest{Stage: s.ID(), Config: p.dec.JSON, Dir: artifactDir, RunDir: stageDir,
		CacheDir: r.cache.Root, NoCache: r.opts.NoCache, Resume: r.opts.Resume != ""}
	prog := r.con.progress(s.ID())
	defer prog.close()
	res, err := cl.Run(ctx, req, input, func(rec arrow.RecordBatch) error {
		if ow == nil {
			var err error
			if ow, err = newOutputWriter(outPath, rec.Schema(), keyMetadata(p)); err != nil {
				return err
			}
		}
		return ow.write(rec)
	}, func(ev protocol.Event) {
		switch ev.Kind {
		case protocol.EventProgress:
			prog.update(ev.Done, ev.Total, ev.Unit)
		case protocol.EventPrint:
			prog.println(ev.Message)
		}
	})
	prog.close()
	if err == nil && ow != nil {
		err = ow.close()
	} else if ow != nil {
		ow.abort()
	}
	if err != nil {
		// gRPC may report the deadline before the context's own timer has
		// marked it, so look at both.
		if p.timeout > 0 && (errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)) {
			return nil, fmt.Errorf("timed out after %s; raise the stage's timeout or check the plugin for a hang", p.timeout)
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return nil, context.Canceled
		}
		return nil, err
	}
	if input != nil {
		if got, ok := res.Stats[sdk.StatRowsReceived]; ok && got != inputRows {
			return nil, fmt.Errorf("the plugin received %d input rows but %d were sent", got, inputRows)
		}
	}
	var rows int64
	outFile := ""
	if ow != nil {
		rows = ow.rows
		outFile = outPath
	}
	artifact := artifactDir
	if empty, _ := isEmptyDir(artifactDir); empty {
		artifact = ""
	}
	stats := map[string]int64{}
	for k, v := range res.Stats {
		if k != sdk.StatRowsReceived {
			stats[k] = v
		}
	}
	statsJSON, _ := json.Marshal(stats)
	entry := cache.Entry{Key: p.key, StageType: s.Type, StageName: s.Name, Parts: p.parts, Rows: rows,
		Meta: map[string]string{"stats": string(statsJSON)}}
	for k, v := range res.Meta {
		if k != "stats" {
			entry.Meta[k] = v
		}
	}
	var out *result
	if useCache {
		e, err := r.cache.Commit(entry, outFile, artifact)
		if err != nil {
			return nil, err
		}
		out = entryResult(e)
	} else {
		// Not cached: the run directory holds the only copy.
		out = &result{key: p.key, rows: rows}
		var digests []string
		if outFile != "" {
			d, err := cache.HashFile(outFile)
			if err != nil {
				return nil, err
			}
			digests = append(digests, d)
		}
		if artifact != "" {
			d, err := cache.HashTree(artifact)
			if err != nil {
				return nil, err
			}
			digests = append(digests, d)
			keep := filepath.Join(stageDir, ".artifact")
			os.RemoveAll(keep)
			if err := os.Rename(artifact, keep); err != nil {
				return nil, err
			}
			out.artifact = keep
		}
		if outFile != "" {
			keep := filepath.Join(stageDir, ".output.arrow")
			if err := os.Rename(outFile, keep); err != nil {
				return nil, err
			}
			out.output = keep
		}
		out.digest = strings.Join(digests, "+")
	}
	outputs, err := materialize(out, stageDir)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	sr.RowsOut = rows
	sr.Outputs = outputs
	if len(stats) > 0 {
		sr.Stats = stats
	}
	if v, ok := stats["rows_reused"]; ok {
		sr.RowsReused = &v
	}
	if v, ok := stats["rows_computed"]; ok {
		sr.RowsComputed = &v
	}
	r.mu.Unlock()
	if outFile != "" {
		r.con.stageLine(s.ID(), "done: %d rows out", rows)
	} else {
		r.con.stageLine(s.ID(), "done")
	}
	return out, nil
}

func isEmptyDir(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	return len(entries) == 0, nil
}

// checkSchema checks that schema has the required columns.
func checkSchema(want []sdk.Column, schema *arrow.Schema) error {
	var problems []string
	for _, c := range want {
		idx := schema.FieldIndices(c.Name)
		if len(idx) == 0 {
			if !c.Optional {
				problems = append(problems, fmt.Sprintf("missing column %q", c.Name))
			}
			continue
		}
		if c.Type == "" {
			continue
		}
		got := schema.Field(idx[0]).Type
		if !typeMatches(c.Type, got) {
			problems = append(problems, fmt.Sprintf("column %q is %s, want %s", c.Name, got, c.Type))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("input table does not match the stage: %s", strings.Join(problems, "; "))
	}
	return nil
}

func typeMatches(want string, got arrow.DataType) bool {
	norm := func(s string) string {
		s = strings.ReplaceAll(s, "item: ", "")
		s = strings.ReplaceAll(s, ", nullable", "")
		return strings.ReplaceAll(s, " ", "")
	}
	return norm(want) == norm(got.String())
}

// keyMetadata is the cache key and its components, stored in the schema
// metadata of the stage's output file so that the file says where it came
// from.
func keyMetadata(p *prepared) map[string]string {
	md := map[string]string{"dpopipe.cache_key": p.key}
	for _, c := range p.parts.Components() {
		md["dpopipe.key."+c.Name] = c.Value
	}
	return md
}

// outputWriter writes a stage's output table to an Arrow IPC file.
type outputWriter struct {
	f      *os.File
	w      *ipc.FileWriter
	schema *arrow.Schema
	rows   int64
}

func newOutputWriter(path string, schema *arrow.Schema, extra map[string]string) (*outputWriter, error) {
	// Keep the stage's own metadata, but not the key of the stage it read
	// from (a pass-through stage copies its input's schema).
	md := schema.Metadata()
	var keys, vals []string
	for i, k := range md.Keys() {
		if k != "dpopipe.cache_key" && !strings.HasPrefix(k, "dpopipe.key.") {
			keys, vals = append(keys, k), append(vals, md.Values()[i])
		}
	}
	names := make([]string, 0, len(extra))
	for k := range extra {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if md.FindKey(k) < 0 {
			keys, vals = append(keys, k), append(vals, extra[k])
		}
	}
	meta := arrow.NewMetadata(keys, vals)
	schema = arrow.NewSchema(schema.Fields(), &meta)
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w, err := ipc.NewFileWriter(f, ipc.WithSchema(schema))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &outputWriter{f: f, w: w, schema: schema}, nil
}

func (o *outputWriter) write(rec arrow.RecordBatch) error {
	o.rows += rec.NumRows()
	out := array.NewRecordBatch(o.schema, rec.Columns(), rec.NumRows())
	defer out.Release()
	return o.w.Write(out)
}

func (o *outputWriter) close() error {
	if err := o.w.Close(); err != nil {
		o.f.Close()
		return err
	}
	if err := o.f.Sync(); err != nil {
		o.f.Close()
		return err
	}
	return o.f.Close()
}

func (o *outputWriter) abort() {
	o.w.Close()
	o.f.Close()
	os.Remove(o.f.Name())
}
