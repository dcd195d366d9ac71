package config

import (
	"fmt"
	"io"
	"sort"

	"github.com/hashicorp/hcl/v2"
)

// DiagnosticWidth is the width diagnostics are wrapped to.
const DiagnosticWidth = 100

// WriteDiagnostics renders diags with source snippets, as hcl's text
// writer does, wrapped to DiagnosticWidth columns.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, sources map[string][]byte, color bool) {
	files := make(map[string]*hcl.File, len(sources))
	names := make([]string, 0, len(sources))
	for name := range sources {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		src := sources[name]
		file := &hcl.File{Bytes: src}
		// Parsing again gives the writer the navigation that names the
		// enclosing block ("in stage "dpo" "train"").
		if parsed, _ := parseBytes(src, name); parsed != nil {
			file.Body, file.Nav = parsed.Body, parsed.Nav
		}
		files[name] = file
	}
	tw := hcl.NewDiagnosticTextWriter(w, files, DiagnosticWidth, color)
	// hcl reports unsupported arguments in map order: sort by position so
	// that the output is stable.
	sorted := append(hcl.Diagnostics(nil), diags...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Subject, sorted[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil && b == nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		}
		return a.Start.Column < b.Start.Column
	})
	for _, d := range sorted {
		// A compiler-style position line first, so that editors and
		// terminals can jump to it; then hcl's snippet.
		if d.Subject != nil {
			sev := "error"
			if d.Severity == hcl.DiagWarning {
				sev = "warning"
			}
			fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, sev, d.Summary)
		}
		_ = tw.WriteDiagnostic(d)
	}
}
