//! Criterion glue: one group per workload id, holding ours (`ours/Q1`) and that workload's
//! references (`P7b/vyukov-ring-1-1-procs`), `Throughput` set, `iter_custom` over the same
//! workload code `compare` runs (cross-process rows: one forked run of `iters` ops through the
//! gate), `sample_size(10)`.
//!
//! Criterion neither interleaves rows nor probes placement: use it for local before/after.
//! Rows that cannot run here (not built yet, no POSIX mq, ...) are left out with a note on
//! stderr; a row that goes wrong panics, so a broken workload never yields a number.

use std::time::Duration;

use criterion::{Criterion, Throughput};

use crate::registry::{self, Kind, RefSel, UnitKind};
use crate::{Outcome, Run};

fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Adds one criterion group per registry group whose id starts with one of `prefixes`.
pub fn groups(c: &mut Criterion, prefixes: &[&str]) {
    let reg = registry::build(true);
    let mut names: Vec<String> = Vec::new();
    for r in &reg.rows {
        if prefixes.iter().any(|p| r.group.starts_with(p)) && !names.contains(&r.group) {
            names.push(r.group.clone());
        }
    }
    for g in names {
        // The group's own rows, then the references its targets name from other groups.
        let mut rows: Vec<_> = reg
            .rows
            .iter()
            .filter(|r| r.group == g && r.kind != Kind::Python)
            .collect();
        for t in &reg.targets {
            let RefSel::Row(id) = &t.reference else {
                continue;
            };
            let ours_here = reg.row(&t.ours).is_some_and(|o| o.group == g);
            if let (true, Some(r)) = (ours_here, reg.row(id)) {
                if r.kind != Kind::Python && !rows.iter().any(|x| x.id == r.id) {
                    rows.push(r);
                }
            }
        }
        let mut group = c.benchmark_group(g.as_str());
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        for row in rows {
            // One small run first: leave out rows that cannot run here.
            let probe_n = row.n_for(true, 1.0).div_ceil(100).max(1);
            match row.run(&Run::new(probe_n)) {
                Outcome::Skipped(why) => {
                    eprintln!("{g}: {} skipped: {why}", row.id);
                    continue;
                }
                Outcome::Failed(why) => panic!("{g}: {} went wrong: {why}", row.id),
                Outcome::Done(_) => {}
            }
            group.throughput(match row.unit.kind {
                UnitKind::Gb | UnitKind::Mb => Throughput::Bytes(row.bytes),
                _ => Throughput::Elements(1),
            });
            let name = match row.kind {
                Kind::Ours => format!("ours/{}", row.id),
                _ => format!("{}/{}", row.id, slug(&row.what)),
            };
            group.bench_function(name, |b| {
                b.iter_custom(|iters| match row.run(&Run::new(iters.max(1))) {
                    Outcome::Done(m) => {
                        Duration::from_secs_f64(m.elapsed * iters as f64 / m.n.max(1) as f64)
                    }
                    o => panic!("{}: {o:?}", row.id),
                })
            });
        }
        group.finish();
    }
}
