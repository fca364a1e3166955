//! Output of `compare`: `table.md` (printed too), `results.json` (machine info, every sample,
//! every target with its pairs), `ratios.svg` and one SVG per curve, drawn with `plotters`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::{json, Value};

use crate::probe::Class;
use crate::registry::{Registry, Unit};
use crate::runner::{median, Results, Status};
use crate::Outcome;

/// Keeps free text (reasons, notes) from looking like a verdict: no word `fail` and no `miss`
/// anywhere, so `grep -iE '\bfail\b|miss'` finds exactly the rows below target.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let lower = s.to_lowercase();
    if lower.len() != s.len() {
        return s.replace(['|', '\n'], " ");
    }
    let b = s.as_bytes();
    let lb = lower.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !(lb[i - 1] as char).is_alphanumeric();
        if lb[i..].starts_with(b"miss") {
            out.push_str(&s[i..i + 2]);
            out.push('-');
            out.push_str(&s[i + 2..i + 4]);
            i += 4;
            continue;
        }
        if word_start
            && lb[i..].starts_with(b"fail")
            && (i + 4 == b.len() || !(lb[i + 4] as char).is_alphanumeric())
        {
            out.push_str(&s[i..i + 2]);
            out.push('-');
            out.push_str(&s[i + 2..i + 4]);
            i += 4;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(if ch == '|' || ch == '\n' { ' ' } else { ch });
        i += ch.len_utf8();
    }
    out
}

