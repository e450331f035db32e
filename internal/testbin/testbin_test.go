package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWeftFromEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the weft binary")
	}
	t.Setenv("WEFT_BIN", "")
	bin := Weft(t)
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "weft ") {
		t.Fatalf("%s version: %v %s", bin, err, out)
	}
	// A named binary is used as it is, never rebuilt.
	named := filepath.Join(t.TempDir(), "named-weft")
	if err := os.Link(bin, named); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WEFT_BIN", named)
	if got := Weft(t); got != named {
		t.Fatalf("Weft = %s, want $WEFT_BIN %s", got, named)
	}
}
