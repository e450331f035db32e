package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/storage"
	"github.com/weftsync/weft/syncserver"
)

// editOps builds the ops of `weft doc edit` from its flags: either --ops
// (a JSON array, or - for stdin) or --field with exactly one action.
func editOps(f docFlags, stdin io.Reader) ([]syncserver.EditOp, error) {
	actions := []string{}
	for _, a := range []string{"insert", "delete", "add", "set"} {
		if f.given[a] {
			actions = append(actions, "--"+a)
		}
	}
	if f.given["ops"] {
		if len(actions) > 0 || f.given["field"] {
			return nil, fmt.Errorf("--ops replaces --field and %s", strings.Join(actions, ", "))
		}
		body := []byte(f.ops)
		if f.ops == "-" {
			var err error
			if body, err = io.ReadAll(io.LimitReader(stdin, maxImportBytes)); err != nil {
				return nil, fmt.Errorf("reading --ops from stdin: %w", err)
			}
		}
		return syncserver.ParseEditOps(body)
	}
	if len(actions) != 1 {
		return nil, errors.New("give --field and exactly one of --insert, --delete, --add, --set (or --ops)")
	}
	if !f.given["field"] {
		return nil, fmt.Errorf("%s needs --field", actions[0])
	}
	op := syncserver.EditOp{Field: f.field}
	if f.given["at"] {
		at, err := strconv.Atoi(f.at)
		if err != nil {
			return nil, fmt.Errorf("--at %q: want a character position (a number ≥ 0)", f.at)
		}
		op.At = &at
	}
	switch actions[0] {
	case "--insert":
		op.Insert = &f.insert
	case "--delete":
		n, err := strconv.Atoi(f.del)
		if err != nil {
			return nil, fmt.Errorf("--delete %q: want a number of characters", f.del)
		}
		op.Delete = &n
	case "--add":
		n, err := strconv.ParseInt(f.add, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--add %q: want an integer", f.add)
		}
		op.Add = &n
	case "--set":
		if json.Valid([]byte(f.set)) {
			op.Set = json.RawMessage(f.set)
		} else {
			b, err := json.Marshal(f.set)
			if err != nil {
				return nil, err
			}
			op.Set = b
		}
	}
	// The same checks, and messages, as the server's.
	b, err := json.Marshal([]syncserver.EditOp{op})
	if err != nil {
		return nil, err
	}
	return syncserver.ParseEditOps(b)
}

// docEditLocal makes ops on a document of a stopped server's data
// directory and appends them to its log.
//
// NB: each run edits as a new random replica, never a fixed one: two
// copies of one data directory edited offline and merged later (weft doc
// export/import) must not hold two different changes under one id.
func docEditLocal(ctx context.Context, f docFlags, id string, ops []syncserver.EditOp, stdout, stderr io.Writer) error {
	st, err := openDataDir(f, stderr)
	if err != nil {
		return err
	}
	defer closeDataDir(st, f, stderr)
	replica := crdt.ReplicaID(uuid.New())
	d, meta, err := loadStoredDocAs(ctx, st, id, replica)
	switch {
	case err == nil:
	case errors.Is(err, errNoDoc):
		d = crdt.NewDoc(replica, toolClock(), crdt.Options{})
	default:
		return err
	}
	before := d.Version()
	if err := syncserver.ApplyEditOps(d, ops); err != nil {
		return fmt.Errorf("%w (nothing written)", err)
	}
	if err := storeDelta(ctx, st, id, d, d.ChangesSince(before), meta); err != nil {
		return err
	}
	return writeJSON(stdout, syncserver.OpsResult{Status: "ok", Version: versionMap(d.Version())}, false)
}

// storeDelta appends delta, changes d already holds, to id's log with d's
// version, then writes a fresh snapshot if the log has outgrown the old one
// (as the server does).
func storeDelta(ctx context.Context, st *storage.Store, id string, d *crdt.Doc, delta []crdt.Change, meta storage.DocMeta) error {
	v := d.Version()
	logBytes, err := st.AppendVersion(ctx, id, codec.EncodeChanges(delta), v)
	if err != nil {
		return err
	}
	if logBytes > meta.SnapshotBytes {
		return st.WriteSnapshotVersion(ctx, id, codec.EncodeSnapshot(d), v)
	}
	return nil
}

func versionMap(v crdt.VersionVector) map[string]uint64 {
	out := make(map[string]uint64, len(v))
	for r, s := range v {
		out[r.String()] = s
	}
	return out
}

// docEditRemote posts ops to a running server (POST /v1/docs/{id}/ops) and
// prints its answer, the same JSON as docEditLocal's.
func docEditRemote(ctx context.Context, f docFlags, id string, ops []syncserver.EditOp, stdout io.Writer) error {
	c, err := newRemoteDocs(f)
	if err != nil {
		return err
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.docURL(id, "/ops"), strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", syncserver.OpsContentType)
	resp, _, err := c.do(req)
	if err != nil {
		return err
	}
	var out syncserver.OpsResult
	if err := json.Unmarshal(resp, &out); err != nil {
		return fmt.Errorf("the server's answer: %w", err)
	}
	return writeJSON(stdout, out, false)
}

// newRemoteDocs checks --server and returns a client of its API.
func newRemoteDocs(f docFlags) (*remoteDocs, error) {
	base, err := url.Parse(strings.TrimSuffix(f.server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--server %q: want an http(s) URL such as http://127.0.0.1:7420", f.server)
	}
	return &remoteDocs{base: base.String(), token: f.token, hc: &http.Client{}}, nil
}
