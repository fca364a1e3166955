//! Our process and pool rows (`ipc-pool`): K1, K2a, K2b, K3, K4, K5@w.
//!
//! A pool runs dispatcher threads and forks workers, while the harness must stay
//! single-threaded whenever it forks. So every pool row runs inside one forked driver child
//! (a single-role [`run_procs`]): the child builds the pool, warms it with `map(sq, 0..8)`,
//! passes the gate, times the call itself, checks every result and reports the timed
//! nanoseconds as its role sum; the pool is dropped (workers reaped) inside the child. A wrong
//! result fails the repeat with its cause. K4 forks plain processes and runs in the harness,
//! as P9a does.

use ipc_pool::{Pool, Process};

use crate::harness::{run_procs, time_local, RoleOut};
use crate::os;
use crate::refs_proc::{burn, serial_burn, sq};
use crate::{Measure, Outcome, Run};

pub(crate) fn pool_err(e: impl std::fmt::Display) -> String {
    format!("ipc-pool: {e}")
}

/// A 2-worker (or `workers`) pool, warmed by `map(sq, 0..8)` with its results checked.
pub(crate) fn warm_pool(workers: usize) -> Result<Pool, String> {
    let pool = Pool::new(workers).map_err(pool_err)?;
    let warm = pool.map(sq, 0..8u64).map_err(pool_err)?;
    check_sq(&warm, 8, "warm-up map")?;
    Ok(pool)
}

/// `got` must be exactly `sq(0), sq(1), .., sq(n-1)`, in order.
fn check_sq(got: &[u64], n: u64, what: &str) -> Result<(), String> {
    if got.len() as u64 != n {
        return Err(format!("{what}: {} results, want {n}", got.len()));
    }
    if let Some(i) = (0..n).find(|&i| got[i as usize] != sq(i)) {
        return Err(format!(
            "{what}: result {i} is {}, want {}",
            got[i as usize],
            sq(i)
        ));
    }
    Ok(())
}

/// Runs `body` in one forked driver child; `body` returns (timed ns, ops done) and the
/// measure is built from them.
pub(crate) fn in_driver<F>(body: F) -> Result<Measure, String>
where
    F: Fn() -> Result<(u64, u64), String>,
{
    let g = run_procs(1, false, &|_| 0, |g| {
        g.start();
        let (ns, count) = body()?;
        Ok(RoleOut { sum: ns, count })
    })?;
    let out = g.roles[0];
    if out.sum == 0 {
        return Err("driver reported no timed interval".into());
    }
    Ok(Measure::new(out.count, out.sum as f64 * 1e-9))
}

/// K1: sequential `pool.apply(sq, i)` on a 2-worker pool.
pub fn k1(r: &Run) -> Outcome {
    let n = r.n;
    in_driver(|| {
        let pool = warm_pool(2)?;
        let t0 = os::now_ns();
        for i in 0..n {
            let v = pool.apply(sq, i).map_err(pool_err)?;
            if v != sq(i) {
                return Err(format!("apply(sq, {i}) returned {v}, want {}", sq(i)));
            }
        }
        let t1 = os::now_ns();
        Ok(((t1 - t0).max(1), n))
    })
    .into()
}

/// K2a (`chunk = None`, default chunking) and K2b (`Some(1)`): `pool.map(sq, 0..n)`.
pub fn k2(r: &Run, chunk: Option<usize>) -> Outcome {
    let n = r.n;
    in_driver(|| {
        let pool = warm_pool(2)?;
        let t0 = os::now_ns();
        let got = match chunk {
            None => pool.map(sq, 0..n),
            Some(c) => pool.map_chunked(sq, 0..n, c),
        }
        .map_err(pool_err)?;
        let t1 = os::now_ns();
        check_sq(&got, n, "map")?;
        Ok(((t1 - t0).max(1), n))
    })
    .into()
}

/// K3 (`workers` 2) and K5@w: serial `burn` ×n, `pool.map(burn, 0..n)`, serial again.
///
/// The serial passes run in the harness, around the driver child; the child checks the pool's
/// results against the first pass, the harness the second pass against the first. The figure
/// is mean serial / pool; the drift between the two serial passes goes in the note.
pub fn k_burn(r: &Run, workers: usize) -> Outcome {
    let run = || -> Result<Measure, String> {
        let n = r.n.max(1);
        let (s1, want) = serial_burn(n)?;
        let want = &want;
        let mut m = in_driver(|| {
            let pool = warm_pool(workers)?;
            let t0 = os::now_ns();
            let got = pool.map(burn, 0..n).map_err(pool_err)?;
            let t1 = os::now_ns();
            if got.len() != want.len() {
                return Err(format!(
                    "map(burn): {} results, want {}",
                    got.len(),
                    want.len()
                ));
            }
            if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
                return Err(format!(
                    "map(burn): result {i} is {:#x}, serial gave {:#x}",
                    got[i], want[i]
                ));
            }
            Ok(((t1 - t0).max(1), n))
        })?;
        let (s2, again) = serial_burn(n)?;
        if &again != want {
            return Err("serial burn gave different results on its second pass".into());
        }
        let serial = (s1.elapsed + s2.elapsed) / 2.0;
        m.value = Some(serial / m.elapsed);
        m.note = Some(format!(
            "serial {:.3} s / {:.3} s (drift {:+.1}%), pool {:.3} s",
            s1.elapsed,
            s2.elapsed,
            (s2.elapsed / s1.elapsed - 1.0) * 100.0,
            m.elapsed
        ));
        Ok(m)
    };
    run().into()
}

/// K4: `Process::spawn(|| {})` + `join()`, in the harness process.
pub fn k4(r: &Run) -> Outcome {
    time_local(|| {
        for i in 0..r.n {
            let mut p = Process::spawn(|| {}).map_err(pool_err)?;
            let st = p.join().map_err(pool_err)?;
            if !st.success() {
                return Err(format!("process {i} ended with {st}"));
            }
        }
        Ok(r.n)
    })
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_sq_catches_wrong_order_and_length() {
        let good: Vec<u64> = (0..5).map(sq).collect();
        assert!(check_sq(&good, 5, "t").is_ok());
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert!(check_sq(&swapped, 5, "t").is_err());
        assert!(check_sq(&good[..4], 5, "t").is_err());
    }

    #[test]
    fn pool_rows_run_and_check() {
        for o in [
            k1(&Run::new(20)),
            k2(&Run::new(100), None),
            k2(&Run::new(20), Some(1)),
            k4(&Run::new(3)),
        ] {
            match o {
                Outcome::Done(m) => assert!(m.n > 0 && m.elapsed > 0.0, "{m:?}"),
                o => panic!("{o:?}"),
            }
        }
        match k_burn(&Run::new(2), 2) {
            Outcome::Done(m) => assert!(m.value.is_some_and(|v| v > 0.0), "{m:?}"),
            o => panic!("{o:?}"),
        }
    }
}
