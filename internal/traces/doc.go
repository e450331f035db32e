// Package traces loads the editing traces the tests and benchmarks replay
// (Joseph Gentle's editing-traces format): sequential traces (patches
// applied in order) and concurrent ones (transactions with parents,
// replayed with real forks and merges).
//
// The traces live in data/ and are compiled into the package with
// go:embed, so a test in a fresh clone and an installed `weft bench trace
// NAME` find them with no environment variable and no path baked in from
// the source tree (about 2.8 MB of gzipped JSON in every binary that
// imports this package: the weft binary and the test binaries that replay
// traces). Load reads a file from disk when the name is one, else an
// embedded trace; Names lists the embedded ones. Load reads one gzipped
// JSON file whole; it is test and benchmark tooling, not hardened against
// hostile input.
//
// Editing traces from github.com/josephg/editing-traces (Joseph Gentle,
// Martin Kleppmann et al.), CC BY 4.0; see data/README.md, which travels
// with them.
package traces
