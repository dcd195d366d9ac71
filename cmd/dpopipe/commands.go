package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dpopipe/dpopipe/pipeline/cache"
	"github.com/dpopipe/dpopipe/pipeline/config"
	"github.com/dpopipe/dpopipe/pipeline/runner"
	"github.com/dpopipe/dpopipe/plugins/host"
	"github.com/dpopipe/dpopipe/plugins/protocol"
	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/builtin"
)

type varFlags struct {
	vars     []string
	varFiles []string
}

func (v *varFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&v.vars, "var", nil, "set a variable: -var NAME=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&v.varFiles, "var-file", nil, "read variables from an HCL file (repeatable)")
}

func (v *varFlags) options() config.Options {
	return config.Options{Vars: v.vars, VarFiles: v.varFiles, Env: os.Environ()}
}

func newRunCmd() *cobra.Command {
	var vf varFlags
	var runDir, resume, cacheDir string
	var noCache bool
	var stageTimeout, startTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run a pipeline",
		Args:  cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && resume == "" {
				return fmt.Errorf("run needs a pipeline FILE, or --resume RUN_DIR")
			}
			file := ""
			if len(args) == 1 {
				file = args[0]
			}
			rec, dir, err := runner.Run(cmd.Context(), runner.Options{
				File: file, Config: vf.options(), RunDir: runDir, Resume: resume, NoCache: noCache,
				CacheDir: cacheDir, Console: os.Stderr, TTY: isTerminal(os.Stderr),
				StageTimeout: stageTimeout, StartTimeout: startTimeout,
			})
			if rec != nil {
				printRunSummary(rec, dir)
			}
			return err
		},
	}
	vf.add(cmd)
	cmd.Flags().StringVar(&runDir, "run-dir", "", "run directory (default runs/NAME-TIMESTAMP)")
	cmd.Flags().StringVar(&resume, "resume", "", "continue the run in this run directory")
	cmd.Flags().BoolVar(&noCache, "no-cache", false, "neither read nor write the cache")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "cache directory (default $DPOPIPE_CACHE_DIR or ~/.cache/dpopipe)")
	cmd.Flags().DurationVar(&stageTimeout, "stage-timeout", envDuration("DPOPIPE_STAGE_TIMEOUT"), "end a stage that runs longer than this (0: no limit; a stage's timeout attribute overrides)")
	cmd.Flags().DurationVar(&startTimeout, "plugin-start-timeout", envDuration("DPOPIPE_PLUGIN_START_TIMEOUT"), "end a plugin that does not complete its handshake in this time (default 30s)")
	return cmd
}

func envDuration(name string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(name))
	return d
}

func printRunSummary(rec *runner.RunRecord, dir string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "STAGE\tSTATUS\tCACHE\tROWS IN\tROWS OUT\tTIME")
	for _, s := range rec.Stages {
		hit := "miss"
		if s.CacheHit {
			hit = "hit"
		}
		if s.CacheMode == "off" {
			hit = "off"
		}
		if s.Status == "pending" || s.Status == "skipped" {
			hit = "-"
		}
		fmt.Fprintf(w, "%s.%s\t%s\t%s\t%d\t%d\t%.1fs\n", s.Type, s.Name, s.Status, hit, s.RowsIn, s.RowsOut, s.DurationS)
	}
	w.Flush()
	fmt.Printf("run directory: %s\n", dir)
	for _, s := range rec.Stages {
		for _, o := range s.Outputs {
			if filepath.Base(o) == "report.html" {
				fmt.Printf("report: %s\n", o)
			}
		}
		for _, o := range s.Outputs {
			if filepath.Base(o) == "summary.txt" {
				if b, err := os.ReadFile(o); err == nil {
					fmt.Print(string(b))
				}
			}
		}
	}
}

