// Command dpopipe runs DPO pipelines declared in HCL. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dpopipe/dpopipe/pipeline/config"
	"github.com/dpopipe/dpopipe/pipeline/runner"
	"github.com/dpopipe/dpopipe/plugins/host"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	os.Args = normalizeArgs(os.Args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	host.CleanupAll()
	if err != nil {
		code := 1
		var ee *exitError
		var de *runner.DiagError
		switch {
		case errors.As(err, &de):
			config.WriteDiagnostics(os.Stderr, de.Diags, de.Sources, isTerminal(os.Stderr))
		case errors.As(err, &ee):
			code = ee.code
			if ee.err != nil && ee.err.Error() != "" {
				fmt.Fprintln(os.Stderr, "Error:", ee.err)
			}
		case errors.Is(err, context.Canceled):
			fmt.Fprintln(os.Stderr, "Interrupted: plugins stopped, nothing partial was cached.")
			code = 130
		default:
			fmt.Fprintln(os.Stderr, "Error:", err)
		}
		os.Exit(code)
	}
}

// normalizeArgs accepts Terraform-style single-dash long flags (-var,
// -var-file) by rewriting them to the double-dash form cobra parses.
func normalizeArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		for _, name := range []string{"var", "var-file"} {
			if a == "-"+name || strings.HasPrefix(a, "-"+name+"=") {
				a = "-" + a
			}
		}
		out[i] = a
	}
	return out
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
