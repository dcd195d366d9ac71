package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
)

// printReport prints a run's report path and the summaries its stages
// wrote (summary.json), read back from the run directory.
func printReport(runDir string) error {
	b, err := os.ReadFile(filepath.Join(runDir, "run.json"))
	if err != nil {
		return fmt.Errorf("%s is not a run directory: %w", runDir, err)
	}
	var rec struct {
		Pipeline string `json:"pipeline"`
		Status   string `json:"status"`
		Stages   []struct {
			Type, Name string
			Status     string
			CacheHit   bool `json:"cache_hit"`
		} `json:"stages"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Errorf("%s/run.json: %w", runDir, err)
	}
	fmt.Printf("run: %s (%s)\npipeline: %s\n", runDir, rec.Status, rec.Pipeline)
	found := false
	for _, s := range rec.Stages {
		dir := filepath.Join(runDir, s.Name)
		if p := filepath.Join(dir, "report.html"); exists(p) {
			abs, _ := filepath.Abs(p)
			fmt.Printf("report: %s\n", abs)
			found = true
		}
		if txt, err := os.ReadFile(filepath.Join(dir, "summary.txt")); err == nil {
			fmt.Printf("\n[%s.%s]\n%s", s.Type, s.Name, txt)
			continue
		}
		if sb, err := os.ReadFile(filepath.Join(dir, "summary.json")); err == nil {
			var m map[string]any
			if json.Unmarshal(sb, &m) == nil {
				fmt.Printf("\n[%s.%s]\n", s.Type, s.Name)
				keys := make([]string, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
				for _, k := range keys {
					switch v := m[k].(type) {
					case float64:
						fmt.Fprintf(w, "  %s\t%.4f\n", k, v)
					case string, bool:
						fmt.Fprintf(w, "  %s\t%v\n", k, v)
					}
				}
				w.Flush()
			}
		}
	}
	if !found {
		fmt.Println("report: none (add a report or evaluate stage to the pipeline)")
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
