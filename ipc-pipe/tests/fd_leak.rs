//! Nothing the crate opens outlives its handle. Counting `/proc/self/fd`
//! needs a process where no other test opens fds at the same time, so this
//! binary holds one test.

mod common;

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::time::Duration;

use common::{close_in_child, fork, s, unique_socket_path};
use ipc_pipe::{duplex, simplex, Client, Error, Listener};

#[test]
fn no_fd_left_open_after_drop() {
    // Every kind is checked (fds, threads, mappings, children, the socket file); ipc-pipe
    // makes no /dev/shm entries, so the guard's prefix matches nothing.
    let leaks =
        common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix());
    {
        let (mut a, mut b) = duplex().unwrap();
        let (mut rx, mut tx) = simplex().unwrap();
        a.send_bytes(&[1]).unwrap();
        a.send_bytes(&[2]).unwrap();
        assert_eq!(b.recv_bytes().unwrap(), [1]); // one message left buffered
        tx.send_bytes(b"x").unwrap();
        assert_eq!(rx.recv_bytes().unwrap(), b"x");

        // Descriptors passed and received, some never taken.
        // SAFETY: memfd_create with a valid name; the fd is ours.
        let memfd = unsafe {
            std::fs::File::from_raw_fd(libc::memfd_create(c"leak".as_ptr(), libc::MFD_CLOEXEC))
        };
        let (mut c, mut d) = duplex().unwrap();
        c.send_fds(&[memfd.as_fd(), memfd.as_fd()]).unwrap();
        c.send_fds(&[memfd.as_fd()]).unwrap();
        let got = d.recv_fds().unwrap();
        assert_eq!(got.len(), 2);
        drop(got);
        // The second fd message stays queued (read ahead) and drops with `d`.
        assert!(d.poll(Some(Duration::from_secs(5))).unwrap());

        // A connection poisoned by a bad header.
        let (e, mut f) = duplex().unwrap();
        let mut raw = std::fs::File::from(std::os::fd::OwnedFd::from(e));
        raw.write_all(&[0xFF; 12]).unwrap();
        assert!(matches!(f.recv_bytes(), Err(Error::Poisoned)));

        // Listener/Client across fork.
        let path = unique_socket_path("leak");
        let listener = Listener::bind(path.as_path()).unwrap();
        let lfd = listener.as_raw_fd();
        let p = path.clone();
        let mut child = fork(move || {
            close_in_child(lfd);
            let mut c = Client::connect(p.as_path()).map_err(s)?;
            c.send_bytes(&[5]).map_err(s)
        });
        let mut conn = listener.accept().unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), [5]);
        child.join_ok();
        drop(listener);
        assert!(!path.exists(), "listener removes its socket file");

        // With and without a matching key.
        #[cfg(feature = "auth")]
        {
            let path = unique_socket_path("leak");
            let listener = Listener::bind_with_authkey(path.as_path(), b"k").unwrap();
            let lfd = listener.as_raw_fd();
            let p = path.clone();
            let mut child = fork(move || {
                close_in_child(lfd);
                let mut c = Client::connect_with_authkey(p.as_path(), b"k").map_err(s)?;
                c.send_bytes(&[5]).map_err(s)?;
                match Client::connect_with_authkey(p.as_path(), b"wrong") {
                    Err(Error::AuthenticationFailed) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            });
            let mut conn = listener.accept().unwrap();
            assert_eq!(conn.recv_bytes().unwrap(), [5]);
            assert!(matches!(
                listener.accept(),
                Err(Error::AuthenticationFailed)
            ));
            child.join_ok();
            drop(listener);
            assert!(!path.exists(), "listener removes its socket file");
        }
    }
    leaks.finish();
}
