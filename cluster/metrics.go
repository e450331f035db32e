package cluster

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the cluster's Prometheus instruments (weft_cluster_*).
type metrics struct {
	n            *Node
	pushed       prometheus.Counter
	rounds       prometheus.Counter
	repaired     prometheus.Counter
	linkUps      prometheus.Counter
	linkDowns    prometheus.Counter
	authFailures prometheus.Counter
	ackTimeouts  prometheus.Counter
	joins        prometheus.Counter
	peerRefused  *prometheus.CounterVec
	// ownersSent and ownersReceived count replica ownership claims in
	// owners messages.
	ownersSent     prometheus.Counter
	ownersReceived prometheus.Counter

	members *prometheus.Desc
	lagN    *prometheus.Desc
	lagS    *prometheus.Desc
	docs    *prometheus.Desc
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	m := &metrics{n: n,
		pushed:       prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_pushed_batches_total", Help: "Update batches queued to peers (one per peer)."}),
		rounds:       prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_antientropy_rounds_total", Help: "Anti-entropy rounds started (digests sent to a peer)."}),
		repaired:     prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_antientropy_docs_repaired_total", Help: "Documents that anti-entropy found differing and synced."}),
		linkUps:      prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_link_connects_total", Help: "Outbound peer links established."}),
		linkDowns:    prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_link_drops_total", Help: "Outbound peer links lost."}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_auth_failures_total", Help: "Peer link handshakes that failed (wrong cluster key or not a peer)."}),
		ackTimeouts:  prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_ack_peer_timeouts_total", Help: "Client batches answered peer_timeout (--ack-peers not met in time)."}),
		joins:        prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_joins_total", Help: "Successful gossip joins (seeds and re-joins of failed members)."}),
		peerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_cluster_peer_refused_total",
			Help: "Batches a peer refused, by status."}, []string{"status"}),
		ownersSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_owners_sent_total",
			Help: "Replica ownership claims sent to peers (owners messages; once per claim and connection with pushed changes, with every subscribe answer)."}),
		ownersReceived: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_cluster_owners_received_total",
			Help: "Replica ownership claims received from peers and handed to the server (weft_peer_owners_adopted_total and weft_peer_owner_conflicts_total say what it did)."}),
		members: prometheus.NewDesc("weft_cluster_members", "Cluster members as this node sees them, by state (alive, suspect, dead, failed).", []string{"state"}, nil),
		lagN:    prometheus.NewDesc("weft_cluster_peer_lag_changes", "Changes pushed to a peer and not yet acknowledged by it.", []string{"peer"}, nil),
		lagS:    prometheus.NewDesc("weft_cluster_peer_lag_seconds", "Age of the oldest change pushed to a peer and not yet acknowledged.", []string{"peer"}, nil),
		docs:    prometheus.NewDesc("weft_cluster_digest_docs", "Documents in this node's anti-entropy digest.", nil, nil),
	}
	for _, c := range []prometheus.Collector{m.pushed, m.rounds, m.repaired, m.linkUps, m.linkDowns, m.authFailures, m.ackTimeouts, m.joins, m.peerRefused, m.ownersSent, m.ownersReceived, m} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("cluster: metrics already registered (one Node per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.members
	ch <- m.lagN
	ch <- m.lagS
	ch <- m.docs
}

// Collect reads membership and per-link lag at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	n := m.n
	if n.ml == nil {
		return
	}
	counts := map[string]int{"alive": 0, "suspect": 0, "dead": 0, "failed": 0}
	for _, mb := range n.Members() {
		counts[mb.State]++
	}
	for s, c := range counts {
		ch <- prometheus.MustNewConstMetric(m.members, prometheus.GaugeValue, float64(c), s)
	}
	now := time.Now()
	for _, l := range n.links() {
		l.mu.Lock()
		changes, oldest := 0, now
		for _, p := range l.mu.inflight {
			changes += p.n
			if p.at.Before(oldest) {
				oldest = p.at
			}
		}
		l.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(m.lagN, prometheus.GaugeValue, float64(changes), l.peer)
		ch <- prometheus.MustNewConstMetric(m.lagS, prometheus.GaugeValue, now.Sub(oldest).Seconds(), l.peer)
	}
	ch <- prometheus.MustNewConstMetric(m.docs, prometheus.GaugeValue, float64(n.dig.count()))
}
