//! Cross-process behaviour of connections: every test forks real children
//! (which `_exit`), each under a watchdog.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{close_in_child, fork, s, Exit};
use ipc_pipe::{duplex, simplex, wait, Connection, Error, RecvTimeoutError, TryRecvError};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 4096) as u8).collect()
}

#[test]
fn request_response_with_child() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        loop {
            match child_end.recv::<(String, u64)>() {
                Ok((word, n)) => child_end.send(&format!("{word}:{}", n * 2)).map_err(s)?,
                Err(Error::Disconnected) => return Ok(()),
                Err(e) => return Err(s(e)),
            }
        }
    });
    for i in 0..100u64 {
        parent.send(&("req".to_string(), i)).unwrap();
        assert_eq!(parent.recv::<String>().unwrap(), format!("req:{}", i * 2));
    }
    drop(parent);
    child.join_ok();
}

#[test]
fn simplex_both_ends_survive_fork() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let rx_fd = rx.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(rx_fd);
        for i in 0..1000u32 {
            tx.send(&i).map_err(s)?;
        }
        Ok(())
    });
    for i in 0..1000u32 {
        assert_eq!(rx.recv::<u32>().unwrap(), i);
    }
    assert!(matches!(rx.recv::<u32>(), Err(Error::Disconnected)));
    child.join_ok();
}

#[test]
fn big_message_round_trip_16mib() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let msg = child_end.recv_bytes().map_err(s)?;
        child_end.send_bytes(&msg).map_err(s)
    });
    let msg = pattern(16 << 20);
    parent.send_bytes(&msg).unwrap();
    let mut back = Vec::new();
    assert_eq!(parent.recv_bytes_into(&mut back).unwrap(), msg.len());
    assert!(back == msg, "16 MiB payload corrupted");
    child.join_ok();
}

#[test]
fn simplex_big_message_and_many_small() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let rx_fd = rx.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(rx_fd);
        tx.send_bytes(&pattern(3 << 20)).map_err(s)?;
        for i in 0..10_000u32 {
            tx.send_bytes(&i.to_le_bytes()[..(i % 5) as usize])
                .map_err(s)?;
        }
        Ok(())
    });
    let mut buf = Vec::new();
    rx.recv_bytes_into(&mut buf).unwrap();
    assert!(buf == pattern(3 << 20));
    for i in 0..10_000u32 {
        rx.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(buf, &i.to_le_bytes()[..(i % 5) as usize]);
    }
    child.join_ok();
}

#[test]
fn peer_sigkilled_mid_message() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        // Blocks once the socket buffer is full: killed in the middle.
        child_end.send_bytes(&vec![7u8; 32 << 20]).map_err(s)
    });
    assert!(parent.poll(None).unwrap(), "data should arrive");
    child.signal(libc::SIGKILL);
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    let mut buf = Vec::new();
    assert!(matches!(
        parent.recv_bytes_into(&mut buf),
        Err(Error::Disconnected)
    ));
    assert!(matches!(parent.recv_bytes(), Err(Error::Poisoned)));
    assert!(matches!(parent.recv::<u8>(), Err(Error::Poisoned)));
}

#[test]
fn eof_after_buffered_messages() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        for i in 0..3u8 {
            child_end.send(&i).map_err(s)?;
        }
        child_end.send_bytes(&pattern(100_000)).map_err(s)
    });
    child.join_ok();
    for i in 0..3u8 {
        assert_eq!(parent.recv::<u8>().unwrap(), i);
    }
    assert!(parent.recv_bytes().unwrap() == pattern(100_000));
    assert!(
        parent.poll(Some(Duration::ZERO)).unwrap(),
        "poll is true at EOF"
    );
    assert!(matches!(parent.recv::<u8>(), Err(Error::Disconnected)));
    assert!(matches!(parent.recv_bytes(), Err(Error::Disconnected)));
}

#[test]
fn decode_error_keeps_connection_usable() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        // Not a valid postcard u64 (varint never ends), then a String where a
        // u32 is expected (trailing bytes), then a good value.
        child_end.send_bytes(&[0xFF, 0xFF, 0xFF]).map_err(s)?;
        child_end.send(&"not a number").map_err(s)?;
        child_end.send(&77u64).map_err(s)
    });
    assert!(matches!(parent.recv::<u64>(), Err(Error::Decode(_))));
    assert!(matches!(parent.recv::<u8>(), Err(Error::Decode(_))));
    assert_eq!(parent.recv::<u64>().unwrap(), 77);
    child.join_ok();
}

