package graph

import (
	"fmt"
	"strconv"
	"strings"
)

// DOT renders the graph in Graphviz's language, nodes in file order and
// edges from a stage to the stages that refer to it.
func (g *Graph) DOT() string {
	var b strings.Builder
	b.WriteString("digraph pipeline {\n")
	b.WriteString("  rankdir=LR;\n")
	b.WriteString("  node [shape=box];\n")
	for _, id := range g.ids {
		fmt.Fprintf(&b, "  %s;\n", strconv.Quote(id))
	}
	for _, e := range g.Edges() {
		fmt.Fprintf(&b, "  %s -> %s;\n", strconv.Quote(e.From), strconv.Quote(e.To))
	}
	b.WriteString("}\n")
	return b.String()
}

// Mermaid renders the graph as a Mermaid flowchart. Node ids are s0, s1, …
// in file order, labelled "TYPE.NAME".
func (g *Graph) Mermaid() string {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for i, id := range g.ids {
		fmt.Fprintf(&b, "  s%d[\"%s\"]\n", i, mermaidEscape(id))
	}
	for _, e := range g.Edges() {
		fmt.Fprintf(&b, "  s%d --> s%d\n", g.index[e.From], g.index[e.To])
	}
	return b.String()
}

// mermaidEscape makes a label safe inside a quoted Mermaid label.
func mermaidEscape(s string) string {
	return strings.ReplaceAll(s, `"`, "#quot;")
}
