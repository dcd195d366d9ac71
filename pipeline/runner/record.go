package runner

import (
	"encoding/json"
	"time"

	"github.com/dpopipe/dpopipe/pipeline/cache/atomicfile"
)

// RunRecord is run.json: what ran, from where, and what it produced.
type RunRecord struct {
	Pipeline string         `json:"pipeline"`
	Started  time.Time      `json:"started"`
	Finished *time.Time     `json:"finished,omitempty"`
	Status   string         `json:"status"` // running, ok, failed, cancelled
	Error    string         `json:"error,omitempty"`
	Vars     map[string]any `json:"vars,omitempty"`
	Stages   []*StageRecord `json:"stages"`
}

// PluginRecord identifies the plugin executable that ran a stage.
type PluginRecord struct {
	Path     string `json:"path"`
	SHA256   string `json:"sha256"`
	Protocol int    `json:"protocol"`
	Version  string `json:"version"`
	Builtin  bool   `json:"builtin,omitempty"`
}

// StageRecord is one stage in run.json.
type StageRecord struct {
	Type         string           `json:"type"`
	Name         string           `json:"name"`
	Status       string           `json:"status"` // pending, running, ok, failed, skipped, cancelled
	Plugin       *PluginRecord    `json:"plugin,omitempty"`
	Pid          int              `json:"pid,omitempty"`
	CacheKey     string           `json:"cache_key,omitempty"`
	CacheHit     bool             `json:"cache_hit"`
	CacheMode    string           `json:"cache_mode,omitempty"` // "content", or "off" (cache block or --no-cache)
	RowsIn       int64            `json:"rows_in"`
	RowsOut      int64            `json:"rows_out"`
	RowsReused   *int64           `json:"rows_reused,omitempty"`
	RowsComputed *int64           `json:"rows_computed,omitempty"`
	Stats        map[string]int64 `json:"stats,omitempty"`
	DurationS    float64          `json:"duration_s"`
	Outputs      []string         `json:"outputs"`
	Error        string           `json:"error,omitempty"`
}

func (r *RunRecord) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFileAtomic(path, append(b, '\n'), 0o644)
}