/// A figure with three significant digits.
pub fn fmt_fig(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

fn fig_unit(x: Option<f64>, u: &Unit) -> String {
    match x {
        Some(x) => format!("{} {}", fmt_fig(x), u.label),
        None => "–".into(),
    }
}

fn status_cell(s: &Status) -> String {
    match s {
        Status::Ok => "ok".into(),
        Status::Skipped(w) => format!("skipped: {}", clean(w)),
        Status::Failed(w) => format!("FAILED: {}", clean(w)),
    }
}

/// The markdown of the run: targets, then every row, then the curves.
pub fn table_md(reg: &Registry, res: &Results) -> String {
    let mut s = String::new();
    let o = &res.options;
    let _ = writeln!(
        s,
        "# compare: {} repeats{}{}, {:.0} s\n",
        o.repeats,
        if o.quick { ", --quick" } else { "" },
        if o.pin { ", --pin" } else { "" },
        res.wall_s
    );
    let pr = median(&res.probes);
    let _ = writeln!(
        s,
        "Placement probe (L1, 50,000 RT on cpus 0 and 1): median {} ns/RT over {} probes; classes close < {} ≤ near < {} ≤ far.\n",
        pr.map(fmt_fig).unwrap_or_else(|| "–".into()),
        res.probes.len(),
        o.edges.0,
        o.edges.1
    );
    s.push_str("| id | workload | ours | reference | reference figure | ratio | target | k | class | verdict |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for t in &res.targets {
        let Some(orow) = reg.row(&t.target.ours) else {
            continue;
        };
        let ours_res = res.row(&t.target.ours);
        let ours_fig = fig_unit(ours_res.and_then(|r| r.median()), &orow.unit);
        let (ref_name, ref_fig) = if t.reference == "self" {
            ("serial, same repeat".to_string(), "–".to_string())
        } else {
            let rr = reg.row(&t.reference);
            (
                format!("{} {}", t.reference, clean(&t.target.what)),
                match (rr, res.row(&t.reference)) {
                    (Some(row), Some(r)) => fig_unit(r.median(), &row.unit),
                    _ => "–".into(),
                },
            )
        };
        let ratio = t
            .ratio
            .map(|r| format!("{}×", fmt_fig(r)))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.target.ours,
            clean(&orow.what),
            ours_fig,
            ref_name,
            ref_fig,
            ratio,
            t.target.label(),
            t.pairs.len(),
            t.class,
            if t.verdict.starts_with("skipped: ") {
                format!("skipped: {}", clean(&t.verdict[9..]))
            } else {
                t.verdict.clone()
            }
        );
    }
    // Notes on the targets: the thread counts a thread bound judged (A3's consumer).
    let mut notes = Vec::new();
    for t in &res.targets {
        let (Some(bound), Some(r)) = (t.target.max_threads, res.row(&t.target.ours)) else {
            continue;
        };
        let per: Vec<String> = r
            .samples
            .iter()
            .filter_map(|x| match &x.outcome {
                Outcome::Done(m) => m.threads.map(|k| k.to_string()),
                _ => None,
            })
            .collect();
        if per.is_empty() {
            continue;
        }
        let last = r.samples.iter().rev().find_map(|x| match &x.outcome {
            Outcome::Done(m) => m.note.clone(),
            _ => None,
        });
        notes.push(format!(
            "- {}: extra threads per repeat {} (bound {bound}){}",
            t.target.ours,
            per.join(", "),
            last.map(|n| format!("; last repeat: {}", clean(&n)))
                .unwrap_or_default()
        ));
    }
    if !notes.is_empty() {
        s.push_str("\nNotes:\n\n");
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
    }
    s.push_str("\n## Every row\n\n| row | workload | n | median | min | max | close | near | far | status |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &res.rows {
        let Some(row) = reg.row(&r.id) else { continue };
        let f = r.figures();
        let mn = f
            .iter()
            .copied()
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x))));
        let mx = f
            .iter()
            .copied()
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
        let cm = |c: Class| r.class_median(c).map(fmt_fig).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.key,
            clean(&row.what),
            r.n,
            fig_unit(r.median(), &row.unit),
            mn.map(fmt_fig).unwrap_or_else(|| "–".into()),
            mx.map(fmt_fig).unwrap_or_else(|| "–".into()),
            cm(Class::Close),
            cm(Class::Near),
            cm(Class::Far),
            status_cell(&r.status)
        );
    }
    for c in &reg.curves {
        let mut xs: Vec<f64> = c.points.iter().map(|p| p.1).collect();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.dedup();
        let mut series: Vec<&str> = Vec::new();
        for p in &c.points {
            if !series.contains(&p.0.as_str()) {
                series.push(&p.0);
            }
        }
        let _ = writeln!(
            s,
            "\n## Curve {} ({} vs {})\n",
            c.name, c.unit.label, c.x_label
        );
        let _ = writeln!(s, "| {} | {} |", c.x_label, series.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(series.len()));
        for x in xs {
            let cells: Vec<String> = series
                .iter()
                .map(|se| {
                    c.points
                        .iter()
                        .find(|p| p.0 == *se && p.1 == x)
                        .and_then(|p| res.row(&p.2))
                        .and_then(|r| r.median())
                        .map(fmt_fig)
                        .unwrap_or_else(|| "–".into())
                })
                .collect();
            let xl = if c.log_x {
                crate::size_label(x as usize)
            } else {
                format!("{x}")
            };
            let _ = writeln!(s, "| {xl} | {} |", cells.join(" | "));
        }
    }
    s
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn cmd(prog: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Versions of the crates named in the workspace's Cargo.lock.
fn crate_versions() -> Value {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .unwrap_or_default();
    let wanted = [
        "ipc-shm",
        "ipc-sem",
        "ipc-pipe",
        "ipc-queue",
        "ipc-pool",
        "crossbeam-queue",
        "crossbeam-channel",
        "crossbeam-utils",
        "ipc-channel",
        "ipmpsc",
        "shared_memory",
        "raw_sync",
        "parking_lot",
        "criterion",
        "nix",
        "libc",
    ];
    let mut out = serde_json::Map::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if wanted.contains(&n.as_str()) {
                let v = v.trim_matches('"').to_string();
                match out.get_mut(&n) {
                    Some(Value::String(old)) if *old != v => *old = format!("{old}, {v}"),
                    Some(_) => {}
                    None => {
                        out.insert(n, Value::String(v));
                    }
                }
            }
        }
    }
    Value::Object(out)
}

