//! Criterion benches for the `pool` workloads (`K*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench pool`.

use criterion::Criterion;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches::crit::groups(&mut c, &["K"]);
    c.final_summary();
}
