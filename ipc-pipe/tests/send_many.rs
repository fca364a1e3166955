//! Batched sends (`send_bytes_many` and its `try_` and `_timeout` forms)
//! between processes: every message arrives whole and in order, one per
//! receive; a bounded batch stops when room or time runs out and says how
//! many it accepted (a message cut by the deadline is accepted, its tail kept
//! and sent first later, never poisoning); a peer that dies mid-batch, on
//! either side, never yields half a message.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{close_in_child, fork, s, Exit};
use ipc_pipe::{duplex, simplex, Error, SendTimeoutError, TryRecvError, TrySendError};

const WAIT: Duration = Duration::from_millis(100);

// Every test of this file holds `common::leak_guard()` for its whole run, which
// also runs them one at a time. That is needed here beyond the leak checks: a
// child inherits every fd open in the test process when it forks, other tests'
// included, and several tests here wait for end of stream: two children holding
// each other's write ends would wait for each other until the watchdog.

/// Message `i` of a stream: `i` (u64 LE), then `len - 8` bytes derived
/// from `i` (shorter messages: a prefix of that).
fn msg(i: u64, len: usize) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.extend((8..len.max(8)).map(|j| (j as u64 * 31 + i) as u8));
    m.truncate(len);
    m
}

/// Sizes that cover the copied path, the threshold, the uncopied path and a
/// frame larger than any pipe or socket buffer.
fn size_of(i: u64) -> usize {
    const SIZES: [usize; 9] = [8, 64, 0, 2048, 2049, 8, 100_000, 3000, 64];
    match i % 97 {
        50 => 3 << 20,
        k => SIZES[k as usize % SIZES.len()],
    }
}

/// Receives messages `from..to` as sent by [`send_stream`], checking each.
fn check_range(
    recv: &mut dyn FnMut(&mut Vec<u8>) -> Result<usize, Error>,
    from: u64,
    to: u64,
) -> Result<(), String> {
    let mut buf = Vec::new();
    for i in from..to {
        let n = recv(&mut buf).map_err(|e| format!("message {i}: {e:?}"))?;
        let want = msg(i, size_of(i));
        if n != want.len() || buf != want {
            return Err(format!(
                "message {i}: {n} bytes, differs from what was sent"
            ));
        }
    }
    Ok(())
}

/// A receive of one kind of handle, owning it.
type RecvBox = Box<dyn FnMut(&mut Vec<u8>) -> Result<usize, Error>>;

/// A batched send of one kind of handle.
type SendMany<'a> = &'a mut dyn FnMut(&[Vec<u8>]) -> Result<(), Error>;

/// Sends messages `from..to` in batches of `batch` with `send`.
fn send_stream(send: SendMany<'_>, from: u64, to: u64, batch: u64) -> Result<(), Error> {
    let mut i = from;
    while i < to {
        let k = batch.min(to - i);
        let msgs: Vec<Vec<u8>> = (i..i + k).map(|j| msg(j, size_of(j))).collect();
        send(&msgs)?;
        i += k;
    }
    Ok(())
}

const TOTAL: u64 = 600;

#[test]
fn duplex_batches_arrive_whole_in_order_one_per_receive() {
    let _leaks = common::leak_guard();
    let (mut a, mut b) = duplex().unwrap();
    let a_fd = a.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(a_fd);
        check_range(&mut |v| b.recv_bytes_into(v), 0, TOTAL)?;
        // A serde message after the batches: the stream is still in step.
        let last: String = b.recv().map_err(s)?;
        (last == "end").then_some(()).ok_or(last)?;
        match b.recv_bytes() {
            Err(Error::Disconnected) => Ok(()),
            other => Err(format!("expected Disconnected, got {other:?}")),
        }
    });
    send_stream(&mut |m| a.send_bytes_many(m), 0, TOTAL / 2, 64).unwrap();
    send_stream(&mut |m| a.send_bytes_many(m), TOTAL / 2, TOTAL, 7).unwrap();
    a.send(&"end").unwrap();
    drop(a);
    child.join_ok();
}

