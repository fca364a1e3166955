//! `Leaks` sees each kind of leftover, and is clean once it is gone. One test: the checks
//! are process-wide (threads, fds, children), so nothing may run beside it.

use std::time::Duration;

use ipc_testkit::{fork, Leaks};

#[test]
fn leaks_sees_each_kind_and_clears() {
    let dir = std::env::temp_dir().join(format!(
        "ipct-leaks-{}",
        ipc_testkit::unique_name("d").trim_start_matches('/')
    ));
    std::fs::create_dir(&dir).unwrap();
    let leaks = Leaks::snapshot("ipct-leaks").watch_dir(&dir);
    assert!(leaks.report().is_empty(), "{:?}", leaks.report());

    // A child not reaped yet (zombie after it exits).
    let mut child = fork(|| 0);
    std::thread::sleep(Duration::from_millis(50));
    let r = leaks.report().join("; ");
    assert!(r.contains("children still existing"), "{r}");
    assert!(child.wait_timeout(Duration::from_secs(10)).is_some());

    // A thread, a file in the watched directory, an fd.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv().ok());
    let f = std::fs::File::create(dir.join("sock")).unwrap();
    let r = leaks.report().join("; ");
    assert!(r.contains("threads still running"), "{r}");
    assert!(r.contains("entries left in"), "{r}");
    assert!(r.contains("file descriptors left open"), "{r}");
    drop(tx);
    t.join().unwrap();
    drop(f);
    std::fs::remove_file(dir.join("sock")).unwrap();

    // A /dev/shm name and its mapping.
    let name = ipc_testkit::unique_name("leaks");
    {
        let seg = ipc_shm::SharedMemory::create_named(&name, 4096).unwrap();
        let r = leaks.report().join("; ");
        assert!(r.contains("/dev/shm entries left"), "{r}");
        assert!(r.contains("shared mappings left"), "{r}");
        drop(seg);
    }
    leaks.assert_all_clean(Duration::from_secs(5));
    std::fs::remove_dir(&dir).unwrap();
}
