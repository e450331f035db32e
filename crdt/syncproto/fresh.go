package syncproto

import "github.com/weftsync/weft/crdt"

// AppliedDoc is what Fresh needs from a document; *crdt.Doc implements it.
type AppliedDoc interface {
	Pending() int
	Rejected() int
	ChangesSince(v crdt.VersionVector) []crdt.Change
}

// Fresh returns exactly what applying chs to doc added (changes released
// from the pending buffer included, duplicates excluded), and raises
// version, the caller's mirror of doc's version vector before that Apply,
// to doc's version after it. pending and rejected are doc.Pending() and
// doc.Rejected() from before the Apply.
//
// NB: almost always that is chs itself: every change lies past the mirror
// and nothing was or is pending. Checking that costs a map lookup per
// change, where ChangesSince (the fallback) walks every replica of the
// document and copies, and keeping a mirror spares a copy of the version
// per message. A change that Apply parked in the pending buffer and then
// dropped as invalid shows in Rejected.
//
// The result may be chs (shared, not copied) or a new slice.
func Fresh(doc AppliedDoc, version crdt.VersionVector, chs []crdt.Change, pending, rejected int) []crdt.Change {
	if pending == 0 && doc.Pending() == 0 && doc.Rejected() == rejected {
		if len(chs) == 1 {
			// A delivery: nothing to undo when it is not fresh.
			if ch := &chs[0]; ch.Seq > version[ch.Replica] {
				version[ch.Replica] = ch.End()
				return chs
			}
		} else if advanceFresh(version, chs) {
			return chs
		}
	}
	applied := doc.ChangesSince(version)
	advance(version, applied)
	return applied
}

// advanceFresh raises version over chs and reports true if every change
// lies past it (as it is raised); otherwise it leaves version as it was.
func advanceFresh(version crdt.VersionVector, chs []crdt.Change) bool {
	// undo restores version if a duplicate turns up half-way.
	type prev struct {
		r crdt.ReplicaID
		s uint64
	}
	var undoBuf [8]prev
	undo := undoBuf[:0]
	for i := range chs {
		ch := &chs[i]
		s := version[ch.Replica]
		if ch.Seq <= s {
			for i := len(undo) - 1; i >= 0; i-- {
				version[undo[i].r] = undo[i].s
			}
			return false
		}
		undo = append(undo, prev{ch.Replica, s})
		version[ch.Replica] = ch.End()
	}
	return true
}
