//! Benchmarks and the `compare` run.
