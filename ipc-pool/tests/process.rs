//! `Process` with real children; every test runs in its own forked child under a watchdog.

mod common;

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{children, in_child, in_child_checked};
use ipc_pool::{JoinTimeoutError, Process, ThreadPolicy, PANIC_EXIT_CODE};

#[test]
fn exit_codes_zero_panic_and_signals() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let mut ok = Process::spawn(|| {}).unwrap();
        let st = ok.join().unwrap();
        assert!(st.success());
        assert_eq!(ok.exitcode(), Some(0));

        let mut p = Process::spawn(|| panic!("child panics on purpose")).unwrap();
        assert_eq!(p.join().unwrap().code(), Some(PANIC_EXIT_CODE));
        assert_eq!(p.exitcode(), Some(PANIC_EXIT_CODE));

        let mut code = Process::spawn(|| ipc_pool::exit(7)).unwrap();
        code.join().unwrap();
        assert_eq!(code.exitcode(), Some(7));

        let sleeper = || std::thread::sleep(Duration::from_secs(30));
        let mut k = Process::spawn(sleeper).unwrap();
        assert!(k.is_alive());
        assert_eq!(k.exitcode(), None);
        k.kill().unwrap();
        k.join().unwrap();
        assert_eq!(k.exitcode(), Some(-9));
        assert!(!k.is_alive());

        let mut t = Process::builder().name("sleepy").spawn(sleeper).unwrap();
        assert_eq!(t.name(), "sleepy");
        t.terminate().unwrap();
        assert_eq!(t.join().unwrap().signal(), Some(libc::SIGTERM));
        assert_eq!(t.exitcode(), Some(-15));
        // Signalling a reaped child is not an error.
        t.kill().unwrap();
        assert!(children().is_empty());
    });
}

#[test]
fn join_timeout_waits_at_least_the_timeout() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let mut p = Process::spawn(|| std::thread::sleep(Duration::from_millis(300))).unwrap();
        let t = Instant::now();
        assert!(matches!(
            p.join_timeout(Duration::from_millis(50)),
            Err(JoinTimeoutError::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(p.join_timeout(Duration::from_secs(20)).unwrap().success());
    });
}

#[test]
fn sentinel_becomes_readable_when_the_child_exits() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let (mut a, b) = ipc_pipe::duplex().unwrap();
        let mut p = Process::spawn(move || {
            let mut b = b;
            let _ = b.recv::<u8>();
        })
        .unwrap();
        let ready = ipc_pipe::wait(&[&p.sentinel()], Some(Duration::from_millis(20))).unwrap();
        assert!(ready.is_empty());
        a.send(&1u8).unwrap();
        let ready = ipc_pipe::wait(&[&p.as_fd()], Some(Duration::from_secs(20))).unwrap();
        assert_eq!(ready, [0]);
        assert!(p.join().unwrap().success());
    });
}

#[test]
fn dropping_unjoined_handles_leaves_no_zombie() {
    let _leaks = common::leak_guard();
    in_child(30, || {
        // The first unjoined running child starts the process-wide reaper thread, which
        // stays for the process's life: start it first (a dropped sleeper), then snapshot,
        // so the check below still sees every thread, fd and child this test leaves.
        let warm = Process::spawn(|| std::thread::sleep(Duration::from_millis(10))).unwrap();
        let warm_pid = warm.pid();
        drop(warm);
        let deadline = Instant::now() + Duration::from_secs(10);
        while children().contains(&warm_pid) {
            assert!(Instant::now() < deadline, "child {warm_pid} never reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
        let leaks = ipc_testkit::Leaks::snapshot(&ipc_testkit::unique_name("pool-noshm"));
        // Finished child: reaped at drop.
        let p = Process::spawn(|| {}).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(p);
        assert!(children().is_empty());
        // Running child: handed to the reaper, reaped when it exits.
        let p = Process::spawn(|| std::thread::sleep(Duration::from_millis(100))).unwrap();
        let pid = p.pid();
        drop(p);
        let deadline = Instant::now() + Duration::from_secs(10);
        while children().contains(&pid) {
            assert!(Instant::now() < deadline, "child {pid} never reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
        leaks.assert_all_clean(Duration::from_secs(5));
    });
}

#[test]
fn daemon_child_dies_with_its_parent() {
    // Subreaper: the daemon, orphaned when the middle process is killed, becomes this
    // process's child instead of init's, so the leak guard sees it if it outlives the test.
    // (It stays set for this binary's later tests: their orphans are then seen too.)
    ipc_testkit::become_subreaper().unwrap();
    let _leaks = common::leak_guard();
    let (mut rx, tx) = ipc_pipe::duplex().unwrap();
    // The middle process spawns a daemon, reports its pid, then waits to be killed.
    let middle = ipc_testkit::fork(move || {
        let mut tx = tx;
        let d = Process::builder()
            .daemon(true)
            .spawn(|| std::thread::sleep(Duration::from_secs(60)))
            .unwrap();
        tx.send(&d.pid()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    let daemon: i32 = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let daemon_fd = pidfd(daemon);
    middle.kill();
    let _ = middle.wait(Duration::from_secs(20));
    let ready = ipc_pipe::wait(&[&daemon_fd], Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ready, [0], "daemon {daemon} outlived its parent");
    // It died: reap it (it is our child now, a zombie until waited for).
    let pids = std::iter::once(daemon).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ipc_testkit::reap_children(&pids).is_empty() {
        assert!(
            Instant::now() < deadline,
            "daemon {daemon} never reparented to us"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pidfd(pid: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: raw pidfd_open syscall; a non-negative result is a new fd we own.
    #[allow(unsafe_code)]
    unsafe {
        let r = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(r >= 0, "pidfd_open({pid}) failed");
        std::os::fd::OwnedFd::from_raw_fd(r as i32)
    }
}

#[test]
fn multithreaded_fork_is_detected() {
    let _leaks = common::leak_guard();
    // The harness runs tests in threads, so this process is multithreaded here.
    assert!(ipc_pool::thread_count().unwrap_or(1) > 1);
    let r = Process::builder()
        .if_multithreaded(ThreadPolicy::Refuse)
        .spawn(|| {});
    assert!(r.is_err());
    in_child_checked(30, || {
        assert_eq!(ipc_pool::thread_count(), Some(1));
        let mut p = Process::builder()
            .if_multithreaded(ThreadPolicy::Refuse)
            .spawn(|| {})
            .unwrap();
        assert!(p.join().unwrap().success());
        assert_ne!(p.pid(), ipc_pool::current_pid());
    });
}
