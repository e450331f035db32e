package bench

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ClusterSVG draws a cluster run as plain SVG (no plotting library: two
// small line charts need none, and the file opens in any browser): the
// latency CDF of same-peer and cross-peer deliveries on a log time axis,
// and, when the run had faults, the documents differing between peers
// over time.
func ClusterSVG(res ClusterResult) []byte {
	const w, h, ml, mr, mt, mb = 720, 300, 60, 20, 40, 45
	panels := 1
	if len(res.Faults) > 0 && len(res.Divergence) > 0 {
		panels = 2
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h*panels)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")

	// Panel 1: CDF.
	pw, ph := float64(w-ml-mr), float64(h-mt-mb)
	lo, hi := 0.1, 1000.0 // ms
	for _, l := range [][]time.Duration{res.SameLat, res.CrossLat} {
		for _, d := range l {
			ms := float64(d.Microseconds()) / 1000
			lo, hi = math.Min(lo, math.Max(ms, 0.01)), math.Max(hi, ms)
		}
	}
	lo, hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	x := func(ms float64) float64 {
		ms = math.Max(ms, lo)
		return ml + pw*(math.Log10(ms)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	y := func(f float64) float64 { return mt + ph*(1-f) }
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">edit → applied on another subscriber: %d peers, %d clients, %d edits (loadavg %s)</text>`+"\n",
		ml, res.Peers, res.Clients, res.Edits, html.EscapeString(strings.Join(strings.Fields(res.LoadAvg)[:min(3, len(strings.Fields(res.LoadAvg)))], " ")))
	axes(&b, ml, mt, pw, ph)
	// Whole exponents, so that a tick is 0.1 and not 0.1000000000000001.
	for e := int(math.Round(math.Log10(lo))); e <= int(math.Round(math.Log10(hi))); e++ {
		v := math.Pow10(e)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n",
			x(v), mt, x(v), mt+ph, x(v), mt+ph+15, fmtMs(v))
	}
	for _, f := range []float64{0, 0.5, 0.99, 1} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n",
			ml, y(f), ml+pw, y(f), ml-5, y(f)+4, f)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">latency (ms, log scale)</text>`+"\n", ml+pw/2, h-8)
	for i, s := range []struct {
		name  string
		lat   []time.Duration
		color string
		st    ClusterLatency
	}{{"same peer", res.SameLat, "#1f77b4", res.SamePeer}, {"cross peer", res.CrossLat, "#d62728", res.CrossPeer}} {
		l := slices.Clone(s.lat)
		slices.Sort(l)
		if len(l) > 0 {
			var pts []string
			step := max(1, len(l)/600)
			for j := 0; j < len(l); j += step {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(l[j].Microseconds())/1000), y(float64(j+1)/float64(len(l)))))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(l[len(l)-1].Microseconds())/1000), y(1)))
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="3" fill="%s"/><text x="%d" y="%d">%s: p50 %.1f ms, p99 %.1f ms, max %.0f ms (%d)</text>`+"\n",
			ml+10, mt+12+18*i, s.color, ml+28, mt+16+18*i, s.name, s.st.P50Ms, s.st.P99Ms, s.st.MaxMs, s.st.Deliveries)
	}

	if panels == 2 {
		top := float64(h)
		tmax := 1.0
		dmax := 1
		for _, p := range res.Divergence {
			tmax, dmax = math.Max(tmax, p.TMs), max(dmax, p.Differing)
		}
		tx := func(t float64) float64 { return ml + pw*t/tmax }
		ty := func(n int) float64 { return top + mt + ph*(1-float64(n)/float64(dmax)) }
		heal := ""
		if res.HealMs > 0 {
			heal = fmt.Sprintf(", heal %.0f ms", res.HealMs)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-size="14">documents differing between peers (%s%s)</text>`+"\n", ml, top+20, html.EscapeString(strings.Join(res.Faults, "; ")), heal)
		axes(&b, ml, int(top)+mt, pw, ph)
		var pts []string
		for _, p := range res.Divergence {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", tx(p.TMs), ty(p.Differing)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#9467bd" stroke-width="2" points="%s"/>`+"\n", strings.Join(pts, " "))
		for _, n := range []int{0, dmax} {
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%d</text>`+"\n", ml-5, ty(n)+4, n)
		}
		for s := 0.0; s <= tmax/1000; s += math.Max(1, math.Round(tmax/1000/10)) {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%gs</text>`+"\n", tx(s*1000), top+mt+ph+15, s)
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func axes(b *bytes.Buffer, ml, mt int, pw, ph float64) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", ml, mt, pw, ph)
}

func fmtMs(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'g', -1, 64) + "s"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
