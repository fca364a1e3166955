//! The Python column: runs `benches/python/mp_workloads.py --workload ID --n N` and reads its
//! one JSON line `{id, n, unit, value, elapsed_s, ok, error, python}`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Measure, Outcome};

/// Path of the shipped script.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("mp_workloads.py")
}

/// `python3 --version`, when python3 is on PATH.
pub fn version() -> Option<String> {
    let out = Command::new("python3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the Python column can run; the skip reason otherwise.
pub fn available() -> Result<(), String> {
    if version().is_none() {
        return Err("python3 not on PATH".into());
    }
    if !script().is_file() {
        return Err("benches/python/mp_workloads.py not present".into());
    }
    Ok(())
}

/// Runs one Python workload (with the harness's 120 s watchdog). When the script's `unit` is
/// `unit`, its `value` is kept; otherwise the figure is derived from `n` and `elapsed_s`.
pub fn run(id: &str, n: u64, unit: &str) -> Outcome {
    if let Err(e) = available() {
        return Outcome::Skipped(e);
    }
    let mut child = match Command::new("python3")
        .arg(script())
        .args(["--workload", id, "--n", &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Skipped(format!("python3: {:?}", e.kind())),
    };
    let deadline = Instant::now() + crate::harness::WATCHDOG;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Failed("watchdog: python not done after 120 s".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Outcome::Failed(format!("python wait: {:?}", e.kind())),
        }
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let Some(line) = line else {
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        let last = err.lines().last().unwrap_or("").to_string();
        return Outcome::Failed(format!(
            "python exited {status} without a JSON line: {last}"
        ));
    };
    parse(line, unit)
}

/// Turns the script's JSON line into an outcome.
pub fn parse(line: &str, unit: &str) -> Outcome {
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(format!("python JSON: {e}")),
    };
    if v.get("ok").and_then(|o| o.as_bool()) != Some(true) {
        let e = v.get("error").and_then(|e| e.as_str()).unwrap_or("not ok");
        return Outcome::Failed(format!("python: {e}"));
    }
    let n = v.get("n").and_then(|x| x.as_u64()).unwrap_or(0);
    let elapsed = v.get("elapsed_s").and_then(|x| x.as_f64()).unwrap_or(0.0);
    if n == 0 || elapsed <= 0.0 {
        return Outcome::Failed("python: no n or elapsed_s".into());
    }
    let mut m = Measure::new(n, elapsed);
    if v.get("unit").and_then(|u| u.as_str()) == Some(unit) {
        m.value = v.get("value").and_then(|x| x.as_f64());
    }
    if unit == "speed-up" && m.value.is_none() {
        return Outcome::Failed("python: no speed-up value".into());
    }
    m.note = v.get("python").and_then(|p| p.as_str()).map(str::to_owned);
    Outcome::Done(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_line() {
        let o = parse(
            r#"{"id":"py-S1","n":1000,"unit":"ns","value":69.0,"elapsed_s":0.5,"ok":true,"error":null,"python":"3.11"}"#,
            "ns/pair",
        );
        match o {
            Outcome::Done(m) => assert_eq!((m.n, m.elapsed, m.value), (1000, 0.5, None)),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            parse(r#"{"ok":false,"error":"x"}"#, "ns/pair"),
            Outcome::Failed(_)
        ));
    }
}