/// A hand-written header through the raw fd: a frame claiming more than the
/// limit is refused at the header, and the connection is poisoned.
#[test]
fn hostile_header_through_raw_fd_is_too_large() {
    let _leaks = common::leak_guard();
    for header in [
        // Short form: 4 GiB - 2.
        vec![0xFE, 0xFF, 0xFF, 0xFF],
        // Long form: exactly 4 GiB.
        [vec![0xFF; 4], (4u64 << 30).to_le_bytes().to_vec()].concat(),
    ] {
        let (mut parent, child_end) = duplex().unwrap();
        let claimed = if header.len() == 4 {
            u64::from(u32::MAX - 1)
        } else {
            4 << 30
        };
        let parent_fd = parent.as_raw_fd();
        let mut child = fork(move || {
            close_in_child(parent_fd);
            let mut raw = File::from(OwnedFd::from(child_end));
            raw.write_all(&header).map_err(s)?;
            raw.write_all(&[1, 2, 3]).map_err(s)
        });
        child.join_ok();
        let mut buf = Vec::new();
        match parent.recv_bytes_into(&mut buf) {
            Err(Error::TooLarge { len, max }) => {
                assert_eq!(len, claimed);
                assert_eq!(max, 64 << 20);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(
            buf.capacity(),
            0,
            "nothing allocated for the claimed length"
        );
        assert!(matches!(parent.recv_bytes(), Err(Error::Poisoned)));
    }
}

#[test]
fn malformed_header_poisons() {
    let _leaks = common::leak_guard();
    let (mut parent, child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let mut raw = File::from(OwnedFd::from(child_end));
        // Long form used for a short length: not canonical.
        raw.write_all(&[vec![0xFF; 4], 5u64.to_le_bytes().to_vec(), vec![0; 5]].concat())
            .map_err(s)
    });
    child.join_ok();
    assert!(matches!(parent.recv_bytes(), Err(Error::Poisoned)));
    assert!(matches!(parent.recv_bytes(), Err(Error::Poisoned)));
}

#[test]
fn set_max_message_size_applies_both_ways() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    parent.set_max_message_size(100);
    assert_eq!(parent.max_message_size(), 100);
    assert!(matches!(
        parent.send_bytes(&[0; 101]),
        Err(Error::TooLarge { len: 101, max: 100 })
    ));
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        child_end.send_bytes(&[0; 100]).map_err(s)?;
        child_end.send_bytes(&[0; 101]).map_err(s)
    });
    assert_eq!(parent.recv_bytes().unwrap().len(), 100);
    assert!(matches!(
        parent.recv_bytes(),
        Err(Error::TooLarge { len: 101, max: 100 })
    ));
    child.join_ok();
}

#[test]
fn poll_false_then_true() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let go: String = child_end.recv().map_err(s)?;
        child_end.send(&go).map_err(s)
    });
    assert!(!parent.poll(Some(Duration::ZERO)).unwrap());
    assert!(!parent.poll(Some(Duration::from_millis(20))).unwrap());
    parent.send(&"go").unwrap();
    assert!(parent.poll(Some(Duration::from_secs(10))).unwrap());
    assert!(
        parent.poll(Some(Duration::ZERO)).unwrap(),
        "still true until read"
    );
    assert_eq!(parent.recv::<String>().unwrap(), "go");
    child.join_ok();
    assert!(parent.poll(None).unwrap(), "EOF counts as ready");
}

