//! What happens to values moved into a child's closure: the parent's copy lives until the
//! child is reaped, so names the child uses stay, and are removed once, afterwards.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::in_child_checked;
use ipc_pool::Process;
use ipc_shm::Value;
use ipc_testkit::{fork, unique_name, Leaks};

/// A named `Value` created in the parent and moved into a child stays openable by name from a
/// third process while the child runs; its name is gone once the child was joined.
#[test]
fn a_named_value_moved_into_a_child_keeps_its_name_while_the_child_runs() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let name = unique_name("moved");
        let leaks = Leaks::snapshot(&name);
        let v = Value::create_named(&name, 7u64).unwrap();
        let (mut go, go_child) = ipc_pipe::duplex().unwrap();
        let mut p = Process::spawn(move || {
            let mut go_child = go_child;
            let _ = v.set(8);
            // Run until told to stop.
            let _ = go_child.recv_timeout::<u8>(Duration::from_secs(20));
            drop(v);
        })
        .unwrap();
        // A third process opens it by name while the child runs.
        let n = name.clone();
        let third = fork(move || match Value::<u64>::open_named(&n) {
            Ok(v) if v.get().ok() == Some(8) || v.get().ok() == Some(7) => 0,
            Ok(_) => 2,
            Err(e) => {
                eprintln!("third process: open_named failed: {e}");
                3
            }
        });
        let code = third.wait(Duration::from_secs(20));
        go.send(&1u8).unwrap();
        assert!(p.join().unwrap().success());
        assert_eq!(
            code,
            ipc_testkit::Exit::Code(0),
            "the name vanished while the child used it"
        );
        // Reaped: the parent's copy was dropped, and removed the name.
        assert!(
            Value::<u64>::open_named(&name).is_err(),
            "the name outlived the child"
        );
        drop(go);
        leaks.assert_no_new_shm();
        leaks.assert_no_children();
    });
}

/// A `Listener` moved into a child keeps its socket file while the child accepts on it; the
/// file is deleted once the child was joined.
#[test]
fn a_listener_moved_into_a_child_keeps_its_socket_file() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let dir = std::env::temp_dir().join(unique_name("moved-dir").trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap();
        let path: PathBuf = dir.join("sock");
        let listener = ipc_pipe::Listener::bind(path.clone()).unwrap();
        let mut p = Process::spawn(move || {
            if let Ok(mut c) = listener.accept() {
                let _ = c.send(&42u32);
            }
        })
        .unwrap();
        let mut c = ipc_pipe::Client::connect(path.clone()).unwrap();
        let got: u32 = c.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(got, 42);
        assert!(p.join().unwrap().success());
        assert!(!path.exists(), "the socket file outlived the child");
        drop(c);
        std::fs::remove_dir(&dir).unwrap();
    });
}

/// A handle dropped while its child runs: the reaper drops the parent's copy after the child
/// ended, so the name is removed then, not at the drop.
#[test]
fn a_dropped_handle_removes_the_name_after_the_child_ends() {
    let _leaks = common::leak_guard();
    // The drop below starts the process-wide reaper: warm it up first (`warm_reaper`).
    common::in_child_checked_after(60, common::warm_reaper, || {
        let name = unique_name("moved-drop");
        let leaks = Leaks::snapshot(&name);
        let v = Value::create_named(&name, 1u64).unwrap();
        let (mut go, go_child) = ipc_pipe::duplex().unwrap();
        let p = Process::spawn(move || {
            let mut go_child = go_child;
            let _ = go_child.recv_timeout::<u8>(Duration::from_secs(20));
            let _ = v.get();
        })
        .unwrap();
        drop(p);
        assert!(Value::<u64>::open_named(&name).is_ok(), "removed at drop");
        go.send(&1u8).unwrap();
        // The reaper removes it once the child has ended.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while Value::<u64>::open_named(&name).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        leaks.assert_no_new_shm();
    });
}
