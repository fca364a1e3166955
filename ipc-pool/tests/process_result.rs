//! `Process::spawn_with_result`: values, panics, signals, timeouts, and the result pipe's fds.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::in_child_checked;
use ipc_pool::{Error, JoinTimeoutError, Process};
use ipc_testkit::Leaks;

#[test]
fn values_panics_exits_and_signals() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let leaks = Leaks::snapshot("/ipct-result-none");
        let mut h = Process::spawn_with_result(|| (1..=10u64).sum::<u64>()).unwrap();
        assert_eq!(h.join().unwrap(), 55);
        assert!(matches!(h.join(), Err(Error::Taken)));

        let mut s = Process::spawn_with_result(|| vec![String::from("a"), "b".into()]).unwrap();
        assert_eq!(s.join().unwrap(), ["a", "b"]);

        // Larger than a pipe's buffer: read while the child writes.
        let mut big = Process::spawn_with_result(|| vec![7u8; 4 << 20]).unwrap();
        let v = big.join().unwrap();
        assert_eq!(v.len(), 4 << 20);
        assert!(v.iter().all(|&b| b == 7));

        let mut p = Process::spawn_with_result(|| -> u32 { panic!("no value today") }).unwrap();
        assert!(matches!(p.join(), Err(Error::Panicked(m)) if m == "no value today"));

        let mut e = Process::spawn_with_result(|| -> u32 { ipc_pool::exit(3) }).unwrap();
        let pid = e.pid();
        assert!(matches!(e.join(), Err(Error::NoResult { pid: p, exitcode: 3 }) if p == pid));

        let mut k = Process::spawn_with_result(|| -> u32 {
            std::thread::sleep(Duration::from_secs(30));
            1
        })
        .unwrap();
        k.process().kill().unwrap();
        assert!(matches!(
            k.join(),
            Err(Error::Killed { signal, .. }) if signal == libc::SIGKILL
        ));
        drop((h, s, big, p, e, k));
        leaks.assert_no_new_fds();
        leaks.assert_no_children();
    });
}

#[test]
fn join_timeout_waits_at_least_the_timeout_then_joins() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let (mut go, go_child) = ipc_pipe::duplex().unwrap();
        let mut h = Process::spawn_with_result(move || {
            let mut go_child = go_child;
            go_child.recv_timeout::<u8>(Duration::from_secs(20)).ok()
        })
        .unwrap();
        let t = Instant::now();
        assert!(matches!(
            h.join_timeout(Duration::from_millis(50)),
            Err(JoinTimeoutError::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
        go.send(&9u8).unwrap();
        assert_eq!(h.join_timeout(Duration::from_secs(20)).unwrap(), Some(9));
    });
}

/// The pipe inodes among this process's open fds.
fn pipes() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with("pipe:"))
        .collect()
}

/// A child spawned while another handle waits holds no copy of that handle's result pipe
/// (so a later child can neither read it nor keep its write end open).
#[test]
fn later_children_do_not_inherit_a_result_pipe() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let before = pipes();
        let (mut go, go_child) = ipc_pipe::duplex().unwrap();
        let mut first = Process::spawn_with_result(move || {
            let mut go_child = go_child;
            go_child.recv_timeout::<u8>(Duration::from_secs(20)).is_ok()
        })
        .unwrap();
        let ours: BTreeSet<String> = pipes().difference(&before).cloned().collect();
        assert_eq!(ours.len(), 1, "one read end of a result pipe: {ours:?}");
        let mut second = Process::spawn_with_result(pipes).unwrap();
        let seen = second.join().unwrap();
        let plain = {
            let (mut rx, tx) = ipc_pipe::duplex().unwrap();
            let mut p = Process::spawn(move || {
                let mut tx = tx;
                let _ = tx.send(&pipes());
            })
            .unwrap();
            let seen: BTreeSet<String> = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            assert!(p.join().unwrap().success());
            seen
        };
        go.send(&1u8).unwrap();
        assert!(first.join().unwrap());
        assert!(
            seen.is_disjoint(&ours),
            "inherited by a result child: {seen:?}"
        );
        assert!(
            plain.is_disjoint(&ours),
            "inherited by a plain child: {plain:?}"
        );
    });
}