#[test]
fn recv_timeout_waits_at_least_the_timeout() {
    let _leaks = common::leak_guard();
    let (mut a, _b) = duplex().unwrap();
    let t = Duration::from_millis(150);
    let start = Instant::now();
    assert!(matches!(
        a.recv_timeout::<u32>(t),
        Err(RecvTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= t, "returned after {:?}", start.elapsed());
    let start = Instant::now();
    assert!(matches!(
        a.recv_bytes_timeout(t),
        Err(RecvTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= t);
    assert!(matches!(a.try_recv::<u32>(), Err(TryRecvError::Empty)));
    assert!(matches!(a.try_recv_bytes(), Err(TryRecvError::Empty)));
}

/// A deadline passing in the middle of a frame keeps what arrived; the next
/// receive completes the same message.
#[test]
fn timeout_mid_frame_resumes() {
    let _leaks = common::leak_guard();
    let (mut parent, child_end) = duplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let msg = pattern(300_000);
    let expected = msg.clone();
    let go_tx_fd = go_tx.as_raw_fd();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        close_in_child(go_tx_fd);
        let (a, b) = msg.split_at(200_000);
        let mut wire = ipc_pipe::frame::Header::bytes(msg.len())
            .as_slice()
            .to_vec();
        wire.extend_from_slice(a);
        let mut raw = File::from(OwnedFd::from(child_end));
        raw.write_all(&wire).map_err(s)?;
        go_rx.recv::<()>().map_err(s)?;
        raw.write_all(b).map_err(s)
    });
    let mut buf = Vec::new();
    // Wait until part of the frame is here, then time out on the rest.
    assert!(parent.poll(None).unwrap());
    assert!(matches!(
        parent.recv_bytes_into_timeout(&mut buf, Duration::from_millis(50)),
        Err(RecvTimeoutError::Timeout)
    ));
    assert!(buf.is_empty());
    assert!(matches!(
        parent.try_recv_bytes_into(&mut buf),
        Err(TryRecvError::Empty)
    ));
    go_tx.send(&()).unwrap();
    assert_eq!(parent.recv_bytes_into(&mut buf).unwrap(), expected.len());
    assert!(buf == expected);
    child.join_ok();
}

#[test]
fn try_recv_none_then_some() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    assert!(matches!(parent.try_recv::<u16>(), Err(TryRecvError::Empty)));
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        child_end.send(&9u16).map_err(s)
    });
    child.join_ok();
    assert_eq!(parent.try_recv::<u16>().unwrap(), 9);
    assert!(matches!(
        parent.try_recv::<u16>(),
        Err(TryRecvError::Disconnected)
    ));
}

fn memfd_with(content: &[u8]) -> File {
    // SAFETY: a valid NUL-terminated name; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"ipc-pipe-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` is new and owned by nobody else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(content).unwrap();
    f
}

#[test]
fn fd_passing_file_the_receiver_reads() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let a = memfd_with(b"first file");
        let b = memfd_with(b"second file");
        child_end.send_bytes(b"before").map_err(s)?;
        child_end.send_fds(&[a.as_fd(), b.as_fd()]).map_err(s)?;
        child_end.send_bytes(b"after").map_err(s)
    });
    child.join_ok();
    // Bytes first; an fd message is not taken by a bytes receive.
    assert_eq!(parent.recv_bytes().unwrap(), b"before");
    assert!(matches!(
        parent.recv_bytes(),
        Err(Error::UnexpectedFrame { .. })
    ));
    let fds = parent.recv_fds().unwrap();
    assert_eq!(fds.len(), 2);
    for (fd, want) in fds.into_iter().zip([&b"first file"[..], b"second file"]) {
        // SAFETY: F_GETFD on a valid fd we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fd must be close-on-exec"
        );
        let mut f = File::from(fd);
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, want);
    }
    assert!(matches!(
        parent.recv_fds(),
        Err(Error::UnexpectedFrame { .. })
    ));
    assert_eq!(parent.recv_bytes().unwrap(), b"after");
}

#[test]
fn send_fds_limits() {
    let _leaks = common::leak_guard();
    let (mut a, mut b) = duplex().unwrap();
    assert!(matches!(a.send_fds(&[]), Err(Error::Io(_))));
    let f = memfd_with(b"x");
    let many = vec![f.as_fd(); 254];
    assert!(matches!(a.send_fds(&many), Err(Error::Io(_))));
    // Up to 253 is fine.
    a.send_fds(&many[..253]).unwrap();
    assert_eq!(b.recv_fds().unwrap().len(), 253);
    // A pipe cannot carry descriptors.
    let (_rx, tx) = simplex().unwrap();
    let mut as_conn = Connection::from(std::os::fd::OwnedFd::from(tx));
    assert!(matches!(as_conn.send_fds(&many[..1]), Err(Error::Io(_))));
}

