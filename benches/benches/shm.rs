//! Criterion benches for the `shm` workloads (`V*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench shm`.

use criterion::{criterion_group, criterion_main, Criterion};

fn groups(c: &mut Criterion) {
    benches::crit::groups(c, &["V"]);
}

criterion_group!(benches, groups);
criterion_main!(benches);
