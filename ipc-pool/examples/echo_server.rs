//! A TCP echo server with one process per connection that upper-cases each line, and a client
//! driving it, in one program. It never leaves a zombie: every connection's `Process` is
//! joined (or reaped by its handle's drop).
//!
//! Python it mirrors (`socketserver.ForkingTCPServer`, or by hand):
//! ```python
//! def handle(conn):
//!     with conn, conn.makefile("rwb") as f:
//!         for line in f:
//!             f.write(line.upper()); f.flush()
//!
//! srv = socket.create_server(("127.0.0.1", 0))
//! while True:
//!     conn, _ = srv.accept()
//!     multiprocessing.Process(target=handle, args=(conn,)).start()
//!     conn.close()
//! ```
//!
//! Run: `cargo run --example echo_server -p ipc-pool`

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use ipc_pool::Process;

type Res = Result<(), Box<dyn std::error::Error>>;

fn handle(conn: TcpStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if writeln!(out, "{}", line.to_uppercase()).is_err() {
            return;
        }
    }
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Res {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    println!("echo server on {addr}");

    // The server: accepts 3 connections, one child process each.
    // Daemons: if this program dies, the server and its handlers die with it.
    let server = Process::builder()
        .name("server")
        .daemon(true)
        .spawn(move || {
            let mut handlers = Vec::new();
            for _ in 0..3 {
                let Ok((conn, peer)) = listener.accept() else {
                    break;
                };
                let name = format!("conn-{peer}");
                // `conn` moves into the child's copy of the closure; the parent drops its copy.
                match Process::builder()
                    .name(name)
                    .daemon(true)
                    .spawn(move || handle(conn))
                {
                    Ok(p) => handlers.push(p),
                    Err(e) => eprintln!("fork failed: {e}"),
                }
            }
            for mut h in handlers {
                let _ = h.join();
            }
        })?;

    // The client: three connections, a few lines each.
    for c in 0..3 {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut out = stream.try_clone()?;
        let mut lines = BufReader::new(stream).lines();
        for word in ["hello", "fork", "world"] {
            writeln!(out, "{word} from client {c}")?;
            let back = lines.next().ok_or("server closed")??;
            println!("{back}");
            assert_eq!(back, format!("{} FROM CLIENT {c}", word.to_uppercase()));
        }
    }
    let mut server = server;
    let status = server.join_timeout(Duration::from_secs(10))?;
    assert!(status.success());
    println!("server exited: {status}; no zombies left");
    Ok(())
}
