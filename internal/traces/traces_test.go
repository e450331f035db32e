package traces

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The traces the tests replay are embedded, so they load whatever the
// working directory and wherever the source tree is (a fresh clone has no
// sibling directory to read them from).
func TestEmbeddedTracesLoad(t *testing.T) {
	t.Chdir(t.TempDir())
	names := Names()
	for _, want := range append(slices.Clone(Sequential), "concurrent/clownschool.json.gz", "concurrent/friendsforever.json.gz") {
		if !slices.Contains(names, want) {
			t.Errorf("Names() = %v lacks %q", names, want)
		}
	}
	for _, name := range names {
		// Every embedded file is a gzip stream; decoding them all is the
		// crdt and codec trace tests' job (a few seconds each under -race).
		f, err := data.Open("data/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gzip.NewReader(f); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		f.Close()
	}
	tr, err := Load("clownschool_flat.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Patches() != 23182 || len([]rune(tr.EndContent)) != 21148 {
		t.Errorf("clownschool_flat: %d patches, %d runes of end content; want 23182, 21148 (data/README.md)", tr.Patches(), len([]rune(tr.EndContent)))
	}
}

func TestLicenceTravelsWithTraces(t *testing.T) {
	b, err := data.ReadFile("data/README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("CC BY 4.0")) || !bytes.Contains(b, []byte("github.com/josephg/editing-traces")) {
		t.Errorf("data/README.md lost its licence or attribution")
	}
}

func TestLoadFileOnDisk(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(`{"endContent":"hi","txns":[{"patches":[[0,0,"hi"]]}]}`))
	zw.Close()
	p := filepath.Join(t.TempDir(), "mine.json.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	tr, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Name != "mine.json.gz" || tr.Patches() != 1 || tr.Txns[0].Patches[0].Ins != "hi" {
		t.Errorf("Load(%s) = %+v", p, tr)
	}
}

func TestLoadUnknown(t *testing.T) {
	_, err := Load("no-such-trace.json.gz")
	if !errors.Is(err, ErrUnknown) {
		t.Fatalf("Load(unknown) = %v, want ErrUnknown", err)
	}
	_, err = Load(filepath.Join(t.TempDir(), "absent.json.gz"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(absent absolute path) = %v, want not-exist", err)
	}
}
