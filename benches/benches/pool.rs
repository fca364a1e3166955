//! Criterion benches for the `pool` workloads (`K*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench pool`.

use criterion::{criterion_group, criterion_main, Criterion};

fn groups(c: &mut Criterion) {
    benches::crit::groups(c, &["K"]);
}

criterion_group!(benches, groups);
criterion_main!(benches);
