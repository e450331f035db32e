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
//
// HAZARD: a measure taken in the process that also drives the load waits
// behind that load when it peaks. The cluster benchmark's heal time and
// its divergence timeline are therefore taken by a process of its own
// (`weft bench cluster-heal-watch`, cluster_heal.go), told the run's
// moments in CLOCK_MONOTONIC, which every process shares (convergeNow).
package bench
