//! Pool reliability against the process's own structure: the thread that built a pool, fds
//! the fork server and workers would inherit, code loaded after the fork server started.
//! Each test runs in its own forked child under a watchdog.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{children, in_child};
use ipc_pool::{Pool, Process};

fn sq(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn wait_no_children(secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !children().is_empty() {
        assert!(Instant::now() < deadline, "children left: {:?}", children());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_pool_outlives_the_thread_that_built_it() {
    in_child(60, || {
        let pool = std::thread::spawn(|| Pool::new(2).unwrap()).join().unwrap();
        // Let any death signal tied to the builder thread arrive.
        std::thread::sleep(Duration::from_millis(200));
        let out = pool.map(sq, 0..100u64).unwrap();
        assert_eq!(out, (0..100u64).map(sq).collect::<Vec<_>>());
        assert_eq!(pool.apply(sq, 12).unwrap(), 144);
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
    });
}

#[test]
fn a_killed_writer_is_end_of_stream_although_a_pool_runs() {
    in_child(60, || {
        let leaks = ipc_testkit::Leaks::snapshot("/nothing-");
        let (mut reader, writer) = ipc_pipe::duplex().unwrap();
        // The pool's fork server and workers are forked while this process holds `writer`.
        let pool = Pool::new(2).unwrap();
        assert_eq!(pool.apply(sq, 3).unwrap(), 9);
        let mut w = Process::spawn(move || {
            // Half a frame (a length word promising 100 bytes, 4 of them), then die.
            let fd = writer.as_fd().try_clone_to_owned().unwrap();
            let mut f = std::fs::File::from(fd);
            f.write_all(&[100, 0, 0, 0, 1, 2, 3, 4]).unwrap();
            let me = ipc_pool::current_pid();
            let _ = std::process::Command::new("kill")
                .args(["-9", &me.to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(30));
        })
        .unwrap();
        // `writer` moved into the closure; the parent's copy was dropped with it.
        let st = w.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(w.exitcode(), Some(-libc::SIGKILL), "{st:?}");
        match reader.recv_timeout::<Vec<u8>>(Duration::from_secs(5)) {
            Err(ipc_pipe::Error::Timeout) => {
                panic!("no end of stream: another process still holds the write end")
            }
            Err(_) => {}
            Ok(v) => panic!("a half frame decoded as {v:?}"),
        }
        drop(reader);
        drop(w);
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
        leaks.assert_no_new_fds();
    });
}
