package pairs

import (
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := []Pair{
		{Row: 3, Prompt: []int32{1, 5}, Chosen: []int32{7, 2}, Rejected: []int32{8, 9, 2}, Weight: 0.5, Split: SplitTrain,
			HasRef: true, RefChosen: -1.5, RefRejected: -3.25, ChosenTokens: 2, RejectedTokens: 3,
			RefChosenTokenLogps: []float32{-1, -0.5}, RefRejectedTokenLogps: []float32{-1, -1, -1.25}},
		{Row: 4, Prompt: []int32{}, Chosen: []int32{4}, Rejected: []int32{6}, Weight: 1, Split: SplitEval,
			HasRef: true, RefChosenTokenLogps: []float32{}, RefRejectedTokenLogps: []float32{}},
	}
	for _, withRef := range []bool{true, false} {
		rec := ToRecord(in, withRef, nil)
		out, err := FromRecord(rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
		want := in
		if !withRef {
			want = nil
			for _, p := range in {
				want = append(want, Pair{Row: p.Row, Prompt: p.Prompt, Chosen: p.Chosen, Rejected: p.Rejected, Weight: p.Weight, Split: p.Split})
			}
		}
		for i := range want {
			if len(want[i].Prompt) == 0 {
				want[i].Prompt = nil
			}
			if withRef && len(want[i].RefChosenTokenLogps) == 0 {
				want[i].RefChosenTokenLogps, want[i].RefRejectedTokenLogps = nil, nil
			}
		}
		if !reflect.DeepEqual(out, want) {
			t.Fatalf("withRef=%v:\n got %+v\nwant %+v", withRef, out, want)
		}
	}
}

func TestSeqStart(t *testing.T) {
	p := Pair{Prompt: []int32{1, 5}, Chosen: []int32{7, 2}, Rejected: []int32{9}}
	ids, start := p.ChosenSeq()
	if !reflect.DeepEqual(ids, []int32{1, 5, 7, 2}) || start != 2 {
		t.Fatalf("chosen seq %v start %d", ids, start)
	}
	p.Prompt = nil
	if _, start := p.RejectedSeq(); start != 1 {
		t.Fatalf("empty prompt: start %d, want 1", start)
	}
}
