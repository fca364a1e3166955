//! An echo server on tokio: one task per connection where the seed's echo server forks one
//! process per connection (`ipc-pool/examples/echo_server.rs`). It upper-cases every line it
//! receives; eight clients talk to it at once; everything ends by itself and the socket file
//! is removed when the listener drops.
//!
//! Python it mirrors (`multiprocessing.connection` under asyncio, by hand):
//! ```python
//! async def handle(conn):
//!     while True:
//!         try: line = await loop.run_in_executor(None, conn.recv)
//!         except EOFError: return
//!         conn.send(line.upper())
//! ```
//!
//! Run: `cargo run --example tokio_echo -p ipc-pipe --features tokio`

use ipc_pipe::{AsyncConnection, AsyncListener, Client, Error};

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CLIENTS: usize = 8;
const WORDS: [&str; 3] = ["hello", "tokio", "world"];

/// Serves one connection until the client leaves; returns how many lines it echoed.
async fn handle(mut conn: AsyncConnection) -> ipc_pipe::Result<usize> {
    let mut lines = 0;
    loop {
        match conn.recv::<String>().await {
            Ok(line) => {
                conn.send(&line.to_uppercase()).await?;
                lines += 1;
            }
            Err(Error::Disconnected) => return Ok(lines),
            Err(e) => return Err(e),
        }
    }
}

/// One client: a few lines, each answered before the next.
async fn client(path: std::path::PathBuf, id: usize) -> Res {
    let mut conn = Client::connect_async(path.as_path()).await?;
    for word in WORDS {
        let line = format!("{word} from client {id}");
        conn.send(&line).await?;
        let back: String = conn.recv().await?;
        if back != line.to_uppercase() {
            return Err(format!("client {id}: sent {line:?}, got {back:?}").into());
        }
    }
    Ok(())
}

async fn run() -> Res {
    let path =
        std::env::temp_dir().join(format!("ipc-pipe-tokio-echo-{}.sock", std::process::id()));
    let mut listener = AsyncListener::bind(path.as_path())?;
    println!("echo server on {}", listener.address());

    // The server: accepts CLIENTS connections, one task each, then waits for them.
    let server = tokio::spawn(async move {
        let mut handlers = Vec::new();
        for _ in 0..CLIENTS {
            let conn = listener.accept().await?;
            handlers.push(tokio::spawn(handle(conn)));
        }
        let mut lines = 0;
        for h in handlers {
            lines += h.await??;
        }
        // `listener` drops here: the socket file goes with it.
        Res::Ok(lines)
    });

    // The clients, all at once.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(path.clone(), id)))
        .collect();
    for c in clients {
        c.await??;
    }
    let lines = server.await??;
    println!("echoed {lines} lines for {CLIENTS} clients");
    assert_eq!(lines, CLIENTS * WORDS.len());
    Ok(())
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Res {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
