// Package report is the report stage. It reads the artifacts of upstream
// stages named by path attributes (the dpo stage's metrics.jsonl, the
// optional sft stage's, the evaluate stage's summary.json, pairs.arrow and
// samples.jsonl, the optional judge's summary.json and verdicts.jsonl) and
// writes:
//
//   - report.html: a self-contained page (no scripts, no external
//     resources) with PNG plots inlined as data: URIs, the held-out
//     evaluation table, the generation samples and the judge's results;
//   - summary.json and summary.txt: the headline numbers, which dpopipe
//     prints at the end of a run.
package report

import (
	"context"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dpopipe/dpopipe/plugins/sdk"
	"github.com/dpopipe/dpopipe/stages/internal/jsonfile"
)

// Version is the stage version (part of the cache key).
const Version = "1"

// File names in the artifact directory.
const (
	HTMLFile    = "report.html"
	SummaryFile = "summary.json"
	TextFile    = "summary.txt"
)

// Stage is the report stage.
type Stage struct{}

// New returns the stage.
func New() sdk.Stage { return &Stage{} }

type options struct {
	Train      string `json:"train"`
	SFT        string `json:"sft"`
	Eval       string `json:"eval"`
	Judge      string `json:"judge"`
	Title      string `json:"title"`
	MaxSamples int    `json:"max_samples"`
}

// Spec describes the stage.
func (*Stage) Spec() sdk.Spec {
	return sdk.Spec{
		Type:    "report",
		Version: Version,
		Description: "Writes report.html (self-contained, with inline PNG plots of the loss, reward-margin and accuracy curves, the held-out evaluation, " +
			"the generation samples and the judge's results), summary.json and summary.txt from the artifacts of upstream stages.",
		Config: []sdk.Attr{
			{Name: "train", Type: "string", Path: true, Description: "The dpo stage's artifact (stage.dpo.NAME): its metrics.jsonl gives the curves."},
			{Name: "sft", Type: "string", Path: true, Description: "An sft stage's artifact (stage.sft.NAME), for its loss curve."},
			{Name: "eval", Type: "string", Path: true, Description: "The evaluate stage's artifact (stage.evaluate.NAME)."},
			{Name: "judge", Type: "string", Path: true, Description: "A judge stage's artifact (stage.judge.NAME)."},
			{Name: "title", Type: "string", Default: sdk.Def("dpopipe report"), Description: "The report's title."},
			{Name: "max_samples", Type: "number", Default: sdk.Def(100), Description: "Generation samples shown in the report's table."},
		},
	}
}

func parse(c sdk.Config) (*options, error) {
	var o options
	if err := c.Decode(&o); err != nil {
		return nil, &sdk.AttrError{Summary: "Invalid configuration", Detail: err.Error()}
	}
	if o.Train == "" && o.Eval == "" {
		return nil, sdk.Errorf("train", "Nothing to report", "set train = stage.dpo.NAME and/or eval = stage.evaluate.NAME")
	}
	if o.MaxSamples < 0 {
		return nil, sdk.Errorf("max_samples", "Invalid max_samples", "%d: use a non-negative number", o.MaxSamples)
	}
	return &o, nil
}

// Configure checks the configuration.
func (*Stage) Configure(c sdk.Config) error {
	_, err := parse(c)
	return err
}

// Run writes the report.
func (*Stage) Run(ctx context.Context, run *sdk.Run) error {
	o, err := parse(run.Config)
	if err != nil {
		return err
	}
	if run.Dir == "" {
		return fmt.Errorf("report needs an artifact directory")
	}
	in, err := load(o)
	if err != nil {
		return err
	}
	s := summarize(o.Title, in)
	figs, err := figures(in, s)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(run.Dir, 0o755); err != nil {
		return err
	}
	page, err := renderHTML(o, in, s, figs)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(run.Dir, HTMLFile), page, 0o644); err != nil {
		return err
	}
	if err := jsonfile.Write(filepath.Join(run.Dir, SummaryFile), s); err != nil {
		return err
	}
	txt := s.Text()
	if err := os.WriteFile(filepath.Join(run.Dir, TextFile), []byte(txt), 0o644); err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimRight(txt, "\n"), "\n") {
		run.Printf("%s", l)
	}
	return nil
}

