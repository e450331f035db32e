package traces

import (
	"compress/gzip"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Patch deletes Del runes at Pos, then inserts Ins there.
type Patch struct {
	Pos int
	Del int
	Ins string
}

func (p *Patch) UnmarshalJSON(b []byte) error {
	var raw [3]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if err := json.Unmarshal(raw[0], &p.Pos); err != nil {
		return err
	}
	if err := json.Unmarshal(raw[1], &p.Del); err != nil {
		return err
	}
	return json.Unmarshal(raw[2], &p.Ins)
}

// Txn is one transaction of a trace.
type Txn struct {
	Time    string  `json:"time"`
	Patches []Patch `json:"patches"`
	// Concurrent traces only.
	Parents []int `json:"parents"`
	Agent   int   `json:"agent"`
}

// WallMillis parses Time (RFC 3339); 0 if it does not parse.
func (t *Txn) WallMillis() int64 {
	tm, err := time.Parse(time.RFC3339Nano, t.Time)
	if err != nil {
		return 0
	}
	return tm.UnixMilli()
}

// Trace is a whole editing trace.
type Trace struct {
	Name         string
	Kind         string `json:"kind"`
	StartContent string `json:"startContent"`
	EndContent   string `json:"endContent"`
	NumAgents    int    `json:"numAgents"`
	Txns         []Txn  `json:"txns"`
}

// Patches returns the number of patches in the trace.
func (t *Trace) Patches() int {
	n := 0
	for i := range t.Txns {
		n += len(t.Txns[i].Patches)
	}
	return n
}

// data holds the traces and their README (licence and attribution).
//
//go:embed data
var data embed.FS

// ErrUnknown is returned by Load for a name that is neither a file nor an
// embedded trace.
var ErrUnknown = errors.New("traces: no such trace")

// Names lists the embedded traces, e.g. "automerge-paper.json.gz" and
// "concurrent/clownschool.json.gz", in lexical order.
func Names() []string {
	var names []string
	// WalkDir over an embed.FS fails only on a broken embed, which the
	// compiler rules out.
	_ = fs.WalkDir(data, "data", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json.gz") {
			names = append(names, strings.TrimPrefix(p, "data/"))
		}
		return err
	})
	return names
}

// Load reads a gzipped JSON trace: name is a file on disk if one exists
// there, else the name of an embedded trace (see Names).
func Load(name string) (*Trace, error) {
	var r io.Reader
	f, err := os.Open(name)
	switch {
	case err == nil:
		defer f.Close()
		r = f
	case errors.Is(err, fs.ErrNotExist) && !filepath.IsAbs(name):
		ef, eerr := data.Open(path.Join("data", filepath.ToSlash(name)))
		if eerr != nil {
			return nil, fmt.Errorf("%w: %q is neither a file nor one of the embedded traces (%s)", ErrUnknown, name, strings.Join(Names(), ", "))
		}
		defer ef.Close()
		r = ef
	default:
		return nil, err
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("traces: %s: %w", name, err)
	}
	var t Trace
	if err := json.NewDecoder(zr).Decode(&t); err != nil {
		return nil, fmt.Errorf("traces: %s: %w", name, err)
	}
	t.Name = path.Base(filepath.ToSlash(name))
	return &t, nil
}

// Sequential lists the embedded sequential traces.
var Sequential = []string{
	"automerge-paper.json.gz",
	"seph-blog1.json.gz",
	"friendsforever_flat.json.gz",
	"clownschool_flat.json.gz",
	"ascii_only/seph-blog1.json.gz",
}
