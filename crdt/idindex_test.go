package crdt

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"unsafe"
)

// The index against a plain sorted model: puts in order (typing, merges)
// and at random places (cuts), replacements, removals; floor, max and
// ascend must agree with the model after every step, across chunk
// splits and chunks emptied.
func TestIDIndexMatchesModel(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewPCG(seed, 3))
		var x idIndex
		model := map[uint32]uint32{} // start → entry number
		next := uint32(0)            // the next entry number
		top := uint32(0)             // starts put in order rise from here
		for step := 0; step < 2000; step++ {
			switch op := rng.IntN(10); {
			case op < 5: // in order
				top += 1 + uint32(rng.IntN(3))
				k := next
				next++
				if _, rep := x.put(top, k); rep {
					t.Fatalf("seed %d: put of a new start %d replaced an entry", seed, top)
				}
				model[top] = k
			case op < 8: // anywhere up to the top, maybe replacing
				s := uint32(rng.IntN(int(top) + 1))
				k := next
				next++
				old, rep := x.put(s, k)
				want, had := model[s]
				if rep != had || (had && old != want) {
					t.Fatalf("seed %d: put(%d) replaced (%d, %v), want (%d, %v)", seed, s, old, rep, want, had)
				}
				model[s] = k
			default:
				s := uint32(rng.IntN(int(top) + 2))
				x.remove(s)
				delete(model, s)
			}
			starts := make([]uint32, 0, len(model))
			for s := range model {
				starts = append(starts, s)
			}
			slices.Sort(starts)
			// floor at a few places
			for range 4 {
				q := uint32(rng.IntN(int(top) + 3))
				i, _ := slices.BinarySearch(starts, q+1) // first start > q
				k, ok := x.floor(q)
				if (i > 0) != ok || ok && k != model[starts[i-1]] {
					t.Fatalf("seed %d step %d: floor(%d) = (%d, %v)", seed, step, q, k, ok)
				}
			}
			k, ok := x.max()
			if (len(starts) > 0) != ok || ok && k != model[starts[len(starts)-1]] {
				t.Fatalf("seed %d step %d: max = (%d, %v)", seed, step, k, ok)
			}
			if step%97 == 0 {
				var got []uint32
				x.ascend(0, 1<<32-1, func(k uint32) bool {
					got = append(got, k)
					return true
				})
				want := make([]uint32, len(starts))
				for i, s := range starts {
					want[i] = model[s]
				}
				if !slices.Equal(got, want) {
					t.Fatalf("seed %d step %d: ascend = %v, want %v", seed, step, got, want)
				}
				for ci, ch := range x.chunks {
					if len(ch.starts) == 0 || len(ch.starts) > idChunk || len(ch.starts) != len(ch.ents) || x.firsts[ci] != ch.starts[0] {
						t.Fatalf("seed %d step %d: chunk %d malformed", seed, step, ci)
					}
				}
			}
		}
	}
}

// Index entries and chunks hold no pointers, so that the collector does
// not scan them (a document's id index was half of what it scanned).
func TestIDIndexHoldsNoPointers(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[idEntry](), reflect.TypeFor[[entrySlab]idEntry](), reflect.TypeFor[uint32]()} {
		if hasPointers(typ) {
			t.Errorf("%v holds pointers", typ)
		}
	}
	if e := reflect.TypeFor[idChunkT]().Field(1).Type.Elem(); hasPointers(e) {
		t.Errorf("a chunk's entries are %v, which hold pointers", e)
	}
}

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Chan, reflect.Func, reflect.Interface, reflect.String, reflect.UnsafePointer:
		return true
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

// An entry packs its replica with its item (see idEntry.ra): each reads
// back as written, setAt leaves the replica alone, and a replica index
// too large for the bits matches no replica, so that an item's hint to
// such an entry is not taken (its items are looked up instead).
func TestEntryReplicaAndItem(t *testing.T) {
	for _, r := range []uint32{0, 1, 77, noRA - 1, noRA, noRA + 1, 1<<32 - 1} {
		for _, at := range []int{0, 1, leafCap + 1, 255} {
			e := idEntry{start: 5, end: 9, leaf: 3, ra: packRA(r, at)}
			if e.at() != at {
				t.Errorf("r %d: at %d reads back %d", r, at, e.at())
			}
			if want := r < noRA; e.of(r) != want {
				t.Errorf("r %d at %d: of(r) = %v, want %v", r, at, e.of(r), want)
			}
			if e.of(r+1) || (r > 0 && e.of(r-1)) {
				t.Errorf("r %d: entry is also of a neighbouring replica", r)
			}
			e.setAt(leafCap)
			if e.at() != leafCap || e.of(r) != (r < noRA) {
				t.Errorf("r %d: after setAt, at %d, of(r) %v", r, e.at(), e.of(r))
			}
		}
	}
	if unsafe.Sizeof(idEntry{}) != 16 {
		t.Errorf("idEntry is %d bytes, want 16", unsafe.Sizeof(idEntry{}))
	}
}
