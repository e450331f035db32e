package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftsync/weft/storage"
	"github.com/weftsync/weft/syncserver"
)

// The Pebble store is what the sync server persists through, and it lists
// documents for GET /v1/docs.
var (
	_ syncserver.Store        = (*storage.Store)(nil)
	_ syncserver.DocLister    = (*storage.Store)(nil)
	_ syncserver.VersionStore = (*storage.Store)(nil)
)

// storeHealth is implemented by the closer openStore returns: `weft serve`
// watches Failed and exits non-zero with Err once the store fail-stops
// (after a failed fsync nothing more may be acknowledged).
type storeHealth interface {
	Failed() <-chan struct{}
	Err() error
}

var _ storeHealth = (*storage.Store)(nil)

// openStore opens the Pebble store in dir for `weft serve`, with walSync as
// its WALMinSyncInterval (0: the default), and registers its metrics
// (weft_storage_*) in reg when reg is non-nil. The returned closer is the
// *storage.Store itself (so it also implements storeHealth).
func openStore(dir string, walSync time.Duration, logger *slog.Logger, reg prometheus.Registerer) (syncserver.Store, io.Closer, error) {
	o := storage.DefaultOptions()
	if walSync != 0 {
		o.WALMinSyncInterval = walSync
	}
	if logger != nil {
		o.Logger = logger
	}
	o.Registerer = reg
	st, err := storage.Open(dir, o)
	if err != nil {
		return nil, nil, err
	}
	return servedStore{st}, st, nil
}

// servedStore is the Pebble store as the sync server sees it: every method
// of *storage.Store (Store, DocLister, VersionStore, ...), plus
// ListDocInfo, which syncserver declares and storage cannot name.
type servedStore struct{ *storage.Store }

var _ syncserver.DocInfoLister = servedStore{}

// ListDocInfo implements syncserver.DocInfoLister.
func (s servedStore) ListDocInfo(ctx context.Context, prefix string, limit int) ([]syncserver.DocInfo, error) {
	metas, err := s.List(ctx, prefix, "", limit)
	if err != nil {
		return nil, err
	}
	out := make([]syncserver.DocInfo, len(metas))
	for i, m := range metas {
		out[i] = docInfo(m)
	}
	return out, nil
}

// docInfo is m as weft doc ls and GET /v1/docs show it.
func docInfo(m storage.DocMeta) syncserver.DocInfo {
	return syncserver.DocInfo{ID: m.ID, Created: m.Created.Format(time.RFC3339Nano), Updated: m.Updated.Format(time.RFC3339Nano),
		SnapshotBytes: m.SnapshotBytes, LogBytes: m.LogBytes, Batches: m.Batches}
}
