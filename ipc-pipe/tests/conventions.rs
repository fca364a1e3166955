//! The crate's `try_`/`_timeout` forms and their error values (ARCHITECTURE.md,
//! "Conventions"): every form of every handle, the would-block state, a dead
//! peer (`Disconnected`), other failures (`Failed`), the conversions into
//! `Error` and the predicates. Runs without the `serde` feature too (the
//! typed forms are checked when it is on).

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use common::{close_in_child, fork, Exit};
use ipc_pipe::{
    duplex, simplex, AcceptTimeoutError, Client, Error, Listener, RecvTimeoutError,
    SendTimeoutError, TryAcceptError, TryRecvError, TrySendError,
};

const WAIT: Duration = Duration::from_millis(50);

fn memfd() -> std::fs::File {
    // SAFETY: memfd_create with a valid name; the new fd is ours.
    unsafe { std::fs::File::from_raw_fd(libc::memfd_create(c"conv".as_ptr(), libc::MFD_CLOEXEC)) }
}

fn waited(start: Instant) {
    assert!(
        start.elapsed() >= WAIT,
        "returned after {:?}",
        start.elapsed()
    );
}

/// Every receive form on an empty, open connection: `Empty` / `Timeout`,
/// after at least the timeout; then each gets its message.
#[test]
fn receive_forms_empty_then_message() {
    let _leaks = common::leak_guard();
    let (mut a, mut b) = duplex().unwrap();
    let mut buf = vec![9u8];

    let e = b.try_recv_bytes().unwrap_err();
    assert!(matches!(e, TryRecvError::Empty) && e.is_empty() && !e.is_disconnected());
    assert!(matches!(Error::from(e), Error::Empty));
    assert!(matches!(
        b.try_recv_bytes_into(&mut buf),
        Err(TryRecvError::Empty)
    ));
    assert!(matches!(b.try_recv_fds(), Err(TryRecvError::Empty)));
    for form in 0..3 {
        let start = Instant::now();
        let e = match form {
            0 => b.recv_bytes_timeout(WAIT).unwrap_err(),
            1 => b.recv_bytes_into_timeout(&mut buf, WAIT).unwrap_err(),
            _ => b.recv_fds_timeout(WAIT).unwrap_err(),
        };
        waited(start);
        assert!(matches!(e, RecvTimeoutError::Timeout) && e.is_timeout());
        assert!(!e.is_disconnected());
        assert!(matches!(Error::from(e), Error::Timeout));
    }

    a.send_bytes(b"one").unwrap();
    a.send_bytes(b"two").unwrap();
    a.send_fds(&[memfd().as_fd()]).unwrap();
    assert!(b.poll(Some(Duration::from_secs(10))).unwrap());
    assert_eq!(b.try_recv_bytes().unwrap(), b"one");
    assert_eq!(b.recv_bytes_into_timeout(&mut buf, WAIT).unwrap(), 3);
    assert_eq!(buf, b"two");
    // The next message holds descriptors: a bytes receive is `Failed`.
    let e = b.try_recv_bytes().unwrap_err();
    assert!(matches!(
        e,
        TryRecvError::Failed(Error::UnexpectedFrame { .. })
    ));
    assert!(matches!(Error::from(e), Error::UnexpectedFrame { .. }));
    assert_eq!(b.try_recv_fds().unwrap().len(), 1);

    #[cfg(feature = "serde")]
    {
        assert!(matches!(b.try_recv::<u32>(), Err(TryRecvError::Empty)));
        let start = Instant::now();
        assert!(matches!(
            b.recv_timeout::<u32>(WAIT),
            Err(RecvTimeoutError::Timeout)
        ));
        waited(start);
        a.send(&5u32).unwrap();
        a.send(&6u32).unwrap();
        a.send(&"not a u8").unwrap();
        assert_eq!(b.recv_timeout::<u32>(Duration::from_secs(10)).unwrap(), 5);
        assert_eq!(b.try_recv::<u32>().unwrap(), 6);
        assert!(matches!(
            b.recv_timeout::<u8>(Duration::from_secs(10)),
            Err(RecvTimeoutError::Failed(Error::Decode(_)))
        ));
    }
}

