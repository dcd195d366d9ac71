package report

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// figure is one inline plot.
type figure struct {
	Title   string
	Caption string
	DataURI string // data:image/png;base64,...
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

type line struct {
	name   string
	xs, ys []float64
	dashed bool
}

func newPlot(title, xl, yl string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xl
	p.Y.Label.Text = yl
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

func render(p *plot.Plot) (string, error) {
	wt, err := p.WriterTo(6*vg.Inch, 3.4*vg.Inch, "png")
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return "", err
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

func linePlot(title, xl, yl string, lines []line) (string, error) {
	p := newPlot(title, xl, yl)
	for i, l := range lines {
		if len(l.xs) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(l.xs))
		for k := range l.xs {
			xys[k].X, xys[k].Y = l.xs[k], l.ys[k]
		}
		pl, err := plotter.NewLine(xys)
		if err != nil {
			return "", err
		}
		pl.Color = palette[i%len(palette)]
		pl.Width = vg.Points(1.5)
		if l.dashed {
			pl.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(pl)
		if len(l.xs) == 1 {
			sc, err := plotter.NewScatter(xys)
			if err != nil {
				return "", err
			}
			sc.Color = pl.Color
			sc.Shape = draw.CircleGlyph{}
			p.Add(sc)
		}
		if l.name != "" {
			p.Legend.Add(l.name, pl)
		}
	}
	return render(p)
}

func barPlot(title, yl string, names []string, vals []float64) (string, error) {
	p := newPlot(title, "", yl)
	p.Legend.Top = false
	bars, err := plotter.NewBarChart(plotter.Values(vals), vg.Points(60))
	if err != nil {
		return "", err
	}
	bars.Color = palette[0]
	bars.LineStyle.Width = 0
	p.Add(bars)
	p.NominalX(names...)
	p.Y.Min, p.Y.Max = 0, 1
	for i, v := range vals {
		lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: float64(i), Y: v}}, Labels: []string{fmt.Sprintf("%.3f", v)}})
		if err != nil {
			return "", err
		}
		lbl.Offset = vg.Point{X: -vg.Points(10), Y: vg.Points(3)}
		p.Add(lbl)
	}
	return render(p)
}

func constant(xs []float64, v float64) []float64 {
	out := make([]float64, len(xs))
	for i := range out {
		out[i] = v
	}
	return out
}

// figures makes the report's plots from what is available.
func figures(in *inputs, s Summary) ([]figure, error) {
	var figs []figure
	add := func(title, caption string, uri string, err error) error {
		if err != nil {
			return fmt.Errorf("plot %q: %w", title, err)
		}
		figs = append(figs, figure{Title: title, Caption: caption, DataURI: uri})
		return nil
	}
	if xs, ys := series(in.sft, "loss"); len(xs) > 0 {
		uri, err := linePlot("SFT loss", "step", "token NLL", []line{{name: "sft loss", xs: xs, ys: ys}})
		if err := add("SFT warm-up loss", "Mean token NLL of the sft stage over its steps.", uri, err); err != nil {
			return nil, err
		}
	}
	if xs, ys := series(in.train, "loss"); len(xs) > 0 {
		uri, err := linePlot("DPO loss", "step", "loss", []line{{name: "train loss", xs: xs, ys: ys}})
		if err := add("DPO loss", "Training loss of the dpo stage over its steps (metrics.jsonl).", uri, err); err != nil {
			return nil, err
		}
	}
	if xs, ys := series(in.train, "rewards/margins"); len(xs) > 0 {
		cx, cy := series(in.train, "rewards/chosen")
		rx, ry := series(in.train, "rewards/rejected")
		lines := []line{{name: "margin", xs: xs, ys: ys}, {name: "chosen", xs: cx, ys: cy}, {name: "rejected", xs: rx, ys: ry}}
		if s.RewardMargin != nil {
			lines = append(lines, line{name: "held-out margin (final)", xs: xs, ys: constant(xs, *s.RewardMargin), dashed: true})
		}
		uri, err := linePlot("Rewards", "step", "β·(log π − log π_ref)", lines)
		if err := add("Reward margin", "rewards/margins, rewards/chosen and rewards/rejected on training batches.", uri, err); err != nil {
			return nil, err
		}
	}
	if xs, ys := series(in.train, "rewards/accuracies"); len(xs) > 0 {
		lines := []line{{name: "train batches", xs: xs, ys: ys}}
		if s.PreferenceAccuracy != nil {
			lines = append(lines, line{name: "held-out (final)", xs: xs, ys: constant(xs, *s.PreferenceAccuracy), dashed: true})
		}
		uri, err := linePlot("Preference accuracy", "step", "rewards/accuracies", lines)
		if err := add("Preference accuracy", "Fraction of pairs whose chosen reward exceeds the rejected one.", uri, err); err != nil {
			return nil, err
		}
	}
	if s.ExactAfter != nil {
		names := []string{"after DPO (policy)"}
		vals := []float64{*s.ExactAfter}
		if s.ExactBefore != nil {
			names = []string{"before DPO (reference)", "after DPO (policy)"}
			vals = []float64{*s.ExactBefore, *s.ExactAfter}
		}
		uri, err := barPlot("Exact-answer accuracy on held-out prompts", "accuracy", names, vals)
		if err := add("Exact-answer accuracy", fmt.Sprintf("Generations equal to the expected answer, over %d held-out prompts.", s.Samples), uri, err); err != nil {
			return nil, err
		}
	}
	return figs, nil
}
