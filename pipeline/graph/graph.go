// Package graph builds the DAG of a pipeline's stages from their references.
package graph

import (
	"fmt"
	"sort"
	"strings"

	"github.com/dpopipe/dpopipe/pipeline/config"
	"github.com/hashicorp/hcl/v2"
)

// Graph is the DAG of a pipeline's stages. Nodes are keyed "TYPE.NAME"; an
// edge runs from a stage to each stage that refers to it (data flow).
type Graph struct {
	ids    []string                 // file order
	index  map[string]int           // id → position in ids
	stages map[string]*config.Stage // id → stage
	deps   map[string][]string      // id → stages it refers to, in file order
	users  map[string][]string      // id → stages referring to it, in file order
	refs   map[[2]string]config.Ref // (from, to) → first reference
}

// Build makes the graph of f's stages. References to undeclared stages
// (reported by config.Parse) are left out. Each cycle is reported once, at
// the reference that closes it; the graph is returned even then.
func Build(f *config.File) (*Graph, hcl.Diagnostics) {
	g := &Graph{
		index:  map[string]int{},
		stages: map[string]*config.Stage{},
		deps:   map[string][]string{},
		users:  map[string][]string{},
		refs:   map[[2]string]config.Ref{},
	}
	for _, s := range f.Stages {
		id := s.ID()
		if _, dup := g.index[id]; dup {
			continue // reported by config.Parse
		}
		g.index[id] = len(g.ids)
		g.ids = append(g.ids, id)
		g.stages[id] = s
	}
	for _, id := range g.ids {
		for _, r := range g.stages[id].Refs {
			to := r.ID()
			if _, ok := g.index[to]; !ok {
				continue
			}
			key := [2]string{id, to}
			if _, seen := g.refs[key]; seen {
				continue
			}
			g.refs[key] = r
			g.deps[id] = append(g.deps[id], to)
			g.users[to] = append(g.users[to], id)
		}
	}
	for id := range g.deps {
		g.sortIDs(g.deps[id])
	}
	for id := range g.users {
		g.sortIDs(g.users[id])
	}
	return g, g.findCycles()
}

func (g *Graph) sortIDs(ids []string) {
	sort.SliceStable(ids, func(i, j int) bool { return g.index[ids[i]] < g.index[ids[j]] })
}

// findCycles walks the references depth first, in file order, and reports
// each reference that leads back to a stage on the walk's stack.
func (g *Graph) findCycles() hcl.Diagnostics {
	var diags hcl.Diagnostics
	const (
		unvisited = iota
		onStack
		done
	)
	state := make(map[string]int, len(g.ids))
	var stack []string
	var visit func(id string)
	visit = func(id string) {
		state[id] = onStack
		stack = append(stack, id)
		for _, dep := range g.refOrder(id) {
			switch state[dep] {
			case unvisited:
				visit(dep)
			case onStack:
				start := len(stack) - 1
				for stack[start] != dep {
					start--
				}
				names := make([]string, 0, len(stack)-start+1)
				for _, n := range stack[start:] {
					names = append(names, "stage."+n)
				}
				names = append(names, "stage."+dep)
				r := g.refs[[2]string{id, dep}]
				rng := r.Range
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Cycle in stage references",
					Detail: fmt.Sprintf("The stages refer to each other in a cycle: %s. A pipeline must be acyclic: each stage runs after the stages it refers to.",
						strings.Join(names, " → ")),
					Subject: &rng,
				})
			}
		}
		stack = stack[:len(stack)-1]
		state[id] = done
	}
	for _, id := range g.ids {
		if state[id] == unvisited {
			visit(id)
		}
	}
	return diags
}

// refOrder lists the stages id refers to in the order of the references in
// its body, so that cycles are reported along the source.
func (g *Graph) refOrder(id string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range g.stages[id].Refs {
		to := r.ID()
		if _, ok := g.index[to]; ok && !seen[to] {
			seen[to] = true
			out = append(out, to)
		}
	}
	return out
}

// Nodes returns the stage ids in file order.
func (g *Graph) Nodes() []string { return append([]string(nil), g.ids...) }

// Stage returns the stage with id "TYPE.NAME", or nil.
func (g *Graph) Stage(id string) *config.Stage { return g.stages[id] }

// Deps returns the stages id refers to directly, in file order.
func (g *Graph) Deps(id string) []string { return append([]string(nil), g.deps[id]...) }

// Dependents returns the stages that refer to id directly, in file order.
func (g *Graph) Dependents(id string) []string { return append([]string(nil), g.users[id]...) }

// Edge is a dependency: To refers to From.
type Edge struct{ From, To string }

// Edges returns every edge, ordered by From then To in file order.
func (g *Graph) Edges() []Edge {
	var es []Edge
	for _, from := range g.ids {
		for _, to := range g.users[from] {
			es = append(es, Edge{From: from, To: to})
		}
	}
	return es
}

// Order returns the stages in a topological order: each stage after the
// stages it refers to, and among the stages ready at once, file order
// first. Stages on a cycle, which have no such order, come last in file
// order.
func (g *Graph) Order() []string {
	pending := make(map[string]int, len(g.ids))
	for _, id := range g.ids {
		pending[id] = len(g.deps[id])
	}
	placed := make(map[string]bool, len(g.ids))
	order := make([]string, 0, len(g.ids))
	for len(order) < len(g.ids) {
		next := ""
		for _, id := range g.ids { // the first ready stage in file order
			if !placed[id] && pending[id] == 0 {
				next = id
				break
			}
		}
		if next == "" {
			for _, id := range g.ids {
				if !placed[id] {
					order = append(order, id)
				}
			}
			break
		}
		placed[next] = true
		order = append(order, next)
		for _, u := range g.users[next] {
			pending[u]--
		}
	}
	return order
}

// Levels groups the stages by depth: level 0 holds the stages that refer to
// no other, level n those whose deepest reference is at level n-1. Stages on
// one level may run in parallel. Each level is in file order. Stages on a
// cycle are left out.
func (g *Graph) Levels() [][]string {
	level := map[string]int{}
	var levels [][]string
	for _, id := range g.Order() {
		l, ok := 0, true
		for _, d := range g.deps[id] {
			dl, known := level[d]
			if !known {
				ok = false
				break
			}
			l = max(l, dl+1)
		}
		if !ok {
			continue
		}
		level[id] = l
		for len(levels) <= l {
			levels = append(levels, nil)
		}
		levels[l] = append(levels[l], id)
	}
	for _, lv := range levels {
		g.sortIDs(lv)
	}
	return levels
}
