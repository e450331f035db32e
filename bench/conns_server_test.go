package bench

import (
	"os"
	"testing"
)

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS("Name:\tweft\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads: 4\n")
	if err != nil || got != 12345<<10 {
		t.Fatalf("parseVmRSS = %d, %v; want %d", got, err, 12345<<10)
	}
	for _, bad := range []string{"Name: x\n", "VmRSS: 12 MB\n", "VmRSS: x kB\n"} {
		if _, err := parseVmRSS(bad); err == nil {
			t.Fatalf("parseVmRSS(%q) succeeded", bad)
		}
	}
}

func TestRSSOfSelf(t *testing.T) {
	n, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if n < 1<<20 {
		t.Fatalf("RSS of a running Go test %d bytes: implausibly small", n)
	}
}

func TestTailBufferKeepsTail(t *testing.T) {
	tb := &tailBuffer{max: 4}
	tb.Write([]byte("abc"))
	tb.Write([]byte("defg"))
	if got := tb.String(); got != "defg" {
		t.Fatalf("tail %q, want %q", got, "defg")
	}
}
