package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/storage"
	"github.com/weftsync/weft/syncserver"
)

func init() {
	register(command{
		name:    "doc",
		summary: "inspect and move stored documents: ls, export, import, get",
		run:     runDoc,
	})
}

// snapshotMediaType is what `weft doc export --server` asks the server for.
const snapshotMediaType = "application/vnd.weft.snapshot"

// docStdin is where import reads; tests replace it.
var docStdin io.Reader = os.Stdin

// maxImportBytes bounds what `weft doc import` reads from stdin.
const maxImportBytes = 1 << 30

const docUsage = `Usage:
  weft doc ls     [--prefix P] [--json]   stored documents with their sizes
  weft doc get    ID [--at RFC3339]       the document as JSON
  weft doc edit   ID --field F --insert TEXT [--at N]   insert text (no --at: at the end)
  weft doc edit   ID --field F --delete N --at N        delete N characters
  weft doc edit   ID --field F --add N                  add to a counter
  weft doc edit   ID --field F --set JSON               set a register (text that is not JSON is a string)
  weft doc edit   ID --ops '[{"field":"body","insert":"hi","at":0}, ...]'   several at once (- reads stdin)
  weft doc export ID > FILE               snapshot bytes of ID (snapshot + log merged)
  weft doc import ID < FILE               merge a snapshot into ID; never overwrites

Each needs a source: --data DIR opens a data directory directly (refused while
a server holds it), --server URL goes through a running server's HTTP API
(with --token T unless the server runs --insecure). Positions count Unicode
characters (code points). Every flag may also be set as WEFT_<NAME> (e.g.
WEFT_DATA, WEFT_SERVER, WEFT_TOKEN); the command line wins.

Flags:
`

// docFlags are the flags every `weft doc` verb takes.
type docFlags struct {
	data, server, token, prefix, at string
	asJSON                          bool
	timeout                         time.Duration
	// edit
	field, insert, del, add, set, ops string
	given                             map[string]bool // flags set on the command line or from the environment
}

