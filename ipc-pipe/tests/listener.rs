//! Listener/Client over Unix paths and TCP, with and without an authkey,
//! client in a forked child.

mod common;

use std::os::fd::AsRawFd;

use common::{close_in_child, fork, s, unique_socket_path};
use ipc_pipe::{AcceptTimeoutError, Address, Client, Error, Listener};

/// `Listener::bind`, or `bind_with_authkey` with a key (tests with keys need the `auth`
/// feature).
fn bind(address: impl Into<Address>, key: Option<&[u8]>) -> ipc_pipe::Result<Listener> {
    match key {
        None => Listener::bind(address),
        #[cfg(feature = "auth")]
        Some(k) => Listener::bind_with_authkey(address, k),
        #[cfg(not(feature = "auth"))]
        Some(_) => unreachable!("tests with a key need the auth feature"),
    }
}

/// `Client::connect`, or `connect_with_authkey` with a key.
fn connect(
    address: impl Into<Address>,
    key: Option<&[u8]>,
) -> ipc_pipe::Result<ipc_pipe::Connection> {
    match key {
        None => Client::connect(address),
        #[cfg(feature = "auth")]
        Some(k) => Client::connect_with_authkey(address, k),
        #[cfg(not(feature = "auth"))]
        Some(_) => unreachable!("tests with a key need the auth feature"),
    }
}

/// The binary's leak guard, also watching the temporary directory the sockets are bound in
/// (only names with this process's socket prefix: other programs use that directory too).
fn leak_guard() -> ipc_testkit::LeakGuard {
    common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix())
}

fn serve_one_client(
    address: Address,
    server_key: Option<&'static [u8]>,
    client_key: Option<&'static [u8]>,
) {
    let listener = bind(address, server_key).unwrap();
    let addr = listener.address().clone();
    let lfd = listener.as_raw_fd();
    let should_work = server_key == client_key;
    let mut child = fork(move || {
        close_in_child(lfd);
        match connect(addr, client_key) {
            Ok(mut c) if should_work => {
                let n: u32 = c.recv().map_err(s)?;
                c.send(&(n + 1)).map_err(s)
            }
            #[cfg(feature = "auth")]
            Err(Error::AuthenticationFailed) if !should_work => Ok(()),
            other => Err(format!("client: {other:?}")),
        }
    });
    match listener.accept() {
        Ok(mut conn) if should_work => {
            conn.send(&41u32).unwrap();
            assert_eq!(conn.recv::<u32>().unwrap(), 42);
        }
        #[cfg(feature = "auth")]
        Err(Error::AuthenticationFailed) if !should_work => {}
        other => panic!("server: {other:?}"),
    }
    child.join_ok();
}

#[cfg(feature = "auth")]
#[test]
fn unix_with_right_key() {
    let _leaks = leak_guard();
    serve_one_client(unique_socket_path("ok").into(), Some(b"key"), Some(b"key"));
}

#[cfg(feature = "auth")]
#[test]
fn unix_with_wrong_key_fails_on_both_sides() {
    let _leaks = leak_guard();
    serve_one_client(
        unique_socket_path("bad").into(),
        Some(b"key"),
        Some(b"other"),
    );
}

#[test]
fn unix_without_key() {
    let _leaks = leak_guard();
    serve_one_client(unique_socket_path("nokey").into(), None, None);
}

#[cfg(feature = "auth")]
#[test]
fn tcp_with_right_key() {
    let _leaks = leak_guard();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    serve_one_client(any.into(), Some(b"tcp key"), Some(b"tcp key"));
}

#[cfg(feature = "auth")]
#[test]
fn tcp_with_wrong_key_fails_on_both_sides() {
    let _leaks = leak_guard();
    serve_one_client("127.0.0.1:0".into(), Some(b"tcp key"), Some(b"nope"));
}

#[test]
fn socket_file_is_private_and_removed() {
    let _leaks = leak_guard();
    use std::os::unix::fs::PermissionsExt;
    let path = unique_socket_path("perm");
    let l = bind(path.as_path(), None).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(matches!(bind(path.as_path(), None), Err(Error::Io(_))));
    drop(l);
    assert!(!path.exists());
}

#[cfg(feature = "auth")]
#[test]
fn client_speaking_no_protocol_is_rejected() {
    let _leaks = leak_guard();
    // A peer that connects and sends garbage instead of an answer.
    let path = unique_socket_path("garbage");
    let listener = bind(path.as_path(), Some(b"key")).unwrap();
    let lfd = listener.as_raw_fd();
    let p = path.clone();
    let mut child = fork(move || {
        close_in_child(lfd);
        let mut c = connect(p.as_path(), None).map_err(s)?;
        let _challenge = c.recv_bytes().map_err(s)?;
        c.send_bytes(&[0u8; 2000]).map_err(s)?;
        Ok(())
    });
    assert!(matches!(
        listener.accept(),
        Err(Error::AuthenticationFailed)
    ));
    child.join_ok();
}

