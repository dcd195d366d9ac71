// Package reference is the "reference_logprobs" stage: it scores every
// tokenized preference pair under a frozen reference model and adds the
// summed and per-token log-probs of both completions to the table.
//
// # Output
//
// The output is pairs.Schema(true, meta): the tokenized columns (row,
// prompt_ids, chosen_ids, rejected_ids, weight, split; weight defaults to 1
// and split to "train" when the input lacks them) followed by
// ref_chosen_logp and ref_rejected_logp (float64, summed over the completion
// tokens), chosen_tokens and rejected_tokens (int32) and
// ref_chosen_token_logps and ref_rejected_token_logps (list<float32>). Rows
// keep the input order. The schema metadata records what the values depend
// on: dpopipe.model_digest (the content digest of the model, cache.HashTree
// of the resolved model path), dpopipe.stage_version and dpopipe.dtype.
//
// # Row-level reuse
//
// Scores of a pair depend only on the model and the pair's ids, so they are
// kept in the cache's row store, namespace "reference_logprobs/<model
// digest>", keyed by a sha256 over the model digest and the three id lists
// (see RowKey). A run takes every row it finds there and scores only the
// rest, then appends the newly scored rows as one segment before it writes
// its output: after data is appended to or edited, only the new or edited
// pairs are scored. Segments are written atomically, so a killed run leaves
// either a whole segment or none. With --no-cache the row store is neither
// read nor written.
//
// The stats rows_reused and rows_computed count the input rows served from
// the row store and the rest (identical pairs within one input are scored
// once). The same counts and the model digest are written to
// reference.json in the stage's artifact directory.
package reference

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/dpopipe/dpopipe/pipeline/cache"
	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/internal/jsonfile"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/modelref"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// Type is the stage type used in HCL.
const Type = "reference_logprobs"

// Version is the stage version (part of the cache key and of every row key).
const Version = "1"

// Schema metadata keys of the output.
const (
	MetaModelDigest  = "dpopipe.model_digest"
	MetaStageVersion = "dpopipe.stage_version"
	MetaDType        = "dpopipe.dtype"
)

// InfoFile is the file the stage writes to its artifact directory.
const InfoFile = "reference.json"

// Stat names.
const (
	StatRowsReused   = "rows_reused"
	StatRowsComputed = "rows_computed"
)

// outputBatchRows bounds the rows of each output batch.
const outputBatchRows = 4096

// New returns the reference_logprobs stage.
func New() sdk.Stage { return &Stage{} }

// Stage is the reference_logprobs stage.
type Stage struct{}

// Spec describes the stage.
func (*Stage) Spec() sdk.Spec {
	ids := "list<int32>"
	return sdk.Spec{
		Type:    Type,
		Version: Version,
		Description: "Scores each tokenized pair under a frozen reference model and adds the summed and per-token log-probs of both completions. " +
			"Scores are reused per row from the cache: after the data changes only new or edited pairs are scored.",
		Config: []sdk.Attr{
			{Name: "model", Type: "string", Required: true, Path: true,
				Description: "The reference model: a llama2.c checkpoint file, a Hugging Face directory (config.json + *.safetensors), or an upstream training stage (stage.dpo.train)."},
			{Name: "batch_size", Type: "number", Default: sdk.Def(16),
				Description: "Pairs per forward pass (each pair is two sequences)."},
			{Name: "dtype", Type: "string", Default: sdk.Def("float32"),
				Description: `Compute precision; only "float32" for now.`},
			{Name: "bucket", Type: "bool", Default: sdk.Def(true),
				Description: "Batch pairs of similar length together (the output keeps the input order)."},
		},
		Input: []sdk.Column{
			{Name: pairs.ColRow, Type: "int64"},
			{Name: pairs.ColPromptIDs, Type: ids},
			{Name: pairs.ColChosenIDs, Type: ids},
			{Name: pairs.ColRejectedIDs, Type: ids},
			{Name: pairs.ColWeight, Type: "float32", Optional: true},
			{Name: pairs.ColSplit, Type: "utf8", Optional: true},
		},
		Output: []sdk.Column{
			{Name: pairs.ColRow, Type: "int64"},
			{Name: pairs.ColPromptIDs, Type: ids},
			{Name: pairs.ColChosenIDs, Type: ids},
			{Name: pairs.ColRejectedIDs, Type: ids},
			{Name: pairs.ColWeight, Type: "float32"},
			{Name: pairs.ColSplit, Type: "utf8"},
			{Name: pairs.ColRefChosen, Type: "float64"},
			{Name: pairs.ColRefRejected, Type: "float64"},
			{Name: pairs.ColChosenTokens, Type: "int32"},
			{Name: pairs.ColRejectedTokens, Type: "int32"},
			{Name: pairs.ColRefChosenTokLps, Type: "list<float32>"},
			{Name: pairs.ColRefRejectedTokLp, Type: "list<float32>"},
		},
	}
}