/// A peer killed while it holds its end: every receive form reports
/// `Disconnected` once the messages it finished are delivered, and every
/// send form reports `Disconnected` too.
#[test]
fn dead_peer_is_disconnected_in_every_form() {
    let _leaks = common::leak_guard();
    let (mut conn, mut peer) = duplex().unwrap();
    let conn_fd = conn.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(conn_fd);
        peer.send_bytes(b"last words").map_err(common::s)?;
        // Die holding the end.
        // SAFETY: raise on ourselves.
        unsafe { libc::raise(libc::SIGKILL) };
        Ok(())
    });
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    assert_eq!(conn.try_recv_bytes().unwrap(), b"last words");

    let e = conn.try_recv_bytes().unwrap_err();
    assert!(matches!(e, TryRecvError::Disconnected) && e.is_disconnected() && !e.is_empty());
    assert!(matches!(Error::from(e), Error::Disconnected));
    let mut buf = Vec::new();
    assert!(matches!(
        conn.try_recv_bytes_into(&mut buf),
        Err(TryRecvError::Disconnected)
    ));
    assert!(matches!(
        conn.try_recv_fds(),
        Err(TryRecvError::Disconnected)
    ));
    let e = conn.recv_bytes_timeout(WAIT).unwrap_err();
    assert!(matches!(e, RecvTimeoutError::Disconnected) && e.is_disconnected());
    assert!(matches!(
        conn.recv_bytes_into_timeout(&mut buf, WAIT),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert!(matches!(
        conn.recv_fds_timeout(WAIT),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert!(matches!(conn.recv_bytes(), Err(Error::Disconnected)));
    #[cfg(feature = "serde")]
    {
        assert!(matches!(
            conn.try_recv::<u8>(),
            Err(TryRecvError::Disconnected)
        ));
        assert!(matches!(
            conn.recv_timeout::<u8>(WAIT),
            Err(RecvTimeoutError::Disconnected)
        ));
    }

    let e = conn.try_send_bytes(b"x").unwrap_err();
    assert!(matches!(e, TrySendError::Disconnected) && e.is_disconnected() && !e.is_full());
    assert!(matches!(Error::from(e), Error::Disconnected));
    let e = conn.send_bytes_timeout(b"x", WAIT).unwrap_err();
    assert!(matches!(e, SendTimeoutError::Disconnected) && e.is_disconnected());
    assert!(matches!(
        conn.try_send_bytes_many(&[b"x"]),
        Err(TrySendError::Disconnected)
    ));
    assert!(matches!(
        conn.send_bytes_many_timeout(&[b"x"], WAIT),
        Err(SendTimeoutError::Disconnected)
    ));
    assert!(matches!(
        conn.try_send_fds(&[memfd().as_fd()]),
        Err(TrySendError::Disconnected)
    ));
    assert!(matches!(
        conn.send_fds_timeout(&[memfd().as_fd()], WAIT),
        Err(SendTimeoutError::Disconnected)
    ));
    #[cfg(feature = "serde")]
    {
        assert!(matches!(
            conn.try_send(&1u8),
            Err(TrySendError::Disconnected)
        ));
        assert!(matches!(
            conn.send_timeout(&1u8, WAIT),
            Err(SendTimeoutError::Disconnected)
        ));
    }
    // Nothing was held back: flushing has nothing to do.
    conn.try_flush().unwrap();
    conn.flush_timeout(WAIT).unwrap();
}

/// Every send form on a full pipe: `Full` / `Timeout` with nothing written,
/// after at least the timeout; `Failed` for other errors; a message cut by
/// its deadline is accepted and its tail flushed, never `Poisoned`.
#[test]
fn send_forms_full_then_room() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let mut sent = 0u64;
    let msg = |i: u64| (i as u32).to_le_bytes().repeat(250);
    loop {
        match tx.try_send_bytes(&msg(sent)) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert!(matches!(e, TrySendError::Full) && e.is_full() && !e.is_disconnected());
                assert!(matches!(Error::from(e), Error::Full));
                break;
            }
        }
    }
    assert_eq!(tx.pending_bytes(), 0, "1000-byte pipe writes are never cut");
    assert!(matches!(
        tx.try_send_bytes_many(&[msg(0)]),
        Err(TrySendError::Full)
    ));
    let start = Instant::now();
    let e = tx.send_bytes_timeout(&msg(0), WAIT).unwrap_err();
    waited(start);
    assert!(matches!(e, SendTimeoutError::Timeout) && e.is_timeout() && !e.is_disconnected());
    assert!(matches!(Error::from(e), Error::Timeout));
    let start = Instant::now();
    assert!(matches!(
        tx.send_bytes_many_timeout(&[msg(0)], WAIT),
        Err(SendTimeoutError::Timeout)
    ));
    waited(start);
    #[cfg(feature = "serde")]
    {
        assert!(matches!(tx.try_send(&msg(0)), Err(TrySendError::Full)));
        let start = Instant::now();
        assert!(matches!(
            tx.send_timeout(&msg(0), WAIT),
            Err(SendTimeoutError::Timeout)
        ));
        waited(start);
    }
    // Other failures are `Failed`, whatever the form.
    tx.set_max_message_size(10);
    assert!(matches!(
        tx.try_send_bytes(&[0; 11]),
        Err(TrySendError::Failed(Error::TooLarge { len: 11, max: 10 }))
    ));
    assert!(matches!(
        tx.send_bytes_timeout(&[0; 11], WAIT),
        Err(SendTimeoutError::Failed(Error::TooLarge { .. }))
    ));
    tx.set_max_message_size(64 << 20);
    // Drain; everything accepted arrives whole, in order.
    for i in 0..sent {
        assert_eq!(rx.recv_bytes().unwrap(), msg(i));
    }
    tx.try_send_bytes(&msg(sent)).unwrap();
    assert_eq!(
        tx.try_send_bytes_many(&[msg(sent + 1), msg(sent + 2)])
            .unwrap(),
        2
    );
    assert_eq!(
        tx.send_bytes_many_timeout(&[msg(sent + 3)], WAIT).unwrap(),
        1
    );
    tx.send_bytes_timeout(&msg(sent + 4), WAIT).unwrap();
    for i in sent..sent + 5 {
        assert_eq!(rx.recv_bytes().unwrap(), msg(i));
    }
}