#[test]
fn simplex_batches_arrive_whole_in_order_bounded_and_blocking() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let tx_fd = tx.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(tx_fd);
        check_range(&mut |v| rx.recv_bytes_into(v), 0, TOTAL)?;
        match rx.recv_bytes() {
            Err(Error::Disconnected) => Ok(()),
            other => Err(format!("expected Disconnected, got {other:?}")),
        }
    });
    // Blocking batches, then bounded ones that finish (the peer reads).
    let mut i = 0u64;
    while i < TOTAL / 2 {
        let msgs: Vec<Vec<u8>> = (i..i + 64).map(|j| msg(j, size_of(j))).collect();
        tx.send_bytes_many(&msgs).unwrap();
        i += 64;
    }
    while i < TOTAL {
        let k = 33.min(TOTAL - i);
        let msgs: Vec<Vec<u8>> = (i..i + k).map(|j| msg(j, size_of(j))).collect();
        let mut sent = 0;
        while sent < msgs.len() {
            match tx.send_bytes_many_timeout(&msgs[sent..], Duration::from_secs(10)) {
                Ok(n) => {
                    assert!(n >= 1 && n <= msgs.len() - sent, "returned {n}");
                    sent += n;
                }
                Err(e) => panic!("message {}: {e:?}", i + sent as u64),
            }
        }
        i += k;
    }
    drop(tx);
    child.join_ok();
}

/// Fills the peer's buffer with `try_send_bytes_many`; every call returns a
/// count of accepted messages, at least one of them short of its batch (room
/// ran out), until `Full`. Evaluates to the number
/// sent. A macro: `Connection` and `Sender` share methods, not a trait.
macro_rules! fill_with_batches {
    ($tx:expr) => {{
        let tx = &mut $tx;
        let mut n = 0u64;
        let mut short = false;
        loop {
            // 100 messages: more than one write's worth (`PIPE_BUF`), and
            // not a whole number of pipe pages.
            let msgs: Vec<Vec<u8>> = (n..n + 100).map(|j| msg(j, 100)).collect();
            match tx.try_send_bytes_many(&msgs) {
                Ok(k) => {
                    assert!((1..=100).contains(&k), "returned {k}");
                    short |= k < 100;
                    n += k as u64;
                }
                Err(TrySendError::Full) => break,
                Err(e) => panic!("try_send_bytes_many: {e:?}"),
            }
            assert!(n < 10_000_000, "the buffer never filled");
        }
        assert!(short, "no batch stopped short before the buffer was full");
        // Full: the bounded forms refuse with nothing written.
        let msgs: Vec<Vec<u8>> = (n..n + 8).map(|j| msg(j, 100)).collect();
        let start = Instant::now();
        assert!(matches!(
            tx.send_bytes_many_timeout(&msgs, WAIT),
            Err(SendTimeoutError::Timeout)
        ));
        assert!(
            start.elapsed() >= WAIT,
            "returned after {:?}",
            start.elapsed()
        );
        assert!(matches!(
            tx.try_send_bytes_many(&msgs),
            Err(TrySendError::Full)
        ));
        n
    }};
}

/// The peer's side of the fill tests: `n` (the first message), then
/// messages `0..n` of 100 bytes whole and in order, then end of stream.
fn check_fill(recv: &mut dyn FnMut(&mut Vec<u8>) -> Result<usize, Error>) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut next = 0u64;
    loop {
        let k = recv(&mut buf).map_err(|e| format!("message {next}: {e:?}"))?;
        match k {
            100 if buf == msg(next, 100) => next += 1,
            8 => {
                let n = u64::from_le_bytes(buf[..8].try_into().map_err(s)?);
                return if n == next {
                    match recv(&mut buf) {
                        Err(Error::Disconnected) => Ok(()),
                        other => Err(format!("expected Disconnected, got {other:?}")),
                    }
                } else {
                    Err(format!("sender sent {n}, received {next}"))
                };
            }
            _ => return Err(format!("message {next}: {k} bytes, not what was sent")),
        }
    }
}

#[test]
fn simplex_full_pipe_bounded_batches_stop_between_messages() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (tx_fd, go_tx_fd) = (tx.as_raw_fd(), go_tx.as_raw_fd());
    let mut child = fork(move || {
        close_in_child(tx_fd);
        close_in_child(go_tx_fd);
        go_rx.recv::<()>().map_err(s)?;
        check_fill(&mut |v| rx.recv_bytes_into(v))
    });
    let n = fill_with_batches!(tx);
    go_tx.send(&()).unwrap();
    tx.send_bytes_many_timeout(&[n.to_le_bytes()], Duration::from_secs(10))
        .unwrap();
    drop(tx);
    child.join_ok();
}