#[test]
fn drop_in_forked_child_keeps_socket_file() {
    let _leaks = leak_guard();
    // A child inherits a copy of the listener; its drop must not remove the
    // parent's socket file (only the pid that bound it unlinks).
    let path = unique_socket_path("forkdrop");
    let slot = std::cell::RefCell::new(Some(bind(path.as_path(), None).unwrap()));
    let mut child = fork(|| {
        drop(slot.borrow_mut().take());
        Ok(())
    });
    child.join_ok();
    assert!(
        path.exists(),
        "a forked child's drop removed the socket file"
    );
    let listener = slot.borrow_mut().take().unwrap();
    let p = path.clone();
    let lfd = listener.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(lfd);
        connect(p.as_path(), None).map_err(s)?.send(&7u8).map_err(s)
    });
    assert_eq!(listener.accept().unwrap().recv::<u8>().unwrap(), 7);
    child.join_ok();
    drop(listener);
    assert!(!path.exists());
}

/// The names in `dir` whose attributes changed (`IN_ATTRIB`) while `f` ran.
fn attrib_changes_during(dir: &std::path::Path, f: impl FnOnce()) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain inotify calls on a valid C string; the fd is closed below.
    let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(ifd >= 0);
    // SAFETY: as above.
    let wd = unsafe { libc::inotify_add_watch(ifd, cdir.as_ptr(), libc::IN_ATTRIB) };
    assert!(wd >= 0);
    f();
    let mut names = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: reads into our buffer of that length.
    let n = unsafe { libc::read(ifd, buf.as_mut_ptr().cast(), buf.len()) };
    let mut off = 0;
    while n > 0 && off + 16 <= n as usize {
        // struct inotify_event: wd, mask, cookie, len (u32s), then the name.
        let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
        let name = &buf[off + 16..off + 16 + len];
        let name = name.split(|b| *b == 0).next().unwrap_or(&[]);
        names.push(String::from_utf8_lossy(name).into_owned());
        off += 16 + len;
    }
    // SAFETY: closes the inotify fd opened above.
    unsafe { libc::close(ifd) };
    names
}

#[test]
fn socket_file_never_exists_with_a_looser_mode() {
    let _leaks = leak_guard();
    // The socket file must appear with mode 0600 already: no chmod after it
    // is visible at its path (that window would let others connect).
    let dir = std::env::temp_dir().join(format!(
        "{}dir-{}",
        common::socket_prefix(),
        ipc_testkit::unique_name("x").trim_start_matches("/ipct-x-")
    ));
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("l.sock");
    let mut listener = None;
    let changed = attrib_changes_during(&dir, || {
        listener = Some(bind(path.as_path(), None).unwrap());
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    drop(listener);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !changed.iter().any(|n| n == "l.sock"),
        "socket file changed mode after it appeared: {changed:?}"
    );
    assert!(left.is_empty(), "left in the directory: {left:?}");
}

#[cfg(feature = "auth")]
#[test]
fn silent_client_does_not_stall_accept() {
    let _leaks = leak_guard();
    // A peer that connects and never answers the challenge must not hold up
    // the next client's accept.
    let path = unique_socket_path("silent");
    let listener = bind(path.as_path(), Some(b"key")).unwrap();
    let lfd = listener.as_raw_fd();
    let (mut ready_rx, mut ready_tx) = ipc_pipe::simplex().unwrap();
    let (mut hold_rx, mut hold_tx) = ipc_pipe::simplex().unwrap();
    let p = path.clone();
    let ready_rx_fd = ready_rx.as_raw_fd();
    let hold_tx_fd = hold_tx.as_raw_fd();
    let mut silent = fork(move || {
        close_in_child(lfd);
        close_in_child(ready_rx_fd);
        close_in_child(hold_tx_fd);
        let _s = std::os::unix::net::UnixStream::connect(&p).map_err(s)?;
        ready_tx.send(&1u8).map_err(s)?;
        // Hold the connection open, saying nothing, until the parent is done.
        let _ = hold_rx.recv::<u8>();
        Ok(())
    });
    assert_eq!(ready_rx.recv::<u8>().unwrap(), 1);
    let p = path.clone();
    let mut good = fork(move || {
        close_in_child(lfd);
        let mut c = connect(p.as_path(), Some(b"key")).map_err(s)?;
        c.send(&99u32).map_err(s)
    });
    let mut conn = listener.accept().expect("accept of the answering client");
    assert_eq!(conn.recv::<u32>().unwrap(), 99);
    good.join_ok();
    hold_tx.send(&0u8).unwrap();
    silent.join_ok();
}

#[test]
fn accept_timeout_waits_at_least_the_timeout() {
    let _leaks = leak_guard();
    use std::time::{Duration, Instant};
    let keys: &[Option<&[u8]>] = if cfg!(feature = "auth") {
        &[None, Some(b"key")]
    } else {
        &[None]
    };
    for &key in keys {
        let path = unique_socket_path("acctmo");
        let listener = bind(path.as_path(), key).unwrap();
        // A peer that connects and says nothing: pending, never complete.
        let _silent = std::os::unix::net::UnixStream::connect(&path).unwrap();
        if key.is_none() {
            // Without a key that peer is accepted at once.
            listener.accept_timeout(Duration::ZERO).unwrap();
        }
        let t = Duration::from_millis(200);
        let start = Instant::now();
        assert!(matches!(
            listener.accept_timeout(t),
            Err(AcceptTimeoutError::Timeout)
        ));
        assert!(start.elapsed() >= t);
    }
}