/// A message larger than the free room: `try_send_bytes` accepts it, keeps
/// the tail, refuses the next message whole while the tail cannot drain,
/// and `try_flush`/`flush_timeout` report `Full`/`Timeout`; once the peer
/// reads, `flush` delivers it.
#[test]
fn try_send_keeps_the_tail_and_flush_delivers_it() {
    let _leaks = common::leak_guard();
    let (mut a, mut b) = duplex().unwrap();
    let big: Vec<u8> = (0..8u32 << 20).map(|i| i as u8).collect();
    a.try_send_bytes(&big).unwrap();
    assert!(a.pending_bytes() > 0 && a.pending_bytes() < big.len());
    assert!(matches!(a.try_send_bytes(b"next"), Err(TrySendError::Full)));
    assert!(matches!(a.try_flush(), Err(TrySendError::Full)));
    let start = Instant::now();
    assert!(matches!(
        a.flush_timeout(WAIT),
        Err(SendTimeoutError::Timeout)
    ));
    waited(start);
    let reader = std::thread::spawn(move || {
        let first = b.recv_bytes().unwrap();
        let second = b.recv_bytes().unwrap();
        (first, second)
    });
    a.flush().unwrap();
    assert_eq!(a.pending_bytes(), 0);
    a.try_flush().unwrap();
    a.send_bytes(b"next").unwrap();
    let (first, second) = reader.join().unwrap();
    assert!(first == big);
    assert_eq!(second, b"next");
}

/// `try_accept` (`WouldBlock`), `accept_timeout` (`Timeout`, after at least
/// the timeout), then each form returns a waiting peer; `incoming` yields
/// them in turn.
#[test]
fn listener_forms() {
    let _leaks =
        common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix());
    let path = common::unique_socket_path("conv");
    let listener = Listener::bind(path.as_path()).unwrap();
    assert!(!listener.authenticated());
    let e = listener.try_accept().unwrap_err();
    assert!(matches!(e, TryAcceptError::WouldBlock) && e.is_would_block());
    assert!(matches!(Error::from(e), Error::WouldBlock));
    let start = Instant::now();
    let e = listener.accept_timeout(WAIT).unwrap_err();
    waited(start);
    assert!(matches!(e, AcceptTimeoutError::Timeout) && e.is_timeout());
    assert!(matches!(Error::from(e), Error::Timeout));

    let mut clients: Vec<_> = (0..4u8)
        .map(|i| {
            let mut c = Client::connect(path.as_path()).unwrap();
            c.send_bytes(&[i]).unwrap();
            c
        })
        .collect();
    // Connected peers wait in the backlog: every form takes one.
    let mut a = listener.try_accept().unwrap();
    assert_eq!(a.recv_bytes().unwrap(), [0]);
    let mut b = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), [1]);
    for (i, conn) in listener.incoming().take(2).enumerate() {
        assert_eq!(conn.unwrap().recv_bytes().unwrap(), [i as u8 + 2]);
    }
    assert!(matches!(
        listener.try_accept(),
        Err(TryAcceptError::WouldBlock)
    ));
    clients.clear();
    drop(listener);
    assert!(!path.exists());
}