func newValidateCmd() *cobra.Command {
	var vf varFlags
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a pipeline file without running it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := runner.Load(cmd.Context(), args[0], vf.options(), host.Options{})
			if err != nil {
				return err
			}
			for _, w := range plan.Catalog.Warnings {
				fmt.Fprintln(os.Stderr, "warning:", w)
			}
			fmt.Printf("%s: %d stages, valid\n", args[0], len(plan.File.Stages))
			return nil
		},
	}
	vf.add(cmd)
	return cmd
}

func newGraphCmd() *cobra.Command {
	var vf varFlags
	var format string
	cmd := &cobra.Command{
		Use:   "graph FILE",
		Short: "Print the stage graph as DOT or Mermaid",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := runner.Load(cmd.Context(), args[0], vf.options(), host.Options{})
			if err != nil {
				return err
			}
			switch format {
			case "dot":
				fmt.Print(plan.Graph.DOT())
			case "mermaid":
				fmt.Print(plan.Graph.Mermaid())
			default:
				return fmt.Errorf("unknown format %q: use dot or mermaid", format)
			}
			return nil
		},
	}
	vf.add(cmd)
	cmd.Flags().StringVar(&format, "format", "dot", "dot or mermaid")
	return cmd
}

func newStagesCmd() *cobra.Command {
	var verbose, markdown bool
	cmd := &cobra.Command{
		Use:   "stages [TYPE]",
		Short: "List built-in and discovered stage types with their configuration",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if markdown {
				writeStagesMarkdown(os.Stdout)
				return nil
			}
			cat, err := runner.NewCatalog(nil)
			if err != nil {
				return err
			}
			for _, w := range cat.Warnings {
				fmt.Fprintln(os.Stderr, "warning:", w)
			}
			for _, typ := range cat.Types() {
				if len(args) == 1 && args[0] != typ {
					continue
				}
				st, err := cat.Get(cmd.Context(), typ, host.Options{})
				if err != nil {
					fmt.Printf("%s\t(error: %v)\n\n", typ, err)
					continue
				}
				printSpec(st, verbose || len(args) == 1)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show every attribute")
	cmd.Flags().BoolVar(&markdown, "markdown", false, "print the built-in stages' reference as Markdown (docs/stages.md)")
	return cmd
}

func printSpec(st *runner.StageType, full bool) {
	s := st.Spec
	pin := ""
	if !st.Pinned {
		pin = " [unpinned]"
	}
	fmt.Printf("%s %s (%s)%s\n  %s\n", s.Type, s.Version, st.Origin, pin, s.Description)
	if !full {
		fmt.Println()
		return
	}
	if len(s.Input) > 0 {
		fmt.Printf("  input columns: %s\n", columns(s.Input))
	}
	if len(s.Output) > 0 {
		fmt.Printf("  output columns: %s\n", columns(s.Output))
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, a := range s.Config {
		req := ""
		if a.Required {
			req = " (required)"
		}
		def := ""
		if len(a.Default) > 0 {
			def = " default " + string(a.Default)
		}
		fmt.Fprintf(w, "    %s\t%s%s%s\t%s\n", a.Name, a.Type, req, def, a.Description)
	}
	w.Flush()
	fmt.Println()
}

func columns(cols []sdk.Column) string {
	var parts []string
	for _, c := range cols {
		p := c.Name
		if c.Type != "" {
			p += " " + c.Type
		}
		if c.Optional {
			p += "?"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func newExplainCmd() *cobra.Command {
	var vf varFlags
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "explain FILE STAGE_NAME",
		Short: "Print each component of a stage's cache key and whether it hits",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ex, err := runner.Explain(cmd.Context(), args[0], vf.options(), cacheDir, args[1])
			if err != nil {
				return err
			}
			fmt.Printf("stage: %s\n", ex.Stage)
			if ex.Key == "" {
				fmt.Printf("key: unknown: %s\n", ex.Reason)
				return nil
			}
			fmt.Printf("key: %s\n", ex.Key)
			for _, c := range ex.Components {
				fmt.Printf("  %-16s %s\n", c.Name, c.Value)
			}
			if ex.Hit {
				fmt.Println("cache: hit")
			} else {
				fmt.Printf("cache: miss (%s)\n", ex.Reason)
			}
			return nil
		},
	}
	vf.add(cmd)
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "cache directory")
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Printf("dpopipe %s (stage protocol %d)\n", version, protocol.Version)
		},
	}
}

func newPluginCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "plugin", Hidden: true, Short: "Serve a built-in stage as a plugin process"}
	cmd.AddCommand(&cobra.Command{
		Use:  "serve TYPE",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, ok := builtin.Lookup(args[0])
			if !ok {
				return fmt.Errorf("no built-in stage type %q", args[0])
			}
			sdk.Serve(st)
			return nil
		},
	})
	return cmd
}

