package runner

import (
	"context"
	"fmt"
	"os"

	"github.com/dpopipe/dpopipe/pipeline/cache"
	"github.com/dpopipe/dpopipe/pipeline/config"
	"github.com/dpopipe/dpopipe/plugins/host"
)

// Explanation is a stage's cache key, component by component.
type Explanation struct {
	Stage      string
	Key        string
	Components []cache.Component
	Hit        bool
	Reason     string // why it misses
}

// Explain computes the cache key of every stage up to and including the
// named one, as a run would, without running anything. A stage whose
// upstream is not cached cannot be keyed: its explanation says so.
func Explain(ctx context.Context, path string, copts config.Options, cacheDir, stageName string) (*Explanation, error) {
	plan, err := Load(ctx, path, copts, host.Options{})
	if err != nil {
		return nil, err
	}
	target := plan.File.StageByName(stageName)
	if target == nil {
		return nil, fmt.Errorf("no stage named %q in %s", stageName, path)
	}
	if cacheDir == "" {
		cacheDir = cache.DefaultDir()
	}
	if _, err := os.Stat(cacheDir); err != nil {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, err
		}
	}
	c, err := cache.Open(cacheDir)
	if err != nil {
		return nil, err
	}
	r := &Runner{plan: plan, cache: c, con: newConsole(nil, false)}
	results := map[string]*result{}
	for _, id := range plan.Graph.Order() {
		s := plan.File.StageByID(id)
		deps := map[string]*result{}
		missing := ""
		for _, d := range plan.Graph.Deps(id) {
			if results[d] == nil {
				missing = d
				break
			}
			deps[d] = results[d]
		}
		if missing != "" {
			if s == target {
				return &Explanation{Stage: id, Reason: fmt.Sprintf("its input %s is not in the cache, so its key depends on output not yet computed", missing)}, nil
			}
			continue
		}
		p, err := r.prepare(s, deps)
		if err != nil {
			return nil, err
		}
		e, ok, reason, err := c.Lookup(p.key)
		if err != nil {
			return nil, err
		}
		if s == target {
			ex := &Explanation{Stage: id, Key: p.key, Components: p.parts.Components(), Hit: ok, Reason: reason}
			return ex, nil
		}
		if ok {
			results[id] = entryResult(e)
		}
	}
	return nil, fmt.Errorf("stage %q not reached", stageName)
}
