// Package webui holds the demo page `weft serve` serves at / : a document
// picker and a collaborative CodeMirror editor with remote cursors, who is
// here, a connection/saved indicator and an offline toggle, built from
// clients/ts (src/demo) into dist/ and embedded in the binary, so the page
// needs nothing but the weft server (no CDN).
//
// dist/ is generated and committed: `npm run bundle` in clients/ts writes
// it, and clients/ts's test suite (test/bundle.test.ts, part of `make
// test`) fails when it differs from what the sources build to.
package webui

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// FS returns the page's files (index.html, app.js) at its root.
func FS() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic("webui: the embedded dist directory is missing: " + err.Error())
	}
	return sub
}
