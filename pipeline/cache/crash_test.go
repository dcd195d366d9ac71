package cache

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

const crashChildEnv = "DPOPIPE_CACHE_CRASH_CHILD"

// TestCrashChild is the child side of TestCrashSafety: it works on the cache
// named by the environment until it is killed.
func TestCrashChild(t *testing.T) {
	root := os.Getenv(crashChildEnv)
	if root == "" {
		t.Skip("only runs as the child of TestCrashSafety")
	}
	c, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	rows := c.Rows("reference_logprobs/sha256:crash")
	announced := false
	for i := 0; ; i++ {
		name := fmt.Sprint("stage", rng.Intn(8))
		out, _ := c.TempDir("out-")
		payload := make([]byte, 1+rng.Intn(64<<10))
		rng.Read(payload[:min(len(payload), 64)]) // mostly shared tail: some dedup
		os.WriteFile(filepath.Join(out, "o.arrow"), payload, 0o644)
		art, _ := c.TempDir("art-")
		os.MkdirAll(filepath.Join(art, "model"), 0o755)
		os.WriteFile(filepath.Join(art, "model", "w.bin"), payload[:len(payload)/2], 0o644)
		os.WriteFile(filepath.Join(art, "metrics.jsonl"), []byte(fmt.Sprintf("{\"i\":%d}\n", i%3)), 0o644)
		if _, err := c.Commit(Entry{StageName: name, Parts: partsFor(name)}, filepath.Join(out, "o.arrow"), art); err != nil {
			t.Fatal(err)
		}
		if !announced {
			fmt.Println("committing")
			announced = true
		}
		switch i % 6 {
		case 1:
			c.Lookup(partsFor(fmt.Sprint("stage", rng.Intn(8))).Key())
		case 3:
			c.Remove(partsFor(fmt.Sprint("stage", rng.Intn(8))).Key())
		case 4:
			if _, err := c.GC(0, 150<<10); err != nil {
				t.Fatal(err)
			}
		case 5:
			rec := rowRecord([]string{fmt.Sprint("k", i), fmt.Sprint("k", i+1)}, []float64{float64(i), 1})
			if err := rows.Append(rec); err != nil {
				t.Fatal(err)
			}
			rec.Release()
		}
	}
}

// TestCrashSafety kills a committing child process at random moments; after
// each kill the cache must verify and every visible entry must look up.
func TestCrashSafety(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("child")
	}
	root := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	hits := 0
	for round := 0; round < 20; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+root)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "committing") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child did not start committing: %q %v", line, err)
		}
		time.Sleep(time.Duration(rng.Intn(40000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()

		c, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		if problems, err := c.Verify(); err != nil || len(problems) > 0 {
			t.Fatalf("round %d: Verify: %q %v", round, problems, err)
		}
		list, err := c.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			if _, ok, reason, err := c.Lookup(e.Key); !ok || err != nil {
				t.Fatalf("round %d: visible entry %s misses: %q %v", round, e.Key, reason, err)
			}
			hits++
		}
		rs := c.Rows("reference_logprobs/sha256:crash")
		if err := rs.Load(); err != nil || len(rs.Problems()) > 0 {
			t.Fatalf("round %d: rows: %v %q", round, err, rs.Problems())
		}
		rs.Close()
	}
	if hits == 0 {
		t.Fatal("no entry survived any round: the test exercised nothing")
	}
	t.Logf("%d entries looked up across rounds", hits)
}

func rowRecord(keys []string, vals []float64) arrow.RecordBatch {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: RowKeyColumn, Type: arrow.BinaryTypes.String},
		{Name: "ref_chosen_logp", Type: arrow.PrimitiveTypes.Float64},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).AppendValues(keys, nil)
	b.Field(1).(*array.Float64Builder).AppendValues(vals, nil)
	return b.NewRecordBatch()
}