func newCacheCmd() *cobra.Command {
	var cacheDir string
	open := func() (*cache.Cache, error) {
		dir := cacheDir
		if dir == "" {
			dir = cache.DefaultDir()
		}
		return cache.Open(dir)
	}
	cmd := &cobra.Command{Use: "cache", Short: "Inspect and prune the stage cache"}
	cmd.PersistentFlags().StringVar(&cacheDir, "cache-dir", "", "cache directory")
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List cache entries",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := open()
			if err != nil {
				return err
			}
			entries, err := c.List()
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				for _, e := range entries {
					enc.Encode(e)
				}
				return nil
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "KEY\tSTAGE\tMODEL\tROWS\tSIZE\tCREATED\tLAST USED")
			for _, e := range entries {
				model := e.Meta["model_digest"]
				if len(model) > 12 {
					model = model[:12]
				}
				if model == "" {
					model = "-"
				}
				var size int64
				if e.Output != nil {
					size += e.Output.Size
				}
				if e.Artifact != nil {
					size += e.Artifact.Size
				}
				fmt.Fprintf(w, "%s\t%s.%s\t%s\t%d\t%s\t%s\t%s\n", e.Key[:12], e.StageType, e.StageName, model, e.Rows,
					humanSize(size), e.Created.Local().Format("2006-01-02 15:04"), e.LastUsed.Local().Format("2006-01-02 15:04"))
			}
			return w.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "one JSON object per entry")
	rm := &cobra.Command{
		Use:   "rm KEY",
		Short: "Remove an entry (a unique key prefix is enough)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := open()
			if err != nil {
				return err
			}
			return c.Remove(args[0])
		},
	}
	var olderThan, maxSize string
	gc := &cobra.Command{
		Use:   "gc",
		Short: "Prune entries by age and total size",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := open()
			if err != nil {
				return err
			}
			var age time.Duration
			var size int64
			if olderThan != "" {
				if age, err = cache.ParseAge(olderThan); err != nil {
					return err
				}
			}
			if maxSize != "" {
				if size, err = cache.ParseSize(maxSize); err != nil {
					return err
				}
			}
			removed, err := c.GC(age, size)
			if err != nil {
				return err
			}
			fmt.Printf("removed %d entries\n", len(removed))
			return nil
		},
	}
	gc.Flags().StringVar(&olderThan, "older-than", "", "remove entries unused for longer than this (30d, 12h)")
	gc.Flags().StringVar(&maxSize, "max-size", "", "then remove the least recently used until the cache fits (10GB)")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check every entry and object against its digest",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := open()
			if err != nil {
				return err
			}
			problems, err := c.Verify()
			if err != nil {
				return err
			}
			for _, p := range problems {
				fmt.Println(p)
			}
			if len(problems) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d problems", len(problems))}
			}
			fmt.Println("cache ok")
			return nil
		},
	}
	cmd.AddCommand(ls, rm, gc, verify)
	return cmd
}

func humanSize(n int64) string {
	units := []string{"B", "KB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

var _ = context.Background
var _ = sort.Strings
