//! Criterion benches for the `queue` workloads (`Q*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench queue`.

use criterion::{criterion_group, criterion_main, Criterion};

fn groups(c: &mut Criterion) {
    benches::crit::groups(c, &["Q"]);
}

criterion_group!(benches, groups);
criterion_main!(benches);
