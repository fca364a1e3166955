//! Criterion benches for the `pipe` workloads (`C*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench pipe`.

use criterion::Criterion;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches::crit::groups(&mut c, &["C"]);
    c.final_summary();
}
