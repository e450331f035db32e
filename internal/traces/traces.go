package traces

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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

// Dir returns the traces directory: $WEFT_TRACES, else ../shared/traces
// relative to the repository root.
func Dir() string {
	if d := os.Getenv("WEFT_TRACES"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "traces")
}

// Load reads a gzipped JSON trace; a relative name is looked up in Dir().
func Load(name string) (*Trace, error) {
	path := name
	if !filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			path = filepath.Join(Dir(), name)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("traces: %s: %w", path, err)
	}
	var t Trace
	if err := json.NewDecoder(zr).Decode(&t); err != nil {
		return nil, fmt.Errorf("traces: %s: %w", path, err)
	}
	t.Name = filepath.Base(path)
	return &t, nil
}

// Sequential lists the sequential traces, relative to Dir().
var Sequential = []string{
	"automerge-paper.json.gz",
	"seph-blog1.json.gz",
	"friendsforever_flat.json.gz",
	"clownschool_flat.json.gz",
	"ascii_only/seph-blog1.json.gz",
}
