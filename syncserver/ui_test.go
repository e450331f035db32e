package syncserver

import (
	"io"
	"net/http"
	"testing"
	"testing/fstest"
)

// TestUI: Options.UI is served at / next to the API, and without it / is
// not found.
func TestUI(t *testing.T) {
	ui := fstest.MapFS{"index.html": {Data: []byte("<title>page</title>")}, "app.js": {Data: []byte("js")}}
	ts := newTestServer(t, func(o *Options) { o.UI = ui })
	get := func(base, path string) (int, string) {
		r, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if code, body := get(ts.hs.URL, "/"); code != 200 || body != "<title>page</title>" {
		t.Fatalf("GET /: %d %q", code, body)
	}
	if code, body := get(ts.hs.URL, "/app.js"); code != 200 || body != "js" {
		t.Fatalf("GET /app.js: %d %q", code, body)
	}
	if code, _ := get(ts.hs.URL, "/healthz"); code != 200 {
		t.Fatalf("GET /healthz with a UI: %d", code)
	}
	none := newTestServer(t, nil)
	if code, _ := get(none.hs.URL, "/"); code != http.StatusNotFound {
		t.Fatalf("GET / without a UI: %d, want 404", code)
	}
}
