package syncproto

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

const testDoc = "notes/1"

// cluster is the world of a transcript: named nodes (each one crdt.Doc),
// links between them (a Peer at each end) and the messages in flight on
// each direction of a link.
type cluster struct {
	wall  hlc.ManualWall
	nodes map[string]*node
	order []string                // node names in creation order
	queue map[[2]string][]Message // [from, to] → in flight, oldest first
	links [][2]string
}

type node struct {
	name  string
	role  Role
	ops   int // MaxOpsPerMessage, 0 for the default
	doc   *crdt.Doc
	peers map[string]*Peer // by remote node
}

func newCluster() *cluster {
	return &cluster{wall: hlc.ManualWall{Millis: 1_763_000_000_000}, nodes: map[string]*node{}, queue: map[[2]string][]Message{}}
}

func (c *cluster) replica(name string) crdt.ReplicaID {
	var r crdt.ReplicaID
	copy(r[:], name)
	r[15] = 1
	return r
}

func (c *cluster) nameOf(r crdt.ReplicaID) string {
	for _, n := range c.order {
		if c.replica(n) == r {
			return n
		}
	}
	return r.String()[:8]
}

func (c *cluster) vv(v crdt.VersionVector) string {
	var parts []string
	for r, s := range v {
		parts = append(parts, fmt.Sprintf("%s:%d", c.nameOf(r), s))
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, " ") + "}"
}

