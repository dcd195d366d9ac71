package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/builtin"
)

// writeStagesMarkdown writes the reference of the built-in stages, generated
// from their specs: docs/stages.md is this output.
func writeStagesMarkdown(w io.Writer) {
	fmt.Fprintln(w, "# Built-in stages")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Generated from the stages' specs by `dpopipe stages --markdown`; do not edit by hand.")
	fmt.Fprintln(w, "Every stage also accepts `input = stage.TYPE.NAME`, `timeout = \"30m\"` and `cache { mode = \"content\" | \"off\" }`.")
	for _, typ := range builtin.Types() {
		st, _ := builtin.Lookup(typ)
		s := st.Spec()
		fmt.Fprintf(w, "\n## `%s` (version %s)\n\n%s\n", s.Type, s.Version, s.Description)
		if len(s.Input) > 0 {
			fmt.Fprintf(w, "\nInput columns: %s.\n", mdColumns(s.Input))
		}
		if len(s.Output) > 0 {
			fmt.Fprintf(w, "\nOutput columns: %s.\n", mdColumns(s.Output))
		}
		if len(s.Config) == 0 {
			continue
		}
		fmt.Fprintln(w, "\n| attribute | type | default | description |")
		fmt.Fprintln(w, "|---|---|---|---|")
		for _, a := range s.Config {
			def := ""
			switch {
			case a.Required:
				def = "required"
			case len(a.Default) > 0:
				def = "`" + string(a.Default) + "`"
			}
			typ := a.Type
			if a.Path {
				typ += " (path)"
			}
			desc := a.Description
			if len(a.Enum) > 0 {
				desc += " One of: " + strings.Join(quoteAll(a.Enum), ", ") + "."
			}
			fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", a.Name, mdEscape(typ), mdEscape(def), mdEscape(desc))
		}
	}
}

func mdColumns(cols []sdk.Column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		p := "`" + c.Name + "`"
		if c.Type != "" {
			p += " " + c.Type
		}
		if c.Optional {
			p += " (optional)"
		}
		parts[i] = p
	}
	return strings.Join(parts, ", ")
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = "`" + x + "`"
	}
	return out
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", " ")
}
