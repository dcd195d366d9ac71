// Command dpopipe-stage-http_judge is an example judge plugin: it asks a
// scoring service over HTTP (a reward model behind an endpoint, say) to score
// the reference's and the policy's completions of each evaluation sample,
// and reports the policy's win rate. It reads the sample table the built-in
// evaluate stage writes, so it can stand in for the built-in judge:
//
//	plugin "http_judge" { source = "./bin/dpopipe-stage-http_judge" }
//
//	stage "http_judge" "rm" {
//	  input = stage.evaluate.eval
//	  url   = "http://127.0.0.1:8000/score"
//	}
//
// The service receives {"prompt": "...", "completion": "..."} as a JSON POST
// and answers {"score": 0.73}.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

func main() { sdk.Serve(&HTTPJudge{}) }

// HTTPJudge is the stage.
type HTTPJudge struct{}

var (
	_ sdk.Stage      = (*HTTPJudge)(nil)
	_ sdk.Configurer = (*HTTPJudge)(nil)
)

type config struct {
	URL      string  `json:"url"`
	TimeoutS float64 `json:"timeout_s"`
}

// Spec describes the stage.
func (*HTTPJudge) Spec() sdk.Spec {
	return sdk.Spec{
		Type:        "http_judge",
		Version:     "1.0.0",
		Description: "Scores the reference's and the policy's completions with an HTTP scoring service and reports the policy's win rate.",
		Config: []sdk.Attr{
			{Name: "url", Type: "string", Required: true, Description: "the scoring endpoint: POST {prompt, completion}, answer {score}"},
			{Name: "timeout_s", Type: "number", Default: sdk.Def(30), Description: "timeout of one request, in seconds"},
		},
		Input: []sdk.Column{
			{Name: "row", Type: "int64"},
			{Name: "prompt", Type: "utf8"},
			{Name: "reference_completion", Type: "utf8"},
			{Name: "policy_completion", Type: "utf8"},
		},
		Output: []sdk.Column{{Name: "row"}, {Name: "reference_score"}, {Name: "policy_score"}, {Name: "winner"}},
	}
}

// Configure checks the URL.
func (*HTTPJudge) Configure(c sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if len(cfg.URL) < 8 || (cfg.URL[:7] != "http://" && cfg.URL[:8] != "https://") {
		return sdk.Errorf("url", "Not an HTTP URL", "url is %q; give the scoring endpoint as http://HOST:PORT/PATH.", cfg.URL)
	}
	return nil
}

// Run scores every sample.
func (*HTTPJudge) Run(ctx context.Context, run *sdk.Run) error {
	var cfg config
	if err := run.Config.Decode(&cfg); err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Duration(cfg.TimeoutS * float64(time.Second))}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "reference_score", Type: arrow.PrimitiveTypes.Float64},
		{Name: "policy_score", Type: arrow.PrimitiveTypes.Float64},
		{Name: "winner", Type: arrow.BinaryTypes.String},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	var wins, ties, losses int
	for run.Input.Next() {
		rec := run.Input.RecordBatch()
		rows := column[*array.Int64](rec, "row")
		prompts := column[*array.String](rec, "prompt")
		refs := column[*array.String](rec, "reference_completion")
		pols := column[*array.String](rec, "policy_completion")
		if rows == nil || prompts == nil || refs == nil || pols == nil {
			return fmt.Errorf("input lacks row, prompt, reference_completion or policy_completion (utf8)")
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			rs, err := score(ctx, client, cfg.URL, prompts.Value(i), refs.Value(i))
			if err != nil {
				return fmt.Errorf("row %d: %w", rows.Value(i), err)
			}
			ps, err := score(ctx, client, cfg.URL, prompts.Value(i), pols.Value(i))
			if err != nil {
				return fmt.Errorf("row %d: %w", rows.Value(i), err)
			}
			winner := "tie"
			switch {
			case ps > rs:
				winner, wins = "policy", wins+1
			case ps < rs:
				winner, losses = "reference", losses+1
			default:
				ties++
			}
			b.Field(0).(*array.Int64Builder).Append(rows.Value(i))
			b.Field(1).(*array.Float64Builder).Append(rs)
			b.Field(2).(*array.Float64Builder).Append(ps)
			b.Field(3).(*array.StringBuilder).Append(winner)
		}
	}
	if err := run.Input.Err(); err != nil {
		return err
	}
	out := b.NewRecordBatch()
	defer out.Release()
	if err := run.Write(out); err != nil {
		return err
	}
	n := wins + ties + losses
	rate := 0.0
	if n > 0 {
		rate = (float64(wins) + 0.5*float64(ties)) / float64(n)
	}
	summary, _ := json.MarshalIndent(map[string]any{"rule": "http", "url": cfg.URL, "samples": n,
		"wins": wins, "ties": ties, "losses": losses, "win_rate": rate}, "", "  ")
	if err := os.WriteFile(filepath.Join(run.Dir, "summary.json"), append(summary, '\n'), 0o644); err != nil {
		return err
	}
	run.Printf("http judge: policy win rate %.3f over %d samples (%d wins, %d ties, %d losses)", rate, n, wins, ties, losses)
	return nil
}

func score(ctx context.Context, client *http.Client, url, prompt, completion string) (float64, error) {
	body, _ := json.Marshal(map[string]string{"prompt": prompt, "completion": completion})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scoring service: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scoring service answered %s", resp.Status)
	}
	var out struct {
		Score *float64 `json:"score"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Score == nil {
		return 0, fmt.Errorf("scoring service: the answer is not {\"score\": number}")
	}
	return *out.Score, nil
}

func column[T arrow.Array](rec arrow.RecordBatch, name string) T {
	var zero T
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return zero
	}
	c, ok := rec.Column(idx[0]).(T)
	if !ok {
		return zero
	}
	return c
}
