package bench

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

// ConcurrentResult is what `weft bench trace` reports for a concurrent
// trace (kind "concurrent"): a real multi-replica replay, then the time to
// merge the whole history into one fresh document, as the Eg-walker paper
// and the Yjs and Loro benchmarks measure it.
type ConcurrentResult struct {
	Trace   string `json:"trace"`
	Kind    string `json:"kind"` // "concurrent"
	Agents  int    `json:"agents"`
	Txns    int    `json:"txns"`
	Patches int    `json:"patches"`
	OK      bool   `json:"ok"`
	// ReplayMS is the whole simulated session: every agent's document
	// merging what its transaction's parents hold, then applying the
	// transaction as one local edit.
	ReplayMS float64 `json:"replay_ms"`
	// Merges counts the remote merges the replay made (changes pulled from
	// another agent before a local transaction).
	Merges int `json:"merges"`
	// HistoryBytes is the encoded change batch of the whole history
	// (codec.EncodeChanges of every change).
	HistoryBytes int `json:"history_bytes"`
	// MergeMS decodes that batch and applies it to a new, empty document:
	// every event of the trace merged into one replica.
	MergeMS float64 `json:"merge_ms"`
	// EncodedBytes and DecodeMS are the merged document's snapshot (full
	// history) and the time to load it.
	EncodedBytes int     `json:"encoded_bytes"`
	DecodeMS     float64 `json:"decode_ms"`
	Runs         int     `json:"runs"`
	Error        string  `json:"error,omitempty"`
}

// agentReplica is the replica id agent a of a concurrent trace edits as.
func agentReplica(a int) crdt.ReplicaID {
	return crdt.ReplicaID{0xaa, byte(a >> 8), byte(a), 15: 0x02}
}

// ReplayConcurrent replays a concurrent trace as the editors lived it: one
// document per agent. Before each transaction the agent's document merges
// exactly the changes the transaction's parents hold and it lacks, taken
// from the documents of the agents that made them (as a sync would carry
// them), then applies the transaction's patches as one local transaction at
// the trace's wall time. It returns one document holding every change.
//
// A transaction whose parents do not include its own agent's earlier
// changes (a fork within one agent) is refused with an error: a replica
// never forgets what it did.
func ReplayConcurrent(tr *traces.Trace, walls []int64) (*crdt.Doc, int, error) {
	if tr.NumAgents <= 0 {
		return nil, 0, fmt.Errorf("bench: concurrent trace %s has no agents", tr.Name)
	}
	type agent struct {
		wall *hlc.ManualWall
		doc  *crdt.Doc
	}
	agents := make([]agent, tr.NumAgents)
	byReplica := make(map[crdt.ReplicaID]*crdt.Doc, len(agents))
	for a := range agents {
		w := &hlc.ManualWall{}
		agents[a] = agent{wall: w, doc: crdt.NewDoc(agentReplica(a), hlc.NewClock(w.Read, 0), crdt.Options{})}
		byReplica[agentReplica(a)] = agents[a].doc
	}
	// versions[i] is what txn i's agent held right after txn i: the version
	// of the txn, which its children merge.
	versions := make([]crdt.VersionVector, len(tr.Txns))
	merges := 0
	for i := range tr.Txns {
		t := &tr.Txns[i]
		if t.Agent < 0 || t.Agent >= len(agents) {
			return nil, merges, fmt.Errorf("txn %d: agent %d out of range", i, t.Agent)
		}
		ag := &agents[t.Agent]
		want := crdt.VersionVector{}
		for _, p := range t.Parents {
			if p < 0 || p >= i {
				return nil, merges, fmt.Errorf("txn %d: parent %d is not an earlier txn", i, p)
			}
			want.Merge(versions[p])
		}
		have := ag.doc.Version()
		if !want.Covers(have) {
			return nil, merges, fmt.Errorf("txn %d: agent %d holds %v, more than its parents' %v", i, t.Agent, have, want)
		}
		if !have.Covers(want) {
			var pulled []crdt.Change
			for r, upto := range want {
				if have[r] >= upto {
					continue
				}
				src, ok := byReplica[r]
				if !ok {
					return nil, merges, fmt.Errorf("txn %d: its parents hold changes of unknown replica %v", i, r)
				}
				// Only r's own changes, from the document that made them.
				only := src.Version()
				only[r] = have[r]
				for c := range src.EachChangeSince(only) {
					if c.Replica == r && c.Seq <= upto {
						pulled = append(pulled, cloneChange(c))
					}
				}
			}
			if err := ag.doc.Apply(pulled...); err != nil {
				return nil, merges, fmt.Errorf("txn %d: merging %d changes: %w", i, len(pulled), err)
			}
			if got := ag.doc.Version(); !got.Equal(want) || ag.doc.Pending() != 0 {
				return nil, merges, fmt.Errorf("txn %d: after merging, agent %d holds %v (%d pending), want %v", i, t.Agent, got, ag.doc.Pending(), want)
			}
			merges++
		}
		ag.wall.Millis = walls[i]
		tx := ag.doc.Begin()
		for _, p := range t.Patches {
			if p.Del > 0 {
				if err := tx.Delete("body", p.Pos, p.Del); err != nil {
					return nil, merges, fmt.Errorf("txn %d: %w", i, err)
				}
			}
			if p.Ins != "" {
				if err := tx.Insert("body", p.Pos, p.Ins); err != nil {
					return nil, merges, fmt.Errorf("txn %d: %w", i, err)
				}
			}
		}
		if err := tx.Commit(); err != nil {
			return nil, merges, fmt.Errorf("txn %d: %w", i, err)
		}
		versions[i] = ag.doc.Version()
	}
	// Every agent's changes into agent 0's document.
	all := agents[0].doc
	var rest []crdt.Change
	for a := 1; a < len(agents); a++ {
		for c := range agents[a].doc.EachChangeSince(all.Version()) {
			rest = append(rest, cloneChange(c))
		}
	}
	if err := all.Apply(rest...); err != nil {
		return nil, merges, fmt.Errorf("final merge: %w", err)
	}
	if all.Pending() != 0 {
		return nil, merges, fmt.Errorf("final merge: %d changes pending", all.Pending())
	}
	return all, merges, nil
}