/// Facts about the machine the run happened on.
pub fn machine() -> Value {
    let cpu = read("/proc/cpuinfo").and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    });
    let rss = read("/proc/self/status").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("VmRSS"))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    });
    json!({
        "cpu": cpu,
        "cpus": crate::os::cpus(),
        "kernel": cmd("uname", &["-sr"]),
        "glibc": crate::os::glibc_version(),
        "rustc": cmd(&std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()), &["--version"]),
        "crates": crate_versions(),
        "mq": {
            "msg_max": read("/proc/sys/fs/mqueue/msg_max"),
            "msgsize_max": read("/proc/sys/fs/mqueue/msgsize_max"),
            "queues_max": read("/proc/sys/fs/mqueue/queues_max"),
        },
        "pipe": {
            "max_size": read("/proc/sys/fs/pipe-max-size"),
            "user_pages_soft": read("/proc/sys/fs/pipe-user-pages-soft"),
            "our_simplex_size": crate::ours_pipe::simplex_pipe_size(),
        },
        "vmrss": rss,
        "python": crate::python::version(),
    })
}

/// `results.json`.
pub fn results_json(reg: &Registry, res: &Results) -> Value {
    let o = &res.options;
    let rows: Vec<Value> = res
        .rows
        .iter()
        .map(|r| {
            let row = reg.row(&r.id);
            json!({
                "id": r.key,
                "group": row.map(|x| x.group.clone()),
                "workload": row.map(|x| x.what.clone()),
                "unit": row.map(|x| x.unit.label),
                "n": r.n,
                "pinned": r.pin,
                "status": status_cell(&r.status),
                "median": r.median(),
                "samples": r.samples.iter().map(|s| {
                    let (outcome, elapsed, cpu, note) = match &s.outcome {
                        Outcome::Done(m) => ("done".to_string(), Some(m.elapsed), m.cpu, m.note.clone()),
                        Outcome::Skipped(w) => (format!("skipped: {w}"), None, None, None),
                        Outcome::Failed(w) => (format!("FAILED: {w}"), None, None, None),
                    };
                    let threads = match &s.outcome {
                        Outcome::Done(m) => m.threads,
                        _ => None,
                    };
                    json!({
                        "round": s.round,
                        "probe_ns_per_rt": s.probe_ns,
                        "class": s.class,
                        "placement": s.placement,
                        "outcome": outcome,
                        "figure": s.figure,
                        "elapsed_s": elapsed,
                        "cpu_s": cpu,
                        "cpu_per_wall": s.cpu_per_wall,
                        "note": note,
                        "threads": threads,
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let targets: Vec<Value> = res
        .targets
        .iter()
        .map(|t| {
            json!({
                "ours": t.target.ours,
                "reference": t.reference,
                "reference_what": t.target.what,
                "target": t.target.label(),
                "ratio": t.ratio,
                "k": t.pairs.len(),
                "class": t.class,
                "verdict": t.verdict,
                "max_threads": t.target.max_threads,
                "threads_seen": res.row(&t.target.ours).and_then(|r| r.max_threads()),
                "pairs": t.pairs.iter().map(|p| json!({
                    "round": p.round, "class": p.class, "ours": p.ours, "reference": p.reference,
                    "ratio": p.ratio, "extra": p.extra,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "machine": machine(),
        "options": {
            "quick": o.quick, "repeats": o.repeats, "only": o.only, "scale": o.scale, "pin": o.pin,
            "placement": o.placement, "class_edges": [o.edges.0, o.edges.1], "with_python": o.with_python,
        },
        "wall_s": res.wall_s,
        "probes_ns_per_rt": res.probes,
        "rows": rows,
        "targets": targets,
    })
}

fn draw_err(e: impl std::fmt::Debug) -> String {
    format!("plotters: {e:?}")
}

/// `ratios.svg`: each target's ratio over its threshold (log axis; above 1 meets it).
pub fn ratios_svg(res: &Results, path: &Path) -> Result<(), String> {
    let bars: Vec<(String, f64, bool)> = res
        .targets
        .iter()
        .filter_map(|t| {
            t.ratio.map(|r| {
                (
                    format!("{} / {}", t.target.ours, t.reference),
                    t.target.margin(r),
                    t.verdict == "pass",
                )
            })
        })
        .collect();
    let h = 120 + 22 * bars.len().max(1) as u32;
    let root = SVGBackend::new(path, (900, h)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let lo = bars.iter().map(|b| b.1).fold(0.5f64, f64::min).max(1e-4) / 1.5;
    let hi = bars.iter().map(|b| b.1).fold(2.0f64, f64::max) * 1.5;
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ratio / threshold per target (≥ 1 meets it; log scale)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(180)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(draw_err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("ratio / threshold")
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let color = if b.2 { GREEN.mix(0.7) } else { RED.mix(0.7) };
            let (a, z) = if b.1 >= 1.0 { (1.0, b.1) } else { (b.1, 1.0) };
            Rectangle::new(
                [(a, SegmentValue::Exact(i)), (z, SegmentValue::Exact(i + 1))],
                color.filled(),
            )
        }))
        .map_err(draw_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(2),
        )))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)
}

/// One chart per curve: `curve-<name>.svg`.
pub fn curve_svgs(reg: &Registry, res: &Results, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for c in &reg.curves {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (name, x, id) in &c.points {
            let Some(y) = res.row(id).and_then(|r| r.median()) else {
                continue;
            };
            match series.iter_mut().find(|s| &s.0 == name) {
                Some(s) => s.1.push((*x, y)),
                None => series.push((name.clone(), vec![(*x, y)])),
            }
        }
        if c.name == "K5" {
            // The ceiling min(w, 2).
            let xs: Vec<f64> = c.points.iter().map(|p| p.1).collect();
            series.push((
                "min(w, 2)".into(),
                xs.iter().map(|&x| (x, x.min(2.0))).collect(),
            ));
        }
        let path = dir.join(format!("curve-{}.svg", c.name));
        let root = SVGBackend::new(&path, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
        let (x0, x1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let caption = format!("{}: {} vs {}", c.name, c.unit.label, c.x_label);
        if pts.is_empty() {
            root.draw(&Text::new(
                format!("{caption}: no data in this run"),
                (20, 20),
                ("sans-serif", 18),
            ))
            .map_err(draw_err)?;
            root.present().map_err(draw_err)?;
            out.push(path.clone());
            continue;
        }
        let mut b = ChartBuilder::on(&root);
        b.caption(&caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60);
        let y0 = (y0 / 1.5).max(1e-6);
        let y1 = y1 * 1.5;
        macro_rules! plot {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(c.x_label.as_str())
                    .y_desc(c.unit.label)
                    .draw()
                    .map_err(draw_err)?;
                for (i, (name, mut p)) in series.clone().into_iter().enumerate() {
                    p.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let color = Palette99::pick(i).to_rgba();
                    chart
                        .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
                        .map_err(draw_err)?
                        .label(name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(p.iter().map(|&q| Circle::new(q, 3, color.filled())))
                        .map_err(draw_err)?;
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(draw_err)?;
            }};
        }
        if c.log_x {
            plot!(b
                .build_cartesian_2d((x0 / 1.5..x1 * 1.5).log_scale(), (y0..y1).log_scale())
                .map_err(draw_err)?);
        } else {
            plot!(b
                .build_cartesian_2d((x0 - 0.5)..(x1 + 0.5), 0.0..y1)
                .map_err(draw_err)?);
        }
        root.present().map_err(draw_err)?;
        out.push(path.clone());
    }
    Ok(out)
}

/// Writes every output file into `dir`; returns the table markdown.
pub fn write_all(reg: &Registry, res: &Results, dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("create {}: {:?}", dir.display(), e.kind()))?;
    let md = table_md(reg, res);
    std::fs::write(dir.join("table.md"), &md).map_err(|e| format!("table.md: {:?}", e.kind()))?;
    let js =
        serde_json::to_string_pretty(&results_json(reg, res)).map_err(|e| format!("json: {e}"))?;
    std::fs::write(dir.join("results.json"), js)
        .map_err(|e| format!("results.json: {:?}", e.kind()))?;
    ratios_svg(res, &dir.join("ratios.svg"))?;
    curve_svgs(reg, res, dir)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_hides_verdict_words() {
        let c = clean("mq_open: EACCES (permission), probe fail, failover");
        assert!(!c.to_lowercase().contains("miss"));
        assert!(!c
            .to_lowercase()
            .split(|ch: char| !ch.is_alphanumeric())
            .any(|w| w == "fail"));
        assert!(c.contains("failover"));
        assert_eq!(fmt_fig(123.456), "123");
        assert_eq!(fmt_fig(1.2345), "1.23");
    }
}
