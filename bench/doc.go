// Package bench holds the drivers behind `weft bench ...`: trace replay and
// two-replica merge (crdt), network convergence and connection scale
// (syncserver + clients/go), storage throughput and crash safety.
//
// Every driver returns a result struct with JSON field names that the README
// and the issues quote, measures medians over repeated runs where a run is
// short, and checks correctness as it goes (ok / converged / lost): a fast
// wrong answer is a failure, not a figure.
//
// Timing uses the wall clock of the machine, which is shared and noisy:
// quote medians and ratios measured in one run, never single samples.
package bench
