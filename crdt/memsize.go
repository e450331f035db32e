package crdt

import "unsafe"

// MemSize estimates the bytes of memory the document holds: its content,
// logs, text leaves, id indexes and pending changes. It is an estimate for
// memory budgets (it counts capacities, not allocator overhead) and costs
// time proportional to the number of leaves, not characters.
func (d *Doc) MemSize() int64 {
	n := int64(cap(d.content))
	n += int64(cap(d.replicas)) * int64(unsafe.Sizeof(ReplicaID{}))
	for r := range d.logs {
		n += int64(cap(d.logs[r].spans))*int64(unsafe.Sizeof(span{})) +
			int64(cap(d.logs[r].times))*int64(unsafe.Sizeof(timeRun{}))
	}
	for _, f := range d.fields {
		n += int64(unsafe.Sizeof(field{})) + int64(len(f.Name))
		if t := f.text; t != nil {
			for l := range t.all {
				n += int64(unsafe.Sizeof(leaf{})) + int64(cap(l.items))*int64(unsafe.Sizeof(item{}))
			}
			n += int64(cap(t.lens.t))*int64(unsafe.Sizeof(lens{})) + int64(cap(t.leaves))*8 + int64(cap(t.byNum))*8
			n += int64(len(t.spare))*int64(unsafe.Sizeof(t.spare[0])) + int64(len(t.spareLeaves))*int64(unsafe.Sizeof(leaf{}))
			for _, b := range t.chars {
				n += int64(cap(b)) * 8
			}
			for _, x := range t.ids {
				if x == nil {
					continue
				}
				n += int64(cap(x.chunks))*int64(unsafe.Sizeof(idChunkT{})) + int64(cap(x.firsts))*4
				for _, ch := range x.chunks {
					n += int64(cap(ch.ents))*4 + int64(cap(ch.starts))*4 + int64(len(ch.ents))*int64(unsafe.Sizeof(idEntry{}))
				}
			}
		}
	}
	for _, c := range d.pending {
		n += int64(unsafe.Sizeof(c)) + int64(len(c.Ops))*int64(unsafe.Sizeof(Op{}))
		for i := range c.Ops {
			n += int64(len(c.Ops[i].Text) + len(c.Ops[i].Value))
		}
	}
	return n
}
