//! Criterion benches for the `shm` workloads (`V*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench shm`.

use criterion::Criterion;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches::crit::groups(&mut c, &["V"]);
    c.final_summary();
}
