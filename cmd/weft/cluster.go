package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftsync/weft/cluster"
	"github.com/weftsync/weft/syncserver"
)

func init() {
	register(command{
		name:    "cluster",
		summary: "inspect a cluster: `weft cluster members --server URL`",
		run:     runCluster,
	})
}

// clusterFlags are `weft serve`'s cluster flags: clustering is on when
// --gossip is set.
type clusterFlags struct {
	gossip, join, key, advertise, peer *string
	ackPeers                           *int
	ackTimeout, antiEntropy, reconnect *time.Duration
	ackDelay                           *time.Duration
	faultControl                       *bool
}

func addClusterFlags(fs *flag.FlagSet) *clusterFlags {
	d := cluster.DefaultOptions()
	return &clusterFlags{
		gossip:       fs.String("gossip", "", "gossip (memberlist) bind address host:port; clustering is on when set"),
		join:         fs.String("join", "", "comma-separated gossip addresses of known members (retried until joined, and whenever this node is alone)"),
		key:          fs.String("cluster-key", "", "base64 of the 32-byte cluster key (encrypts gossip, authenticates peer links); required with --gossip"),
		advertise:    fs.String("advertise", "", "host:port other nodes reach this node's gossip at, when the bind address is not reachable"),
		peer:         fs.String("peer-listen", "", "peer link bind address (default: the gossip host, gossip port + 1)"),
		ackPeers:     fs.Int("ack-peers", 0, "acknowledge a client's change only once this many other peers hold it durably"),
		ackTimeout:   fs.Duration("ack-peers-timeout", d.AckTimeout, "how long an acknowledgement waits for --ack-peers peers before answering peer_timeout"),
		ackDelay:     fs.Duration("peer-ack-delay", d.AckDelay, "how long an ack owed to a busy peer may wait to share one write with the next (0: write every ack at once; at most 100ms)"),
		antiEntropy:  fs.Duration("anti-entropy-interval", d.AntiEntropyInterval, "period of anti-entropy rounds with each peer"),
		reconnect:    fs.Duration("reconnect-interval", d.ReconnectInterval, "how often a failed member (or, when alone, the --join seeds) is re-joined"),
		faultControl: fs.Bool("cluster-fault-control", false, "serve POST /debug/cluster/isolate?on=true|false to cut this node off (benchmarks and tests only)"),
	}
}

// options turns the flags into cluster options; it reports every problem
// with flag names.
func (cf *clusterFlags) options() (cluster.Options, bool, error) {
	o := cluster.DefaultOptions()
	if *cf.gossip == "" {
		var errs []error
		for name, set := range map[string]bool{"--join": *cf.join != "", "--cluster-key": *cf.key != "", "--advertise": *cf.advertise != "",
			"--peer-listen": *cf.peer != "", "--ack-peers": *cf.ackPeers != 0, "--peer-ack-delay": *cf.ackDelay != cluster.DefaultOptions().AckDelay} {
			if set {
				errs = append(errs, fmt.Errorf("%s needs --gossip (clustering is off without it)", name))
			}
		}
		return o, false, errors.Join(errs...)
	}
	var errs []error
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(*cf.key))
	switch {
	case *cf.key == "":
		errs = append(errs, errors.New("--cluster-key is required with --gossip (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)"))
	case err != nil:
		errs = append(errs, fmt.Errorf("--cluster-key is not base64: %v", err))
	case len(key) != cluster.KeyLen:
		errs = append(errs, fmt.Errorf("--cluster-key must decode to %d bytes, got %d", cluster.KeyLen, len(key)))
	}
	o.Gossip, o.Advertise, o.PeerListen, o.Key = *cf.gossip, *cf.advertise, *cf.peer, key
	for _, j := range strings.Split(*cf.join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			o.Join = append(o.Join, j)
		}
	}
	o.AckPeers, o.AckTimeout = *cf.ackPeers, *cf.ackTimeout
	o.AntiEntropyInterval, o.ReconnectInterval = *cf.antiEntropy, *cf.reconnect
	if *cf.ackPeers < 0 {
		errs = append(errs, fmt.Errorf("--ack-peers must be ≥ 0, got %d", *cf.ackPeers))
	}
	switch d := *cf.ackDelay; {
	case d < 0 || d > maxPeerAckDelay:
		errs = append(errs, fmt.Errorf("--peer-ack-delay must be between 0 and %v, got %v", maxPeerAckDelay, d))
	case d == 0:
		o.AckDelay = -1 // cluster.Options: negative is none, 0 the default
	default:
		o.AckDelay = d
	}
	for name, d := range map[string]time.Duration{"--ack-peers-timeout": o.AckTimeout, "--anti-entropy-interval": o.AntiEntropyInterval, "--reconnect-interval": o.ReconnectInterval} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0, got %v", name, d))
		}
	}
	return o, true, errors.Join(errs...)
}

