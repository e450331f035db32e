package crdt

import "github.com/weftsync/weft/hlc"

// AtByReplay exposes the replaying At, the oracle for the state-cutting one.
func AtByReplay(d *Doc, t hlc.Timestamp) *Doc { return d.atByReplay(t) }

// AtByCut is At without its fallback, so tests see when cutting fails.
func AtByCut(d *Doc, t hlc.Timestamp) (*Doc, error) {
	return FromState(d.stateAt(t), d.replica, hlc.NewClock(func() int64 { return t.WallMillis() }, 0), d.opts)
}

// SetBitsFrom sets the batch size from which plans use bitsets, returning
// the old value: tests run the same batch through both paths.
func SetBitsFrom(n int) int { old := bitsFrom; bitsFrom = n; return old }

// PlanSteps plans changes for d as Apply does, without applying them, and
// returns how many times the planner looked at a change, over all passes.
func PlanSteps(d *Doc, changes []Change) (int, error) {
	p := d.newPlan()
	p.presize(len(changes))
	err := p.run(changes, false)
	return p.steps, err
}
