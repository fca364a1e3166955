//! `compare`: every workload of `WORKLOADS.md` round-robin in one run, with the placement probe,
//! checksums, ratios against the targets, and `table.md` / `results.json` / SVG charts.
//!
//! ```text
//! cargo run --release -p benches --bin compare -- --quick
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use benches::probe::{Class, Edges};
use benches::runner::Options;

const HELP: &str = "\
compare: every ipc-* mechanism beside its peers, round-robin, in one run

USAGE: cargo run --release -p benches --bin compare -- [OPTIONS]

  --quick               n/4 per row, short size sweep (8 B, 512 B, 32 KiB, 1 MiB), K5 at 1, 2, 4
  --repeats N           timed repeats per row (default 5)
  --only IDS            comma-separated row or group id prefixes (Q1,P7,C4@8B,...)
  --scale F             multiply every n by F (calibration)
  --pin                 add pinned variants (producers / A on cpu 0, consumers / B on cpu 1)
  --placement CLASS     before each repeat wait (probing every 0.5 s, up to 30 s) for close|near|far
  --class-edges A,B     probe class edges in ns/RT (default 45,150)
  --out DIR             output directory (default target/compare)
  --with-python         add the Python multiprocessing column (needs python3 on PATH)
  --no-progress         no progress bar
  --check               exit 1 when any verdict is FAIL (0: the run completed; 2: it could not)
  -h, --help            this text
";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    let val = |it: &mut std::slice::Iter<'_, String>, name: &str| -> Result<String, String> {
        it.next()
            .cloned()
            .ok_or_else(|| format!("{name} needs a value"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--repeats" => {
                o.repeats = val(&mut it, a)?
                    .parse()
                    .map_err(|_| "--repeats: not a number")?
            }
            "--only" => {
                o.only = val(&mut it, a)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--scale" => {
                o.scale = val(&mut it, a)?
                    .parse()
                    .map_err(|_| "--scale: not a number")?
            }
            "--pin" => o.pin = true,
            "--placement" => {
                let v = val(&mut it, a)?;
                o.placement = Some(Class::parse(&v).ok_or("--placement: close, near or far")?);
            }
            "--class-edges" => {
                let v = val(&mut it, a)?;
                let p: Vec<f64> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                if p.len() != 2 || p[0] >= p[1] {
                    return Err("--class-edges: two increasing numbers, e.g. 45,150".into());
                }
                o.edges = Edges(p[0], p[1]);
            }
            "--out" => o.out = PathBuf::from(val(&mut it, a)?),
            "--with-python" => o.with_python = true,
            "--no-progress" => o.progress = false,
            "--check" => o.check = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.repeats == 0 {
        return Err("--repeats must be at least 1".into());
    }
    if o.scale.is_nan() || o.scale <= 0.0 {
        return Err("--scale must be positive".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("compare: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let reg = benches::registry::build(opts.quick);
    let res = benches::runner::run(&reg, &opts);
    match benches::report::write_all(&reg, &res, &opts.out) {
        Ok(md) => {
            println!("{md}");
            let dir = opts.out.canonicalize().unwrap_or(opts.out.clone());
            println!(
                "Wrote {0}/table.md, {0}/results.json, {0}/ratios.svg and {0}/curve-*.svg",
                dir.display()
            );
            // Verdict cells are the only ones that say FAIL (see WORKLOADS.md, "Table").
            if opts.check && md.lines().any(|l| l.contains("| FAIL")) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("compare: writing results: {e}");
            ExitCode::from(2)
        }
    }
}
