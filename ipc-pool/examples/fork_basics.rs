//! `fork`, `current_pid`, `parent_pid`, and what orphans and zombies are, shown safely.
//!
//! Python it mirrors:
//! ```python
//! print(os.getpid(), os.getppid())
//! p = multiprocessing.Process(target=lambda: print(os.getpid(), os.getppid())); p.start(); p.join()
//! # a zombie: a child that exited and was not waited for yet shows state 'Z' in /proc
//! # an orphan: a child whose parent died is adopted (its getppid() changes)
//! ```
//!
//! Run: `cargo run --example fork_basics -p ipc-pool`

use std::time::Duration;

use ipc_pool::{current_pid, parent_pid, Process};

type Res = Result<(), Box<dyn std::error::Error>>;

fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.trim_start().chars().next()
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Res {
    let me = current_pid();
    println!("parent: pid {me}, its parent {}", parent_pid());

    // A child sees us as its parent.
    let (mut rx, tx) = ipc_pipe::duplex()?;
    let mut child = Process::spawn(move || {
        let mut tx = tx;
        let _ = tx.send(&(current_pid(), parent_pid()));
    })?;
    let (pid, ppid): (i32, i32) = rx.recv_timeout(Duration::from_secs(10))?;
    println!("child:  pid {pid}, its parent {ppid}");
    assert_eq!((pid, ppid), (child.pid(), me));

    // A zombie: the child has exited but is not reaped yet; the kernel keeps its exit status.
    let pidfd_ready = ipc_pipe::wait(&[&child.sentinel()], Some(Duration::from_secs(10)))?;
    assert_eq!(pidfd_ready, [0]);
    println!(
        "child exited, not yet joined: /proc state {:?} (Z = zombie)",
        proc_state(pid)
    );
    assert_eq!(proc_state(pid), Some('Z'));
    child.join()?;
    println!(
        "after join: /proc entry gone: {}",
        proc_state(pid).is_none()
    );

    // An orphan: a middle process spawns a grandchild and exits; the grandchild is adopted
    // (by init or a subreaper) and its parent_pid() changes. It is not a daemon, so it outlives
    // the middle process; it reports, then exits on its own.
    let (mut rx, tx) = ipc_pipe::duplex()?;
    let (mut go, go_middle) = ipc_pipe::duplex()?;
    let mut middle = Process::spawn(move || {
        let grandchild = Process::spawn(move || {
            let mut tx = tx;
            let before = parent_pid();
            let _ = tx.send(&before);
            // Wait until our parent is gone.
            for _ in 0..1000 {
                if parent_pid() != before {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send(&parent_pid());
        });
        // Leave without joining: the handle is dropped in `_exit`, never run; the
        // grandchild becomes an orphan.
        if grandchild.is_err() {
            ipc_pool::exit(2);
        }
        // Leave only once the parent has heard from the grandchild.
        let mut go_middle = go_middle;
        let _ = go_middle.recv_timeout::<u8>(Duration::from_secs(10));
        ipc_pool::exit(0);
    })?;
    let before: i32 = rx.recv_timeout(Duration::from_secs(10))?;
    go.send(&1u8)?;
    middle.join()?;
    let after: i32 = rx.recv_timeout(Duration::from_secs(10))?;
    println!(
        "grandchild's parent: {before} (middle), then {after} after the middle exited (adopted)"
    );
    assert_eq!(before, middle.pid());
    assert_ne!(after, before);
    Ok(())
}
