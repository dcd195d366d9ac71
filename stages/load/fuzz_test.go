package load

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpopipe/dpopipe/plugins/sdk"
)

// fuzzLoad loads a file whose second row is data and checks that the stage
// never panics and that any error names that row.
func fuzzLoad(t *testing.T, name, head, data, where string) {
	dir := t.TempDir()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(head+data), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, onError := range []string{"fail", "skip"} {
		res, err := sdk.RunLocal(context.Background(), New(), map[string]any{"path": p, "on_error": onError}, sdk.LocalOptions{Dir: dir})
		if err != nil {
			if !strings.Contains(err.Error(), where) && !strings.Contains(err.Error(), "row ") {
				t.Fatalf("on_error %s: error without a row number: %v", onError, err)
			}
			continue
		}
		if res.Stats["rows_in"] < res.Stats["rows_out"] {
			t.Fatalf("stats %v", res.Stats)
		}
		res.Release()
	}
}

func FuzzJSONLRow(f *testing.F) {
	for _, s := range []string{
		`{"prompt": "p", "chosen": "a", "rejected": "b"}`,
		`{"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "\n\nHuman: x\n\nAssistant: b"}`,
		`{"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}], "rejected": "b"}`,
		`{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3.5]}`,
		`{"prompt": "p", "chosen": "a", "rejected": "b", "weight": 1e400}`,
		"{\"prompt\": \"\xff\"}", `[1,2]`, `null`, `{`,
	} {
		f.Add([]byte(s))
	}
	const good = `{"prompt": "p", "chosen": "a", "rejected": "b"}` + "\n"
	f.Fuzz(func(t *testing.T, row []byte) {
		fuzzLoad(t, "f.jsonl", good, string(row), "line ")
	})
}

func FuzzCSVRow(f *testing.F) {
	for _, s := range []string{"p,a,b", `"p,q","a""b",c`, "p,a", `"unterminated,a,b`, "p,a,a", "\xff,a,b", "p,\"\"\"\n,b"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, row []byte) {
		fuzzLoad(t, "f.csv", "prompt,chosen,rejected\nx,y,z\n", string(row), fmt.Sprintf("row %d", 1))
	})
}
