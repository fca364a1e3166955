//! Bounded sends (`try_send*`, `send*_timeout`) against a peer process that
//! does not read: a full buffer is `Timeout` with nothing written, a frame cut
//! off by its deadline poisons the sender, and the peer only ever receives
//! whole messages.

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use common::{close_in_child, fork, s};
use ipc_pipe::{duplex, simplex, Error};

/// Payload size of the messages that fill the buffer.
const FILL: usize = 1000;
/// Far more messages than any pipe or socket buffer holds.
const FILL_LIMIT: u64 = 1_000_000;
const WAIT: Duration = Duration::from_millis(100);

fn fill_msg(i: u64) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.extend((8..FILL).map(|j| (j as u64 * 7 + i) as u8));
    m
}

/// The peer's side: every fill message whole and in order, then the 8-byte
/// count the sender wrote at the end, then end of stream.
fn check_stream(mut recv: impl FnMut() -> Result<Vec<u8>, Error>) -> Result<(), String> {
    let mut next = 0u64;
    loop {
        let m = recv().map_err(s)?;
        match m.len() {
            FILL if m == fill_msg(next) => next += 1,
            8 => {
                let n = u64::from_le_bytes(m.try_into().map_err(s)?);
                if n != next {
                    return Err(format!("sender wrote {n} messages, received {next}"));
                }
                break;
            }
            len => return Err(format!("message {next}: unexpected frame of {len} bytes")),
        }
    }
    match recv() {
        Err(Error::Disconnected) => Ok(()),
        other => Err(format!("expected Disconnected, got {other:?}")),
    }
}

fn assert_waited(start: Instant) {
    assert!(
        start.elapsed() >= WAIT,
        "returned after {:?}",
        start.elapsed()
    );
}

/// Fills the peer's buffer with `try_send_bytes`, then checks every bounded
/// form refuses with `Timeout`; evaluates to the number of messages that went
/// out. A macro because `Connection` and `Sender` share the methods, not a
/// trait.
macro_rules! fill_and_refuse {
    ($tx:expr) => {{
        let tx = &mut $tx;
        let mut n = 0u64;
        loop {
            match tx.try_send_bytes(&fill_msg(n)) {
                Ok(()) => n += 1,
                Err(Error::Timeout) => break,
                Err(e) => panic!("try_send_bytes: {e:?}"),
            }
            assert!(
                n < FILL_LIMIT,
                "the buffer never filled: is the peer reading?"
            );
        }
        assert!(n > 0, "nothing fitted an empty buffer");
        // Full now: every bounded form refuses, having written nothing.
        let bigger = vec![5u8; 2 * FILL];
        assert!(matches!(tx.try_send_bytes(&bigger), Err(Error::Timeout)));
        assert!(matches!(tx.try_send(&bigger), Err(Error::Timeout)));
        let start = Instant::now();
        assert!(matches!(
            tx.send_bytes_timeout(&bigger, WAIT),
            Err(Error::Timeout)
        ));
        assert_waited(start);
        let start = Instant::now();
        assert!(matches!(
            tx.send_timeout(&bigger, WAIT),
            Err(Error::Timeout)
        ));
        assert_waited(start);
        n
    }};
}

#[test]
fn duplex_full_buffer_refuses_whole_frames_only() {
    let _leaks = common::leak_guard();
    let (mut conn, mut peer) = duplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (conn_fd, go_tx_fd) = (conn.as_raw_fd(), go_tx.as_raw_fd());
    let mut child = fork(move || {
        close_in_child(conn_fd);
        close_in_child(go_tx_fd);
        go_rx.recv::<()>().map_err(s)?;
        check_stream(|| peer.recv_bytes())
    });
    let n = fill_and_refuse!(conn);
    // An fd message is refused the same way, and nothing leaks.
    // SAFETY: memfd_create with a valid name; the new fd is ours.
    let memfd = unsafe {
        std::fs::File::from_raw_fd(libc::memfd_create(c"full".as_ptr(), libc::MFD_CLOEXEC))
    };
    assert!(matches!(
        conn.try_send_fds(&[memfd.as_fd()]),
        Err(Error::Timeout)
    ));
    let start = Instant::now();
    assert!(matches!(
        conn.send_fds_timeout(&[memfd.as_fd()], WAIT),
        Err(Error::Timeout)
    ));
    assert_waited(start);
    // The peer starts reading; the stream is intact and blocking sends go on.
    go_tx.send(&()).unwrap();
    conn.send_bytes(&n.to_le_bytes()).unwrap();
    drop(conn);
    child.join_ok();
}

