//! A tokio TCP service that hands its CPU-bound work to a process pool and awaits it
//! (feature `async`): each request line is a number, each reply the length of its Collatz
//! sequence, computed in a worker process while the service keeps serving other clients.
//! A few clients in the same program send requests, check the replies, and the service stops.
//!
//! Mirrors Python's
//!
//! ```python
//! async def handle(reader, writer):
//!     loop = asyncio.get_running_loop()
//!     async for line in reader:
//!         steps = await loop.run_in_executor(pool, collatz_len, int(line))
//!         writer.write(f"{int(line)} {steps}\n".encode())
//!
//! with ProcessPoolExecutor(2) as pool:
//!     server = await asyncio.start_server(handle, "127.0.0.1", 0)
//! ```
//!
//! Run: `cargo run --example tokio_service -p ipc-pool --features async`

use std::error::Error;
use std::sync::Arc;

use ipc_pool::Pool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The CPU-bound task, run in a worker process.
fn collatz_len(mut n: u64) -> u32 {
    let mut steps = 0;
    while n > 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

/// Serves one client: a reply line per request line, each computed by the pool.
async fn handle(pool: Arc<Pool>, stream: TcpStream) -> Result<(), Box<dyn Error + Send + Sync>> {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    while let Some(line) = lines.next_line().await? {
        let n: u64 = line.trim().parse()?;
        // Submitted to a worker; the dispatcher wakes this task when the result is back.
        let steps = pool.apply_async(collatz_len, n)?.await?;
        wr.write_all(format!("{n} {steps}\n").as_bytes()).await?;
    }
    Ok(())
}

/// A client: sends `numbers`, one per line, and checks each reply.
async fn client(
    addr: std::net::SocketAddr,
    numbers: Vec<u64>,
) -> Result<usize, Box<dyn Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (rd, mut wr) = stream.into_split();
    let mut replies = BufReader::new(rd).lines();
    for &n in &numbers {
        wr.write_all(format!("{n}\n").as_bytes()).await?;
        let reply = replies.next_line().await?.ok_or("service hung up")?;
        assert_eq!(reply, format!("{n} {}", collatz_len(n)));
    }
    Ok(numbers.len())
}

/// Starts the pool, the runtime, the service and its clients; returns once all were served.
pub fn main() -> Result<(), Box<dyn Error>> {
    // The pool first, while the program has one thread: its fork server is forked here
    // (or call `ipc_pool::init()` first thing instead).
    let pool = Arc::new(Pool::new(2)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?;
    let served = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move {
                let mut conns = Vec::new();
                loop {
                    let (stream, _) = listener.accept().await?;
                    conns.push(tokio::spawn(handle(Arc::clone(&pool), stream)));
                    if conns.len() == 4 {
                        break;
                    }
                }
                for c in conns {
                    c.await??;
                }
                Ok::<(), Box<dyn Error + Send + Sync>>(())
            }
        });
        let clients: Vec<_> = (0..4u64)
            .map(|c| tokio::spawn(client(addr, (1..=25).map(|i| c * 1000 + i * 7).collect())))
            .collect();
        let mut served = 0;
        for c in clients {
            served += c.await?.map_err(|e| e.to_string())?;
        }
        service.await?.map_err(|e| e.to_string())?;
        Ok::<usize, Box<dyn Error>>(served)
    })?;
    drop(rt);
    println!("served {served} requests through the pool");
    pool.join()?;
    Ok(())
}
