package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt"
)

// deadURL names a loopback port with (almost certainly) nothing on it, so
// the client stays offline and keeps retrying.
const deadURL = "ws://127.0.0.1:1/v1/ws"

func TestOptionsReportEveryProblem(t *testing.T) {
	o := DefaultOptions()
	o.URL = "ftp://x"
	o.DialTimeout = -1
	o.MaxBatchOps = -3
	_, err := New(o)
	if err == nil {
		t.Fatal("New accepted bad options")
	}
	for _, want := range []string{"URL", "DialTimeout", "MaxBatchOps"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if !errors.Is(err, ErrOptions) {
		t.Errorf("error %v does not wrap ErrOptions", err)
	}
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "URL is required") {
		t.Errorf("missing URL: %v", err)
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:7420":      "ws://127.0.0.1:7420/v1/ws",
		"https://example.com/":       "wss://example.com/v1/ws",
		"ws://127.0.0.1:7420/custom": "ws://127.0.0.1:7420/custom",
		"wss://h/v1/ws?x=1":          "wss://h/v1/ws?x=1",
	} {
		got, err := normalizeURL(in)
		if err != nil || got != want {
			t.Errorf("normalizeURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://h", "ws://", "::"} {
		if _, err := normalizeURL(bad); err == nil {
			t.Errorf("normalizeURL(%q) succeeded", bad)
		}
	}
}

func editText(t *testing.T, d *Document, pos int, s string) {
	t.Helper()
	if err := d.Edit(func(tx *crdt.Tx, _ *crdt.Doc) error { return tx.Insert("body", pos, s) }); err != nil {
		t.Fatal(err)
	}
}

// Edits made offline survive a restart of the client: same replica id,
// same document content, and the document is not saved (nothing acked).
func TestOfflineEditsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	o := LocalOptions(deadURL)
	o.Dir = dir
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Open("notes/1", DocOptions{})
	if err != nil {
		t.Fatal(err)
	}
	editText(t, d, 0, "hello")
	editText(t, d, 5, " world")
	if err := d.Edit(func(tx *crdt.Tx, _ *crdt.Doc) error {
		if err := tx.Add("n", 3); err != nil {
			return err
		}
		return tx.Set("title", []byte{0xa2, 'h', 'i'})
	}); err != nil {
		t.Fatal(err)
	}
	if d.Saved() {
		t.Fatal("offline document reports saved")
	}
	replica := c.Replica()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.Replica() != replica {
		t.Fatalf("replica id changed across restart: %s → %s", replica, c2.Replica())
	}
	d2, err := c2.Open("notes/1", DocOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d2.Text("body"); got != "hello world" {
		t.Fatalf("text after restart %q", got)
	}
	if got := d2.Counter("n"); got != 3 {
		t.Fatalf("counter after restart %d", got)
	}
	if v, ok := d2.Register("title"); !ok || string(v) != "\xa2hi" {
		t.Fatalf("register after restart %q %v", v, ok)
	}
	if d2.Saved() {
		t.Fatal("restarted offline document reports saved")
	}
	// Editing continues the replica's own sequence.
	editText(t, d2, 0, ">")
	if got := d2.Version()[replica]; got != uint64(len("hello world")+2+1) {
		t.Fatalf("own seq %d after restart and one more insert", got)
	}
}

func TestDirIsLockedAgainstASecondClient(t *testing.T) {
	o := LocalOptions(deadURL)
	o.Dir = t.TempDir()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if c2, err := New(o); err == nil {
		c2.Close()
		t.Fatal("second client on the same Dir was allowed")
	}
	c.Close()
	c3, err := New(o)
	if err != nil {
		t.Fatalf("Dir still locked after Close: %v", err)
	}
	c3.Close()
}

func TestOpenTwiceAndAfterClose(t *testing.T) {
	c, err := New(LocalOptions(deadURL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open("a", DocOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open("a", DocOptions{}); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("second Open: %v", err)
	}
	if _, err := c.Open("", DocOptions{}); err == nil {
		t.Fatal("empty document id accepted")
	}
	c.Close()
	if _, err := c.Open("b", DocOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}
}

// Dial against nothing fails when its context ends and leaves no goroutine
// behind (Close waits for them).
func TestDialTimesOutOffline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, LocalOptions(deadURL)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: %v", err)
	}
}

func TestWaitSavedHonoursContextOffline(t *testing.T) {
	c, err := New(LocalOptions(deadURL))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, _ := c.Open("x", DocOptions{})
	editText(t, d, 0, "x")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.WaitSaved(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSaved offline: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitSaved(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitSaved after Close: %v", err)
	}
}
