//! Listener/Client over Unix paths and TCP, with and without an authkey,
//! client in a forked child.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use common::{close_in_child, fork, s, unique_socket_path};
use ipc_pipe::{Address, Client, Error, Listener};

fn serve_one_client(
    address: Address,
    server_key: Option<&'static [u8]>,
    client_key: Option<&'static [u8]>,
) {
    let listener = Listener::bind(address, server_key).unwrap();
    let addr = listener.address().clone();
    let lfd = listener.as_raw_fd();
    let should_work = server_key == client_key;
    let mut child = fork(move || {
        close_in_child(lfd);
        match Client::connect(addr, client_key) {
            Ok(mut c) if should_work => {
                let n: u32 = c.recv().map_err(s)?;
                c.send(&(n + 1)).map_err(s)
            }
            Err(Error::AuthenticationFailed) if !should_work => Ok(()),
            other => Err(format!("client: {other:?}")),
        }
    });
    match listener.accept() {
        Ok(mut conn) if should_work => {
            conn.send(&41u32).unwrap();
            assert_eq!(conn.recv::<u32>().unwrap(), 42);
        }
        Err(Error::AuthenticationFailed) if !should_work => {}
        other => panic!("server: {other:?}"),
    }
    child.join_ok();
}

#[test]
fn unix_with_right_key() {
    serve_one_client(unique_socket_path("ok").into(), Some(b"key"), Some(b"key"));
}

#[test]
fn unix_with_wrong_key_fails_on_both_sides() {
    serve_one_client(
        unique_socket_path("bad").into(),
        Some(b"key"),
        Some(b"other"),
    );
}

#[test]
fn unix_without_key() {
    serve_one_client(unique_socket_path("nokey").into(), None, None);
}

#[test]
fn tcp_with_right_key() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    serve_one_client(any.into(), Some(b"tcp key"), Some(b"tcp key"));
}

#[test]
fn tcp_with_wrong_key_fails_on_both_sides() {
    serve_one_client("127.0.0.1:0".into(), Some(b"tcp key"), Some(b"nope"));
}

#[test]
fn socket_file_is_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let path = unique_socket_path("perm");
    let l = Listener::bind(path.as_path(), None).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(matches!(
        Listener::bind(path.as_path(), None),
        Err(Error::Io(_))
    ));
    drop(l);
    assert!(!path.exists());
}

#[test]
fn client_speaking_no_protocol_is_rejected() {
    // A peer that connects and sends garbage instead of an answer.
    let path = unique_socket_path("garbage");
    let listener = Listener::bind(path.as_path(), Some(b"key")).unwrap();
    let lfd = listener.as_raw_fd();
    let p = path.clone();
    let mut child = fork(move || {
        close_in_child(lfd);
        let mut c = Client::connect(p.as_path(), None).map_err(s)?;
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
