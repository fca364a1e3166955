//! Parent and forked child talking request/response over `duplex()`.
//!
//! Python equivalent:
//! ```python
//! parent, child = Pipe()
//! p = Process(target=serve, args=(child,)); p.start()
//! parent.send(("square", 7)); print(parent.recv())
//! ```

use ipc_pipe::{duplex, Error};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
enum Request {
    Square(i64),
    Concat(String, String),
    Quit,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Response {
    Number(i64),
    Text(String),
}

fn serve(conn: &mut ipc_pipe::Connection) -> ipc_pipe::Result<()> {
    loop {
        let reply = match conn.recv::<Request>() {
            Ok(Request::Square(n)) => Response::Number(n * n),
            Ok(Request::Concat(a, b)) => Response::Text(a + &b),
            Ok(Request::Quit) | Err(Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e),
        };
        conn.send(&reply)?;
    }
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut parent, mut child) = duplex()?;
    // SAFETY: single-threaded here; the child runs `serve` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        drop(parent);
        let code = i32::from(serve(&mut child).is_err());
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(child);

    parent.send(&Request::Square(7))?;
    let square = parent.recv::<Response>()?;
    println!("square(7) = {square:?}");
    parent.send(&Request::Concat("inter".into(), "process".into()))?;
    let concat = parent.recv::<Response>()?;
    println!("concat = {concat:?}");
    parent.send(&Request::Quit)?;

    let mut status = 0;
    // SAFETY: reaps our own child with a valid status pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error().into());
    }
    println!("child exited with status {status}");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err("the serving child failed".into());
    }
    if square != Response::Number(49) || concat != Response::Text("interprocess".into()) {
        return Err("wrong replies".into());
    }
    Ok(())
}