type config struct {
	Model     string  `json:"model"`
	BatchSize float64 `json:"batch_size"`
	DType     string  `json:"dtype"`
	Bucket    bool    `json:"bucket"`

	batch int
}

func parseConfig(c sdk.Config) (*config, error) {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	var es sdk.Errors
	if strings.TrimSpace(cfg.Model) == "" {
		es = append(es, sdk.Errorf("model", "Missing model",
			"Set model to a llama2.c checkpoint, a Hugging Face model directory or an upstream training stage."))
	}
	b := cfg.BatchSize
	if b != math.Trunc(b) || b < 1 || b > 1<<20 {
		es = append(es, sdk.Errorf("batch_size", "Invalid batch size",
			"batch_size must be a whole number of pairs between 1 and 1048576, got %v.", b))
	} else {
		cfg.batch = int(b)
	}
	if cfg.DType != "float32" {
		es = append(es, sdk.Errorf("dtype", "Unsupported dtype",
			"dtype %q is not supported: reference log-probs are computed in float32 only for now; remove dtype or set it to \"float32\".", cfg.DType))
	}
	if err := es.Err(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Configure checks the configuration.
func (*Stage) Configure(c sdk.Config) error {
	_, err := parseConfig(c)
	return err
}

// Info is the content of reference.json.
type Info struct {
	ModelDigest  string `json:"model_digest"`
	StageVersion string `json:"stage_version"`
	DType        string `json:"dtype"`
	Namespace    string `json:"namespace"`
	RowsReused   int64  `json:"rows_reused"`
	RowsComputed int64  `json:"rows_computed"`
}

// Namespace returns the row-store namespace for a model digest.
func Namespace(modelDigest string) string { return Type + "/" + modelDigest }

// Run scores the input.
func (*Stage) Run(ctx context.Context, run *sdk.Run) error {
	cfg, err := parseConfig(run.Config)
	if err != nil {
		return err
	}
	if run.Input == nil {
		return errors.New("reference_logprobs needs an input: set input to a tokenize stage (or a load stage of pre-tokenized data)")
	}
	modelPath := modelref.Resolve(cfg.Model)
	if _, err := os.Stat(modelPath); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	digest, err := cache.HashTree(modelPath)
	if err != nil {
		return fmt.Errorf("model: hashing %s: %w", modelPath, err)
	}
	ps, err := pairs.ReadAll(run.Input)
	if err != nil {
		return fmt.Errorf("reading input: %w", err)
	}

	keys := make([]string, len(ps))
	for i := range ps {
		keys[i] = RowKey(digest, cfg.DType, &ps[i])
	}

	// Row-level reuse.
	var store *cache.RowStore
	if run.CacheDir != "" && !run.NoCache {
		c, err := cache.Open(run.CacheDir)
		if err != nil {
			return err
		}
		store = c.Rows(Namespace(digest))
		defer store.Close()
		if err := store.Load(); err != nil {
			run.Log.Warn("row store unreadable; scoring every row", "error", err)
			run.Printf("warning: %v; scoring every row", err)
		}
		for _, p := range store.Problems() {
			run.Printf("warning: %s", p)
		}
	}
	found := make([]bool, len(ps))
	var reused int64
	if store != nil {
		reader := newSegmentReader()
		for i := range ps {
			rec, row, ok := store.Lookup(keys[i])
			if !ok {
				continue
			}
			if reader.fill(rec, row, &ps[i]) {
				found[i] = true
				reused++
			}
		}
	}

	// Score the rest, each distinct key once.
	first := map[string]int{}
	var todo []int
	for i := range ps {
		if found[i] {
			continue
		}
		if _, dup := first[keys[i]]; dup {
			continue
		}
		first[keys[i]] = i
		todo = append(todo, i)
	}
	computed := int64(len(ps)) - reused
	if len(todo) > 0 {
		start := time.Now()
		m, err := model.Load(modelPath)
		if err != nil {
			return fmt.Errorf("model: loading %s: %w", modelPath, err)
		}
		if err := checkPairs(ps, todo, &m.Config); err != nil {
			return err
		}
		sc := &scorer{m: m, batch: cfg.batch, bucket: cfg.Bucket,
			progress: func(done, total int) { run.Progress(int64(done), int64(total), "pairs") }}
		if err := sc.score(ctx, ps, todo); err != nil {
			return err
		}
		for i := range ps {
			if !found[i] && first[keys[i]] != i {
				copyRef(&ps[i], &ps[first[keys[i]]])
			}
		}
		secs := time.Since(start).Seconds()
		run.Log.Info("scored pairs", "pairs", len(todo), "seconds", secs)
		if store != nil {
			rec := segmentRecord(ps, todo, keys)
			err := store.Append(rec)
			rec.Release()
			if err != nil {
				// The row store only saves work; the scores are still right.
				run.Log.Warn("could not store scored rows", "error", err)
				run.Printf("warning: could not store scored rows for reuse: %v", err)
			}
		}
	}
	run.SetMeta("model_digest", digest)
	run.SetStat(StatRowsReused, reused)
	run.SetStat(StatRowsComputed, computed)

	if run.Dir != "" {
		info := Info{ModelDigest: digest, StageVersion: Version, DType: cfg.DType, Namespace: Namespace(digest),
			RowsReused: reused, RowsComputed: computed}
		if err := os.MkdirAll(run.Dir, 0o755); err != nil {
			return err
		}
		if err := jsonfile.Write(filepath.Join(run.Dir, InfoFile), info); err != nil {
			return err
		}
	}

	meta := arrow.NewMetadata(
		[]string{MetaModelDigest, MetaStageVersion, MetaDType},
		[]string{digest, Version, cfg.DType})
	if len(ps) == 0 {
		rec := pairs.ToRecord(nil, true, &meta)
		defer rec.Release()
		return run.Write(rec)
	}
	for lo := 0; lo < len(ps); lo += outputBatchRows {
		hi := min(lo+outputBatchRows, len(ps))
		rec := pairs.ToRecord(ps[lo:hi], true, &meta)
		err := run.Write(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

func copyRef(dst, src *pairs.Pair) {
	dst.HasRef = true
	dst.RefChosen, dst.RefRejected = src.RefChosen, src.RefRejected
	dst.ChosenTokens, dst.RejectedTokens = src.ChosenTokens, src.RejectedTokens
	dst.RefChosenTokenLogps = src.RefChosenTokenLogps
	dst.RefRejectedTokenLogps = src.RefRejectedTokenLogps
}

// checkPairs reports the first pair to score that the model cannot take,
// naming its source row.
func checkPairs(ps []pairs.Pair, todo []int, c *model.Config) error {
	for _, i := range todo {
		p := &ps[i]
		for _, side := range []struct {
			name string
			ids  []int32
		}{{"prompt_ids", p.Prompt}, {"chosen_ids", p.Chosen}, {"rejected_ids", p.Rejected}} {
			for j, id := range side.ids {
				if id < 0 || int(id) >= c.VocabSize {
					return fmt.Errorf("row %d: %s[%d] is token id %d, outside the model's vocabulary of %d: tokenize with the model's tokenizer",
						p.Row, side.name, j, id, c.VocabSize)
				}
			}
		}
		for _, side := range []struct {
			name string
			n    int
		}{{"chosen", len(p.Prompt) + len(p.Chosen)}, {"rejected", len(p.Prompt) + len(p.Rejected)}} {
			if side.n > c.SeqLen {
				return fmt.Errorf("row %d: prompt + %s is %d tokens, more than the model's context of %d: lower max_length in the tokenize stage",
					p.Row, side.name, side.n, c.SeqLen)
			}
		}
	}
	return nil
}