type kv struct {
	Key, Value string
}

type sampleRow struct {
	Row                  int64
	Prompt, Expected     string
	Reference, Policy    string
	HasReference         bool
	RefOK, PolicyOK      bool
	Winner               string
	RefScore, PolicyScor string
}

type page struct {
	Title        string
	SummaryText  string
	Headline     []kv
	Figures      []figure
	EvalTable    []kv
	Samples      []sampleRow
	SamplesShown int
	SamplesTotal int
	HasReference bool
	Judge        []kv
	HasJudge     bool
	Train        []kv
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Sprint(v)
	case v == math.Trunc(v) && math.Abs(v) < 1e9:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.4f", v)
	}
}

func pct(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100**p)
}

func renderHTML(o *options, in *inputs, s Summary, figs []figure) ([]byte, error) {
	pg := page{Title: o.Title, SummaryText: s.Text(), Figures: figs}
	if s.PreferenceAccuracy != nil {
		pg.Headline = append(pg.Headline, kv{"Held-out preference accuracy", pct(s.PreferenceAccuracy)})
	}
	if s.ExactAfter != nil {
		if s.ExactBefore != nil {
			pg.Headline = append(pg.Headline, kv{"Exact answers before DPO", pct(s.ExactBefore)})
		}
		pg.Headline = append(pg.Headline, kv{"Exact answers after DPO", pct(s.ExactAfter)})
	}
	if s.WinRate != nil {
		pg.Headline = append(pg.Headline, kv{"Judge win rate", pct(s.WinRate)})
	}
	keys := make([]string, 0, len(in.evalSummary))
	for k := range in.evalSummary {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		pg.EvalTable = append(pg.EvalTable, kv{k, fmtNum(in.evalSummary[k])})
	}
	if s.LikelihoodAccuracyBefore != nil {
		pg.EvalTable = append(pg.EvalTable,
			kv{"chosen more likely than rejected, reference", fmtNum(*s.LikelihoodAccuracyBefore)},
			kv{"chosen more likely than rejected, policy", fmtNum(*s.LikelihoodAccuracyAfter)})
	}
	verdict := map[int64]int{}
	for i, v := range in.verdicts {
		verdict[v.Row] = i
	}
	pg.SamplesTotal = len(in.samples)
	for i, x := range in.samples {
		if i >= o.MaxSamples {
			break
		}
		r := sampleRow{Row: x.Row, Prompt: x.Prompt, Expected: x.Chosen, Policy: x.PolicyCompletion,
			PolicyOK: exactMatch(x.PolicyCompletion, x.Chosen)}
		if x.ReferenceCompletion != nil {
			r.HasReference, pg.HasReference = true, true
			r.Reference = *x.ReferenceCompletion
			r.RefOK = exactMatch(r.Reference, x.Chosen)
		}
		if k, ok := verdict[x.Row]; ok {
			r.Winner = in.verdicts[k].Winner
		}
		pg.Samples = append(pg.Samples, r)
	}
	pg.SamplesShown = len(pg.Samples)
	if j := in.judgeSummary; j != nil {
		pg.HasJudge = true
		pg.Judge = append(pg.Judge, kv{"rule", j.Rule}, kv{"samples", fmt.Sprint(j.Samples)})
		if j.WinRate != nil {
			pg.Judge = append(pg.Judge, kv{"policy win rate (ties count half)", fmtNum(*j.WinRate)},
				kv{"wins / ties / losses", fmt.Sprintf("%d / %d / %d", j.Wins, j.Ties, j.Losses)})
		}
		if j.ReferenceAccuracy != nil {
			pg.Judge = append(pg.Judge, kv{"reference accuracy", fmtNum(*j.ReferenceAccuracy)})
		}
		if j.PolicyAccuracy != nil {
			pg.Judge = append(pg.Judge, kv{"policy accuracy", fmtNum(*j.PolicyAccuracy)})
		}
		pg.Judge = append(pg.Judge, kv{"policy mean score", fmtNum(j.PolicyMeanScore)})
		if j.ReferenceMeanScore != nil {
			pg.Judge = append(pg.Judge, kv{"reference mean score", fmtNum(*j.ReferenceMeanScore)})
		}
	}
	if ts := in.trainSummary; ts != nil {
		for _, k := range []string{"global_step", "epoch", "train_loss", "train_pairs", "train_runtime", "train_tokens_per_second"} {
			if v, ok := ts[k].(float64); ok {
				pg.Train = append(pg.Train, kv{k, fmtNum(v)})
			}
		}
	}
	var b strings.Builder
	if err := pageTmpl.Execute(&b, pg); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

var pageTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	// The data: URIs are made here from PNG bytes, never from input.
	"img": func(s string) template.URL { return template.URL(s) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 12em; }
.card .v { font-size: 1.8em; font-weight: 600; }
.card .k { color: #555; font-size: 0.9em; }
pre.summary { background: #f6f8fa; padding: 1em; border-radius: 6px; overflow-x: auto; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; flex: 1 1 480px; }
figure img { width: 100%; max-width: 600px; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td code { white-space: pre-wrap; word-break: break-all; }
.ok { background: #e6f4ea; }
.bad { background: #fdecea; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
{{if .Headline}}<div class="cards">{{range .Headline}}<div class="card"><div class="v">{{.Value}}</div><div class="k">{{.Key}}</div></div>{{end}}</div>{{end}}
<pre class="summary">{{.SummaryText}}</pre>
{{if .Figures}}<h2>Curves</h2>
<div class="figs">{{range .Figures}}<figure><img src="{{img .DataURI}}" alt="{{.Title}}"><figcaption>{{.Title}}: {{.Caption}}</figcaption></figure>{{end}}</div>{{end}}
{{if .EvalTable}}<h2>Held-out evaluation</h2>
<table id="eval-table"><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>
{{range .EvalTable}}<tr><td>{{.Key}}</td><td class="num">{{.Value}}</td></tr>
{{end}}</tbody></table>{{end}}
{{if .HasJudge}}<h2>Judge</h2>
<table id="judge-table"><thead><tr><th>result</th><th>value</th></tr></thead><tbody>
{{range .Judge}}<tr><td>{{.Key}}</td><td class="num">{{.Value}}</td></tr>
{{end}}</tbody></table>{{end}}
{{if .Samples}}<h2>Generation samples</h2>
<p>{{.SamplesShown}} of {{.SamplesTotal}} held-out prompts. Green: the completion equals the expected answer.</p>
<table id="samples-table"><thead><tr><th>row</th><th>prompt</th><th>expected</th>{{if .HasReference}}<th>reference (before DPO)</th>{{end}}<th>policy (after DPO)</th>{{if .HasJudge}}<th>winner</th>{{end}}</tr></thead><tbody>
{{range .Samples}}<tr><td class="num">{{.Row}}</td><td><code>{{.Prompt}}</code></td><td><code>{{.Expected}}</code></td>{{if $.HasReference}}<td class="{{if .RefOK}}ok{{else}}bad{{end}}"><code>{{.Reference}}</code></td>{{end}}<td class="{{if .PolicyOK}}ok{{else}}bad{{end}}"><code>{{.Policy}}</code></td>{{if $.HasJudge}}<td>{{.Winner}}</td>{{end}}</tr>
{{end}}</tbody></table>{{end}}
{{if .Train}}<h2>Training</h2>
<table id="train-table"><thead><tr><th>train_summary.json</th><th>value</th></tr></thead><tbody>
{{range .Train}}<tr><td>{{.Key}}</td><td class="num">{{.Value}}</td></tr>
{{end}}</tbody></table>{{end}}
</body>
</html>
`))