/// With a key, `try_accept` drives handshakes without waiting: a client
/// that is still answering is `WouldBlock`, never a stall, and the
/// connection comes out of a later call.
#[cfg(feature = "auth")]
#[test]
fn authenticated_try_accept_never_waits_for_a_handshake() {
    let _leaks =
        common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix());
    let path = common::unique_socket_path("conva");
    let listener = Listener::bind_with_authkey(path.as_path(), b"key").unwrap();
    assert!(listener.authenticated());
    assert!(matches!(
        listener.try_accept(),
        Err(TryAcceptError::WouldBlock)
    ));
    let p = path.clone();
    let client = std::thread::spawn(move || {
        let mut c = Client::connect_with_authkey(p.as_path(), b"key")?;
        c.send_bytes(b"in")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = loop {
        match listener.try_accept() {
            Ok(c) => break c,
            Err(TryAcceptError::WouldBlock) => {
                assert!(Instant::now() < deadline, "handshake never completed");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    client.join().unwrap().unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"in");
    let e = listener.accept_timeout(WAIT).unwrap_err();
    assert!(e.is_timeout());
}

/// The error types are ordinary errors: `Display` lowercase, `Send + Sync +
/// 'static`, usable with `?` in a function returning `ipc_pipe::Error` or
/// `Box<dyn Error>`.
#[test]
fn error_types_are_errors() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> String {
        e.to_string()
    }
    assert_eq!(is_error(TryRecvError::Empty), "no message is waiting");
    assert_eq!(is_error(TryRecvError::Disconnected), "peer disconnected");
    assert_eq!(
        is_error(RecvTimeoutError::Timeout),
        "timed out waiting for a message"
    );
    assert_eq!(is_error(TrySendError::Full), "the peer's buffer is full");
    assert_eq!(
        is_error(SendTimeoutError::Timeout),
        "timed out waiting for room to send"
    );
    assert_eq!(
        is_error(TryAcceptError::WouldBlock),
        "no peer is ready to be accepted"
    );
    assert_eq!(
        is_error(AcceptTimeoutError::Timeout),
        "timed out waiting for a peer"
    );
    assert_eq!(
        is_error(TrySendError::Failed(Error::Poisoned)),
        Error::Poisoned.to_string()
    );
    fn question_mark() -> Result<(), Error> {
        // Its pipe would show as a leak in a leak-checked test running meanwhile.
        let _serial = ipc_testkit::serial();
        let (mut rx, _tx) = simplex()?;
        rx.try_recv_bytes()?;
        Ok(())
    }
    assert!(matches!(question_mark(), Err(Error::Empty)));
}

/// The pipe's capacity in bytes.
fn pipe_size(fd: std::os::fd::RawFd) -> usize {
    // SAFETY: F_GETPIPE_SZ on a descriptor we own; no memory involved.
    let n = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    assert!(n > 0, "F_GETPIPE_SZ failed");
    n as usize
}

/// Drop makes one non-blocking attempt to write a held-back tail: with room
/// for it, the peer gets the whole message; without, the peer sees the cut
/// message as `Disconnected` (then `Poisoned`), never a partial message.
#[test]
fn drop_writes_the_tail_if_there_is_room() {
    let _leaks = common::leak_guard();
    for room in [true, false] {
        let (mut rx, mut tx) = simplex().unwrap();
        // One frame a little larger than the pipe: the first write fills it.
        let len = pipe_size(tx.as_raw_fd()) + 100;
        let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        tx.try_send_bytes(&msg).unwrap();
        let tail = tx.pending_bytes();
        assert!(tail > 0 && tail <= 104, "tail of {tail} bytes");
        if room {
            // Takes what is in the pipe (kept for the next receive), making room.
            assert!(matches!(
                rx.recv_bytes_timeout(WAIT),
                Err(RecvTimeoutError::Timeout)
            ));
        }
        drop(tx);
        if room {
            assert!(rx.recv_bytes().unwrap() == msg);
            assert!(matches!(rx.recv_bytes(), Err(Error::Disconnected)));
        } else {
            assert!(matches!(rx.recv_bytes(), Err(Error::Disconnected)));
            assert!(matches!(rx.recv_bytes(), Err(Error::Poisoned)));
        }
    }
}

/// The async `_timeout` forms (feature `tokio`): the blocking forms' error types and values,
/// after at least the timeout, and the stream intact afterwards.
#[cfg(feature = "tokio")]
#[test]
fn async_timeout_forms() {
    use ipc_pipe::{AsyncConnection, AsyncListener, AsyncReceiver, AsyncSender};
    let _leaks =
        common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = duplex().unwrap();
        let (mut a, mut b) = (
            AsyncConnection::new(a).unwrap(),
            AsyncConnection::new(b).unwrap(),
        );
        let start = Instant::now();
        let e = b.recv_bytes_timeout(WAIT).await.unwrap_err();
        waited(start);
        assert!(matches!(e, RecvTimeoutError::Timeout) && e.is_timeout());
        let mut buf = Vec::new();
        let e = b.recv_bytes_into_timeout(&mut buf, WAIT).await.unwrap_err();
        assert!(e.is_timeout());
        let e = b.recv_fds_timeout(WAIT).await.unwrap_err();
        assert!(e.is_timeout());
        #[cfg(feature = "serde")]
        assert!(b.recv_timeout::<u32>(WAIT).await.unwrap_err().is_timeout());

        // Fill the peer's buffer: every send form is `Timeout` with nothing written.
        let chunk = vec![9u8; 1 << 16];
        let mut sent = 0usize;
        loop {
            match a.send_bytes_timeout(&chunk, Duration::ZERO).await {
                Ok(()) => sent += 1,
                Err(SendTimeoutError::Timeout) => break,
                Err(e) => panic!("{e:?}"),
            }
            assert!(sent < 4096, "the socket never filled");
        }
        // A tail of the last accepted message may wait: flush_timeout is `Timeout` then.
        if a.pending_bytes() > 0 {
            let start = Instant::now();
            let e = a.flush_timeout(WAIT).await.unwrap_err();
            waited(start);
            assert!(e.is_timeout());
        }
        let start = Instant::now();
        let e = a.send_bytes_timeout(b"x", WAIT).await.unwrap_err();
        waited(start);
        assert!(matches!(e, SendTimeoutError::Timeout) && e.is_timeout());
        assert!(matches!(Error::from(e), Error::Timeout));
        let e = a.send_bytes_many_timeout(&[b"y"], WAIT).await.unwrap_err();
        assert!(e.is_timeout());
        let e = a.send_fds_timeout(&[b.as_fd()], WAIT).await.unwrap_err();
        assert!(e.is_timeout());
        #[cfg(feature = "serde")]
        assert!(a.send_timeout(&1u32, WAIT).await.unwrap_err().is_timeout());
        // Nothing of the refused messages was written: exactly the accepted ones arrive.
        let drain = async {
            for _ in 0..sent {
                assert_eq!(b.recv_bytes().await.unwrap(), chunk);
            }
            b
        };
        let (mut b, flushed) = tokio::join!(drain, a.flush());
        flushed.unwrap();
        a.send_bytes(b"last").await.unwrap();
        assert_eq!(b.recv_bytes().await.unwrap(), b"last");

        // A dead peer: Disconnected in the timeout forms.
        drop(a);
        let e = b.recv_bytes_timeout(WAIT).await.unwrap_err();
        assert!(matches!(e, RecvTimeoutError::Disconnected) && e.is_disconnected());
        let e = b.send_bytes_timeout(b"z", WAIT).await.unwrap_err();
        assert!(e.is_disconnected());

        // The simplex halves.
        let (rx, tx) = simplex().unwrap();
        let (mut rx, mut tx) = (
            AsyncReceiver::new(rx).unwrap(),
            AsyncSender::new(tx).unwrap(),
        );
        assert!(rx.recv_bytes_timeout(WAIT).await.unwrap_err().is_timeout());
        assert_eq!(
            tx.send_bytes_many_timeout(&[b"p", b"q"], WAIT)
                .await
                .unwrap(),
            2
        );
        assert_eq!(rx.recv_bytes().await.unwrap(), b"p");
        assert_eq!(rx.recv_bytes().await.unwrap(), b"q");

        // The listener.
        let path = common::unique_socket_path("aconv");
        let mut listener = AsyncListener::bind(path.as_path()).unwrap();
        let start = Instant::now();
        let e = listener.accept_timeout(WAIT).await.unwrap_err();
        waited(start);
        assert!(matches!(e, AcceptTimeoutError::Timeout) && e.is_timeout());
        let client = Client::connect_async(path.as_path()).await.unwrap();
        let server = listener
            .accept_timeout(Duration::from_secs(10))
            .await
            .unwrap();
        drop((client, server, listener));
        assert!(!path.exists());
    });
}
