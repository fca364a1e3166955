//! A `Listener` with an authkey and a `Client` in another process; a second
//! client with the wrong key is refused on both sides.
//!
//! Python equivalent:
//! ```python
//! with Listener("/tmp/sock", authkey=b"secret") as l:
//!     conn = l.accept(); print(conn.recv())
//! # elsewhere: Client("/tmp/sock", authkey=b"secret").send("hello")
//! ```

use ipc_pipe::{Client, Error, Listener};

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("ipc-pipe-example-{}.sock", std::process::id()));
    let listener = Listener::bind_with_authkey(path.as_path(), b"secret")?;
    println!("listening on {}", listener.address());

    // SAFETY: single-threaded here; the child only connects and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let ok = (|| -> ipc_pipe::Result<bool> {
            let mut conn = Client::connect_with_authkey(path.as_path(), b"secret")?;
            conn.send(&format!("hello from pid {}", std::process::id()))?;
            let reply: String = conn.recv()?;
            let refused = matches!(
                Client::connect_with_authkey(path.as_path(), b"guess"),
                Err(Error::AuthenticationFailed)
            );
            Ok(reply == "welcome" && refused)
        })();
        // SAFETY: leave the child without running the listener's destructor
        // (which would remove the socket file).
        unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) };
    }

    let mut conn = listener.accept()?;
    println!("received: {}", conn.recv::<String>()?);
    conn.send(&"welcome")?;
    let refused = match listener.accept() {
        Err(Error::AuthenticationFailed) => {
            println!("wrong key refused");
            true
        }
        other => {
            println!("unexpected: {other:?}");
            false
        }
    };
    let mut status = 0;
    // SAFETY: reaps our own child with a valid status pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error().into());
    }
    println!("client exited with status {status}");
    if !refused {
        return Err("the listener accepted a client with the wrong key".into());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err("the client failed (or its wrong key was not refused)".into());
    }
    Ok(())
}
