//! A tour of every mechanism of the workspace, each across real processes: `Process`, a
//! `Pipe` (`ipc_pipe::duplex`), a `Queue` (`ipc_queue`), shared `Value`/`Array` (`ipc_shm`),
//! a `Lock` and a `Semaphore` (`ipc_sem`), and a `Pool` including what happens when a worker
//! is killed.
//!
//! Python it mirrors: the `multiprocessing` module documentation's examples, one after the
//! other (`Process`, `Pipe`, `Queue`, `Value`/`Array`, `Lock`, `Semaphore`, `Pool`).
//!
//! Run: `cargo run --release --example tour -p ipc-pool`

use std::time::{Duration, Instant};

use ipc_pool::{Error, Pool, Process};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn square(x: u64) -> u64 {
    x * x
}

fn slow_then_die(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(20));
    if x == 3 {
        // Simulates the OOM killer: the worker vanishes mid-task.
        let _ = Process::spawn(|| {}).map(|mut p| p.join());
        // SIGKILL ourselves through a child process's view: `kill -9 <us>`.
        let me = ipc_pool::current_pid().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &me])
            .status();
        std::thread::sleep(Duration::from_secs(5));
    }
    x
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Res {
    let t0 = Instant::now();

    // 1. Process: spawn, exit codes.
    let mut ok = Process::builder()
        .name("hello")
        .spawn(|| println!("  [child] hello"))?;
    let mut bad = Process::spawn(|| ipc_pool::exit(3))?;
    let (a, b) = (ok.join()?.code(), bad.join()?.code());
    println!("1. Process: {} -> {a:?}, exit(3) -> {b:?}", ok.name());

    // 2. Pipe: a duplex connection, request and reply.
    // The child is a fork: it also holds a copy of `parent`, so it cannot wait for EOF on
    // `child`; it answers "quit" instead. As a daemon it dies with us if we die first.
    let (mut parent, child) = ipc_pipe::duplex()?;
    let mut echo = Process::builder().daemon(true).spawn(move || {
        let mut c = child;
        while let Ok(s) = c.recv::<String>() {
            if s == "quit" {
                break;
            }
            let _ = c.send(&s.len());
        }
    })?;
    parent.send(&"twelve chars")?;
    let n: usize = parent.recv_timeout(Duration::from_secs(10))?;
    parent.send(&"quit")?;
    echo.join_timeout(Duration::from_secs(10))?;
    println!("2. Pipe: child measured {n} bytes");

    // 3. Queue: bounded MPMC in shared memory, two producers, one consumer (us).
    let q: ipc_queue::Queue<(u32, u64)> = ipc_queue::Queue::new(16)?;
    let sum = ipc_pool::scope(|s| -> Res<u64> {
        let mut producers = Vec::new();
        for id in 0..2u32 {
            let q = &q;
            producers.push(s.spawn(move || {
                for i in 0..100u64 {
                    if q.put((id, i)).is_err() {
                        ipc_pool::exit(2);
                    }
                }
            })?);
        }
        let mut sum = 0;
        for _ in 0..200 {
            sum += q.get_timeout(Duration::from_secs(10))?.1;
        }
        for mut p in producers {
            p.join()?;
        }
        Ok(sum)
    })?;
    println!("3. Queue: 200 items from 2 producers, sum {sum}");

    // 4. Value and Array: shared memory with a lock that survives its holder.
    let counter = ipc_shm::Value::new(0u64)?;
    let arr: ipc_shm::Array<u32> = ipc_shm::Array::new(4)?;
    ipc_pool::scope(|s| -> Res {
        let mut kids = Vec::new();
        for k in 0..4usize {
            let (counter, arr) = (&counter, &arr);
            kids.push(s.spawn(move || {
                for _ in 0..1000 {
                    let _ = counter.update(|c| *c += 1);
                }
                let _ = arr.set(k, (k as u32 + 1) * 10);
            })?);
        }
        for mut k in kids {
            k.join()?;
        }
        Ok(())
    })?;
    println!(
        "4. Value/Array: counter {}, array {:?}",
        counter.get()?,
        arr.to_vec()?
    );

    // 5. Lock and Semaphore: at most 2 of 4 children inside at once.
    let sem = ipc_sem::Semaphore::new(2)?;
    let inside = ipc_shm::Value::new(0u32)?;
    let peak = ipc_shm::Value::new(0u32)?;
    let lock = ipc_sem::Lock::new()?;
    ipc_pool::scope(|s| -> Res {
        let mut kids = Vec::new();
        for _ in 0..4 {
            let (sem, inside, peak, lock) = (&sem, &inside, &peak, &lock);
            kids.push(s.spawn(move || {
                let _g = sem.guard();
                let now = inside.update(|n| {
                    *n += 1;
                    *n
                });
                let _ = peak.update(|p| *p = (*p).max(now.unwrap_or(0)));
                std::thread::sleep(Duration::from_millis(10));
                let _ = inside.update(|n| *n -= 1);
                // The lock serialises this line across processes.
                if let Ok(_l) = lock.lock() {
                    println!("  [child {}] leaving", ipc_pool::current_pid());
                }
            })?);
        }
        for mut k in kids {
            k.join()?;
        }
        Ok(())
    })?;
    println!(
        "5. Semaphore(2): at most {} children inside at once",
        peak.get()?
    );

    // 6. Pool: map, imap, apply_async, and a worker killed mid-task.
    let pool = Pool::new(2)?;
    let squares = pool.map(square, 0..10u64)?;
    let lazy: Vec<u64> = pool.imap(square, 0..).take(5).collect::<Result<_, _>>()?;
    let r = pool.apply_async(square, 12)?;
    println!(
        "6. Pool: map {squares:?}, imap(0..) first 5 {lazy:?}, apply_async -> {}",
        r.get()?
    );
    let results: Vec<_> = pool.imap_chunked(slow_then_die, 0..6u32, 1).collect();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => println!("   task {i}: ok {v}"),
            Err(e @ Error::WorkerDied { .. }) => println!("   task {i}: {e}"),
            Err(e) => return Err(e.to_string().into()),
        }
    }
    assert!(matches!(results[3], Err(Error::WorkerDied { .. })));
    println!(
        "   the pool replaced the worker and goes on: apply -> {}",
        pool.apply(square, 9)?
    );
    pool.join()?;
    println!("done in {:?}; no child processes left", t0.elapsed());
    Ok(())
}