#[test]
fn wait_returns_ready_subset() {
    let _leaks = common::leak_guard();
    let conns: Vec<(Connection, Connection)> = (0..3).map(|_| duplex().unwrap()).collect();
    let (mut ours, mut theirs): (Vec<Connection>, Vec<Connection>) = conns.into_iter().unzip();
    let our_fds: Vec<i32> = ours.iter().map(|c| c.as_raw_fd()).collect();
    let mut child = fork(move || {
        our_fds.iter().for_each(|&fd| close_in_child(fd));
        theirs[0].send(&0u8).map_err(s)?;
        theirs[2].send(&2u8).map_err(s)?;
        theirs[2].send(&3u8).map_err(s)?;
        // Keep the ends open until told to finish.
        theirs[1].recv::<()>().map_err(s)
    });
    let objs: Vec<&dyn AsFd> = ours.iter().map(|c| c as &dyn AsFd).collect();
    // Both messages are written before either can be seen missing: wait until
    // the set is complete (bounded by the watchdog).
    let mut ready = Vec::new();
    while ready != vec![0, 2] {
        ready = wait(&objs, Some(Duration::from_secs(10))).unwrap();
        assert!(!ready.contains(&1), "nothing was sent on 1");
    }
    drop(objs);
    // Read ahead takes both messages of conn 2; wait must still see the second.
    assert_eq!(ours[2].recv::<u8>().unwrap(), 2);
    assert_eq!(ours[0].recv::<u8>().unwrap(), 0);
    let objs: Vec<&dyn AsFd> = ours.iter().map(|c| c as &dyn AsFd).collect();
    assert_eq!(wait(&objs, Some(Duration::ZERO)).unwrap(), vec![2]);
    drop(objs);
    assert_eq!(ours[2].recv::<u8>().unwrap(), 3);
    let objs: Vec<&dyn AsFd> = ours.iter().map(|c| c as &dyn AsFd).collect();
    let start = Instant::now();
    assert!(wait(&objs, Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    assert!(start.elapsed() >= Duration::from_millis(50));
    drop(objs);
    ours[1].send(&()).unwrap();
    child.join_ok();
}

#[test]
fn wait_on_pidfd_and_connection() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        child_end.recv::<()>().map_err(s)
    });
    // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.pid(), 0) } as i32;
    assert!(raw >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: a new fd that we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    assert!(wait(&[&parent, &pidfd], Some(Duration::ZERO))
        .unwrap()
        .is_empty());
    parent.send(&()).unwrap();
    let mut ready = Vec::new();
    while !ready.contains(&1) {
        ready = wait(&[&parent, &pidfd], Some(Duration::from_secs(10))).unwrap();
    }
    child.join_ok();
    // The child's exit closed its end: EOF makes the connection ready too.
    assert_eq!(wait(&[&parent, &pidfd], None).unwrap(), vec![0, 1]);
}

/// The kernel drops descriptors it cannot install (RLIMIT_NOFILE) and sets
/// MSG_CTRUNC: `recv_fds` reports it, keeps none, and the connection goes on.
#[test]
fn truncated_fd_message_is_an_error_and_connection_survives() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let open = std::fs::read_dir("/proc/self/fd").map_err(s)?.count() as u64;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/dup/close/setrlimit on valid arguments; this child
        // only. The limit becomes the lowest free fd number: no new fd fits.
        let saved = unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err("getrlimit".into());
            }
            let saved = lim;
            let lowest = libc::dup(child_end.as_raw_fd());
            libc::close(lowest);
            lim.rlim_cur = lowest as u64;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err("setrlimit".into());
            }
            saved
        };
        child_end.send(&"ready").map_err(s)?;
        match child_end.recv_fds() {
            Err(Error::Io(_)) => {}
            other => return Err(format!("expected Io (MSG_CTRUNC), got {other:?}")),
        }
        // SAFETY: restores the saved limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
        let after = std::fs::read_dir("/proc/self/fd").map_err(s)?.count() as u64;
        if after > open {
            return Err(format!("fds leaked: {open} -> {after}"));
        }
        let n: u32 = child_end.recv().map_err(s)?;
        child_end.send(&(n + 1)).map_err(s)
    });
    assert_eq!(parent.recv::<String>().unwrap(), "ready");
    let f = memfd_with(b"x");
    parent.send_fds(&[f.as_fd(); 20]).unwrap();
    parent.send(&1u32).unwrap();
    assert_eq!(parent.recv::<u32>().unwrap(), 2);
    child.join_ok();
}
