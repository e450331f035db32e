// Package traces loads the editing traces in ../shared/traces (Joseph
// Gentle's editing-traces format) for tests and benchmarks: sequential
// traces (patches applied in order) and concurrent ones (transactions with
// parents, replayed with real forks and merges).
//
// Dir finds the traces next to the repository, or in $WEFT_TRACES. Load
// reads one gzipped JSON file whole; it is test and benchmark tooling, not
// hardened against hostile input.
//
// Editing traces from github.com/josephg/editing-traces (Joseph Gentle,
// Martin Kleppmann et al.), CC BY 4.0.
package traces
