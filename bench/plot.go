package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// PlotSeries is one line of a latency plot: sorted samples and a name.
type PlotSeries struct {
	Name    string
	Samples []time.Duration // sorted ascending
}

// plotColors are distinguishable in colour and in grey.
var plotColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"}

// WriteLatencyCDF draws the cumulative distribution of each series' latency
// as a standalone SVG: x is the latency on a log scale (ms), y the fraction
// of samples at or below it, with the p50 and p99 marked. Plain SVG written
// here rather than a plotting library: one chart of a few polylines needs
// no dependency, and the file opens in any browser.
func WriteLatencyCDF(w io.Writer, title string, series []PlotSeries) error {
	const (
		width, height          = 760, 440
		left, right, top, base = 70, 20, 40, 60
	)
	pw, ph := float64(width-left-right), float64(height-top-base)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		if len(s.Samples) == 0 {
			continue
		}
		if !slices.IsSorted(s.Samples) {
			return fmt.Errorf("bench: plot series %q is not sorted", s.Name)
		}
		lo = min(lo, msOf(s.Samples[0]))
		hi = max(hi, msOf(s.Samples[len(s.Samples)-1]))
	}
	if math.IsInf(lo, 1) {
		return fmt.Errorf("bench: nothing to plot")
	}
	// Whole decades around the data, at least 0.01 ms.
	lo = math.Pow(10, math.Floor(math.Log10(max(lo, 0.01))))
	hi = math.Pow(10, math.Ceil(math.Log10(max(hi, lo*10))))
	x := func(v float64) float64 {
		v = min(max(v, lo), hi)
		return left + pw*(math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	y := func(f float64) float64 { return top + ph*(1-f) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">%s</text>`+"\n", left, xmlEscape(title))
	// Grid: decades on x, tenths on y.
	for d := lo; d <= hi*1.0001; d *= 10 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x(d), top, x(d), y(0))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(d), y(0)+16, trimFloat(d))
	}
	for i := 0; i <= 10; i++ {
		f := float64(i) / 10
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, y(f), x(hi), y(f))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.1f</text>`+"\n", left-6, y(f)+4, f)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">latency (ms, log scale)</text>`+"\n", left+pw/2, height-18)
	fmt.Fprintf(&b, `<text x="16" y="%.1f" transform="rotate(-90 16 %.1f)" text-anchor="middle">fraction of deliveries ≤ latency</text>`+"\n", top+ph/2, top+ph/2)
	for i, s := range series {
		if len(s.Samples) == 0 {
			continue
		}
		c := plotColors[i%len(plotColors)]
		// At most ~2 points per horizontal pixel: enough for the eye.
		step := max(1, len(s.Samples)/int(2*pw))
		var pts strings.Builder
		for j := 0; j < len(s.Samples); j += step {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(msOf(s.Samples[j])), y(float64(j+1)/float64(len(s.Samples))))
		}
		fmt.Fprintf(&pts, "%.1f,%.1f", x(msOf(s.Samples[len(s.Samples)-1])), y(1))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, pts.String())
		p50, p99 := msOf(convergeQuantile(s.Samples, 0.50)), msOf(convergeQuantile(s.Samples, 0.99))
		for _, m := range []struct {
			v float64
			f float64
		}{{p50, 0.5}, {p99, 0.99}} {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x(m.v), y(m.f), c)
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", left+12, top+10+i*18, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s: n %d, p50 %s ms, p99 %s ms, max %s ms</text>`+"\n", left+30, top+21+i*18,
			xmlEscape(s.Name), len(s.Samples), trimFloat(p50), trimFloat(p99), trimFloat(msOf(s.Samples[len(s.Samples)-1])))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func trimFloat(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

func xmlEscape(s string) string { return xmlEscaper.Replace(s) }
