package syncserver

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus instruments, registered on
// Options.Registry.
type metrics struct {
	conns        prometheus.Gauge
	connsTotal   prometheus.Counter
	refused      *prometheus.CounterVec // reason
	closes       *prometheus.CounterVec // close code name
	framesIn     prometheus.Counter
	framesOut    prometheus.Counter
	writesQueued prometheus.Counter
	bytesIn      prometheus.Counter
	bytesOut     prometheus.Counter
	updates      *prometheus.CounterVec // status
	limitHits    *prometheus.CounterVec // limit
	presence     prometheus.Counter
	sseStreams   prometheus.Gauge
	sseResets    prometheus.Counter
	docsLoaded   prometheus.Gauge
	bytesHeld    prometheus.Gauge
	loads        prometheus.Counter
	loadErrors   prometheus.Counter
	loadSeconds  prometheus.Histogram
	unloads      *prometheus.CounterVec // reason: idle, budget, shutdown
	commitSecs   prometheus.Histogram
	commitBytes  prometheus.Histogram
	snapshots    prometheus.Counter
	storeErrors  prometheus.Counter
	fanoutSecs   prometheus.Histogram
	pendingTotal prometheus.Gauge
	docFailures  *prometheus.CounterVec // doc
	panics       *prometheus.CounterVec // where: session_reader, session_writer, http
	// ownersAdopted and ownerConflicts count cluster peers' replica
	// ownership claims (PeerOwners).
	ownersAdopted  prometheus.Counter
	ownerConflicts prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	latency := prometheus.ExponentialBuckets(0.0001, 2, 16) // 100µs .. ~3.3s
	m := &metrics{
		conns:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_connections", Help: "Open WebSocket connections."}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_connections_total", Help: "WebSocket connections accepted."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_connections_refused_total",
			Help: "Connections and requests refused before serving, by reason (capacity, origin, draining, auth)."}, []string{"reason"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_connection_closes_total",
			Help: "Connections closed by the server, by close code."}, []string{"code"}),
		framesIn:  prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_frames_received_total", Help: "WebSocket frames received."}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_frames_sent_total", Help: "WebSocket frames sent."}),
		writesQueued: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_frames_write_deferred_total",
			Help: "Frames written to an idle connection whose socket did not take them whole at once; the rest waited for the socket (a client reading slowly)."}),
		bytesIn:  prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_received_bytes_total", Help: "WebSocket payload bytes received."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_sent_bytes_total", Help: "WebSocket payload bytes sent."}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_updates_total",
			Help: "Update batches answered, by status."}, []string{"status"}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_limit_hits_total",
			Help: "Requests refused by a limit (frame, doc_size, changes_rate, presence_rate, pending, connections, auth_timeout, docs_per_conn, send_queue, write_timeout, heartbeat, invalid, value_size, docs_per_user, docs_loaded, subscribe_rate)."}, []string{"limit"}),
		presence:   prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_presence_relayed_total", Help: "Presence states relayed to rooms (after coalescing)."}),
		sseStreams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_event_streams", Help: "Open Server-Sent Events streams."}),
		sseResets: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_event_stream_resets_total",
			Help: "Event streams started over because a compact Last-Event-ID no longer named a version the document can rebuild."}),
		docsLoaded:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_docs_loaded", Help: "Documents loaded in memory."}),
		bytesHeld:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_doc_bytes_held", Help: "In-memory bytes of the loaded documents (crdt.Doc.MemSize; the memory budget's measure)."}),
		loads:       prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_doc_loads_total", Help: "Documents loaded from the store."}),
		loadErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_doc_load_errors_total", Help: "Document loads that failed."}),
		loadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_doc_load_seconds", Help: "Time to load and decode a document.", Buckets: latency}),
		unloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_doc_unloads_total",
			Help: "Documents unloaded, by reason (idle, budget, shutdown)."}, []string{"reason"}),
		commitSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_store_commit_seconds",
			Help: "Latency of one durable Store.Append (group commit of a room).", Buckets: latency}),
		commitBytes: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_store_commit_bytes",
			Help: "Size of one appended batch.", Buckets: prometheus.ExponentialBuckets(64, 4, 10)}),
		snapshots:   prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_store_snapshots_total", Help: "Snapshots written (log compactions)."}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_store_errors_total", Help: "Store write failures (each one is fatal)."}),
		fanoutSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_fanout_seconds",
			Help: "Time from receiving an update frame to queueing its changes for the other subscribers.", Buckets: latency}),
		pendingTotal: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_pending_changes", Help: "Changes held waiting for dependencies, over all loaded documents."}),
		docFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_doc_failures_total",
			Help: "Panics on a document's room goroutine (or while loading it), by document: each fail-stops that document until it unloads."}, []string{"doc"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_panics_total",
			Help: "Panics recovered outside rooms, by where (session_reader, session_writer, http); each ends only its connection or request."}, []string{"where"}),
		ownersAdopted: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_peer_owners_adopted_total",
			Help: "Replica ownership claims learned from cluster peers for replicas without an owner here."}),
		ownerConflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_peer_owner_conflicts_total",
			Help: "Cluster peers' replica ownership claims that contradict the owner recorded here (kept); each is logged."}),
	}
	cs := []prometheus.Collector{m.conns, m.connsTotal, m.refused, m.closes, m.framesIn, m.framesOut, m.writesQueued, m.bytesIn,
		m.bytesOut, m.updates, m.limitHits, m.presence, m.sseStreams, m.sseResets, m.docsLoaded, m.bytesHeld, m.loads,
		m.loadErrors, m.loadSeconds, m.unloads, m.commitSecs, m.commitBytes, m.snapshots, m.storeErrors,
		m.fanoutSecs, m.pendingTotal, m.docFailures, m.panics, m.ownersAdopted, m.ownerConflicts}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// registerRuntime adds Go runtime and process collectors unless the
// registry already has them (a caller may share one registry between
// components, each adding them).
func registerRuntime(reg *prometheus.Registry) error {
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