func runDoc(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("weft doc", stderr)
	var f docFlags
	fs.StringVar(&f.data, "data", "", "data directory of a stopped server")
	fs.StringVar(&f.server, "server", "", "base URL of a running server, e.g. http://127.0.0.1:7420")
	fs.StringVar(&f.token, "token", "", "access token for --server (Authorization: Bearer)")
	fs.StringVar(&f.prefix, "prefix", "", "ls: only ids starting with this")
	fs.StringVar(&f.at, "at", "", "get: the document as it was at this RFC 3339 time; edit: the character position of --insert or --delete")
	fs.StringVar(&f.field, "field", "", "edit: the field to change")
	fs.StringVar(&f.insert, "insert", "", "edit: text to insert into text field --field")
	fs.StringVar(&f.del, "delete", "", "edit: number of characters to delete from text field --field, from --at")
	fs.StringVar(&f.add, "add", "", "edit: amount (non-zero, may be negative) to add to counter field --field")
	fs.StringVar(&f.set, "set", "", "edit: value of register field --field: JSON, or else a string")
	fs.StringVar(&f.ops, "ops", "", "edit: a JSON array of ops (docs/PROTOCOL.md, POST /v1/docs/{id}/ops); - reads it from stdin")
	fs.BoolVar(&f.asJSON, "json", false, "ls: print JSON")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "bound on the whole operation")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), docUsage)
		printFlags(fs)
	}
	pos, code, done := parseAnywhere(fs, args, stderr)
	if done {
		return code
	}
	if len(pos) == 0 {
		fs.Usage()
		return 2
	}
	f.given = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.given[fl.Name] = true })
	verb, rest := pos[0], pos[1:]
	wantArgs := map[string]int{"ls": 0, "export": 1, "import": 1, "get": 1, "edit": 1}
	n, known := wantArgs[verb]
	if !known {
		fmt.Fprintf(stderr, "weft doc: unknown verb %q (want ls, get, edit, export or import)\n", verb)
		return 2
	}
	if len(rest) != n {
		fmt.Fprintf(stderr, "weft doc %s: want %d argument(s), got %d\n", verb, n, len(rest))
		return 2
	}
	if (f.data == "") == (f.server == "") {
		fmt.Fprintf(stderr, "weft doc %s: give exactly one of --data DIR or --server URL\n", verb)
		return 2
	}
	var ops []syncserver.EditOp
	if verb == "edit" {
		var err error
		if ops, err = editOps(f, docStdin); err != nil {
			fmt.Fprintf(stderr, "weft doc edit: %v\n", err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()

	var err error
	if verb == "edit" && f.data != "" {
		err = docEditLocal(ctx, f, rest[0], ops, stdout, stderr)
	} else if verb == "edit" {
		err = docEditRemote(ctx, f, rest[0], ops, stdout)
	} else if f.data != "" {
		err = docLocal(ctx, f, verb, rest, docStdin, stdout, stderr)
	} else {
		err = docRemote(ctx, f, verb, rest, docStdin, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "weft doc %s: %v\n", verb, err)
		return 1
	}
	return 0
}

// openDataDir opens the Pebble store of a stopped server, refusing a
// directory that does not exist (opening would create an empty store) or
// that a running server holds.
func openDataDir(f docFlags, stderr io.Writer) (*storage.Store, error) {
	if _, err := os.Stat(f.data); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	o := storage.DefaultOptions()
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := storage.Open(f.data, o)
	if errors.Is(err, storage.ErrLocked) {
		return nil, fmt.Errorf("%w\n(a running server owns it: use --server URL instead)", err)
	}
	return st, err
}

func closeDataDir(st *storage.Store, f docFlags, stderr io.Writer) {
	if err := st.Close(); err != nil {
		fmt.Fprintf(stderr, "weft doc: closing %s: %v\n", f.data, err)
	}
}

// docLocal runs a verb against a data directory.
func docLocal(ctx context.Context, f docFlags, verb string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	st, err := openDataDir(f, stderr)
	if err != nil {
		return err
	}
	defer closeDataDir(st, f, stderr)

	switch verb {
	case "ls":
		return docList(ctx, st, f, stdout)
	case "export":
		d, _, err := loadStoredDoc(ctx, st, args[0])
		if err != nil {
			return err
		}
		_, err = stdout.Write(codec.EncodeSnapshot(d))
		return err
	case "get":
		// The same JSON as GET /v1/docs/{id} (and so weft doc get
		// --server): the storage metadata is what doc ls shows.
		d, _, err := loadStoredDoc(ctx, st, args[0])
		if err != nil {
			return err
		}
		out := syncserver.NewDocJSON(args[0], d)
		if f.at != "" {
			t, err := time.Parse(time.RFC3339Nano, f.at)
			if err != nil {
				return fmt.Errorf("--at: want an RFC 3339 time: %w", err)
			}
			at := hlc.FromTime(t)
			out = syncserver.NewDocJSON(args[0], d.At(at))
			out.At = at.Time().Format(time.RFC3339Nano)
		}
		return writeJSON(stdout, out, true)
	case "import":
		return docImportLocal(ctx, st, args[0], stdin, stdout)
	}
	return fmt.Errorf("unknown verb %q", verb)
}

// toolReplica is the replica id the tool reads and imports documents as.
// It never edits as this id (weft doc edit uses a new random replica per
// run), so the id owns no operations; but a snapshot lists the replica that
// encoded it, so the id is fixed: exports are reproducible and repeated
// imports add at most this one entry to a replica table.
func toolReplica() crdt.ReplicaID { return toolReplicaID }

var toolReplicaID = crdt.ReplicaID(uuid.MustParse("7765667d-646f-4363-8d74-6f6f6c000001"))

// toolClock trusts the timestamps it sees (maxOffset 0): the tool reads
// stored history and admin-provided snapshots, not live network input.
func toolClock() *hlc.Clock { return hlc.NewClock(hlc.SystemWall, 0) }

var errNoDoc = errors.New("no such document in this data directory")

// loadStoredDoc rebuilds a document from its snapshot and log, as the
// tool's read-only replica.
func loadStoredDoc(ctx context.Context, st *storage.Store, id string) (*crdt.Doc, storage.DocMeta, error) {
	return loadStoredDocAs(ctx, st, id, toolReplica())
}

// loadStoredDocAs is loadStoredDoc as replica.
func loadStoredDocAs(ctx context.Context, st *storage.Store, id string, replica crdt.ReplicaID) (*crdt.Doc, storage.DocMeta, error) {
	meta, ok, err := st.Meta(ctx, id)
	if err != nil {
		return nil, meta, err
	}
	if !ok {
		return nil, meta, fmt.Errorf("%w: %q", errNoDoc, id)
	}
	snap, batches, err := st.Load(ctx, id)
	if err != nil {
		return nil, meta, err
	}
	d, err := replayStored(snap, batches, replica)
	if err != nil {
		return nil, meta, fmt.Errorf("document %q: %w", id, err)
	}
	return d, meta, nil
}

// replayStored applies the log over the snapshot, as the server does on load.
func replayStored(snap []byte, batches [][]byte, replica crdt.ReplicaID) (*crdt.Doc, error) {
	var d *crdt.Doc
	if snap != nil {
		var err error
		if d, err = codec.DecodeSnapshot(snap, replica, toolClock(), crdt.Options{}); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	} else {
		d = crdt.NewDoc(replica, toolClock(), crdt.Options{})
	}
	for i, b := range batches {
		if err := d.ApplyTrusted(codec.ChangeSeq(b)); err != nil {
			return nil, fmt.Errorf("log batch %d: %w", i, err)
		}
	}
	if n := d.Pending(); n > 0 {
		return nil, fmt.Errorf("%d stored changes wait for dependencies the store lacks", n)
	}
	return d, nil
}

// docImportLocal merges a snapshot from stdin into a stored document: the
// changes the store lacks are appended as one batch, then a fresh snapshot
// is written if the log has outgrown the old one. Nothing stored is ever
// replaced by the input.
func docImportLocal(ctx context.Context, st *storage.Store, id string, stdin io.Reader, stdout io.Writer) error {
	incoming, err := readSnapshot(stdin)
	if err != nil {
		return err
	}
	existing, meta, err := loadStoredDoc(ctx, st, id)
	switch {
	case err == nil:
	case errors.Is(err, errNoDoc):
		existing = crdt.NewDoc(toolReplica(), toolClock(), crdt.Options{})
	default:
		return err
	}
	delta := incoming.ChangesSince(existing.Version())
	if len(delta) == 0 {
		fmt.Fprintf(stdout, "%s: already has everything in the input\n", id)
		return nil
	}
	if err := existing.Apply(delta...); err != nil {
		return fmt.Errorf("merging into %q: %w (nothing written)", id, err)
	}
	if n := existing.Pending(); n > 0 {
		return fmt.Errorf("merging into %q: %d changes lack dependencies (nothing written)", id, n)
	}
	if err := storeDelta(ctx, st, id, existing, delta, meta); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: merged %d change(s); version %s\n", id, len(delta), existing.Version())
	return nil
}

func readSnapshot(r io.Reader) (*crdt.Doc, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxImportBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading stdin: %w", err)
	}
	if len(data) > maxImportBytes {
		return nil, fmt.Errorf("input exceeds %d bytes", maxImportBytes)
	}
	if len(data) == 0 {
		return nil, errors.New("empty input: want snapshot bytes (weft doc export) on stdin")
	}
	d, err := codec.DecodeSnapshot(data, toolReplica(), toolClock(), crdt.Options{})
	if err != nil {
		return nil, fmt.Errorf("input is not a weft snapshot: %w", err)
	}
	return d, nil
}

func docList(ctx context.Context, st *storage.Store, f docFlags, stdout io.Writer) error {
	infos, err := servedStore{st}.ListDocInfo(ctx, f.prefix, 0)
	if err != nil {
		return err
	}
	return printDocList(stdout, f.asJSON, infos)
}

// printDocList prints what weft doc ls shows, from a data directory or a
// server alike: a table, or with --json the syncserver.DocInfo array.
func printDocList(stdout io.Writer, asJSON bool, infos []syncserver.DocInfo) error {
	if asJSON {
		if infos == nil {
			infos = []syncserver.DocInfo{}
		}
		return writeJSON(stdout, infos, true)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSNAPSHOT\tLOG\tBATCHES\tUPDATED")
	for _, m := range infos {
		updated := m.Updated
		if t, err := time.Parse(time.RFC3339Nano, m.Updated); err == nil {
			updated = t.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", m.ID, m.SnapshotBytes, m.LogBytes, m.Batches, updated)
	}
	return tw.Flush()
}

// docRemote runs a verb against a running server's HTTP API.
func docRemote(ctx context.Context, f docFlags, verb string, args []string, stdin io.Reader, stdout, _ io.Writer) error {
	c, err := newRemoteDocs(f)
	if err != nil {
		return err
	}
	switch verb {
	case "ls":
		// The server lists the stored documents the token may read, with
		// what its store knows of each (as --data shows).
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/docs?prefix="+url.QueryEscape(f.prefix), nil)
		if err != nil {
			return err
		}
		body, _, err := c.do(req)
		if err != nil {
			return err
		}
		var list syncserver.DocList
		if err := json.Unmarshal(body, &list); err != nil {
			return fmt.Errorf("the server's document list: %w", err)
		}
		if len(list.Info) != len(list.Docs) {
			// A store that cannot describe its documents: ids only.
			list.Info = make([]syncserver.DocInfo, len(list.Docs))
			for i, id := range list.Docs {
				list.Info[i] = syncserver.DocInfo{ID: id}
			}
		}
		return printDocList(stdout, f.asJSON, list.Info)
	case "get":
		body, err := c.get(ctx, args[0], f.at, "application/json")
		if err != nil {
			return err
		}
		var out json.RawMessage = bytes.TrimSpace(body)
		var pretty bytes.Buffer
		if json.Indent(&pretty, out, "", "  ") != nil {
			return fmt.Errorf("server sent invalid JSON: %.200q", body)
		}
		pretty.WriteByte('\n')
		_, err = stdout.Write(pretty.Bytes())
		return err
	case "export":
		body, ctype, err := c.getWithType(ctx, args[0], "", snapshotMediaType)
		if err != nil {
			return err
		}
		if ctype != snapshotMediaType {
			return fmt.Errorf("the server answered %q, not snapshot bytes (%s): it does not support export; stop it and use --data", ctype, snapshotMediaType)
		}
		_, err = stdout.Write(body)
		return err
	case "import":
		incoming, err := readSnapshot(stdin)
		if err != nil {
			return err
		}
		// Send only what the server lacks; it merges (duplicates are no-ops).
		have := crdt.VersionVector{}
		body, err := c.get(ctx, args[0], "", "application/json")
		var nf *httpStatusError
		switch {
		case errors.As(err, &nf) && nf.code == http.StatusNotFound:
		case err != nil:
			return err
		default:
			var cur syncserver.DocJSON
			if err := json.Unmarshal(body, &cur); err != nil {
				return fmt.Errorf("server sent invalid JSON: %w", err)
			}
			for r, s := range cur.Version {
				id, err := crdt.ParseReplicaID(r)
				if err != nil {
					return fmt.Errorf("server version: %w", err)
				}
				have[id] = s
			}
		}
		delta := incoming.ChangesSince(have)
		if len(delta) == 0 {
			fmt.Fprintf(stdout, "%s: already has everything in the input\n", args[0])
			return nil
		}
		// Several POSTs, in causal order, each under the server's frame
		// limit and declaring no more ops than any server's rate-limit
		// burst admits (HTTP has no welcome to announce it); each is acked
		// durable before the next goes.
		chunks := chunkChanges(delta, maxPostBytes, crdt.MaxChangeOps)
		for i, ch := range chunks {
			if err := c.postChanges(ctx, args[0], codec.EncodeChanges(ch)); err != nil {
				return fmt.Errorf("request %d of %d: %w", i+1, len(chunks), err)
			}
		}
		fmt.Fprintf(stdout, "%s: merged %d change(s) (acknowledged durable by the server)\n", args[0], len(delta))
		return nil
	}
	return fmt.Errorf("unknown verb %q", verb)
}

// maxPostBytes bounds one POST of changes, under the server's default
// frame limit (1 MiB).
const maxPostBytes = 512 << 10

// chunkChanges splits changes, keeping their order, into runs whose
// separately encoded sizes sum to at most limit (a change larger than
// limit goes alone; the server then answers 413 with a clear message).
// The sum over-estimates a run's encoding, which shares its tables.
//
// maxOps bounds the ops of a run (a batch header's N, what a server's rate
// limit charges before decoding): a server's burst is never below
// crdt.MaxChangeOps, so runs of at most that many ops are never refused as
// too_large.
func chunkChanges(changes []crdt.Change, limit, maxOps int) [][]crdt.Change {
	var out [][]crdt.Change
	start, size, ops := 0, 0, 0
	for i := range changes {
		n := len(codec.EncodeChanges(changes[i : i+1]))
		o := len(changes[i].Ops)
		if i > start && (size+n > limit || ops+o > maxOps) {
			out = append(out, changes[start:i])
			start, size, ops = i, 0, 0
		}
		size += n
		ops += o
	}
	if start < len(changes) {
		out = append(out, changes[start:])
	}
	return out
}

// remoteDocs is a small client of the server's /v1/docs API.
type remoteDocs struct {
	base, token string
	hc          *http.Client
}

type httpStatusError struct {
	code       int
	msg        string
	retryAfter string // the Retry-After header, if any
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("server answered %d: %s", e.code, e.msg) }

// docURL escapes the id as one path segment ('/' becomes %2F), which the
// server's router unescapes.
func (c *remoteDocs) docURL(id, suffix string) string {
	return c.base + "/v1/docs/" + url.PathEscape(id) + suffix
}

func (c *remoteDocs) do(req *http.Request) ([]byte, string, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxImportBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, "", &httpStatusError{resp.StatusCode, strings.TrimSpace(string(body)), resp.Header.Get("Retry-After")}
	}
	return body, resp.Header.Get("Content-Type"), nil
}

func (c *remoteDocs) getWithType(ctx context.Context, id, at, accept string) ([]byte, string, error) {
	u := c.docURL(id, "")
	if at != "" {
		u += "?at=" + url.QueryEscape(at)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", accept)
	body, ctype, err := c.do(req)
	if i := strings.IndexByte(ctype, ';'); i >= 0 {
		ctype = strings.TrimSpace(ctype[:i])
	}
	return body, ctype, err
}

func (c *remoteDocs) get(ctx context.Context, id, at, accept string) ([]byte, error) {
	body, _, err := c.getWithType(ctx, id, at, accept)
	return body, err
}

// maxRateRetries bounds how often one POST is resent after 429.
const maxRateRetries = 120

// postChanges posts one batch; over the server's rate limit (429) it waits
// as Retry-After says and sends it again (a batch refused as rate_limited
// was not applied; applying one twice would be harmless anyway).
func (c *remoteDocs) postChanges(ctx context.Context, id string, batch []byte) error {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.docURL(id, "/changes"), bytes.NewReader(batch))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", syncserver.ChangesContentType)
		_, _, err = c.do(req)
		var se *httpStatusError
		if !errors.As(err, &se) || se.code != http.StatusTooManyRequests || attempt == maxRateRetries {
			return err
		}
		wait := time.Second
		if s, perr := strconv.Atoi(se.retryAfter); perr == nil && s > 0 {
			wait = time.Duration(min(s, 60)) * time.Second
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
	}
}
