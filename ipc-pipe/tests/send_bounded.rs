//! Bounded sends (`try_send*`, `send*_timeout`) against a peer process that
//! does not read: a full buffer is `Full`/`Timeout` with nothing written, a
//! frame cut off by its deadline is accepted with its tail kept in the
//! connection (never poisoning), and the peer receives every accepted
//! message whole and in order.

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use common::{close_in_child, fork, s};
use ipc_pipe::{duplex, simplex, Error, SendTimeoutError, TrySendError};

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
                Err(TrySendError::Full) => break,
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
        assert!(matches!(
            tx.try_send_bytes(&bigger),
            Err(TrySendError::Full)
        ));
        assert!(matches!(tx.try_send(&bigger), Err(TrySendError::Full)));
        let start = Instant::now();
        assert!(matches!(
            tx.send_bytes_timeout(&bigger, WAIT),
            Err(SendTimeoutError::Timeout)
        ));
        assert_waited(start);
        let start = Instant::now();
        assert!(matches!(
            tx.send_timeout(&bigger, WAIT),
            Err(SendTimeoutError::Timeout)
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
        Err(TrySendError::Full)
    ));
    let start = Instant::now();
    assert!(matches!(
        conn.send_fds_timeout(&[memfd.as_fd()], WAIT),
        Err(SendTimeoutError::Timeout)
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

/// A frame that starts but cannot finish by its deadline is accepted: the
/// call returns `Ok`, the unwritten tail stays in the connection, later
/// bounded sends refuse (nothing of them written) until it drains, nothing
/// is poisoned, and the peer receives every message whole and in order.
#[test]
fn deadline_mid_frame_keeps_tail_never_poisons() {
    let _leaks = common::leak_guard();
    let (mut conn, mut peer) = duplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (conn_fd, go_tx_fd) = (conn.as_raw_fd(), go_tx.as_raw_fd());
    let big = vec![1u8; 16 << 20];
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
        match peer.recv_bytes() {
            Ok(b) if b.len() == 16 << 20 && b.iter().all(|&x| x == 1) => {}
            other => {
                return Err(format!(
                    "expected the big message, got {:?}",
                    other.map(|b| b.len())
                ))
            }
        }
        let last: u8 = peer.recv().map_err(s)?;
        if last != 7 {
            return Err(format!("expected 7, got {last}"));
        }
        peer.send(&"bye").map_err(s)
    });
    for i in 0..3u32 {
        conn.send_timeout(&i, WAIT).unwrap();
    }
    let start = Instant::now();
    conn.send_bytes_timeout(&big, WAIT).unwrap();
    assert_waited(start);
    assert!(conn.pending_bytes() > 0);
    assert!(matches!(conn.try_send(&7u8), Err(TrySendError::Full)));
    assert!(matches!(conn.try_flush(), Err(TrySendError::Full)));
    let start = Instant::now();
    assert!(matches!(
        conn.flush_timeout(WAIT),
        Err(SendTimeoutError::Timeout)
    ));
    assert_waited(start);
    go_tx.send(&()).unwrap();
    conn.flush().unwrap();
    assert_eq!(conn.pending_bytes(), 0);
    conn.try_send(&7u8).unwrap();
    assert_eq!(
        conn.recv_timeout::<String>(Duration::from_secs(10))
            .unwrap(),
        "bye"
    );
    child.join_ok();
}

/// Fills the pipe, then `try_send` of big and small frames interleaved with
/// the peer's reads: every accepted message arrives intact and in order, and
/// the sender is never poisoned.
#[test]
fn try_send_big_and_small_interleaved_with_reads_never_poisons() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let (mut ack_rx, mut ack_tx) = simplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (tx_fd, ack_rx_fd, go_tx_fd) = (tx.as_raw_fd(), ack_rx.as_raw_fd(), go_tx.as_raw_fd());
    const ROUNDS: u64 = 200;
    let size = |i: u64| {
        if i % 3 == 0 {
            300_000 + i as usize
        } else {
            10 + i as usize
        }
    };
    let body =
        |i: u64, len: usize| -> Vec<u8> { (0..len).map(|j| (j as u64 * 31 + i) as u8).collect() };
    let mut child = fork(move || {
        close_in_child(tx_fd);
        close_in_child(ack_rx_fd);
        close_in_child(go_tx_fd);
        // Start reading once the sender has found the pipe full.
        go_rx.recv_bytes().map_err(s)?;
        let mut buf = Vec::new();
        for i in 0..ROUNDS {
            rx.recv_bytes_into(&mut buf).map_err(s)?;
            if buf != body(i, size(i)) {
                return Err(format!(
                    "message {i}: {} bytes, not what was sent",
                    buf.len()
                ));
            }
            // Let the sender try now and then while the pipe is part full.
            if i % 7 == 0 {
                ack_tx.send_bytes(&i.to_le_bytes()).map_err(s)?;
            }
        }
        match rx.recv_bytes() {
            Err(Error::Disconnected) => Ok(()),
            other => Err(format!("expected Disconnected, got {other:?}")),
        }
    });
    let mut i = 0;
    let mut refused = 0u64;
    while i < ROUNDS {
        match tx.try_send_bytes(&body(i, size(i))) {
            Ok(()) => i += 1,
            Err(TrySendError::Full) => {
                if refused == 0 {
                    go_tx.send_bytes(b"go").unwrap();
                }
                refused += 1;
                // Wait for the reader to make progress, bounded.
                let _ = ack_rx.recv_bytes_timeout(Duration::from_millis(20));
            }
            Err(e) => panic!("message {i}: {e:?}"),
        }
    }
    assert!(refused > 0, "the pipe never filled");
    tx.flush().unwrap();
    drop(tx);
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
        Err(SendTimeoutError::Disconnected)
    ));
}