#[test]
fn duplex_full_socket_bounded_batches_stop_between_messages() {
    let _leaks = common::leak_guard();
    let (mut conn, mut peer) = duplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (conn_fd, go_tx_fd) = (conn.as_raw_fd(), go_tx.as_raw_fd());
    let mut child = fork(move || {
        close_in_child(conn_fd);
        close_in_child(go_tx_fd);
        go_rx.recv::<()>().map_err(s)?;
        check_fill(&mut |v| peer.recv_bytes_into(v))
    });
    let n = fill_with_batches!(conn);
    go_tx.send(&()).unwrap();
    conn.send_bytes_many(&[n.to_le_bytes()]).unwrap();
    drop(conn);
    child.join_ok();
}

/// A large message of a bounded batch that starts but cannot finish in time
/// is accepted, its tail kept in the connection: the batch reports it sent,
/// the connection is never poisoned, later bounded sends refuse (nothing
/// written) while the tail cannot drain, and the peer receives every
/// message whole and in order once it reads.
#[test]
fn bounded_batch_cut_mid_message_keeps_tail_peer_gets_all() {
    let _leaks = common::leak_guard();
    let (mut conn, mut peer) = duplex().unwrap();
    let (mut go_rx, mut go_tx) = simplex().unwrap();
    let (conn_fd, go_tx_fd) = (conn.as_raw_fd(), go_tx.as_raw_fd());
    let mut child = fork(move || {
        close_in_child(conn_fd);
        close_in_child(go_tx_fd);
        go_rx.recv::<()>().map_err(s)?;
        check_range(&mut |v| peer.recv_bytes_into(v), 0, 3)?;
        match peer.recv_bytes() {
            Ok(b) if b.len() == 16 << 20 && b.iter().all(|&x| x == 9) => {}
            other => {
                return Err(format!(
                    "expected the big message, got {:?}",
                    other.map(|b| b.len())
                ))
            }
        }
        match peer.recv_bytes() {
            Ok(b) if b == msg(4, 8) => {}
            other => return Err(format!("expected message 4, got {other:?}")),
        }
        peer.send(&"bye").map_err(s)
    });
    let mut msgs: Vec<Vec<u8>> = (0..3).map(|j| msg(j, size_of(j))).collect();
    msgs.push(vec![9u8; 16 << 20]);
    msgs.push(msg(4, 8));
    let start = Instant::now();
    // The big one is accepted, cut: the batch stops after it.
    assert_eq!(conn.send_bytes_many_timeout(&msgs, WAIT).unwrap(), 4);
    assert!(start.elapsed() >= WAIT);
    assert!(conn.pending_bytes() > 0);
    // Its tail cannot drain: the next message is refused whole.
    assert!(matches!(
        conn.try_send_bytes_many(&msgs[4..]),
        Err(TrySendError::Full)
    ));
    assert!(matches!(
        conn.send_bytes_many_timeout(&msgs[4..], WAIT),
        Err(SendTimeoutError::Timeout)
    ));
    go_tx.send(&()).unwrap();
    // A blocking send drains the tail first.
    conn.send_bytes_many(&msgs[4..]).unwrap();
    assert_eq!(conn.pending_bytes(), 0);
    assert_eq!(
        conn.recv_timeout::<String>(Duration::from_secs(10))
            .unwrap(),
        "bye"
    );
    child.join_ok();
}

/// A message over the limit anywhere in a batch refuses the whole batch
/// before anything is written.
#[test]
fn too_large_in_batch_sends_nothing() {
    let _leaks = common::leak_guard();
    let (mut a, mut b) = duplex().unwrap();
    a.set_max_message_size(1000);
    let msgs = [vec![1u8; 10], vec![2u8; 1001]];
    assert!(matches!(
        a.send_bytes_many(&msgs),
        Err(Error::TooLarge {
            len: 1001,
            max: 1000
        })
    ));
    assert!(matches!(
        a.try_send_bytes_many(&msgs),
        Err(TrySendError::Failed(Error::TooLarge { .. }))
    ));
    assert!(matches!(b.try_recv_bytes(), Err(TryRecvError::Empty)));
    // The stream is intact.
    a.send_bytes_many(&msgs[..1]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), [1u8; 10]);
    assert_eq!(a.send_bytes_many::<&[u8]>(&[]).map_err(s), Ok(()));
}

