package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestClusterHealWatchProtocol: the watcher refuses a configuration or a
// heal line it cannot use, and a run that ends without a heal (EOF after
// the configuration) ends it without an answer. Its timing of a real heal
// is exercised by TestClusterKillAndPartition.
func TestClusterHealWatchProtocol(t *testing.T) {
	const cfg = `{"peers":["127.0.0.1:1"],"docs":["d"],"settle":1000000000}` + "\n"
	for name, c := range map[string]struct {
		in, err string
	}{
		"not JSON":        {"peers\n", "configuration"},
		"no peers":        {`{"docs":["d"],"settle":1}` + "\n", "no peers"},
		"no settle":       {`{"peers":["a"],"docs":["d"]}` + "\n", "no settle"},
		"no config":       {"", "reading its configuration"},
		"bad heal line":   {cfg + "healed at 5\n", `want "heal <ns>"`},
		"no heal, no end": {cfg, ""},
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
// (no peer answers) is an error in its answer, not a figure.
func TestClusterHealWatchUnreachablePeers(t *testing.T) {
	in := `{"peers":["127.0.0.1:1"],"docs":["d"],"settle":300000000}` + "\n" + "heal 1\n"
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
}
