package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weftsync/weft/internal/testbin"
)

// TestClusterKillAndPartition runs the cluster benchmark small against
// the real binary: three `weft serve` processes, one killed with kill -9
// and restarted mid-run, then a partition of one peer; both runs must end
// converged with no acknowledged edit lost or duplicated.
func TestClusterKillAndPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	bin := testbin.Weft(t)
	for name, o := range map[string]ClusterOptions{
		"kill":      {Kill: 1, Duration: 3 * time.Second},
		"partition": {Partition: time.Second, Duration: 3 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			o.Binary, o.WatchBinary, o.Peers, o.Clients, o.Docs, o.Rate, o.Settle = bin, bin, 3, 6, 2, 5, 45*time.Second
			r, err := RunCluster(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Converged || r.Lost != 0 || r.Duplicated != 0 || r.Acked == 0 || r.CrossPeer.Deliveries == 0 {
				t.Fatalf("result %+v", r)
			}
			if o.Kill > 0 && r.Kills != 1 || o.Partition > 0 && r.HealMs <= 0 {
				t.Fatalf("faults not applied: %+v", r)
			}
			checkDivergence(t, r.Divergence, o)
			svg := string(ClusterSVG(r))
			if !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, "cross peer") || !strings.Contains(svg, "differing") {
				t.Fatalf("plot: %.300s", svg)
			}
		})
	}
}

// checkDivergence: the timeline of a converged fault run is in time
// order, spans the editing (its last sample comes after the settle) and
// ends with no document differing; a partition shows in it.
func checkDivergence(t *testing.T, d []ClusterPoint, o ClusterOptions) {
	t.Helper()
	if len(d) < 2 {
		t.Fatalf("divergence timeline %+v, want samples", d)
	}
	most := 0
	for i, p := range d {
		if p.TMs <= 0 || i > 0 && p.TMs <= d[i-1].TMs {
			t.Fatalf("divergence timeline out of time order at %d: %+v", i, d)
		}
		most = max(most, p.Differing)
	}
	if last := d[len(d)-1]; last.TMs < float64(o.Duration.Milliseconds()) || last.Differing != 0 {
		t.Fatalf("divergence timeline ends with %+v, want 0 differing after the %v of editing: %+v", last, o.Duration, d)
	}
	if o.Partition > 0 && most == 0 {
		t.Fatalf("divergence timeline of a partition shows nothing differing: %+v", d)
	}
}

// One peer is a plain server (no cluster flags): the single-server
// baseline of the same run, every delivery same-peer.
func TestClusterSinglePeerBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	r, err := RunCluster(context.Background(), ClusterOptions{Binary: testbin.Weft(t), Peers: 1, Clients: 4, Docs: 1, Rate: 5, Duration: time.Second, Settle: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Converged || r.Lost != 0 || r.Duplicated != 0 || r.Acked == 0 || r.SamePeer.Deliveries == 0 || r.CrossPeer.Deliveries != 0 {
		t.Fatalf("result %+v", r)
	}
	if _, err := RunCluster(context.Background(), ClusterOptions{Binary: "unused", Peers: 1, Kill: 1}); err == nil || !strings.Contains(err.Error(), "single-server") {
		t.Fatalf("a fault with one peer: err %v", err)
	}
}
