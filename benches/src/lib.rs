//! Benchmarks and the `compare` run: every `ipc-*` mechanism beside its peers.
//!
//! The workload code lives here, once, and is shared by the `compare` binary (which applies the
//! conventions of `WORKLOADS.md`: round-robin repeats, placement probe, ratio pairing, verdicts)
//! and by the criterion benches in `benches/benches/`. Each workload is a function of
//! [`Run`] (op count and pinning) that returns an [`Outcome`]: a timed [`Measure`], a stated
//! skip reason, or a failure with its cause.
//!
//! Reference rows (`L*`, `P*`) are in the `refs_*` modules, our rows (`Q*`, `S*`, `V*`, `C*`,
//! `K*`, and the async rows `A*`) in the `ours_*` modules. Raw OS calls (fork, futex, pipes, mq, `sem_t`, pthread
//! mutexes) are confined to the modules that allow `unsafe_code`.
#![deny(unsafe_code)]

pub mod checksum;
pub mod crit;
#[allow(unsafe_code)]
pub mod harness;
#[allow(unsafe_code)]
pub mod os;
pub mod ours_async;
pub mod ours_pipe;
pub mod ours_pool;
pub mod ours_queue;
#[allow(unsafe_code)]
pub mod ours_sem;
pub mod ours_shm;
#[allow(unsafe_code)]
pub mod pool_transport;
pub mod probe;
pub mod python;
#[allow(unsafe_code)]
pub mod refs_pipe;
#[allow(unsafe_code)]
pub mod refs_proc;
#[allow(unsafe_code)]
pub mod refs_queue;
#[allow(unsafe_code)]
pub mod refs_sem;
#[allow(unsafe_code)]
pub mod refs_shm;
pub mod registry;
pub mod report;
pub mod runner;

/// How one workload run is asked for: the op count and whether roles are pinned.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Operations (messages, round trips, pairs, chunks, tasks) to time.
    pub n: u64,
    /// Pin producers / side A to cpu 0 and consumers / side B to cpu 1.
    pub pin: bool,
}

impl Run {
    /// A run of `n` ops, unpinned.
    pub fn new(n: u64) -> Self {
        Run { n, pin: false }
    }
}

/// A successful timed run.
#[derive(Clone, Debug, Default)]
pub struct Measure {
    /// Ops actually done (a workload may round `n` down to a multiple of its role count).
    pub n: u64,
    /// Elapsed wall time in seconds (max end minus min start over all roles).
    pub elapsed: f64,
    /// CPU seconds used by all roles together during the timed part, when recorded.
    pub cpu: Option<f64>,
    /// A figure computed by the workload itself (speed-ups), instead of one derived from `n`.
    pub value: Option<f64>,
    /// Extra facts worth keeping with the sample (pipe size, drift, ...).
    pub note: Option<String>,
    /// Threads a role ran besides its main thread, when the row counts them (A3's consumer:
    /// its futex waiter threads); a target with a thread bound judges the largest.
    pub threads: Option<u64>,
}

impl Measure {
    /// A measure of `n` ops in `elapsed` seconds.
    pub fn new(n: u64, elapsed: f64) -> Self {
        Measure {
            n,
            elapsed,
            ..Default::default()
        }
    }
    /// The same measure with the roles' CPU time attached.
    pub fn with_cpu(mut self, cpu: f64) -> Self {
        self.cpu = Some(cpu);
        self
    }
}

/// What a workload run produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Timed and checked.
    Done(Measure),
    /// The mechanism cannot run here; the reason is shown in the table.
    Skipped(String),
    /// The run went wrong (checksum, a role exiting non-zero, the watchdog): the row is marked.
    Failed(String),
}

impl Outcome {
    /// `Skipped("not built yet")`: the row of a crate whose API has not landed.
    pub fn not_built() -> Self {
        Outcome::Skipped("not built yet".into())
    }
    /// Elapsed seconds of a successful run (criterion's `iter_custom` uses this).
    pub fn elapsed(&self) -> Option<f64> {
        match self {
            Outcome::Done(m) => Some(m.elapsed),
            _ => None,
        }
    }
}

impl From<Result<Measure, String>> for Outcome {
    fn from(r: Result<Measure, String>) -> Self {
        match r {
            Ok(m) => Outcome::Done(m),
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// Message sizes of the size sweeps (`@s` rows).
pub const SWEEP_SIZES: [usize; 7] = [8, 64, 512, 4 << 10, 32 << 10, 256 << 10, 1 << 20];
/// The sizes `--quick` sweeps.
pub const QUICK_SWEEP_SIZES: [usize; 4] = [8, 512, 32 << 10, 1 << 20];

/// `n(s) = min(400,000, 256 MiB / s)` messages of a size sweep.
pub fn sweep_n(s: usize) -> u64 {
    (400_000u64).min((256u64 << 20) / s as u64)
}

/// Size label used in row ids (and by the Python script): `8B`, `512B`, `4KiB`, `1MiB`.
pub fn size_label(s: usize) -> String {
    if s >= 1 << 20 && s % (1 << 20) == 0 {
        format!("{}MiB", s >> 20)
    } else if s >= 1 << 10 && s % (1 << 10) == 0 {
        format!("{}KiB", s >> 10)
    } else {
        format!("{s}B")
    }
}
