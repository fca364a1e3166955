//! Criterion benches for the `queue` workloads (`Q*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench queue`.

use criterion::Criterion;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches::crit::groups(&mut c, &["Q"]);
    c.final_summary();
}
