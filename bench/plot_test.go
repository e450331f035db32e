package bench

import (
	"encoding/xml"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestWriteLatencyCDF(t *testing.T) {
	var a, b []time.Duration
	for i := 1; i <= 1000; i++ {
		a = append(a, time.Duration(i)*time.Microsecond*10)
		b = append(b, time.Duration(i)*time.Millisecond/10)
	}
	var out strings.Builder
	if err := WriteLatencyCDF(&out, "converge <test>", []PlotSeries{{Name: "same-peer", Samples: a}, {Name: "cross-peer", Samples: b}}); err != nil {
		t.Fatal(err)
	}
	svg := out.String()
	// Well-formed XML, one polyline per series, the title escaped, the
	// quantiles in the legend.
	d := xml.NewDecoder(strings.NewReader(svg))
	lines := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 2 {
		t.Fatalf("%d polylines, want 2", lines)
	}
	for _, want := range []string{"converge &lt;test&gt;", "same-peer: n 1000, p50 5 ms, p99 9.9 ms", "cross-peer: n 1000, p50 50 ms, p99 99 ms"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if err := WriteLatencyCDF(&out, "x", []PlotSeries{{Name: "unsorted", Samples: []time.Duration{2, 1}}}); err == nil {
		t.Error("an unsorted series was plotted")
	}
	if err := WriteLatencyCDF(&out, "x", nil); err == nil {
		t.Error("an empty plot was written")
	}
}

// The CDF's ticks are round numbers whatever the range: 0.01 ms, not
// 0.010000000000000002.
func TestClusterSVGTicks(t *testing.T) {
	for _, c := range []struct {
		fastest time.Duration
		ticks   []string
	}{
		{30 * time.Microsecond, []string{">0.01<", ">0.1<", ">1<", ">10<", ">100<", ">1s<", ">10s<"}},
		{500 * time.Microsecond, []string{">0.1<", ">1<", ">10<", ">100<", ">1s<", ">10s<"}},
	} {
		res := ClusterResult{Peers: 3, Clients: 2, LoadAvg: "1 1 1",
			SameLat:  []time.Duration{c.fastest, 2 * time.Millisecond},
			CrossLat: []time.Duration{5 * time.Millisecond, 3 * time.Second}}
		svg := string(ClusterSVG(res))
		for _, want := range c.ticks {
			if !strings.Contains(svg, want) {
				t.Errorf("fastest %v: no tick %s", c.fastest, want)
			}
		}
		if long := regexp.MustCompile(`>[0-9]*\.[0-9]{4,}s?<`).FindString(svg); long != "" {
			t.Errorf("fastest %v: tick label %s", c.fastest, long)
		}
	}
}
