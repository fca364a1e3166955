//! A named queue between two unrelated programs: run the same binary twice.
//!
//! ```text
//! cargo run -p ipc-queue --example named_queue -- serve /demo-queue   # terminal 1
//! cargo run -p ipc-queue --example named_queue -- client /demo-queue  # terminal 2
//! ```
//! `serve` creates the queue (0600, `O_EXCL`), answers every request on a reply queue and
//! removes both names when it ends (after 30 s idle, or when a client sends `quit`).
//! `client` opens both by name (checking owner, size and layout) and sends a few requests.

use std::time::Duration;

use ipc_queue::{Error, GetTimeoutError, Queue};

fn serve(name: &str) -> Result<(), Error> {
    let requests = Queue::<String>::create_named(name, 16)?;
    let replies = Queue::<String>::create_named(&format!("{name}-reply"), 16)?;
    println!("serving on {name}; run: named_queue client {name}");
    loop {
        match requests.get_timeout(Duration::from_secs(30)) {
            Ok(req) if req == "quit" => break,
            Ok(req) => replies.put(req.to_uppercase())?,
            Err(GetTimeoutError::Timeout) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("done; names removed on drop");
    Ok(())
}

fn client(name: &str) -> Result<(), Error> {
    let requests = Queue::<String>::open_named(name)?;
    let replies = Queue::<String>::open_named(&format!("{name}-reply"))?;
    for word in ["hello", "from", "another", "process"] {
        requests.put(word.to_string())?;
        println!("{word} -> {}", replies.get_timeout(Duration::from_secs(5))?);
    }
    requests.put("quit".to_string())?;
    Ok(())
}

/// Runs the example with its command-line arguments, `serve|client [/name]` (also called
/// by `tests/examples.rs`, which runs both roles).
pub fn run(args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let name = args.get(1).copied().unwrap_or("/ipc-queue-demo");
    match args.first().copied() {
        Some("serve") => serve(name)?,
        Some("client") => client(name)?,
        _ => eprintln!("usage: named_queue serve|client [/name]"),
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}
