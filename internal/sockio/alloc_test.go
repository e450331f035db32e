package sockio

import "testing"

// TestNoAllocs: a read and a write allocate nothing (the server reads a
// frame and writes one for every delivery).
func TestNoAllocs(t *testing.T) {
	c, peer := pair(t)
	buf := make([]byte, 64)
	msg := []byte("0123456789")
	pbuf := make([]byte, 64)
	a := testing.AllocsPerRun(200, func() {
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Read(pbuf); err != nil {
			t.Fatal(err)
		}
	})
	if a != 0 {
		t.Fatalf("%.1f allocations a read and write; want 0", a)
	}
}
