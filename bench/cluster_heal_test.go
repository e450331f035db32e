package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// healWatchInput is a configuration line for peers (settle 300 ms) starting
// now, followed by lines.
func healWatchInput(peers []string, lines ...string) string {
	b, _ := json.Marshal(healWatchConfig{Peers: peers, Docs: []string{"d"}, Settle: 300 * time.Millisecond, Start: convergeNow()})
	return string(b) + "\n" + strings.Join(lines, "")
}

// TestClusterHealWatchProtocol: the watcher refuses a configuration or a
// line it cannot use, and a run that ends without "end" (EOF, with or
// without a heal) ends it without an answer. Its timing of a real heal
// and its timeline of a real run are exercised by
// TestClusterKillAndPartition.
func TestClusterHealWatchProtocol(t *testing.T) {
	unreachable := []string{"127.0.0.1:1"}
	for name, c := range map[string]struct {
		in, err string
	}{
		"not JSON":          {"peers\n", "configuration"},
		"no peers":          {`{"docs":["d"],"settle":1,"start":1}` + "\n", "no peers"},
		"no settle":         {`{"peers":["a"],"docs":["d"],"start":1}` + "\n", "no settle"},
		"no start":          {`{"peers":["a"],"docs":["d"],"settle":1}` + "\n", "start 0"},
		"start to come":     {fmt.Sprintf(`{"peers":["a"],"docs":["d"],"settle":1,"start":%d}`+"\n", convergeNow()+int64(time.Hour)), "before now"},
		"no config":         {"", "reading its configuration"},
		"bad heal line":     {healWatchInput(unreachable, "healed at 5\n"), `want "heal <ns>" or "end"`},
		"two heals":         {healWatchInput(unreachable, "heal 5\n", "heal 6\n"), `want "end" after the heal line`},
		"no heal, no end":   {healWatchInput(unreachable), ""},
		"heal, no end":      {healWatchInput(unreachable, "heal 5\n"), ""},
		"end, no line feed": {healWatchInput(unreachable, "end"), ""},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			err := ClusterHealWatch(context.Background(), strings.NewReader(c.in), &out)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one saying %q", err, c.err)
			case out.Len() != 0:
				t.Fatalf("answered %q, want nothing", out.String())
			}
		})
	}
}

// TestClusterHealWatchUnreachablePeers: a heal the watcher cannot observe
// (no peer answers) is an error in its answer, not a figure; its timeline
// still ends with the sample taken at "end", every document differing.
func TestClusterHealWatchUnreachablePeers(t *testing.T) {
	in := healWatchInput([]string{"127.0.0.1:1"}, "heal 1\n", "end\n")
	var out bytes.Buffer
	if err := ClusterHealWatch(context.Background(), strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	var res healWatchResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("answer %q: %v", out.String(), err)
	}
	if res.Error == "" || res.HealMs != 0 {
		t.Fatalf("answer %+v, want an error and no figure", res)
	}
	if len(res.Divergence) != 1 || res.Divergence[0].Differing != 1 {
		t.Fatalf("timeline %+v, want the last sample alone, with the one document differing", res.Divergence)
	}
}

// TestClusterHealWatchSamplesOnTime: without a heal (a --kill run), the
// watcher answers the timeline alone: a sample at each 200 ms of the
// start, in order, then the one at "end". Two stand-in peers count the
// reads, so the test sends "end" after three samples, not after a sleep.
func TestClusterHealWatchSamplesOnTime(t *testing.T) {
	reads := make(chan struct{}, 64)
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case reads <- struct{}{}:
		default:
		}
		w.Write([]byte(`{"version":{"a":1},"text":{"t":""}}`))
	}))
	defer peer.Close()
	addr := strings.TrimPrefix(peer.URL, "http://")
	in, feed := io.Pipe()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- ClusterHealWatch(context.Background(), in, &out) }()
	if _, err := io.WriteString(feed, healWatchInput([]string{addr, addr})); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for range 3 * 2 { // three samples of two peers
		select {
		case <-reads:
		case <-deadline:
			t.Fatal("the watcher did not sample within 30 s")
		}
	}
	io.WriteString(feed, "end\n")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var res healWatchResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("answer %q: %v", out.String(), err)
	}
	if res.Error != "" || res.HealMs != 0 || len(res.Divergence) < 4 {
		t.Fatalf("answer %+v, want no error, no heal and at least 3+1 samples", res)
	}
	for i, p := range res.Divergence {
		if p.Differing != 0 || i > 0 && p.TMs <= res.Divergence[i-1].TMs {
			t.Fatalf("sample %d of %+v: out of order or differing", i, res.Divergence)
		}
		// Each sample but the last waits for a 200 ms mark of the start
		// after the one before it.
		if i < len(res.Divergence)-1 && p.TMs < float64(200*(i+1)) {
			t.Fatalf("sample %d at %v ms, before its mark %d ms: %+v", i, p.TMs, 200*(i+1), res.Divergence)
		}
	}
}
