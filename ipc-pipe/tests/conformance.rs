//! One behaviour suite, instantiated for every way to get a pair of ends:
//! `duplex`, `simplex`, and `Listener`/`Client` over Unix and TCP.

mod common;

use std::time::Duration;

use ipc_pipe::{
    duplex, simplex, Client, Connection, Error, Listener, Receiver, RecvTimeoutError, Sender,
    TryRecvError,
};

/// The binary's leak guard (`common::leak_guard`: tests run one at a time, fds, threads and
/// children checked exactly), also watching the temporary directory the Unix sockets are
/// bound in (only this process's socket names: other programs use that directory too).
fn leak_guard() -> ipc_testkit::LeakGuard {
    common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix())
}

fn listener_pair(address: ipc_pipe::Address) -> (Connection, Connection) {
    let listener = Listener::bind(address).unwrap();
    let addr = listener.address().clone();
    let t = std::thread::spawn(move || Client::connect(addr).unwrap());
    let server = listener.accept().unwrap();
    (t.join().unwrap(), server)
}

#[cfg(feature = "auth")]
fn auth_listener_pair(address: ipc_pipe::Address) -> (Connection, Connection) {
    let listener = Listener::bind_with_authkey(address, b"conformance").unwrap();
    let addr = listener.address().clone();
    let t = std::thread::spawn(move || Client::connect_with_authkey(addr, b"conformance").unwrap());
    let server = listener.accept().unwrap();
    (t.join().unwrap(), server)
}

fn unix_pair() -> (Connection, Connection) {
    listener_pair(common::unique_socket_path("conf").into())
}

fn tcp_pair() -> (Connection, Connection) {
    listener_pair("127.0.0.1:0".into())
}

fn simplex_pair() -> (Sender, Receiver) {
    let (rx, tx) = simplex().unwrap();
    (tx, rx)
}

macro_rules! conformance {
    ($name:ident, $pair:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn typed_and_bytes_in_order() {
                let _leaks = super::leak_guard();
                let (mut tx, mut rx) = $pair;
                tx.send(&(1u8, "two".to_string(), vec![3u16; 3])).unwrap();
                tx.send_bytes(b"").unwrap();
                tx.send_bytes(&[5; 70_000]).unwrap();
                let v: (u8, String, Vec<u16>) = rx.recv().unwrap();
                assert_eq!(v, (1, "two".into(), vec![3, 3, 3]));
                assert_eq!(rx.recv_bytes().unwrap(), b"");
                let mut buf = Vec::new();
                assert_eq!(rx.recv_bytes_into(&mut buf).unwrap(), 70_000);
                assert!(buf.iter().all(|&b| b == 5));
            }

            #[test]
            fn many_small_messages_stream() {
                let _leaks = super::leak_guard();
                let (mut tx, mut rx) = $pair;
                let t = std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        tx.send_bytes(&i.to_le_bytes()).unwrap();
                    }
                });
                let mut buf = Vec::with_capacity(16);
                for i in 0..20_000u32 {
                    rx.recv_bytes_into(&mut buf).unwrap();
                    assert_eq!(buf, i.to_le_bytes());
                }
                t.join().unwrap();
            }

            #[test]
            fn eof_after_messages_then_disconnected() {
                let _leaks = super::leak_guard();
                let (mut tx, mut rx) = $pair;
                tx.send(&7u8).unwrap();
                drop(tx);
                assert!(rx.poll(Some(Duration::ZERO)).unwrap());
                assert_eq!(rx.recv::<u8>().unwrap(), 7);
                assert!(matches!(rx.recv::<u8>(), Err(Error::Disconnected)));
            }

            #[test]
            fn send_to_closed_peer_is_disconnected() {
                let _leaks = super::leak_guard();
                let (mut tx, rx) = $pair;
                drop(rx);
                let mut last = Ok(());
                // TCP may accept a first write before the reset arrives.
                for _ in 0..100 {
                    last = tx.send_bytes(&[0; 1024]);
                    if last.is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert!(matches!(last, Err(Error::Disconnected)), "{last:?}");
            }

            #[test]
            fn timeouts() {
                let _leaks = super::leak_guard();
                let (_tx, mut rx) = $pair;
                assert!(matches!(
                    rx.recv_timeout::<u8>(Duration::from_millis(20)),
                    Err(RecvTimeoutError::Timeout)
                ));
                assert!(matches!(rx.try_recv::<u8>(), Err(TryRecvError::Empty)));
                assert!(!rx.poll(Some(Duration::ZERO)).unwrap());
            }
        }
    };
}

conformance!(over_duplex, duplex().unwrap());
conformance!(over_simplex, simplex_pair());
conformance!(over_unix_listener, unix_pair());
conformance!(over_tcp_listener, tcp_pair());
#[cfg(feature = "auth")]
conformance!(
    over_unix_auth_listener,
    auth_listener_pair(common::unique_socket_path("confa").into())
);
#[cfg(feature = "auth")]
conformance!(
    over_tcp_auth_listener,
    auth_listener_pair("127.0.0.1:0".into())
);
