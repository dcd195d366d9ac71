package evaluate

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/internal/jsonfile"
	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

// PairsSchema is the schema of pairs.arrow.
func PairsSchema() *arrow.Schema {
	f64, i32 := arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Int32
	return arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "policy_chosen_logp", Type: f64},
		{Name: "policy_rejected_logp", Type: f64},
		{Name: "ref_chosen_logp", Type: f64},
		{Name: "ref_rejected_logp", Type: f64},
		{Name: "chosen_tokens", Type: i32},
		{Name: "rejected_tokens", Type: i32},
		{Name: "reward_chosen", Type: f64},
		{Name: "reward_rejected", Type: f64},
		{Name: "correct", Type: arrow.FixedWidthTypes.Boolean},
	}, nil)
}

// WritePairs writes the per-pair results as an Arrow IPC file.
func WritePairs(path string, rs []PairResult) error {
	b := array.NewRecordBuilder(memory.DefaultAllocator, PairsSchema())
	defer b.Release()
	for _, r := range rs {
		b.Field(0).(*array.Int64Builder).Append(r.Row)
		for j, v := range []float64{r.PolicyChosen, r.PolicyRejected, r.RefChosen, r.RefRejected} {
			b.Field(1 + j).(*array.Float64Builder).Append(v)
		}
		b.Field(5).(*array.Int32Builder).Append(r.ChosenTokens)
		b.Field(6).(*array.Int32Builder).Append(r.RejectedTokens)
		b.Field(7).(*array.Float64Builder).Append(r.RewardChosen)
		b.Field(8).(*array.Float64Builder).Append(r.RewardRejected)
		b.Field(9).(*array.BooleanBuilder).Append(r.Correct)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w, err := ipc.NewFileWriter(f, ipc.WithSchema(rec.Schema()))
	if err != nil {
		f.Close()
		return err
	}
	if err := w.Write(rec); err != nil {
		w.Close()
		f.Close()
		return err
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadPairs reads pairs.arrow back.
func ReadPairs(path string) ([]PairResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := ipc.NewFileReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer r.Close()
	if !r.Schema().Equal(PairsSchema()) {
		return nil, fmt.Errorf("%s: unexpected schema %v", path, r.Schema())
	}
	var out []PairResult
	for i := 0; i < r.NumRecords(); i++ {
		rec, err := r.RecordBatchAt(i)
		if err != nil {
			return nil, err
		}
		f64 := func(c int) *array.Float64 { return rec.Column(c).(*array.Float64) }
		for k := 0; k < int(rec.NumRows()); k++ {
			out = append(out, PairResult{
				Row:          rec.Column(0).(*array.Int64).Value(k),
				PolicyChosen: f64(1).Value(k), PolicyRejected: f64(2).Value(k),
				RefChosen: f64(3).Value(k), RefRejected: f64(4).Value(k),
				ChosenTokens:   rec.Column(5).(*array.Int32).Value(k),
				RejectedTokens: rec.Column(6).(*array.Int32).Value(k),
				RewardChosen:   f64(7).Value(k), RewardRejected: f64(8).Value(k),
				Correct: rec.Column(9).(*array.Boolean).Value(k),
			})
		}
		rec.Release()
	}
	return out, nil
}

// generateSamples generates the completions of ref (if any) and policy for
// each pair's prompt, spread over the cores.
func generateSamples(ctx context.Context, run *sdk.Run, ps []pairs.Pair, policy, ref *model.Model, tok tokenizer.Tokenizer, o *options) ([]Sample, error) {
	for _, m := range []*model.Model{policy, ref} {
		if m != nil && m.Config.EOS < 0 {
			m.Config.EOS = tok.EOS()
		}
	}
	// A model may emit part of a multi-byte character: keep the text valid
	// UTF-8 (for Arrow utf8, JSON and HTML) by replacing broken bytes.
	text := func(ids []int32) string { return strings.ToValidUTF8(tok.Decode(ids), "\uFFFD") }
	out := make([]Sample, len(ps))
	errs := make([]error, len(ps))
	gen := func(m *model.Model, p *pairs.Pair) (string, error) {
		prompt := p.Prompt
		if len(prompt) == 0 {
			if bos := tok.BOS(); bos >= 0 {
				prompt = []int32{bos}
			} else {
				return "", fmt.Errorf("row %d has an empty prompt and the tokenizer has no BOS to start from", p.Row)
			}
		}
		maxNew := min(o.MaxNewTokens, m.Config.SeqLen-len(prompt))
		if maxNew <= 0 {
			return "", nil
		}
		ids, err := m.Generate(prompt, model.GenOptions{MaxTokens: maxNew, Temperature: o.Temperature, TopP: o.TopP,
			Seed: o.Seed + uint64(p.Row), StopAtEOS: true})
		if err != nil {
			return "", fmt.Errorf("row %d: %w", p.Row, err)
		}
		return text(ids), nil
	}
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), len(ps))
	done := int64(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(ps) || ctx.Err() != nil {
					return
				}
				p := &ps[i]
				s := Sample{Row: p.Row, Prompt: text(p.Prompt), Chosen: text(trimEOS(p.Chosen, tok.EOS()))}
				if ref != nil {
					c, err := gen(ref, p)
					if err != nil {
						errs[i] = err
						continue
					}
					s.ReferenceCompletion = &c
				}
				c, err := gen(policy, p)
				if err != nil {
					errs[i] = err
					continue
				}
				s.PolicyCompletion = c
				out[i] = s
				mu.Lock()
				done++
				run.Progress(done, int64(len(ps)), "samples")
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func trimEOS(ids []int32, eos int32) []int32 {
	if n := len(ids); n > 0 && eos >= 0 && ids[n-1] == eos {
		return ids[:n-1]
	}
	return ids
}

// SamplesSchema is the schema of the output table.
func SamplesSchema() *arrow.Schema {
	s := arrow.BinaryTypes.String
	return arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int64},
		{Name: "prompt", Type: s},
		{Name: "chosen", Type: s},
		{Name: "reference_completion", Type: s, Nullable: true},
		{Name: "policy_completion", Type: s},
	}, nil)
}

func samplesRecord(ss []Sample) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, SamplesSchema())
	defer b.Release()
	for _, s := range ss {
		b.Field(0).(*array.Int64Builder).Append(s.Row)
		b.Field(1).(*array.StringBuilder).Append(s.Prompt)
		b.Field(2).(*array.StringBuilder).Append(s.Chosen)
		if s.ReferenceCompletion != nil {
			b.Field(3).(*array.StringBuilder).Append(*s.ReferenceCompletion)
		} else {
			b.Field(3).(*array.StringBuilder).AppendNull()
		}
		b.Field(4).(*array.StringBuilder).Append(s.PolicyCompletion)
	}
	return b.NewRecordBatch()
}

func writeSamplesJSONL(path string, ss []Sample) error { return jsonfile.WriteLines(path, ss) }

// ReadSamples reads samples.jsonl back.
func ReadSamples(path string) ([]Sample, error) { return jsonfile.ReadLines[Sample](path) }