// maxPeerAckDelay bounds --peer-ack-delay: a held ack delays a pusher's
// --ack-peers confirmations and its lag metrics by as much.
const maxPeerAckDelay = 100 * time.Millisecond

// start joins the cluster (when --gossip is set) and attaches it to srv.
// It returns nil when clustering is off.
func (cf *clusterFlags) start(srv *syncserver.Server, store syncserver.Store, dataDir string, reg *prometheus.Registry, logger *slog.Logger) (*cluster.Node, *cluster.Faults, error) {
	o, on, err := cf.options()
	if err != nil || !on {
		return nil, nil, err
	}
	if dataDir != "" {
		// Members known before a restart are re-joined even without seeds.
		o.PeersFile = filepath.Join(dataDir, "CLUSTER-PEERS")
	}
	o.Local, o.Registry, o.Logger = srv, reg, logger
	if vl, ok := store.(cluster.VersionLister); ok {
		o.Versions = vl
	} else {
		logger.Warn("the store does not record versions: anti-entropy starts from documents written after start")
	}
	var faults *cluster.Faults
	if *cf.faultControl {
		faults = &cluster.Faults{}
		o.Faults = faults
		logger.Warn("cluster fault control is on: POST /debug/cluster/isolate cuts this node off (benchmarks only)")
	}
	node, err := cluster.New(o)
	if err != nil {
		return nil, nil, err
	}
	srv.SetReplicator(node)
	return node, faults, nil
}

// handler adds the cluster's endpoints to the server's: GET
// /v1/cluster/members (JSON), the member list on /readyz, and the fault
// control when enabled.
func clusterHandler(h http.Handler, node *cluster.Node, faults *cluster.Faults) http.Handler {
	if node == nil {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /v1/cluster/members", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"node": node.Name(), "members": node.Members()})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		for _, m := range node.Members() {
			link := ""
			if !m.Self {
				link = " link=down"
				if m.LinkUp {
					link = " link=up"
				}
			}
			fmt.Fprintf(w, "member %s %s%s\n", m.Name, m.State, link)
		}
	})
	if faults != nil {
		mux.HandleFunc("POST /debug/cluster/isolate", func(w http.ResponseWriter, r *http.Request) {
			on := r.URL.Query().Get("on") == "true"
			faults.Isolate(on)
			fmt.Fprintf(w, "isolated=%v\n", on)
		})
	}
	return mux
}

// runCluster is `weft cluster members --server URL`.
func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft cluster members", stderr)
	server := fs.String("server", "http://127.0.0.1:7420", "URL of any server of the cluster")
	asJSON := fs.Bool("json", false, "print the JSON the server returns")
	fs.Usage = func() {
		flagUsage(fs, "weft cluster members [flags]", "Lists the members of the cluster as the server at --server sees them: name (gossip address), state (alive or failed) and whether its peer link is up.")
	}
	pos, code, done := parseAnywhere(fs, args, stdout)
	if done {
		return code
	}
	if len(pos) != 1 || pos[0] != "members" {
		fmt.Fprintln(stderr, "Usage: weft cluster members --server URL")
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := strings.TrimSuffix(*server, "/") + "/v1/cluster/members"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "weft cluster members: %v\n", err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "weft cluster members: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "weft cluster members: %v\n", err)
		return 1
	}
	if resp.StatusCode == http.StatusNotFound {
		fmt.Fprintf(stderr, "weft cluster members: %s is not clustered (run it with --gossip)\n", *server)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "weft cluster members: %s: %s\n", resp.Status, strings.TrimSpace(string(body)))
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var out struct {
		Node    string           `json:"node"`
		Members []cluster.Member `json:"members"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		fmt.Fprintf(stderr, "weft cluster members: bad answer: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPEER ADDRESS\tLINK")
	for _, m := range out.Members {
		link := "up"
		switch {
		case m.Self:
			link = "(this node)"
		case !m.LinkUp:
			link = "down"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.State, m.PeerAddr, link)
	}
	tw.Flush()
	return 0
}

// shutdownNode leaves the cluster's links and gossip (nil: not clustered).
func shutdownNode(node *cluster.Node, timeout time.Duration, logger *slog.Logger) {
	if node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		logger.Error("cluster shutdown", "err", err)
	}
}
