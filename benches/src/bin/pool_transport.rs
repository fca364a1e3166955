//! `pool_transport`: K1, K2a and K2b on 2 forked workers over per-worker `ipc_pipe`
//! connections, over `ipc_queue` queues (`Queue<Frame>` and `PodQueue` of 4 KiB frames), and
//! on the real `ipc_pool::Pool`, round-robin, medians of the repeats and queue/pipe ratios.
//! See `benches::pool_transport` for what the variants share.
//!
//! ```text
//! cargo build --release -p benches --bin pool_transport
//! flock /tmp/bench.lock target/release/pool_transport
//! ```

use std::process::ExitCode;

use benches::pool_transport::{run, Transport, Workload};
use benches::{ours_pool, Outcome, Run};

const HELP: &str = "\
pool_transport: the pool workloads over ipc-pipe and ipc-queue transports

USAGE: pool_transport [--repeats N] [--only pipe,queue,podq,pool] [--workloads K1,K2a,K2b]
                      [--scale F]
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    T(Transport),
    Pool,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::T(t) => t.name(),
            Variant::Pool => "Pool",
        }
    }
}

fn run_variant(v: Variant, k: Workload, n: u64) -> Result<f64, String> {
    match v {
        Variant::T(t) => run(t, k, n),
        Variant::Pool => {
            let r = Run::new(n);
            let o = match k {
                Workload::K1 => ours_pool::k1(&r),
                Workload::K2a => ours_pool::k2(&r, None),
                Workload::K2b => ours_pool::k2(&r, Some(1)),
            };
            match o {
                Outcome::Done(m) => Ok(m.elapsed),
                Outcome::Skipped(s) | Outcome::Failed(s) => Err(s),
            }
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeats = 5usize;
    let mut scale = 1.0f64;
    let mut variants: Vec<Variant> = Transport::ALL
        .iter()
        .map(|&t| Variant::T(t))
        .chain([Variant::Pool])
        .collect();
    let mut workloads: Vec<Workload> = Workload::ALL.to_vec();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--repeats" => repeats = val().parse().unwrap_or(0).max(1),
            "--scale" => scale = val().parse().unwrap_or(1.0),
            "--only" => {
                let want = val();
                variants.retain(|v| want.split(',').any(|w| w == v.name()));
            }
            "--workloads" => {
                let want = val();
                workloads.retain(|k| want.split(',').any(|w| w == k.name()));
            }
            "-h" | "--help" => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other}\n{HELP}");
                return ExitCode::FAILURE;
            }
        }
    }
    // samples[k][v] = figures of the repeats
    let mut samples = vec![vec![Vec::<f64>::new(); variants.len()]; workloads.len()];
    let mut failed = false;
    for rep in 0..repeats {
        for (ki, &k) in workloads.iter().enumerate() {
            let n = ((k.n() as f64 * scale) as u64).max(1);
            // Rotate the order each repeat so that no variant always runs first.
            for j in 0..variants.len() {
                let vi = (j + rep) % variants.len();
                let v = variants[vi];
                match run_variant(v, k, n) {
                    Ok(secs) => samples[ki][vi].push(k.figure(n, secs)),
                    Err(e) => {
                        eprintln!("{} {} repeat {rep}: {e}", k.name(), v.name());
                        failed = true;
                    }
                }
            }
        }
        eprintln!("repeat {}/{repeats} done", rep + 1);
    }
    println!(
        "| workload | unit | {} | queue/pipe | podq/pipe | Pool/pipe |",
        variants
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}---|---|---|", "---|".repeat(variants.len()));
    for (ki, &k) in workloads.iter().enumerate() {
        let meds: Vec<Option<f64>> = samples[ki]
            .iter()
            .map(|s| (!s.is_empty()).then(|| median(&mut s.clone())))
            .collect();
        let of = |name: &str| {
            variants
                .iter()
                .position(|v| v.name() == name)
                .and_then(|i| meds[i])
        };
        let ratio = |a: &str| match (of(a), of("pipe")) {
            (Some(x), Some(p)) => format!("{:.2}", x / p),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            k.name(),
            k.unit(),
            meds.iter()
                .map(|m| m.map_or("-".into(), |m| format!("{m:.3}")))
                .collect::<Vec<_>>()
                .join(" | "),
            ratio("queue"),
            ratio("podq"),
            ratio("Pool"),
        );
    }
    println!();
    println!("samples (figure of each repeat, in order):");
    for (ki, &k) in workloads.iter().enumerate() {
        for (vi, v) in variants.iter().enumerate() {
            let s: Vec<String> = samples[ki][vi].iter().map(|x| format!("{x:.3}")).collect();
            println!("  {} {:5} {}", k.name(), v.name(), s.join(" "));
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
