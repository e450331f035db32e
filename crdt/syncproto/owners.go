package syncproto

import "slices"

// ownerEntryBytes is the encoded size of one claim: its replica as a bin8
// of 16 bytes and its principal as a msgpack string.
func ownerEntryBytes(principal string) int {
	n := len(principal)
	switch {
	case n < 32:
		n++
	case n < 1<<8:
		n += 2
	default:
		n += 3
	}
	return 2 + 16 + n
}

// SplitOwners turns claims about doc's replicas into Owners messages: in
// replica order, one claim per replica (the first given wins), at most
// MaxOwnerEntries claims and at most maxBytes encoded per message (a
// message has at least one claim, whatever maxBytes). It returns nil when
// there are no claims. owners is not modified.
func SplitOwners(doc string, owners []Owner, maxBytes int) []*Owners {
	if len(owners) == 0 {
		return nil
	}
	sorted := slices.Clone(owners)
	slices.SortStableFunc(sorted, func(a, b Owner) int { return a.Replica.Compare(b.Replica) })
	sorted = slices.CompactFunc(sorted, func(a, b Owner) bool { return a.Replica == b.Replica })
	// array(4), the tag, the doc (str16 at most) and two array16 headers.
	overhead := 1 + 1 + 3 + len(doc) + 3 + 3
	var out []*Owners
	cur, size := []Owner(nil), overhead
	for _, o := range sorted {
		n := ownerEntryBytes(o.Principal)
		if len(cur) > 0 && (len(cur) == MaxOwnerEntries || size+n > maxBytes) {
			out = append(out, &Owners{Doc: doc, Owners: cur})
			cur, size = nil, overhead
		}
		cur = append(cur, o)
		size += n
	}
	return append(out, &Owners{Doc: doc, Owners: cur})
}