/// The receiver dies while a blocking batch waits for room: `Disconnected`
/// (no `SIGPIPE`), and every later send says so too.
#[test]
fn receiver_killed_mid_batch_is_disconnected() {
    let _leaks = common::leak_guard();
    for simplex_pair in [false, true] {
        let (mut tx, child) = if simplex_pair {
            let (rx, tx) = simplex().unwrap();
            let tx_fd = tx.as_raw_fd();
            let child = fork(move || {
                close_in_child(tx_fd);
                let _keep = rx;
                std::thread::sleep(Duration::from_secs(60));
                Ok(())
            });
            (Tx::S(tx), child)
        } else {
            let (conn, peer) = duplex().unwrap();
            let conn_fd = conn.as_raw_fd();
            let child = fork(move || {
                close_in_child(conn_fd);
                let _keep = peer;
                std::thread::sleep(Duration::from_secs(60));
                Ok(())
            });
            (Tx::C(conn), child)
        };
        let mut child = child;
        let pid = child.pid();
        // Kill the receiver once the sender is blocked inside the batch.
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: kill(2) on our child, reaped only after this thread joins.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let msgs: Vec<Vec<u8>> = (0..64).map(|j| msg(j, 64 << 10)).collect();
        let res = (0..1000)
            .map(|_| tx.send_many(&msgs))
            .find(|r| r.is_err())
            .expect("the batches never blocked");
        killer.join().unwrap();
        assert!(matches!(res, Err(Error::Disconnected)), "{res:?}");
        assert!(matches!(tx.send_many(&msgs[..1]), Err(Error::Disconnected)));
        assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    }
}

// Two per test: the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Tx {
    S(ipc_pipe::Sender),
    C(ipc_pipe::Connection),
}

impl Tx {
    fn send_many(&mut self, msgs: &[Vec<u8>]) -> Result<(), Error> {
        match self {
            Tx::S(t) => t.send_bytes_many(msgs),
            Tx::C(c) => c.send_bytes_many(msgs),
        }
    }
}

/// The sender is killed inside a blocking batch larger than the buffer
/// (part of it on the wire, likely cut inside a message): the receiver gets
/// a prefix of the stream, every message whole and in order, then
/// `Disconnected`, and `Poisoned` if a message was cut.
#[test]
fn sender_killed_mid_batch_receiver_gets_only_whole_messages() {
    let _leaks = common::leak_guard();
    for simplex_pair in [false, true] {
        let (mut go_rx, mut go_tx) = simplex().unwrap();
        let go_rx_fd = go_rx.as_raw_fd();
        let (mut recv, mut child): (RecvBox, _) = if simplex_pair {
            let (mut rx, mut tx) = simplex().unwrap();
            let rx_fd = rx.as_raw_fd();
            let child = fork(move || {
                close_in_child(rx_fd);
                close_in_child(go_rx_fd);
                go_tx.send(&()).map_err(s)?;
                send_stream(&mut |m| tx.send_bytes_many(m), 0, u64::MAX / 2, 64).map_err(s)
            });
            (Box::new(move |v| rx.recv_bytes_into(v)), child)
        } else {
            let (mut a, mut b) = duplex().unwrap();
            let b_fd = b.as_raw_fd();
            let child = fork(move || {
                close_in_child(b_fd);
                close_in_child(go_rx_fd);
                go_tx.send(&()).map_err(s)?;
                send_stream(&mut |m| a.send_bytes_many(m), 0, u64::MAX / 2, 64).map_err(s)
            });
            (Box::new(move |v| b.recv_bytes_into(v)), child)
        };
        go_rx.recv::<()>().unwrap();
        // Let the sender fill the buffer and block mid-batch, then kill it.
        std::thread::sleep(Duration::from_millis(300));
        child.signal(libc::SIGKILL);
        assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
        let mut buf = Vec::new();
        let mut i = 0u64;
        let end = loop {
            match recv(&mut buf) {
                Ok(n) => {
                    let want = msg(i, size_of(i));
                    assert!(
                        n == want.len() && buf == want,
                        "message {i}: {n} bytes, not what was sent"
                    );
                    i += 1;
                }
                Err(e) => break e,
            }
        };
        assert!(i > 0, "nothing arrived before the kill");
        assert!(matches!(end, Error::Disconnected), "{end:?}");
        assert!(matches!(
            recv(&mut buf),
            Err(Error::Disconnected | Error::Poisoned)
        ));
    }
}
