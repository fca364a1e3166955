//! The `compare` driver: selects rows, runs them round-robin with warm-up and a placement probe
//! before every timed repeat, then pairs ours with each reference by round and class.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::probe::{self, Class, Edges};
use crate::registry::{Kind, RefSel, Registry, Row, Target};
use crate::{ours_pipe, python, Outcome, Run};

/// Command-line options of `compare`.
#[derive(Clone, Debug)]
pub struct Options {
    /// n/4, short sweeps.
    pub quick: bool,
    /// Timed repeats per row (at least 5 unless asked otherwise).
    pub repeats: usize,
    /// Row or group id prefixes to run (empty: all).
    pub only: Vec<String>,
    /// Multiplier of every n (calibration).
    pub scale: f64,
    /// Add pinned variants.
    pub pin: bool,
    /// Wait for this placement class before each repeat.
    pub placement: Option<Class>,
    /// Class edges.
    pub edges: Edges,
    /// Output directory.
    pub out: PathBuf,
    /// Run the Python column.
    pub with_python: bool,
    /// Draw the progress bar.
    pub progress: bool,
    /// Exit 1 when any verdict is `FAIL` (for scripts).
    pub check: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            repeats: 5,
            only: Vec::new(),
            scale: 1.0,
            pin: false,
            placement: None,
            edges: Edges::default(),
            out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/compare")),
            with_python: false,
            progress: true,
            check: false,
        }
    }
}

/// One timed repeat of one row.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Round (or extra pair index past the rounds).
    pub round: usize,
    /// Probe ns/RT just before.
    pub probe_ns: Option<f64>,
    /// Its class.
    pub class: Option<Class>,
    /// `--placement` wait result (`matched after 1.5 s`, `timed out`).
    pub placement: Option<String>,
    /// What the run produced.
    pub outcome: Outcome,
    /// The figure in the row's unit, when done.
    pub figure: Option<f64>,
    /// Roles' CPU-s per wall-s, when recorded.
    pub cpu_per_wall: Option<f64>,
}

/// Status of a row after the run.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Measured.
    Ok,
    /// Not run, with the reason.
    Skipped(String),
    /// A repeat went wrong.
    Failed(String),
}

/// One row (or its pinned variant) with its samples.
#[derive(Clone, Debug)]
pub struct RowResult {
    /// Row id, `+pin` appended for pinned variants.
    pub key: String,
    /// Registry row id.
    pub id: String,
    /// Pinned variant.
    pub pin: bool,
    /// n used per timed repeat.
    pub n: u64,
    /// Timed samples.
    pub samples: Vec<Sample>,
    /// Final status.
    pub status: Status,
}

impl RowResult {
    /// Figures of successful samples.
    pub fn figures(&self) -> Vec<f64> {
        self.samples.iter().filter_map(|s| s.figure).collect()
    }
    /// Median figure.
    pub fn median(&self) -> Option<f64> {
        median(&self.figures())
    }
    /// Median over samples of one class.
    pub fn class_median(&self, c: Class) -> Option<f64> {
        median(
            &self
                .samples
                .iter()
                .filter(|s| s.class == Some(c))
                .filter_map(|s| s.figure)
                .collect::<Vec<_>>(),
        )
    }
    /// The most extra threads any repeat reported (rows that count them: A3).
    pub fn max_threads(&self) -> Option<u64> {
        self.samples
            .iter()
            .filter_map(|s| match &s.outcome {
                Outcome::Done(m) => m.threads,
                _ => None,
            })
            .max()
    }
    /// Median CPU-s per wall-s.
    pub fn cpu_per_wall(&self) -> Option<f64> {
        median(
            &self
                .samples
                .iter()
                .filter_map(|s| s.cpu_per_wall)
                .collect::<Vec<_>>(),
        )
    }
}

/// One pair of a target.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Round (extra pairs: numbered past the rounds).
    pub round: usize,
    /// Shared class (None for single-process rows paired regardless).
    pub class: Option<Class>,
    /// Our figure.
    pub ours: f64,
    /// Reference figure.
    pub reference: f64,
    /// ours / reference.
    pub ratio: f64,
    /// From the extra pairs at the end.
    pub extra: bool,
    /// Our roles' CPU-s per wall-s over the reference's, this round (parked rows).
    pub cpu_ratio: Option<f64>,
}

/// A target's outcome.
#[derive(Clone, Debug)]
pub struct TargetResult {
    /// The target.
    pub target: Target,
    /// Resolved reference row id (`self` for K3).
    pub reference: String,
    /// Pairs used.
    pub pairs: Vec<Pair>,
    /// Median pair ratio.
    pub ratio: Option<f64>,
    /// `pass`, `FAIL`, `FAIL (spun)`, `FAIL (threads)`, `skipped: <reason>`.
    pub verdict: String,
    /// Class cell.
    pub class: String,
}

