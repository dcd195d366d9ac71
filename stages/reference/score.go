package reference

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/dpopipe/dpopipe/stages/model"
	"github.com/dpopipe/dpopipe/stages/pairs"
)

// progressEvery bounds how often progress is reported.
const progressEvery = 250 * time.Millisecond

// scorer scores pairs in batches with one model runner. The runner spreads
// every batch over all cores itself (matrix products, attention heads and
// the LM head run on the model package's worker pool), so batches run one
// after another.
type scorer struct {
	m        *model.Model
	batch    int
	bucket   bool
	progress func(done, total int)
}

// order returns the pairs to score in batch order: sorted by total length
// when bucketing (neighbours have similar lengths, so every batch has a
// similar token count and the runner's arena stays the same size), in input
// order otherwise.
func (s *scorer) order(ps []pairs.Pair, todo []int) []int {
	out := append([]int(nil), todo...)
	if !s.bucket {
		return out
	}
	length := func(i int) int {
		p := &ps[i]
		return 2*len(p.Prompt) + len(p.Chosen) + len(p.Rejected)
	}
	sort.SliceStable(out, func(a, b int) bool { return length(out[a]) < length(out[b]) })
	return out
}

// score fills the reference fields of ps[i] for every i in todo.
func (s *scorer) score(ctx context.Context, ps []pairs.Pair, todo []int) error {
	idx := s.order(ps, todo)
	r := model.NewRunner(s.m)
	total := len(idx)
	last := time.Now()
	s.progress(0, total)
	for lo := 0; lo < total; lo += s.batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		hi := min(lo+s.batch, total)
		if err := s.scoreBatch(r, ps, idx[lo:hi]); err != nil {
			return err
		}
		if hi == total || time.Since(last) >= progressEvery {
			s.progress(hi, total)
			last = time.Now()
		}
	}
	return nil
}

// slot says where a scored sequence's results go.
type slot struct {
	pair   int
	chosen bool
}

func (s *scorer) scoreBatch(r *model.Runner, ps []pairs.Pair, idx []int) error {
	seqs := make([]model.Seq, 0, 2*len(idx))
	slots := make([]slot, 0, 2*len(idx))
	for _, i := range idx {
		p := &ps[i]
		p.HasRef = true
		p.RefChosen, p.RefRejected = 0, 0
		p.ChosenTokens, p.RejectedTokens = 0, 0
		p.RefChosenTokenLogps, p.RefRejectedTokenLogps = []float32{}, []float32{}
		for _, chosen := range []bool{true, false} {
			var ids []int32
			var start int
			if chosen {
				ids, start = p.ChosenSeq()
			} else {
				ids, start = p.RejectedSeq()
			}
			if completionTokens(len(ids), start) == 0 {
				continue // nothing to score: an empty completion
			}
			seqs = append(seqs, model.Seq{IDs: ids, Start: start})
			slots = append(slots, slot{pair: i, chosen: chosen})
		}
	}
	if len(seqs) == 0 {
		return nil
	}
	sc, err := r.Score(seqs)
	if err != nil {
		return fmt.Errorf("scoring rows %s: %w", rowList(ps, idx), err)
	}
	for k, sl := range slots {
		p := &ps[sl.pair]
		if sl.chosen {
			p.RefChosen, p.ChosenTokens, p.RefChosenTokenLogps = sc.Logp[k], int32(sc.Tokens[k]), sc.TokenLogps[k]
		} else {
			p.RefRejected, p.RejectedTokens, p.RefRejectedTokenLogps = sc.Logp[k], int32(sc.Tokens[k]), sc.TokenLogps[k]
		}
	}
	return nil
}

// rowList names the source rows of a batch for an error message.
func rowList(ps []pairs.Pair, idx []int) string {
	const most = 8
	s := ""
	for k, i := range idx {
		if k == most {
			return s + ", …"
		}
		if k > 0 {
			s += ", "
		}
		s += fmt.Sprint(ps[i].Row)
	}
	return s
}
