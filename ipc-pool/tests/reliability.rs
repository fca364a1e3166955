//! Pool reliability against the process's own structure: the thread that built a pool, fds
//! the fork server and workers would inherit, code loaded after the fork server started.
//! Each test runs in its own forked child under a watchdog.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{in_child_checked, sq, wait_no_children};
use ipc_pool::{Pool, Process};

#[test]
fn a_pool_outlives_the_thread_that_built_it() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
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
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
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
            Err(ipc_pipe::RecvTimeoutError::Timeout) => {
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
    });
}

/// Builds `liblate.so` (a Rust cdylib exporting `late_add_one: fn(u64) -> u64`) in `dir`, or
/// `None` if no compiler is at hand.
fn build_late_library(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let src = dir.join("late.rs");
    std::fs::write(
        &src,
        "#[no_mangle]\npub fn late_add_one(x: u64) -> u64 { x.wrapping_add(1) }\n",
    )
    .ok()?;
    let so = dir.join("liblate.so");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let ok = std::process::Command::new(rustc)
        .args(["--crate-type", "cdylib", "--edition", "2021", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(so)
}

/// `dlopen`s `so` and returns its handle and `late_add_one`.
fn open_late(so: &std::path::Path) -> (*mut libc::c_void, fn(u64) -> u64) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(so.as_os_str().as_bytes()).unwrap();
    // SAFETY: dlopen of a library we just built (its initialisers do nothing); dlsym of a
    // symbol it exports as a Rust `fn(u64) -> u64`, built by the same compiler, so the
    // pointer has exactly that type.
    #[allow(unsafe_code)]
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!h.is_null(), "dlopen {} failed", so.display());
        let sym = libc::dlsym(h, c"late_add_one".as_ptr());
        assert!(!sym.is_null(), "late_add_one not found");
        (
            h,
            std::mem::transmute::<*mut libc::c_void, fn(u64) -> u64>(sym),
        )
    }
}

#[test]
fn a_task_from_a_library_loaded_after_the_pool_fails_with_its_own_error() {
    let dir = std::env::temp_dir().join(format!("ipc-pool-late-{}", std::process::id()));
    let Some(so) = build_late_library(&dir) else {
        eprintln!("skipped: could not build a cdylib with rustc");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        // Loaded before the pool: its workers have it.
        let (early, add_early) = open_late(&so);
        let pool = Pool::new(1).unwrap();
        assert_eq!(pool.apply(add_early, 1).unwrap(), 2);
        pool.join().unwrap();
        drop(pool);
        // SAFETY: no pointer into the library is used after this.
        #[allow(unsafe_code)]
        unsafe {
            libc::dlclose(early);
        }
        // Loaded after the pool: its workers do not.
        let pool = Pool::new(1).unwrap();
        let (late, add_late) = open_late(&so);
        let late_err = |r: Result<Vec<u64>, ipc_pool::Error>| match r {
            Err(ipc_pool::Error::CodeNotInWorkers { module, .. }) => {
                assert!(module.contains("liblate"), "{module}");
            }
            other => panic!("expected CodeNotInWorkers, got {other:?}"),
        };
        late_err(pool.apply(add_late, 1).map(|x| vec![x]));
        late_err(pool.apply_async(add_late, 1).map(|_| vec![]));
        late_err(pool.map(add_late, 0..10u64));
        late_err(pool.imap(add_late, 0..10u64).collect());
        // The pool goes on.
        assert_eq!(pool.apply(sq, 5).unwrap(), 25);
        pool.join().unwrap();
        drop(pool);
        // SAFETY: no pointer into the library is used after this.
        #[allow(unsafe_code)]
        unsafe {
            libc::dlclose(late);
        }
        wait_no_children(10);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
