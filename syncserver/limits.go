package syncserver

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
)

// userDocs counts the documents each principal holds open (subscriptions
// and event streams), for Options.MaxDocsPerUser.
type userDocs struct {
	sync.Mutex
	m map[string]int // guarded by the mutex; users at 0 are deleted
}

// open counts one more document for user, unless it holds max already.
func (u *userDocs) open(user string, max int) bool {
	u.Lock()
	defer u.Unlock()
	if u.m[user] >= max {
		return false
	}
	u.m[user]++
	return true
}

func (u *userDocs) close(user string) {
	u.Lock()
	defer u.Unlock()
	if u.m[user]--; u.m[user] <= 0 {
		delete(u.m, user)
	}
}

// admitBatch checks what a change batch's header and columns declare
// (codec.Inspect, which allocates nothing per change) before anyone pays
// for decoding it: a batch that declares more ops than the rate limit's
// burst could never pass, and one whose register value or decoded size
// exceeds a limit would be refused after decoding anyway. It returns the
// declared ops (what the rate limit charges before decoding), or the
// status and message of a refusal.
func (s *Server) admitBatch(data []byte) (ops int, st syncproto.Status, msg string) {
	info, err := codec.Inspect(data)
	o := &s.opts
	switch {
	case err != nil:
		return 0, syncproto.StatusInvalid, err.Error()
	case info.Ops > o.ChangesBurst:
		s.m.limitHits.WithLabelValues("changes_rate").Inc()
		return 0, syncproto.StatusTooLarge, fmt.Sprintf("the batch declares %d operations, more than the %d that may be sent at once; split it", info.Ops, o.ChangesBurst)
	case int64(info.MaxValue) > o.MaxValueBytes:
		s.m.limitHits.WithLabelValues("value_size").Inc()
		return 0, syncproto.StatusTooLarge, fmt.Sprintf("a register value of %d bytes exceeds the limit of %d", info.MaxValue, o.MaxValueBytes)
	case int64(info.TextBytes)+int64(info.ValueBytes) > o.MaxDocBytes:
		s.m.limitHits.WithLabelValues("doc_size").Inc()
		return 0, syncproto.StatusTooLarge, fmt.Sprintf("the batch holds %d bytes of text and values, more than a document may (%d)", info.TextBytes+info.ValueBytes, o.MaxDocBytes)
	}
	return info.Ops, syncproto.StatusOK, ""
}

// The decoded sizes a room charges an update (see Options.MaxDocBytes):
// what its changes take in memory, as crdt's pending buffer holds them. A
// compressed or run-length coded batch can be thousands of times larger
// decoded than on the wire, so limits are never charged on wire bytes.
const (
	changeMem = int64(unsafe.Sizeof(crdt.Change{}))
	opMem     = int64(unsafe.Sizeof(crdt.Op{}))
)

// decodedSize returns what changes take in memory and their largest
// register value.
func decodedSize(changes []crdt.Change) (size, maxValue int64) {
	for i := range changes {
		size += changeMem
		for j := range changes[i].Ops {
			op := &changes[i].Ops[j]
			size += opMem + int64(len(op.Text)+len(op.Value))
			maxValue = max(maxValue, int64(len(op.Value)))
		}
	}
	return size, maxValue
}

// waitingSize bounds from above the decoded size of the changes that
// applying changes to a document of version have would leave in its
// pending buffer: every change that, taken in order, is not the next of
// its replica or refers to an id neither the document nor an earlier
// change of the batch holds. (crdt.Doc.Apply may apply more of them, by
// taking the batch out of order; never fewer.)
func waitingSize(have crdt.VersionVector, changes []crdt.Change) int64 {
	next := make(map[crdt.ReplicaID]uint64) // replica → first seq not held
	nextOf := func(r crdt.ReplicaID) uint64 {
		if n, ok := next[r]; ok {
			return n
		}
		return have[r] + 1
	}
	var size int64
	for i := range changes {
		c := &changes[i]
		n := nextOf(c.Replica)
		end := c.Seq + c.Len()
		if end <= n {
			continue // a duplicate
		}
		ready := c.Seq <= n
		cur := c.Seq // the seq of the op being looked at
		known := func(r crdt.ReplicaID, lo, hi uint64) bool {
			if r == c.Replica {
				return hi < max(n, cur) // held, or an earlier op of c
			}
			return hi < nextOf(r)
		}
		for j := 0; ready && j < len(c.Ops); j++ {
			op := &c.Ops[j]
			switch op.Kind {
			case crdt.OpTextInsert:
				for _, id := range [2]crdt.ID{op.Left, op.Right} {
					if !id.IsZero() && !known(id.Replica, id.Seq, id.Seq) {
						ready = false
					}
				}
			case crdt.OpTextDelete:
				lo, hi := op.Target.Seq, op.Target.Seq+max(op.Count, 1)-1
				if op.Backward {
					lo, hi = op.Target.Seq-min(op.Target.Seq, max(op.Count, 1)-1), op.Target.Seq
				}
				if !op.Target.IsZero() && !known(op.Target.Replica, lo, hi) {
					ready = false
				}
			}
			cur += op.Len()
		}
		if ready {
			next[c.Replica] = end
			continue
		}
		size += changeMem
		for j := range c.Ops {
			size += opMem + int64(len(c.Ops[j].Text)+len(c.Ops[j].Value))
		}
	}
	return size
}
