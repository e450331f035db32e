package webui

import (
	"io/fs"
	"strings"
	"testing"
)

func TestEmbedded(t *testing.T) {
	page, err := fs.ReadFile(FS(), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `<script src="app.js">`) {
		t.Fatal("index.html does not load app.js")
	}
	js, err := fs.ReadFile(FS(), "app.js")
	if err != nil || len(js) < 10_000 {
		t.Fatalf("app.js: %d bytes, %v", len(js), err)
	}
}
