package syncserver

import (
	"fmt"
	"testing"
)

// TestSubscriptionsSmallAndLarge: the slice of a few rooms and the map it
// becomes past subsInline answer alike.
func TestSubscriptionsSmallAndLarge(t *testing.T) {
	var s subscriptions
	want := map[string]*room{}
	check := func(stage string) {
		t.Helper()
		if s.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", stage, s.len(), len(want))
		}
		for doc, r := range want {
			if got, ok := s.get(doc); !ok || got != r {
				t.Fatalf("%s: get(%q) = %p, %v; want %p", stage, doc, got, ok, r)
			}
		}
		if _, ok := s.get("absent"); ok {
			t.Fatalf("%s: found a document never added", stage)
		}
		seen := 0
		for doc, r := range s.all() {
			if want[doc] != r {
				t.Fatalf("%s: all yields %q -> %p, want %p", stage, doc, r, want[doc])
			}
			seen++
		}
		if seen != len(want) {
			t.Fatalf("%s: all yields %d rooms, want %d", stage, seen, len(want))
		}
	}
	for i := range 3 * subsInline {
		r := &room{id: fmt.Sprint("doc", i)}
		s.add(r)
		want[r.id] = r
		check(fmt.Sprintf("after adding %d", i+1))
		if i == subsInline-1 && s.many != nil {
			t.Fatalf("a map after only %d rooms", i+1)
		}
	}
	if s.many == nil {
		t.Fatalf("still a slice after %d rooms", 3*subsInline)
	}
	for i := 0; i < 3*subsInline; i += 2 {
		doc := fmt.Sprint("doc", i)
		s.remove(doc)
		delete(want, doc)
		check("after removing " + doc)
	}
	var few subscriptions
	for i := range 3 {
		few.add(&room{id: fmt.Sprint("d", i)})
	}
	few.remove("d1")
	if _, ok := few.get("d1"); ok || few.len() != 2 {
		t.Fatalf("remove from the slice: len %d", few.len())
	}
	if r, ok := few.get("d2"); !ok || r.id != "d2" {
		t.Fatal("remove from the slice lost the room after it")
	}
}