/// Everything a run produced.
pub struct Results {
    /// Options used.
    pub options: Options,
    /// Per row (and pinned variant), in registry order.
    pub rows: Vec<RowResult>,
    /// Per target.
    pub targets: Vec<TargetResult>,
    /// All probes (ns/RT) in order.
    pub probes: Vec<f64>,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
}

impl Results {
    /// A row result by key.
    pub fn row(&self, key: &str) -> Option<&RowResult> {
        self.rows.iter().find(|r| r.key == key)
    }
}

/// Median of a list (None when empty).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn selected(opts: &Options, row: &Row) -> bool {
    opts.only.is_empty()
        || opts
            .only
            .iter()
            .any(|o| row.id.starts_with(o.as_str()) || row.group.starts_with(o.as_str()))
}

struct Runner<'a> {
    opts: &'a Options,
    bar: ProgressBar,
    probes: Vec<f64>,
}

impl Runner<'_> {
    fn probe(&mut self) -> (Option<f64>, Option<String>) {
        let once = |p: &mut Vec<f64>| match probe::probe() {
            Ok(ns) => {
                p.push(ns);
                Some(ns)
            }
            Err(_) => None,
        };
        let Some(want) = self.opts.placement else {
            return (once(&mut self.probes), None);
        };
        let t0 = Instant::now();
        loop {
            let ns = once(&mut self.probes);
            if let Some(ns) = ns {
                if self.opts.edges.class(ns) == want {
                    return (
                        Some(ns),
                        Some(format!(
                            "{} after {:.1} s",
                            want.name(),
                            t0.elapsed().as_secs_f64()
                        )),
                    );
                }
            }
            if t0.elapsed() >= Duration::from_secs(30) {
                return (ns, Some(format!("no {} within 30 s", want.name())));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn sample(&mut self, row: &Row, res: &mut RowResult, round: usize) -> Sample {
        let (probe_ns, placement) = self.probe();
        let out = row.run(&Run {
            n: res.n,
            pin: res.pin,
        });
        let (figure, cpw) = match &out {
            Outcome::Done(m) => (
                Some(row.unit.figure(m, row.bytes)),
                m.cpu.map(|c| c / m.elapsed.max(1e-12)),
            ),
            _ => (None, None),
        };
        Sample {
            round,
            probe_ns,
            class: probe_ns.map(|p| self.opts.edges.class(p)),
            placement,
            outcome: out,
            figure,
            cpu_per_wall: cpw,
        }
    }
}

/// Runs every selected row as `WORKLOADS.md` section 1 says and pairs the targets.
pub fn run(reg: &Registry, opts: &Options) -> Results {
    let t_start = Instant::now();
    let py_state: Result<(), String> = if !opts.with_python {
        Err("run with --with-python".into())
    } else {
        python::available()
    };
    // Items: (row index, pinned) in registry order, pinned variants interleaved.
    let mut results: Vec<RowResult> = Vec::new();
    let mut items: Vec<usize> = Vec::new(); // indexes into results that run
    for row in &reg.rows {
        let sel = selected(opts, row);
        let n = row.n_for(opts.quick, opts.scale);
        let variants: &[bool] = if opts.pin && row.pinnable && row.kind != Kind::Python {
            &[false, true]
        } else {
            &[false]
        };
        for &pin in variants {
            let key = if pin {
                format!("{}+pin", row.id)
            } else {
                row.id.clone()
            };
            let status = if !sel {
                Status::Skipped("not selected (--only)".into())
            } else if row.kind == Kind::Python {
                match &py_state {
                    Ok(()) => Status::Ok,
                    Err(e) => Status::Skipped(e.clone()),
                }
            } else {
                Status::Ok
            };
            if status == Status::Ok {
                items.push(results.len());
            }
            results.push(RowResult {
                key,
                id: row.id.clone(),
                pin,
                n,
                samples: Vec::new(),
                status,
            });
        }
    }
    let row_of: HashMap<String, &Row> = reg.rows.iter().map(|r| (r.id.clone(), r)).collect();
    // Groups in order, each a list of result indexes.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for &i in &items {
        let g = &row_of[&results[i].id].group;
        match groups.last_mut() {
            Some((name, v)) if name == g => v.push(i),
            _ => groups.push((g.clone(), vec![i])),
        }
    }
    let total = items.len() as u64 * (opts.repeats as u64 + 1);
    let bar = if opts.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rn = Runner {
        opts,
        bar,
        probes: Vec::new(),
    };

    // Warm-up (round 0, untimed, n/10). Python rows start a fresh interpreter per run, so a
    // warm-up would warm nothing: they skip it.
    for (_, g) in &groups {
        for &i in g {
            let row = row_of[&results[i].id];
            rn.bar.set_message(format!("warm-up {}", results[i].key));
            if row.kind != Kind::Python && results[i].status == Status::Ok {
                let n = (results[i].n / 10).max(1);
                match row.run(&Run {
                    n,
                    pin: results[i].pin,
                }) {
                    Outcome::Skipped(why) => results[i].status = Status::Skipped(why),
                    Outcome::Failed(why) => {
                        results[i].status = Status::Failed(format!("warm-up: {why}"))
                    }
                    Outcome::Done(_) => {}
                }
            }
            rn.bar.inc(1);
        }
    }
    for round in 0..opts.repeats {
        for (_, g) in &groups {
            let order: Vec<usize> = if round % 2 == 1 {
                g.iter().rev().copied().collect()
            } else {
                g.clone()
            };
            for i in order {
                rn.bar.set_message(format!(
                    "round {}/{} {}",
                    round + 1,
                    opts.repeats,
                    results[i].key
                ));
                if results[i].status == Status::Ok {
                    let row = row_of[&results[i].id];
                    let s = rn.sample(row, &mut results[i], round);
                    match &s.outcome {
                        Outcome::Skipped(why) => results[i].status = Status::Skipped(why.clone()),
                        Outcome::Failed(why) => {
                            results[i].status =
                                Status::Failed(format!("round {}: {why}", round + 1))
                        }
                        Outcome::Done(_) => {}
                    }
                    results[i].samples.push(s);
                }
                rn.bar.inc(1);
            }
        }
    }

    // Targets, with up to 5 extra back-to-back pairs where k < 3.
    let mut targets = Vec::new();
    for t in &reg.targets {
        let reference = match &t.reference {
            RefSel::Row(r) => r.clone(),
            RefSel::Own => "self".into(),
            RefSel::SimplexSized => match ours_pipe::simplex_pipe_size() {
                Some(s) if s == 1 << 20 => "L4b".into(),
                Some(s) if s == 64 << 10 => "L4a".into(),
                _ => "L4p".into(),
            },
        };
        let mut tr = pair_target(reg, &results, t, &reference);
        let oi = results.iter().position(|r| r.key == t.ours);
        let ri = results.iter().position(|r| r.key == reference);
        if let (Some(oi), Some(ri), true) = (oi, ri, tr.pairs.len() < 3) {
            let both_ok = results[oi].status == Status::Ok && results[ri].status == Status::Ok;
            if both_ok && !results[oi].samples.is_empty() && !results[ri].samples.is_empty() {
                for e in 0..5 {
                    if tr.pairs.len() >= 3 {
                        break;
                    }
                    rn.bar
                        .set_message(format!("extra pair {} {} / {}", e + 1, t.ours, reference));
                    let round = opts.repeats + 1000 + e;
                    let (o_row, r_row) = (row_of[&results[oi].id], row_of[&results[ri].id]);
                    let so = rn.sample(o_row, &mut results[oi], round);
                    let sr = rn.sample(r_row, &mut results[ri], round);
                    if let Some(p) = make_pair(o_row, r_row, &so, &sr, round, true) {
                        tr.pairs.push(p);
                    }
                }
                tr = finish_target(reg, &results, t, &reference, tr.pairs);
            }
        }
        targets.push(tr);
    }
    rn.bar.finish_and_clear();
    Results {
        options: opts.clone(),
        rows: results,
        targets,
        probes: rn.probes,
        wall_s: t_start.elapsed().as_secs_f64(),
    }
}

fn make_pair(
    o_row: &Row,
    r_row: &Row,
    so: &Sample,
    sr: &Sample,
    round: usize,
    extra: bool,
) -> Option<Pair> {
    let (fo, fr) = (so.figure?, sr.figure?);
    // In the base unit, so that MB/s compares with GB/s (Q6@1MiB against L5a).
    let scale = o_row.unit.to_base() / r_row.unit.to_base();
    let any_class = o_row.single || r_row.single;
    let class = if any_class {
        None
    } else {
        match (so.class, sr.class) {
            (Some(a), Some(b)) if a == b => Some(a),
            _ => return None,
        }
    };
    if fr <= 0.0 {
        return None;
    }
    let cpu_ratio = match (so.cpu_per_wall, sr.cpu_per_wall) {
        (Some(o), Some(r)) if r > 0.0 => Some(o / r),
        _ => None,
    };
    Some(Pair {
        round,
        class,
        ours: fo,
        reference: fr,
        ratio: fo * scale / fr,
        extra,
        cpu_ratio,
    })
}

fn pair_target(reg: &Registry, results: &[RowResult], t: &Target, reference: &str) -> TargetResult {
    let mut pairs = Vec::new();
    let ours = results.iter().find(|r| r.key == t.ours);
    if let Some(o) = ours {
        if t.reference == RefSel::Own {
            for s in &o.samples {
                if let Some(f) = s.figure {
                    pairs.push(Pair {
                        round: s.round,
                        class: s.class,
                        ours: f,
                        reference: 1.0,
                        ratio: f,
                        extra: false,
                        cpu_ratio: None,
                    });
                }
            }
        } else if let (Some(r), Some(o_row), Some(r_row)) = (
            results.iter().find(|r| r.key == reference),
            reg.row(&t.ours),
            reg.row(reference),
        ) {
            for so in &o.samples {
                if let Some(sr) = r.samples.iter().find(|s| s.round == so.round) {
                    if let Some(p) = make_pair(o_row, r_row, so, sr, so.round, false) {
                        pairs.push(p);
                    }
                }
            }
        }
    }
    finish_target(reg, results, t, reference, pairs)
}

/// How much more CPU per wall second than its reference a parked row may use.
const PARKED_CPU_RATIO: f64 = 1.25;

fn finish_target(
    reg: &Registry,
    results: &[RowResult],
    t: &Target,
    reference: &str,
    pairs: Vec<Pair>,
) -> TargetResult {
    let ratio = median(&pairs.iter().map(|p| p.ratio).collect::<Vec<_>>());
    let mut counts: Vec<(Class, usize)> = Vec::new();
    for p in &pairs {
        if let Some(c) = p.class {
            match counts.iter_mut().find(|(k, _)| *k == c) {
                Some((_, n)) => *n += 1,
                None => counts.push((c, 1)),
            }
        }
    }
    counts.sort();
    let class = if pairs.is_empty() {
        "–".to_string()
    } else if counts.is_empty() {
        "any".to_string()
    } else if counts.len() == 1 {
        counts[0].0.name().to_string()
    } else {
        counts
            .iter()
            .map(|(c, n)| format!("{} {n}", c.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ours = results.iter().find(|r| r.key == t.ours);
    let refr = results.iter().find(|r| r.key == reference);
    let verdict = match (
        ours.map(|o| &o.status),
        t.reference == RefSel::Own,
        refr.map(|r| &r.status),
    ) {
        (None, ..) => "skipped: not in registry".to_string(),
        (Some(Status::Skipped(why)), ..) => format!("skipped: {why}"),
        (Some(Status::Failed(_)), ..) => "FAIL".to_string(),
        (Some(Status::Ok), false, None) => {
            format!("skipped: reference {reference} not in registry")
        }
        (Some(Status::Ok), false, Some(Status::Skipped(why))) => {
            format!("skipped: reference {reference}: {why}")
        }
        (Some(Status::Ok), false, Some(Status::Failed(_))) => "FAIL".to_string(),
        (Some(Status::Ok), ..) => match ratio {
            None => "skipped: no same-class pairs".to_string(),
            Some(r) => {
                // Parked check (WORKLOADS.md section 1): our roles' CPU-s per wall-s must stay
                // within 1.25x of the reference's in the same round (median over the pairs);
                // a reference that records no CPU time falls back to the absolute 0.5 bound.
                let cpu_ratio =
                    median(&pairs.iter().filter_map(|p| p.cpu_ratio).collect::<Vec<_>>());
                let spun = reg.row(&t.ours).is_some_and(|row| row.parked)
                    && match cpu_ratio {
                        Some(c) => c > PARKED_CPU_RATIO,
                        None => ours
                            .and_then(|o| o.cpu_per_wall())
                            .is_some_and(|c| c >= 0.5),
                    };
                // Thread bound (A3): the largest count any repeat of our row reported.
                let too_many_threads = match (t.max_threads, ours.and_then(|o| o.max_threads())) {
                    (Some(bound), Some(seen)) => seen > bound,
                    _ => false,
                };
                if spun {
                    "FAIL (spun)".to_string()
                } else if too_many_threads {
                    "FAIL (threads)".to_string()
                } else if t.met(r) {
                    "pass".to_string()
                } else {
                    "FAIL".to_string()
                }
            }
        },
    };
    TargetResult {
        target: t.clone(),
        reference: reference.to_string(),
        pairs,
        ratio,
        verdict,
        class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    fn sample(round: usize, figure: f64, cpw: f64, threads: Option<u64>) -> Sample {
        let mut m = crate::Measure::new(1, 1.0);
        m.threads = threads;
        Sample {
            round,
            probe_ns: Some(60.0),
            class: Some(Class::Near),
            placement: None,
            outcome: Outcome::Done(m),
            figure: Some(figure),
            cpu_per_wall: Some(cpw),
        }
    }

    fn row_result(id: &str, samples: Vec<Sample>) -> RowResult {
        RowResult {
            key: id.into(),
            id: id.into(),
            pin: false,
            n: 1,
            samples,
            status: Status::Ok,
        }
    }

    #[test]
    fn thread_bound_judges_the_largest_count() {
        let reg = crate::registry::build(true);
        let t = reg
            .targets
            .iter()
            .find(|t| t.ours == "A3")
            .expect("A3 target")
            .clone();
        assert_eq!(t.max_threads, Some(1));
        assert_eq!(t.label(), "≥ 0.3×, + ≤ 1 thread");
        let judge = |threads: [u64; 3]| {
            let ours = row_result(
                "A3",
                (0..3)
                    .map(|r| sample(r, 1.0, 0.5, Some(threads[r])))
                    .collect(),
            );
            let q3 = row_result("Q3", (0..3).map(|r| sample(r, 2.0, 0.5, None)).collect());
            pair_target(&reg, &[ours, q3], &t, "Q3")
        };
        let ok = judge([1, 1, 1]);
        assert_eq!(ok.ratio, Some(0.5));
        assert_eq!(ok.verdict, "pass");
        assert_eq!(judge([1, 2, 1]).verdict, "FAIL (threads)");
    }

    #[test]
    fn parked_row_that_spins_fails() {
        let reg = crate::registry::build(true);
        let t = reg
            .targets
            .iter()
            .find(|t| t.ours == "A1")
            .expect("A1 target")
            .clone();
        let judge = |cpw: f64| {
            let ours = row_result("A1", (0..3).map(|r| sample(r, 30.0, cpw, None)).collect());
            let q5 = row_result("Q5", (0..3).map(|r| sample(r, 25.0, 0.8, None)).collect());
            pair_target(&reg, &[ours, q5], &t, "Q5").verdict
        };
        assert_eq!(judge(0.9), "pass");
        assert_eq!(judge(1.2), "FAIL (spun)");
    }

    #[test]
    fn ratio_across_units_is_taken_in_base_units() {
        let reg = crate::registry::build(true);
        let (q6, l5a) = (reg.row("Q6@1MiB").unwrap(), reg.row("L5a").unwrap());
        // 12,000 MB/s against 24 GB/s is 0.5.
        let p = make_pair(
            q6,
            l5a,
            &sample(0, 12_000.0, 1.0, None),
            &sample(0, 24.0, 1.0, None),
            0,
            false,
        )
        .unwrap();
        assert!((p.ratio - 0.5).abs() < 1e-12, "{}", p.ratio);
    }

    #[test]
    fn tiny_run_pairs_and_judges() {
        let reg = crate::registry::build(true);
        let opts = Options {
            quick: true,
            repeats: 3,
            only: vec!["P6e".into(), "V2".into(), "P5a".into(), "S1".into()],
            scale: 0.001,
            progress: false,
            ..Options::default()
        };
        let res = run(&reg, &opts);
        let p6e = res.row("P6e").unwrap();
        assert_eq!(p6e.status, Status::Ok);
        assert_eq!(p6e.samples.len(), 3);
        assert!(p6e.median().unwrap() > 0.0);
        let v2 = res.targets.iter().find(|t| t.target.ours == "V2").unwrap();
        assert_eq!(v2.reference, "P6e");
        let ratios: Vec<f64> = v2.pairs.iter().map(|p| p.ratio).collect();
        assert_eq!(v2.ratio, median(&ratios));
        if v2.pairs.is_empty() {
            assert!(v2.verdict.starts_with("skipped: "), "{}", v2.verdict);
        } else {
            assert!(
                v2.verdict == "pass" || v2.verdict == "FAIL",
                "{}",
                v2.verdict
            );
            for p in &v2.pairs {
                assert!(p.class.is_some(), "two-process rows pair within a class");
                assert!((p.ratio - p.ours / p.reference).abs() < 1e-9);
            }
        }
        // Single-process rows pair every round, whatever the class.
        let s1 = res.targets.iter().find(|t| t.target.ours == "S1").unwrap();
        assert!(s1.pairs.iter().all(|p| p.class.is_none()));
        assert_eq!(
            res.row("P7b").unwrap().status,
            Status::Skipped("not selected (--only)".into())
        );
    }
}