func (c *cluster) changes(data []byte) string {
	if len(data) == 0 {
		return "[]"
	}
	chs, err := codec.DecodeChanges(data)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	var parts []string
	for _, ch := range chs {
		parts = append(parts, fmt.Sprintf("%s@%d-%d", c.nameOf(ch.Replica), ch.Seq, ch.End()))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (c *cluster) describe(m Message) string {
	switch m := m.(type) {
	case *Subscribe:
		return "subscribe " + c.vv(m.Version)
	case *Sync:
		return "sync " + c.vv(m.Version) + " " + c.changes(m.Changes)
	case *Update:
		return fmt.Sprintf("update #%d %s", m.Batch, c.changes(m.Changes))
	case *Changes:
		return "changes " + c.changes(m.Changes)
	case *Ack:
		s := fmt.Sprintf("ack #%d %s", m.Batch, m.Status)
		if m.Message != "" {
			s += " (" + m.Message + ")"
		}
		return s
	}
	return m.Type().String()
}

func (c *cluster) newDoc(name string) *crdt.Doc {
	return crdt.NewDoc(c.replica(name), hlc.NewClock(c.wall.Read, 0), crdt.Options{MaxPending: 64})
}

func (c *cluster) newPeer(t testing.TB, n *node) *Peer {
	p, err := NewPeer(n.doc, testDoc, Options{Role: n.role, MaxOpsPerMessage: n.ops})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// enqueue sends msgs from → to through the real wire encoding.
func (c *cluster) enqueue(t testing.TB, from, to string, msgs []Message, out *strings.Builder) {
	for _, m := range msgs {
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("encode %s: %v", m.Type(), err)
		}
		back, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %s: %v", m.Type(), err)
		}
		k := [2]string{from, to}
		c.queue[k] = append(c.queue[k], back)
		fmt.Fprintf(out, "  %s→%s %s\n", from, to, c.describe(back))
	}
}

// deliver hands one message to its receiver and queues the replies.
func (c *cluster) deliver(t testing.TB, from, to string, m Message, out *strings.Builder) {
	fmt.Fprintf(out, "%s→%s %s\n", from, to, c.describe(m))
	replies, err := c.nodes[to].peers[from].Receive(m)
	if err != nil {
		fmt.Fprintf(out, "  error: %v\n", err)
		return
	}
	c.enqueue(t, to, from, replies, out)
}

func (c *cluster) node(t testing.TB, name string) *node {
	n, ok := c.nodes[name]
	if !ok {
		t.Fatalf("no node %q", name)
	}
	return n
}

func (c *cluster) state(name string) string {
	n := c.nodes[name]
	d := n.doc
	s := fmt.Sprintf("%s: %q counter=%d %s", name, d.Text("body"), d.Counter("clicks"), c.vv(d.Version()))
	if d.Pending() > 0 {
		s += fmt.Sprintf(" pending=%d", d.Pending())
	}
	for _, r := range slices.Sorted(func(yield func(string) bool) {
		for k := range n.peers {
			if !yield(k) {
				return
			}
		}
	}) {
		p := n.peers[r]
		if n.role == RoleClient {
			s += fmt.Sprintf(" [%s saved=%t unacked=%d", r, p.Saved(), p.Unacked())
			if st, msg, ok := p.Halted(); ok {
				s += fmt.Sprintf(" halted=%s(%s)", st, msg)
			}
			s += "]"
		}
	}
	return s
}

func TestPeerTranscripts(t *testing.T) {
	datadriven.Walk(t, "testdata/peer", func(t *testing.T, path string) {
		c := newCluster()
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			pos := func(i int) string {
				if i >= len(td.CmdArgs) {
					t.Fatalf("%s: missing argument %d", td.Cmd, i+1)
				}
				return td.CmdArgs[i].Key
			}
			var out strings.Builder
			switch td.Cmd {
			case "node":
				// node <name> client|server [ops=N]
				n := &node{name: pos(0), role: RoleClient, peers: map[string]*Peer{}}
				td.MaybeScanArgs(t, "ops", &n.ops)
				if pos(1) == "server" {
					n.role = RoleServer
				}
				n.doc = c.newDoc(n.name)
				c.nodes[n.name] = n
				c.order = append(c.order, n.name)
				return ""

			case "link":
				// link <a> <b>: a connection, a Peer at each end.
				a, b := c.node(t, pos(0)), c.node(t, pos(1))
				a.peers[b.name] = c.newPeer(t, a)
				b.peers[a.name] = c.newPeer(t, b)
				c.links = append(c.links, [2]string{a.name, b.name})
				return ""

			case "edit":
				// edit <node>, input lines: insert <pos> <text> | delete <pos> <n> | add <n>
				n := c.node(t, pos(0))
				c.wall.Millis++
				tx := n.doc.Begin()
				for _, line := range strings.Split(td.Input, "\n") {
					f := strings.Fields(line)
					num := func(i int) int {
						v, err := strconv.Atoi(f[i])
						if err != nil {
							t.Fatalf("%q: %v", line, err)
						}
						return v
					}
					var err error
					switch f[0] {
					case "insert":
						err = tx.Insert("body", num(1), strings.Join(f[2:], " "))
					case "delete":
						err = tx.Delete("body", num(1), num(2))
					case "add":
						err = tx.Add("clicks", int64(num(1)))
					default:
						t.Fatalf("unknown edit %q", line)
					}
					if err != nil {
						t.Fatalf("%q: %v", line, err)
					}
				}
				if err := tx.Commit(); err != nil {
					return "error: " + err.Error()
				}
				return c.state(n.name)

			case "subscribe":
				// subscribe <from> <to>
				from, to := pos(0), pos(1)
				c.enqueue(t, from, to, c.node(t, from).peers[to].Subscribe(), &out)
				return out.String()

			case "outgoing":
				// outgoing <node>: what every link of the node should carry now.
				n := c.node(t, pos(0))
				for _, r := range slices.Sorted(mapKeys(n.peers)) {
					c.enqueue(t, n.name, r, n.peers[r].Outgoing(), &out)
				}
				return out.String()

			case "deliver":
				// deliver <from> <to> [n=K] [drop] [dup] [reverse]
				k := [2]string{pos(0), pos(1)}
				q := c.queue[k]
				count := len(q)
				td.MaybeScanArgs(t, "n", &count)
				count = min(count, len(q))
				batch := slices.Clone(q[:count])
				c.queue[k] = q[count:]
				if td.HasArg("reverse") {
					slices.Reverse(batch)
				}
				for _, m := range batch {
					if td.HasArg("drop") {
						fmt.Fprintf(&out, "%s→%s %s (dropped)\n", k[0], k[1], c.describe(m))
						continue
					}
					c.deliver(t, k[0], k[1], m, &out)
					if td.HasArg("dup") {
						c.deliver(t, k[0], k[1], m, &out)
					}
				}
				return out.String()

			case "settle":
				// Deliver everything, link by link, until nothing is in flight.
				for round := 0; ; round++ {
					if round > 100 {
						t.Fatal("settle: still messages in flight after 100 rounds")
					}
					moved := false
					for _, l := range c.links {
						for _, k := range [][2]string{{l[0], l[1]}, {l[1], l[0]}} {
							q := c.queue[k]
							c.queue[k] = nil
							for _, m := range q {
								moved = true
								c.deliver(t, k[0], k[1], m, &out)
							}
						}
					}
					if !moved {
						break
					}
				}
				return out.String()

			case "disconnect":
				// disconnect <a> <b>: drop what is in flight, Reset both ends.
				a, b := pos(0), pos(1)
				for _, k := range [][2]string{{a, b}, {b, a}} {
					if n := len(c.queue[k]); n > 0 {
						fmt.Fprintf(&out, "lost %d message(s) %s→%s\n", n, k[0], k[1])
					}
					delete(c.queue, k)
				}
				c.node(t, a).peers[b].Reset()
				c.node(t, b).peers[a].Reset()
				return out.String()

			case "restart":
				// restart <node>: the node comes back with an empty document
				// (lost its disk); its links drop.
				n := c.node(t, pos(0))
				n.doc = c.newDoc(n.name)
				for r := range n.peers {
					for _, k := range [][2]string{{n.name, r}, {r, n.name}} {
						delete(c.queue, k)
					}
					n.peers[r] = c.newPeer(t, n)
					c.nodes[r].peers[n.name].Reset()
				}
				return c.state(n.name)

			case "state":
				for _, name := range c.order {
					fmt.Fprintln(&out, c.state(name))
				}
				return out.String()

			case "converged":
				// converged: all documents equal, nothing pending.
				first := c.nodes[c.order[0]].doc
				for _, name := range c.order {
					d := c.nodes[name].doc
					if d.Text("body") != first.Text("body") || d.Counter("clicks") != first.Counter("clicks") ||
						!d.Version().Equal(first.Version()) || d.Pending() != 0 {
						return "no: " + c.state(name) + " vs " + c.state(c.order[0])
					}
				}
				return "yes"
			}
			t.Fatalf("unknown command %q", td.Cmd)
			return ""
		})
	})
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