#[test]
fn simplex_full_pipe_refuses_whole_frames_only() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (tx_fd, go_tx_fd) = (tx.as_raw_fd(), go_tx.as_raw_fd());
    let mut child = fork(move || {
        close_in_child(tx_fd);
        close_in_child(go_tx_fd);
        go_rx.recv::<()>().map_err(s)?;
        check_stream(|| rx.recv_bytes())
    });
    let n = fill_and_refuse!(tx);
    go_tx.send(&()).unwrap();
    // A bounded send succeeds once the peer drains.
    tx.send_bytes_timeout(&n.to_le_bytes(), Duration::from_secs(10))
        .unwrap();
    drop(tx);
    child.join_ok();
}

/// A frame that starts but cannot finish by its deadline poisons the sender:
/// that call and later sends fail, the peer gets the earlier whole messages
/// and then end of stream (never the cut frame, never a hang), and the
/// receive direction still works.
#[test]
fn deadline_mid_frame_poisons_and_peer_sees_whole_frames() {
    let _leaks = common::leak_guard();
    let (mut conn, mut peer) = duplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (conn_fd, go_tx_fd) = (conn.as_raw_fd(), go_tx.as_raw_fd());
    let mut child = fork(move || {
        close_in_child(conn_fd);
        close_in_child(go_tx_fd);
        go_rx.recv::<()>().map_err(s)?;
        for i in 0..3u32 {
            let got: u32 = peer.recv().map_err(s)?;
            if got != i {
                return Err(format!("expected {i}, got {got}"));
            }
        }
        // The cut frame's first part is here, then the sender's shutdown.
        match peer.recv_bytes() {
            Err(Error::Disconnected) => {}
            other => return Err(format!("expected Disconnected, got {other:?}")),
        }
        peer.send(&"bye").map_err(s)
    });
    for i in 0..3u32 {
        conn.send_timeout(&i, WAIT).unwrap();
    }
    let big = vec![1u8; 16 << 20];
    let start = Instant::now();
    assert!(matches!(
        conn.send_bytes_timeout(&big, WAIT),
        Err(Error::Poisoned)
    ));
    assert_waited(start);
    assert!(matches!(conn.try_send(&1u8), Err(Error::Poisoned)));
    assert!(matches!(conn.send_bytes(b"x"), Err(Error::Poisoned)));
    go_tx.send(&()).unwrap();
    // `conn` stays open: the peer's end of stream comes from the shutdown.
    assert_eq!(
        conn.recv_timeout::<String>(Duration::from_secs(10))
            .unwrap(),
        "bye"
    );
    child.join_ok();
}

/// A peer that dies while a bounded send waits for room: `Disconnected`,
/// not a timeout and not a signal.
#[test]
fn peer_killed_while_send_waits_is_disconnected() {
    let _leaks = common::leak_guard();
    let (mut conn, peer) = duplex().unwrap();
    let conn_fd = conn.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(conn_fd);
        let _keep = peer;
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    });
    let n = fill_and_refuse!(conn);
    assert!(n > 0);
    child.signal(libc::SIGKILL);
    assert_eq!(child.wait(), common::Exit::Signal(libc::SIGKILL));
    // The parent's copy of `peer` went with the closure (dropped unrun here),
    // so the child held the only one.
    assert!(matches!(
        conn.send_bytes_timeout(&fill_msg(0), Duration::from_secs(10)),
        Err(Error::Disconnected)
    ));
}