// cloneChange copies what EachChangeSince lends (its ops slice is reused).
func cloneChange(c *crdt.Change) crdt.Change {
	cc := *c
	cc.Ops = append([]crdt.Op(nil), c.Ops...)
	return cc
}

// RunConcurrentTrace replays a concurrent trace, checks the merged text
// against the trace's endContent, and measures merging the whole history
// into one fresh document and loading its snapshot.
func RunConcurrentTrace(tr *traces.Trace, opts TraceOptions) ConcurrentResult {
	if opts.Runs <= 0 {
		opts.Runs = 5
	}
	res := ConcurrentResult{Trace: tr.Name, Kind: "concurrent", Agents: tr.NumAgents, Txns: len(tr.Txns), Patches: tr.Patches(), Runs: opts.Runs}
	fail := func(err error) ConcurrentResult {
		res.OK = false
		res.Error = err.Error()
		return res
	}
	walls := wallsOf(tr)
	var d *crdt.Doc
	var replay []float64
	for run := 0; run <= opts.Runs; run++ {
		d = nil
		runtime.GC()
		start := time.Now()
		var err error
		d, res.Merges, err = ReplayConcurrent(tr, walls)
		el := time.Since(start)
		if err != nil {
			return fail(err)
		}
		if run > 0 {
			replay = append(replay, ms(el))
		}
	}
	res.ReplayMS = median(replay)
	res.OK = d.Text("body") == tr.EndContent
	if !res.OK {
		return fail(fmt.Errorf("replayed text (%d runes) differs from endContent (%d runes)", d.TextLen("body"), len([]rune(tr.EndContent))))
	}

	history := codec.EncodeChanges(d.ChangesSince(nil))
	res.HistoryBytes = len(history)
	var merge []float64
	for run := 0; run <= opts.Runs; run++ {
		runtime.GC()
		start := time.Now()
		m := crdt.NewDoc(crdt.ReplicaID{0xbb, 15: 2}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
		err := m.ApplySeq(codec.ChangeSeq(history))
		el := time.Since(start)
		if err != nil {
			return fail(fmt.Errorf("merging the history: %w", err))
		}
		if m.Text("body") != tr.EndContent {
			return fail(errors.New("the merged history's text differs from endContent"))
		}
		if run > 0 {
			merge = append(merge, ms(el))
		}
	}
	res.MergeMS = median(merge)

	snap := codec.EncodeSnapshot(d)
	res.EncodedBytes = len(snap)
	var dec []float64
	for run := 0; run <= opts.Runs; run++ {
		runtime.GC()
		start := time.Now()
		e, err := codec.DecodeSnapshot(snap, crdt.ReplicaID{0xbb, 15: 3}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
		el := time.Since(start)
		if err != nil {
			return fail(err)
		}
		if e.Text("body") != tr.EndContent {
			return fail(errors.New("the snapshot's text differs from endContent"))
		}
		if run > 0 {
			dec = append(dec, ms(el))
		}
	}
	res.DecodeMS = median(dec)
	return res
}
