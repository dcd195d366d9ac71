package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dpopipe/dpopipe/pipeline/config"
	"github.com/dpopipe/dpopipe/plugins/host"
	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/builtin"
)

// StageType is a stage type the runner can start: built in, declared with a
// plugin block, or discovered on the plugin path.
type StageType struct {
	Source host.Source
	Spec   sdk.Spec
	// Origin says where it comes from: "builtin", "plugin block" or the
	// discovery directory.
	Origin string
	// Pinned is false for a discovered plugin without a sha256 pin.
	Pinned bool
}

// PluginPrefix is the file name prefix of discoverable stage plugins.
const PluginPrefix = "dpopipe-stage-"

// Catalog maps stage types to how they start.
type Catalog struct {
	types    map[string]*StageType
	Warnings []string
}

// SelfPath returns the dpopipe executable that serves built-in stages. Tests
// that run the runner in-process set DPOPIPE_SELF to a built dpopipe binary.
func SelfPath() (string, error) {
	if p := os.Getenv("DPOPIPE_SELF"); p != "" {
		return p, nil
	}
	return os.Executable()
}

// PluginDirs returns the directories searched for dpopipe-stage-* binaries:
// $DPOPIPE_PLUGIN_PATH (colon separated) then ~/.dpopipe/plugins.
func PluginDirs() []string {
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("DPOPIPE_PLUGIN_PATH")) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".dpopipe", "plugins"))
	}
	return dirs
}

// NewCatalog builds the catalog for a pipeline file (f may be nil). Specs of
// external plugins are fetched by starting them (Describe) only when needed.
func NewCatalog(f *config.File) (*Catalog, error) {
	c := &Catalog{types: map[string]*StageType{}}
	self, err := SelfPath()
	if err != nil {
		return nil, err
	}
	for _, typ := range builtin.Types() {
		st, _ := builtin.Lookup(typ)
		c.types[typ] = &StageType{
			Source: host.Source{Type: typ, Path: self, Args: []string{"plugin", "serve", typ}, Builtin: true},
			Spec:   st.Spec(), Origin: "builtin", Pinned: true,
		}
	}
	for _, dir := range PluginDirs() {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if !strings.HasPrefix(name, PluginPrefix) || e.IsDir() {
				continue
			}
			typ := strings.TrimPrefix(name, PluginPrefix)
			if _, ok := c.types[typ]; ok {
				continue
			}
			c.types[typ] = &StageType{
				Source: host.Source{Type: typ, Path: filepath.Join(dir, name)},
				Origin: dir,
			}
		}
	}
	if f != nil {
		for _, p := range f.Plugins {
			c.types[p.Name] = &StageType{
				Source: host.Source{Type: p.Name, Path: p.Source, SHA256: p.SHA256},
				Origin: "plugin block", Pinned: p.SHA256 != "",
			}
		}
	}
	for _, st := range c.types {
		if st.Origin != "builtin" && !st.Pinned {
			c.Warnings = append(c.Warnings, fmt.Sprintf("plugin %q (%s) has no sha256 pin: its content is not checked; pin it with a plugin block", st.Source.Type, st.Source.Path))
		}
	}
	sort.Strings(c.Warnings)
	return c, nil
}

// Has reports whether typ is known.
func (c *Catalog) Has(typ string) bool { _, ok := c.types[typ]; return ok }

// Types lists every known type, sorted.
func (c *Catalog) Types() []string {
	out := make([]string, 0, len(c.types))
	for t := range c.types {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Get returns typ with its spec, starting an external plugin once to ask
// for it.
func (c *Catalog) Get(ctx context.Context, typ string, opts host.Options) (*StageType, error) {
	st, ok := c.types[typ]
	if !ok {
		return nil, fmt.Errorf("unknown stage type %q", typ)
	}
	if st.Spec.Type != "" {
		return st, nil
	}
	cl, err := host.Start(ctx, st.Source, opts)
	if err != nil {
		return nil, err
	}
	defer cl.Kill()
	spec, err := cl.Describe(ctx)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: describe: %w", st.Source.Path, err)
	}
	if spec.Type != typ {
		return nil, fmt.Errorf("plugin %s serves stage type %q, but it is used as %q; rename the binary or the plugin block", st.Source.Path, spec.Type, typ)
	}
	st.Spec = spec
	return st, nil
}
