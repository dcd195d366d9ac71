package graph

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpopipe/dpopipe/pipeline/config"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files in testdata")

// render builds the graph of a case file and renders the diagnostics, or
// the order, levels, edges, DOT and Mermaid.
func render(t *testing.T, path string) string {
	f, diags := config.Parse(path, config.Options{})
	var out strings.Builder
	if diags.HasErrors() {
		out.WriteString("== diagnostics\n")
		config.WriteDiagnostics(&out, diags, f.Sources, false)
		return out.String()
	}
	g, gdiags := Build(f)
	if len(gdiags) > 0 {
		out.WriteString("== diagnostics\n")
		config.WriteDiagnostics(&out, gdiags, f.Sources, false)
	}
	fmt.Fprintf(&out, "== order\n%s\n", strings.Join(g.Order(), " "))
	out.WriteString("== levels\n")
	for i, l := range g.Levels() {
		fmt.Fprintf(&out, "%d: %s\n", i, strings.Join(l, " "))
	}
	out.WriteString("== edges\n")
	for _, id := range g.Nodes() {
		fmt.Fprintf(&out, "%s: deps [%s] dependents [%s]\n", id,
			strings.Join(g.Deps(id), " "), strings.Join(g.Dependents(id), " "))
	}
	fmt.Fprintf(&out, "== dot\n%s== mermaid\n%s", g.DOT(), g.Mermaid())
	return out.String()
}

func TestGolden(t *testing.T) {
	cases, err := filepath.Glob(filepath.Join("testdata", "*.hcl"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, path := range cases {
		name := strings.TrimSuffix(filepath.Base(path), ".hcl")
		t.Run(name, func(t *testing.T) {
			got := render(t, path)
			golden := strings.TrimSuffix(path, ".hcl") + ".golden"
			if *rewrite {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -rewrite creates it)", err)
			}
			if string(want) != got {
				t.Errorf("%s differs (go test -rewrite regenerates it)\n--- want\n%s\n--- got\n%s", golden, want, got)
			}
		})
	}
}

// TestOrderRespectsEdges checks Order and Levels against the edges on every
// acyclic case.
func TestOrderRespectsEdges(t *testing.T) {
	cases, _ := filepath.Glob(filepath.Join("testdata", "*.hcl"))
	for _, path := range cases {
		f, diags := config.Parse(path, config.Options{})
		if diags.HasErrors() {
			continue
		}
		g, gdiags := Build(f)
		if gdiags.HasErrors() {
			continue
		}
		pos := map[string]int{}
		for i, id := range g.Order() {
			pos[id] = i
		}
		lvl := map[string]int{}
		n := 0
		for i, l := range g.Levels() {
			for _, id := range l {
				lvl[id] = i
				n++
			}
		}
		if len(pos) != len(g.Nodes()) || n != len(g.Nodes()) {
			t.Errorf("%s: order or levels miss stages", path)
		}
		for _, e := range g.Edges() {
			if pos[e.From] >= pos[e.To] {
				t.Errorf("%s: %s ordered after its dependent %s", path, e.From, e.To)
			}
			if lvl[e.From] >= lvl[e.To] {
				t.Errorf("%s: %s on a level not before its dependent %s", path, e.From, e.To)
			}
		}
	}
}
