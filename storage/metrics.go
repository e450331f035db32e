package storage

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus instruments. They always exist (so the
// hot path has no nil checks); they are registered only when
// Options.Registerer is set.
type metrics struct {
	commitSeconds *prometheus.HistogramVec // op = append | snapshot
	appendedBytes prometheus.Counter
	snapshots     prometheus.Counter
	snapshotBytes prometheus.Counter
	compactions   prometheus.Counter
	flushes       prometheus.Counter
	bgErrors      prometheus.Counter
	failStopped   prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		commitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_storage_commit_seconds",
			Help: "Latency of a durable (fsynced) store write, by operation.",
			// Group commit makes most writes take about one fsync: 50 µs on
			// fast NVMe up to tens of ms on network disks.
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
		}, []string{"op"}),
		appendedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_storage_appended_bytes_total",
			Help: "Bytes of change batches durably appended.",
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_storage_snapshots_total",
			Help: "Snapshots written (each replaces a document's log).",
		}),
		snapshotBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_storage_snapshot_bytes_total",
			Help: "Bytes of snapshots written.",
		}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_storage_compactions_total",
			Help: "Pebble compactions completed.",
		}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_storage_flushes_total",
			Help: "Pebble memtable flushes completed.",
		}),
		bgErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_storage_background_errors_total",
			Help: "Errors in Pebble background work (flushes, compactions).",
		}),
		failStopped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_storage_fail_stopped",
			Help: "1 once a write failed and the store stopped accepting writes.",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.commitSeconds, m.appendedBytes, m.snapshots, m.snapshotBytes,
		m.compactions, m.flushes, m.bgErrors, m.failStopped,
	}
}

// register registers every collector in r, plus extra (gauges that read the
// open store). On failure it unregisters what it registered.
func (m *metrics) register(r prometheus.Registerer, extra ...prometheus.Collector) (unregister func(), err error) {
	var done []prometheus.Collector
	unregister = func() {
		for _, c := range done {
			r.Unregister(c)
		}
	}
	var errs []error
	for _, c := range append(m.collectors(), extra...) {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, c)
	}
	if len(errs) > 0 {
		unregister()
		return nil, fmt.Errorf("storage: registering metrics: %w", errors.Join(errs...))
	}
	return unregister, nil
}
