//! Criterion benches for the `sem` workloads (`S*` groups of WORKLOADS.md): ours beside
//! the references, one group per workload id. Run with `cargo bench -p benches --bench sem`.

use criterion::Criterion;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches::crit::groups(&mut c, &["S"]);
    c.final_summary();
}
