//! The workload registry: every row of `WORKLOADS.md` (ours, references, Python), the groups
//! that run back to back, the targets of section 4 and the curves.

use std::sync::Arc;

use crate::{ours_async, ours_pipe, ours_pool, ours_queue, ours_sem, ours_shm, python};
use crate::{refs_pipe, refs_proc, refs_queue, refs_sem, refs_shm};
use crate::{size_label, sweep_n, Measure, Outcome, Run, QUICK_SWEEP_SIZES, SWEEP_SIZES};

/// How a unit's figure is derived from a measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    /// Nanoseconds per op (lower is better).
    Ns,
    /// Microseconds per op (lower is better).
    Us,
    /// Millions of ops per second.
    Mega,
    /// 10^9 bytes per second.
    Gb,
    /// 10^6 bytes per second.
    Mb,
    /// A ratio the workload computes itself.
    Speedup,
}

/// A row's unit: its label and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// As printed: `Mmsg/s`, `µs/RT`, ...
    pub label: &'static str,
    /// How the figure is computed.
    pub kind: UnitKind,
}

macro_rules! units {
    ($($name:ident = $label:literal, $kind:ident;)*) => {
        $( #[doc = concat!("`", $label, "`")] pub const $name: Unit = Unit { label: $label, kind: UnitKind::$kind }; )*
    };
}
units! {
    NS_PAIR = "ns/pair", Ns;
    US_RT = "µs/RT", Us;
    NS_RT = "ns/RT", Ns;
    US_CALL = "µs/call", Us;
    US_PROC = "µs/proc", Us;
    MMSG = "Mmsg/s", Mega;
    MINC = "Minc/s", Mega;
    MTASK = "Mtask/s", Mega;
    GBS = "GB/s", Gb;
    MBS = "MB/s", Mb;
    SPEEDUP = "speed-up", Speedup;
}

impl Unit {
    /// The factor from this unit to its base unit (s, 1/s, B/s), so that rows of one
    /// quantity in different units (Q6@1MiB in MB/s against L5a in GB/s) compare.
    pub fn to_base(&self) -> f64 {
        match self.kind {
            UnitKind::Ns => 1e-9,
            UnitKind::Us => 1e-6,
            UnitKind::Mega | UnitKind::Mb => 1e6,
            UnitKind::Gb => 1e9,
            UnitKind::Speedup => 1.0,
        }
    }
    /// Whether a larger figure is better.
    pub fn higher_better(&self) -> bool {
        !matches!(self.kind, UnitKind::Ns | UnitKind::Us)
    }
    /// The figure of a measure; `bytes` is the payload of one op (GB/s, MB/s).
    pub fn figure(&self, m: &Measure, bytes: u64) -> f64 {
        if let Some(v) = m.value {
            return v;
        }
        let n = m.n as f64;
        let t = m.elapsed.max(1e-12);
        match self.kind {
            UnitKind::Ns => t * 1e9 / n,
            UnitKind::Us => t * 1e6 / n,
            UnitKind::Mega => n / t / 1e6,
            UnitKind::Gb => n * bytes as f64 / t / 1e9,
            UnitKind::Mb => n * bytes as f64 / t / 1e6,
            UnitKind::Speedup => 0.0,
        }
    }
}

/// Whose row it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Our crates.
    Ours,
    /// A limit (L) or peer (P) reference.
    Ref,
    /// Python `multiprocessing`.
    Python,
}

/// A workload body.
pub type Body = Arc<dyn Fn(&Run) -> Outcome + Send + Sync>;

/// One row of the comparison.
#[derive(Clone)]
pub struct Row {
    /// Workload id (`Q1`, `P7b`, `C4d@4KiB`, `py-Q3`).
    pub id: String,
    /// Group (slot of the round robin) it runs in.
    pub group: String,
    /// Short description.
    pub what: String,
    /// Ours, reference or Python.
    pub kind: Kind,
    /// Unit of its figure.
    pub unit: Unit,
    /// Full op count (before `--quick` and `--scale`).
    pub n: u64,
    /// Payload bytes per op, for GB/s and MB/s.
    pub bytes: u64,
    /// One process: its targets pair every round regardless of placement.
    pub single: bool,
    /// Parked check (CPU time of the roles) applies.
    pub parked: bool,
    /// Whether `--pin` adds a pinned variant.
    pub pinnable: bool,
    /// The workload.
    pub body: Body,
}

impl Row {
    /// The op count of this row for a run: `n` scaled, `--quick` n/4 rounded down to even.
    pub fn n_for(&self, quick: bool, scale: f64) -> u64 {
        let n = ((self.n as f64) * scale).round().max(1.0) as u64;
        if quick {
            (n / 4 / 2 * 2).max(1)
        } else {
            n
        }
    }
    /// Runs the workload.
    pub fn run(&self, r: &Run) -> Outcome {
        (self.body)(r)
    }
}

/// Comparison direction of a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Ratio must be at least the threshold.
    Ge,
    /// Ratio must be at most the threshold.
    Le,
}

/// What a target compares against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefSel {
    /// Another row of the same run.
    Row(String),
    /// The row's own speed-up (K3: serial time of the same repeat).
    Own,
    /// The raw pipe of the same size as our `simplex()`: L4b (1 MiB), L4a (64 KiB) or L4p.
    SimplexSized,
}

/// One target of `WORKLOADS.md` section 4.
#[derive(Clone, Debug)]
pub struct Target {
    /// Our row.
    pub ours: String,
    /// The reference.
    pub reference: RefSel,
    /// Reference description.
    pub what: String,
    /// Direction.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
    /// Goal, when stricter than the threshold.
    pub goal: Option<f64>,
    /// Most extra threads our row may run (A3's consumer: `+ ≤ 1 thread`); the largest count
    /// of any repeat above it is `FAIL (threads)`.
    pub max_threads: Option<u64>,
}

impl Target {
    /// `≥ 0.8× (1.0×)`; `≥ 0.3×, + ≤ 1 thread` with a thread bound.
    pub fn label(&self) -> String {
        let op = if self.op == Op::Ge { "≥" } else { "≤" };
        let l = match self.goal {
            Some(g) => format!("{op} {}× ({}×)", fmt_x(self.threshold), fmt_x(g)),
            None => format!("{op} {}×", fmt_x(self.threshold)),
        };
        match self.max_threads {
            Some(1) => format!("{l}, + ≤ 1 thread"),
            Some(k) => format!("{l}, + ≤ {k} threads"),
            None => l,
        }
    }
    /// Whether a ratio meets the threshold.
    pub fn met(&self, ratio: f64) -> bool {
        match self.op {
            Op::Ge => ratio >= self.threshold,
            Op::Le => ratio <= self.threshold,
        }
    }
    /// How far past the threshold a ratio is (> 1 means met), for the chart.
    pub fn margin(&self, ratio: f64) -> f64 {
        match self.op {
            Op::Ge => ratio / self.threshold,
            Op::Le => self.threshold / ratio,
        }
    }
}

fn fmt_x(x: f64) -> String {
    if x.fract() == 0.0 && x < 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// A curve: a table and a chart, no verdict.
#[derive(Clone, Debug)]
pub struct Curve {
    /// Name (`C4`, `Q6`, `Q7`, `K5`).
    pub name: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis unit.
    pub unit: Unit,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Points: (series, x, row id).
    pub points: Vec<(String, f64, String)>,
}

/// Everything `compare` runs.
pub struct Registry {
    /// Rows in group order.
    pub rows: Vec<Row>,
    /// Targets.
    pub targets: Vec<Target>,
    /// Curves.
    pub curves: Vec<Curve>,
}

impl Registry {
    /// A row by id.
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }
}

struct B {
    rows: Vec<Row>,
    group: String,
}

impl B {
    fn group(&mut self, g: &str) {
        self.group = g.to_string();
    }
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        id: &str,
        kind: Kind,
        what: &str,
        unit: Unit,
        n: u64,
        bytes: u64,
        body: Body,
    ) -> &mut Row {
        self.rows.push(Row {
            id: id.to_string(),
            group: self.group.clone(),
            what: what.to_string(),
            kind,
            unit,
            n,
            bytes,
            single: false,
            parked: false,
            pinnable: true,
            body,
        });
        self.rows.last_mut().expect("just pushed")
    }
    fn ours(
        &mut self,
        id: &str,
        what: &str,
        unit: Unit,
        n: u64,
        bytes: u64,
        f: impl Fn(&Run) -> Outcome + Send + Sync + 'static,
    ) -> &mut Row {
        self.add(id, Kind::Ours, what, unit, n, bytes, Arc::new(f))
    }
    fn refr(
        &mut self,
        id: &str,
        what: &str,
        unit: Unit,
        n: u64,
        bytes: u64,
        f: impl Fn(&Run) -> Outcome + Send + Sync + 'static,
    ) -> &mut Row {
        self.add(id, Kind::Ref, what, unit, n, bytes, Arc::new(f))
    }
    fn py(&mut self, id: &str, what: &str, unit: Unit, n: u64, bytes: u64) -> &mut Row {
        let pid = id.to_string();
        let label = unit.label;
        let r = self.add(
            id,
            Kind::Python,
            what,
            unit,
            n,
            bytes,
            Arc::new(move |r: &Run| python::run(&pid, r.n, label)),
        );
        r.pinnable = false;
        r
    }
}

fn single(r: &mut Row) {
    r.single = true;
    r.pinnable = false;
}

const KIB: u64 = 1024;
const CHUNK: u64 = 64 * KIB;

/// Builds the registry; `quick` picks the short size sweep and K5's worker counts 1, 2, 4.
pub fn build(quick: bool) -> Registry {
    let mut b = B {
        rows: Vec::new(),
        group: String::new(),
    };
    let sizes: Vec<usize> = if quick {
        QUICK_SWEEP_SIZES.to_vec()
    } else {
        SWEEP_SIZES.to_vec()
    };

    // Queues.
    b.group("Q1");
    b.ours(
        "Q1",
        "PodQueue<u64> 1P→1C",
        MMSG,
        40_000_000,
        8,
        ours_queue::q1,
    );
    b.ours(
        "Q1t",
        "PodQueue<u64> try_put/try_get + Backoff 1P→1C",
        MMSG,
        40_000_000,
        8,
        ours_queue::q1t,
    );
    b.ours(
        "Q8",
        "PodQueue<u64> put_many(64)/get_many(≤64) 1P→1C",
        MMSG,
        40_000_000,
        8,
        ours_queue::q8,
    );
    b.refr("P7b", "Vyukov ring 1→1 procs", MMSG, 40_000_000, 8, |r| {
        refs_queue::p7_vyukov(r, 1, 1)
    });
    b.refr(
        "P7a",
        "SPSC ring 1→1 procs",
        MMSG,
        40_000_000,
        8,
        refs_queue::p7a,
    );
    b.refr(
        "P1a",
        "crossbeam ArrayQueue 1→1 threads",
        MMSG,
        20_000_000,
        8,
        |r| refs_queue::p1_array_queue(r, 1, 1),
    );
    b.refr(
        "P1c",
        "crossbeam-channel bounded 1→1 threads",
        MMSG,
        20_000_000,
        8,
        |r| refs_queue::p1_channel(r, 1, 1),
    );
    b.refr(
        "P3a",
        "ipc-channel u64 1→1",
        MMSG,
        300_000,
        8,
        refs_queue::p3a,
    );
    b.refr("P4a", "POSIX mq 8 B 1→1", MMSG, 500_000, 8, |r| {
        refs_pipe::p4(r, 8, 1, 1)
    });
    b.refr("P8", "ipmpsc u64 1→1", MMSG, 4_000_000, 8, refs_queue::p8);

    b.group("Q2");
    b.ours("Q2", "PodQueue<u64> 2P→2C", MMSG, 40_000_000, 8, |r| {
        ours_queue::q_mxn(r, 2, 2)
    });
    b.refr("P7c", "Vyukov ring 2→2 procs", MMSG, 40_000_000, 8, |r| {
        refs_queue::p7_vyukov(r, 2, 2)
    });
    b.refr(
        "P1b",
        "crossbeam ArrayQueue 2→2 threads",
        MMSG,
        20_000_000,
        8,
        |r| refs_queue::p1_array_queue(r, 2, 2),
    );
    b.refr(
        "P1d",
        "crossbeam-channel bounded 2→2 threads",
        MMSG,
        20_000_000,
        8,
        |r| refs_queue::p1_channel(r, 2, 2),
    );
    b.refr("P4c", "POSIX mq 8 B 2P→2C", MMSG, 600_000, 8, |r| {
        refs_pipe::p4(r, 8, 2, 2)
    });
    b.py("py-Q2", "Python Queue() 2P→2C", MMSG, 200_000, 8);

    b.group("Q3");
    b.ours(
        "Q3",
        "Queue<u64> (postcard) 1P→1C",
        MMSG,
        10_000_000,
        8,
        ours_queue::q3,
    );
    // A3 runs in its reference's group, back to back with Q3 (`--only Q3` selects both).
    b.ours(
        "A3",
        "Queue<u64> 1P→1C, 1,000 tasks awaiting get_async",
        MMSG,
        1_000_000,
        8,
        ours_async::a3,
    );
    b.py("py-Q3", "Python Queue() small int", MMSG, 200_000, 8);
    b.py("py-Q3s", "Python SimpleQueue() small int", MMSG, 200_000, 8);

    b.group("Q4");
    b.ours("Q4", "Queue<Vec<u8>> 1 KiB", MMSG, 2_000_000, 1024, |r| {
        ours_queue::q_bytes(r, 1024)
    });
    b.refr(
        "P3b",
        "ipc-channel Vec<u8> 1 KiB",
        MMSG,
        200_000,
        1024,
        |r| refs_queue::p3b(r, 1024),
    );
    b.refr(
        "P3c",
        "ipc-channel bytes_channel 1 KiB",
        MMSG,
        400_000,
        1024,
        |r| refs_queue::p3c(r, 1024),
    );
    b.refr("P4b", "POSIX mq 1 KiB 1→1", MMSG, 500_000, 1024, |r| {
        refs_pipe::p4(r, 1024, 1, 1)
    });
    b.refr("P4d", "POSIX mq 1 KiB 2P→2C", MMSG, 600_000, 1024, |r| {
        refs_pipe::p4(r, 1024, 2, 2)
    });
    b.py("py-Q4", "Python Queue() 1 KiB bytes", MMSG, 100_000, 1024);

    b.group("Q5");
    b.ours(
        "Q5",
        "two PodQueue<u64> ping-pong",
        US_RT,
        20_000,
        0,
        ours_queue::q5,
    )
    .parked = true;
    // A1 runs in its reference's group, back to back with Q5 (`--only Q5` selects both).
    b.ours(
        "A1",
        "two PodQueue<u64> ping-pong, put_async/get_async",
        US_RT,
        20_000,
        0,
        ours_async::a1,
    )
    .parked = true;
    b.refr("L2", "futex ping-pong", US_RT, 20_000, 0, refs_queue::l2);
    b.refr(
        "P5b",
        "pshared sem_t ping-pong",
        US_RT,
        15_000,
        0,
        refs_sem::p5b,
    )
    .parked = true;
    b.refr("L3b", "socketpair 8 B RT", US_RT, 15_000, 0, refs_pipe::l3b);
    b.refr(
        "P3d",
        "ipc-channel u64 RT",
        US_RT,
        12_000,
        0,
        refs_queue::p3d,
    );
    b.refr(
        "L1",
        "spin ping-pong (AtomicU64)",
        NS_RT,
        2_000_000,
        0,
        refs_queue::l1,
    );

    for s in &sizes {
        let s = *s;
        let sl = size_label(s);
        b.group(&format!("Q6@{sl}"));
        let n = sweep_n(s);
        b.ours(
            &format!("Q6@{sl}"),
            &format!("Queue<Vec<u8>> {sl}"),
            MBS,
            n,
            s as u64,
            move |r| ours_queue::q_bytes(r, s),
        );
        b.refr(
            &format!("P3b@{sl}"),
            &format!("ipc-channel Vec<u8> {sl}"),
            MBS,
            n,
            s as u64,
            move |r| refs_queue::p3b(r, s),
        );
        b.py(
            &format!("py-Q4@{sl}"),
            &format!("Python Queue() {sl} bytes"),
            MBS,
            n / 2,
            s as u64,
        );
    }

    for s in sizes.iter().copied().filter(|&s| s >= 32 << 10) {
        let sl = size_label(s);
        b.group(&format!("Q9@{sl}"));
        b.ours(
            &format!("Q9@{sl}"),
            &format!("Queue<Vec<u8>> {sl} over 4 KiB slots"),
            MBS,
            sweep_n(s),
            s as u64,
            move |r| ours_queue::q_span_bytes(r, s),
        );
    }

    for (m, c) in [(2usize, 1usize), (4, 1), (4, 4)] {
        let p = format!("{m}x{c}");
        b.group(&format!("Q7@{p}"));
        b.ours(
            &format!("Q7@{p}"),
            &format!("PodQueue<u64> {m}P→{c}C"),
            MMSG,
            40_000_000,
            8,
            move |r| ours_queue::q_mxn(r, m, c),
        );
        b.refr(
            &format!("P7b@{p}"),
            &format!("Vyukov ring {m}→{c} procs"),
            MMSG,
            40_000_000,
            8,
            move |r| refs_queue::p7_vyukov(r, m, c),
        );
        b.refr(
            &format!("P1a@{p}"),
            &format!("ArrayQueue {m}→{c} threads"),
            MMSG,
            20_000_000,
            8,
            move |r| refs_queue::p1_array_queue(r, m, c),
        );
    }

    // Semaphores and locks.
    b.group("S1");
    single(b.ours(
        "S1",
        "Semaphore acquire+release",
        NS_PAIR,
        60_000_000,
        0,
        ours_sem::s1,
    ));
    single(b.refr(
        "P5a",
        "pshared sem_t wait+post",
        NS_PAIR,
        60_000_000,
        0,
        refs_sem::p5a,
    ));
    single(b.refr(
        "P5c",
        "named sem_t wait+post",
        NS_PAIR,
        60_000_000,
        0,
        refs_sem::p5c,
    ));
    single(b.py("py-S1", "Python Semaphore(1)", NS_PAIR, 1_000_000, 0));

    b.group("S2");
    single(b.ours(
        "S2",
        "Lock lock+unlock",
        NS_PAIR,
        40_000_000,
        0,
        ours_sem::s2,
    ));
    single(b.refr(
        "P6b",
        "robust pshared pthread mutex",
        NS_PAIR,
        40_000_000,
        0,
        |r| refs_sem::p6_pairs(r, true),
    ));
    single(b.refr(
        "P6a",
        "pshared pthread mutex",
        NS_PAIR,
        60_000_000,
        0,
        |r| refs_sem::p6_pairs(r, false),
    ));
    single(b.refr(
        "P6pl",
        "parking_lot Mutex in-process",
        NS_PAIR,
        40_000_000,
        0,
        refs_sem::parking_lot_pairs,
    ));
    single(b.py("py-S2", "Python with Lock()", NS_PAIR, 1_000_000, 0));

    b.group("S3");
    b.ours(
        "S3",
        "Lock counter 2 procs",
        MINC,
        30_000_000,
        0,
        ours_sem::s3,
    );
    b.refr(
        "P6d",
        "robust mutex counter 2 procs",
        MINC,
        30_000_000,
        0,
        |r| refs_sem::p6_counter(r, true),
    );
    b.refr("P6c", "mutex counter 2 procs", MINC, 30_000_000, 0, |r| {
        refs_sem::p6_counter(r, false)
    });
    b.refr(
        "P6e",
        "bare AtomicU64 fetch_add 2 procs",
        MINC,
        80_000_000,
        0,
        refs_sem::p6e,
    );
    b.refr(
        "P10",
        "raw_sync Mutex in shared_memory",
        MINC,
        30_000_000,
        0,
        refs_sem::p10,
    );

    b.group("S4");
    b.ours(
        "S4",
        "two Semaphore(0) ping-pong",
        US_RT,
        15_000,
        0,
        ours_sem::s4,
    )
    .parked = true;
    b.refr(
        "P5d",
        "named sem_t ping-pong",
        US_RT,
        15_000,
        0,
        refs_sem::p5d,
    )
    .parked = true;
    b.py("py-S4", "Python Semaphore ping-pong", US_RT, 20_000, 0);

    // Shared memory.
    b.group("V1");
    b.ours(
        "V1",
        "Value<u64> update 2 procs",
        MINC,
        30_000_000,
        0,
        ours_shm::v1,
    );
    b.py("py-V1", "Python Value get_lock 2 procs", MINC, 400_000, 0);

    b.group("V2");
    b.ours(
        "V2",
        "AtomicValue<AtomicU64> fetch_add 2 procs",
        MINC,
        80_000_000,
        0,
        ours_shm::v2,
    );

    b.group("V3");
    let block = refs_shm::BLOCK as u64;
    b.ours(
        "V3",
        "Array<f64> 64 MiB hand-off",
        GBS,
        160,
        block,
        ours_shm::v3,
    );
    b.refr(
        "L5b",
        "raw shared 64 MiB hand-off",
        GBS,
        160,
        block,
        refs_shm::l5b,
    );
    single(b.refr("L5a", "memcpy 64 MiB", GBS, 192, block, refs_shm::l5a));
    b.py("py-V3", "Python Array('d') memoryview", GBS, 1, block);

    // Pipes.
    b.group("C1d");
    b.ours(
        "C1d",
        "duplex() 64 KiB send_bytes",
        GBS,
        16_384,
        CHUNK,
        |r| ours_pipe::c1(r, true),
    );
    b.refr(
        "L4c",
        "socketpair 64 KiB stream",
        GBS,
        16_384,
        CHUNK,
        refs_pipe::l4c,
    );
    b.refr("L4d", "1 MiB pipe + vmsplice", GBS, 16_384, CHUNK, |r| {
        refs_pipe::l4_pipe(r, Some(1 << 20), refs_pipe::Feed::Vmsplice)
    });
    b.py("py-C1d", "Python Pipe() 64 KiB", GBS, 20_000, CHUNK);

    b.group("C1s");
    b.ours(
        "C1s",
        "simplex() 64 KiB send_bytes",
        GBS,
        16_384,
        CHUNK,
        |r| ours_pipe::c1(r, false),
    );
    b.refr("L4b", "1 MiB pipe stream", GBS, 16_384, CHUNK, |r| {
        refs_pipe::l4_pipe(r, Some(1 << 20), refs_pipe::Feed::Write)
    });
    b.refr("L4a", "default pipe stream", GBS, 16_384, CHUNK, |r| {
        refs_pipe::l4_pipe(r, None, refs_pipe::Feed::Write)
    });
    b.refr(
        "L4p",
        "pipe at our simplex() size",
        GBS,
        16_384,
        CHUNK,
        |r| match ours_pipe::simplex_pipe_size() {
            Some(s) => refs_pipe::l4_pipe(r, Some(s), refs_pipe::Feed::Write),
            None => Outcome::Skipped("needs our simplex() pipe size: not built yet".into()),
        },
    );
    b.py(
        "py-C1s",
        "Python Pipe(duplex=False) 64 KiB",
        GBS,
        20_000,
        CHUNK,
    );

    b.group("C2");
    b.ours("C2", "duplex() 8 B RT", US_RT, 15_000, 0, |r| {
        ours_pipe::c2(r, true)
    });
    b.ours("C2s", "two simplex() 8 B RT", US_RT, 15_000, 0, |r| {
        ours_pipe::c2(r, false)
    });
    b.refr("L3a", "two pipes 8 B RT", US_RT, 15_000, 0, refs_pipe::l3a);
    b.py("py-C2", "Python Pipe() 8 B RT", US_RT, 10_000, 0);

    b.group("C3");
    b.ours("C3d", "duplex() 64 B", MMSG, 1_000_000, 64, |r| {
        ours_pipe::c_msgs(r, true, 64)
    });
    b.ours("C3s", "simplex() 64 B", MMSG, 1_000_000, 64, |r| {
        ours_pipe::c_msgs(r, false, 64)
    });
    // C5 shares C3's references, so it runs in C3's group (`--only C3` selects all).
    b.ours(
        "C5",
        "duplex() 64 B, send_bytes_many of 64",
        MMSG,
        1_000_000,
        64,
        ours_pipe::c5,
    );
    // A2 runs in its reference's group, back to back with C3d.
    b.ours(
        "A2",
        "duplex() 64 B, AsyncConnection send_bytes/recv_bytes_into",
        MMSG,
        1_000_000,
        64,
        ours_async::a2,
    );
    b.refr(
        "P3c@64",
        "ipc-channel bytes_channel 64 B",
        MMSG,
        400_000,
        64,
        |r| refs_queue::p3c(r, 64),
    );
    b.refr(
        "L4s@64",
        "socketpair write per 64 B message",
        MMSG,
        400_000,
        64,
        |r| refs_pipe::l4s(r, 64),
    );
    b.py("py-C3d", "Python Pipe() 64 B", MMSG, 200_000, 64);
    b.py(
        "py-C3s",
        "Python Pipe(duplex=False) 64 B",
        MMSG,
        200_000,
        64,
    );

    for s in &sizes {
        let s = *s;
        let sl = size_label(s);
        let n = sweep_n(s);
        b.group(&format!("C4@{sl}"));
        b.ours(
            &format!("C4d@{sl}"),
            &format!("duplex() {sl}"),
            MBS,
            n,
            s as u64,
            move |r| ours_pipe::c_msgs(r, true, s),
        );
        b.ours(
            &format!("C4s@{sl}"),
            &format!("simplex() {sl}"),
            MBS,
            n,
            s as u64,
            move |r| ours_pipe::c_msgs(r, false, s),
        );
        b.refr(
            &format!("L4s@{sl}"),
            &format!("socketpair write per {sl} message"),
            MBS,
            n,
            s as u64,
            move |r| refs_pipe::l4s(r, s),
        );
        b.refr(
            &format!("L4q@{sl}"),
            &format!("pipe at simplex size, {sl} messages"),
            MBS,
            n,
            s as u64,
            move |r| match ours_pipe::simplex_pipe_size() {
                Some(p) => refs_pipe::l4q(r, s, p),
                None => Outcome::Skipped("needs our simplex() pipe size: not built yet".into()),
            },
        );
        b.refr(
            &format!("P3c@{sl}"),
            &format!("ipc-channel bytes_channel {sl}"),
            MBS,
            n,
            s as u64,
            move |r| refs_queue::p3c(r, s),
        );
        b.py(
            &format!("py-C4@{sl}"),
            &format!("Python Pipe() {sl}"),
            MBS,
            n / 2,
            s as u64,
        );
    }

    // Processes and pools.
    b.group("K1");
    b.ours(
        "K1",
        "Pool(2).apply(sq) sequential",
        US_CALL,
        5_000,
        0,
        ours_pool::k1,
    );
    // A4 runs in its reference's group, back to back with K1.
    b.ours(
        "A4",
        "Pool(2).apply_async(sq).await sequential",
        US_CALL,
        5_000,
        0,
        ours_async::a4,
    );
    b.py("py-K1", "Python Pool(2).apply", US_CALL, 2_000, 0);

    b.group("K2");
    b.ours("K2a", "Pool(2).map(sq, 0..n)", MTASK, 200_000, 0, |r| {
        ours_pool::k2(r, None)
    });
    b.ours(
        "K2b",
        "Pool(2).map_chunked(sq, 0..n, 1)",
        MTASK,
        20_000,
        0,
        |r| ours_pool::k2(r, Some(1)),
    );
    b.py(
        "py-K2a",
        "Python Pool(2).map default chunks",
        MTASK,
        200_000,
        0,
    );
    b.py("py-K2b", "Python Pool(2).map chunksize=1", MTASK, 20_000, 0);

    b.group("K3");
    b.ours("K3", "Pool(2).map(burn) speed-up", SPEEDUP, 200, 0, |r| {
        ours_pool::k_burn(r, 2)
    });
    b.refr(
        "L7",
        "2 forked procs × burn, no IPC",
        SPEEDUP,
        200,
        0,
        refs_proc::l7,
    );
    b.py(
        "py-K3",
        "Python Pool(2).map(burn) speed-up",
        SPEEDUP,
        200,
        0,
    );

    b.group("K4");
    single(b.ours(
        "K4",
        "Process::spawn + join",
        US_PROC,
        2_500,
        0,
        ours_pool::k4,
    ));
    single(b.refr("P9a", "fork + waitpid", US_PROC, 2_500, 0, refs_proc::p9a));
    single(b.refr(
        "P9b",
        "posix_spawn /bin/true + waitpid",
        US_PROC,
        1_000,
        0,
        refs_proc::p9b,
    ));
    single(b.py("py-K4", "Python Process start+join", US_PROC, 200, 0));

    let workers: Vec<usize> = if quick {
        vec![1, 2, 4]
    } else {
        vec![1, 2, 3, 4]
    };
    b.group("K5");
    for w in &workers {
        let w = *w;
        b.ours(
            &format!("K5@{w}"),
            &format!("Pool({w}).map(burn) speed-up"),
            SPEEDUP,
            200,
            0,
            move |r| ours_pool::k_burn(r, w),
        );
    }

    let t = |ours: &str, r: &str, what: &str, op: Op, th: f64, goal: Option<f64>| Target {
        ours: ours.into(),
        reference: RefSel::Row(r.into()),
        what: what.into(),
        op,
        threshold: th,
        goal,
        max_threads: None,
    };
    use Op::{Ge, Le};
    let mut targets = vec![
        t("Q1", "P7b", "Vyukov ring 1→1", Ge, 0.8, Some(1.0)),
        t("Q1", "P1a", "ArrayQueue 1→1 threads", Ge, 1.0, None),
        t("Q1", "P3a", "ipc-channel u64", Ge, 100.0, None),
        t("Q1", "P4a", "POSIX mq 8 B", Ge, 50.0, None),
        t("Q2", "P7c", "Vyukov ring 2→2", Ge, 0.8, Some(1.0)),
        t("Q8", "P7b", "Vyukov ring 1→1, per message", Ge, 2.0, None),
        t("Q3", "P3a", "ipc-channel u64", Ge, 10.0, None),
        t(
            "Q3",
            "py-Q3",
            "Python Queue small int",
            Ge,
            50.0,
            Some(100.0),
        ),
        t("Q4", "P3b", "ipc-channel Vec<u8> 1 KiB", Ge, 10.0, None),
        t("Q5", "L2", "futex ping-pong", Le, 1.1, Some(1.0)),
        t("S1", "P5a", "glibc sem_t pshared", Le, 1.2, Some(1.0)),
        t("S2", "P6b", "robust pshared mutex", Le, 1.2, Some(1.0)),
        t("S3", "P6d", "robust mutex counter", Ge, 1.0, None),
        t("S3", "P6c", "non-robust mutex counter", Ge, 0.8, Some(1.0)),
        t("S4", "P5b", "sem_t ping-pong", Le, 1.0, None),
        t("V1", "P6c", "mutex counter", Ge, 0.8, Some(1.0)),
        t("V2", "P6e", "bare AtomicU64", Ge, 0.95, Some(1.0)),
        t("V3", "L5b", "raw shared mapping", Ge, 0.9, Some(1.0)),
        t("C1d", "L4c", "raw socketpair", Ge, 0.9, Some(1.0)),
    ];
    targets.push(Target {
        ours: "C1s".into(),
        reference: RefSel::SimplexSized,
        what: "raw pipe, same pipe size".into(),
        op: Ge,
        threshold: 0.9,
        goal: Some(1.0),
        max_threads: None,
    });
    targets.extend([
        t("C2", "L3b", "raw socketpair RT", Le, 1.1, Some(1.0)),
        t(
            "C3d",
            "L4s@64",
            "socketpair, one write per 64 B message",
            Ge,
            0.95,
            Some(1.0),
        ),
        t(
            "C4s@8B",
            "L4q@8B",
            "pipe, one write per 8 B message",
            Ge,
            0.9,
            Some(1.0),
        ),
        t(
            "C4s@512B",
            "L4q@512B",
            "pipe, one write per 512 B message",
            Ge,
            0.9,
            Some(1.0),
        ),
        t("C3d", "py-C3d", "Python Pipe() 64 B", Ge, 3.0, None),
        t(
            "C5",
            "P3c@64",
            "ipc-channel bytes_channel 64 B",
            Ge,
            5.0,
            Some(10.0),
        ),
        t(
            "C3s",
            "py-C3s",
            "Python Pipe(duplex=False) 64 B",
            Ge,
            3.0,
            None,
        ),
        t("K1", "L3b", "raw socketpair RT", Le, 2.0, Some(1.2)),
        t("K1", "py-K1", "Python Pool.apply", Le, 0.33, None),
        t("K2a", "py-K2a", "Python Pool.map", Ge, 5.0, None),
        t(
            "K2b",
            "py-K2b",
            "Python Pool.map chunksize=1",
            Ge,
            10.0,
            None,
        ),
    ]);
    targets.push(Target {
        ours: "K3".into(),
        reference: RefSel::Own,
        what: "own serial time, same repeat".into(),
        op: Ge,
        threshold: 1.9,
        goal: None,
        max_threads: None,
    });
    targets.push(t("K4", "P9a", "fork + waitpid", Le, 1.5, None));
    targets.extend([
        t("Q7@2x1", "P7b@2x1", "Vyukov ring 2→1", Ge, 0.6, Some(0.8)),
        t("Q7@4x1", "P7b@4x1", "Vyukov ring 4→1", Ge, 0.5, Some(0.8)),
    ]);
    // Q6@1MiB exists in both sweeps (full and --quick).
    targets.push(t("Q6@1MiB", "L5a", "memcpy (two copies)", Ge, 0.5, None));
    targets.push(t("Q9@1MiB", "L5a", "memcpy (two copies)", Ge, 0.4, None));
    // Async rows: each against our blocking row of the same run.
    targets.extend([
        t(
            "A1",
            "Q5",
            "blocking PodQueue ping-pong",
            Le,
            1.5,
            Some(1.2),
        ),
        t("A2", "C3d", "blocking duplex() 64 B", Ge, 0.8, Some(0.95)),
        Target {
            max_threads: Some(1),
            ..t("A3", "Q3", "blocking Queue<u64> 1P→1C", Ge, 0.3, None)
        },
        t("A4", "K1", "blocking Pool.apply", Le, 1.3, None),
    ]);

    let mut curves = Vec::new();
    let mut c4 = Curve {
        name: "C4".into(),
        x_label: "message size (B)".into(),
        unit: MBS,
        log_x: true,
        points: vec![],
    };
    let mut q6 = Curve {
        name: "Q6".into(),
        x_label: "message size (B)".into(),
        unit: MBS,
        log_x: true,
        points: vec![],
    };
    for s in &sizes {
        let sl = size_label(*s);
        let x = *s as f64;
        for (series, id) in [
            ("C3d (duplex)", format!("C4d@{sl}")),
            ("C3s (simplex)", format!("C4s@{sl}")),
            ("L4s socketpair", format!("L4s@{sl}")),
            ("L4q pipe", format!("L4q@{sl}")),
            ("P3c ipc-channel", format!("P3c@{sl}")),
            ("Python Pipe()", format!("py-C4@{sl}")),
        ] {
            c4.points.push((series.into(), x, id));
        }
        for (series, id) in [
            ("Q6 Queue", format!("Q6@{sl}")),
            ("P3b ipc-channel", format!("P3b@{sl}")),
            ("Python Queue()", format!("py-Q4@{sl}")),
        ] {
            q6.points.push((series.into(), x, id));
        }
        // Q9 runs only where messages are larger than its 4 KiB slots.
        if *s >= 32 << 10 {
            q6.points
                .push(("Q9 Queue, 4 KiB slots".into(), x, format!("Q9@{sl}")));
        }
    }
    curves.push(c4);
    curves.push(q6);
    let mut q7 = Curve {
        name: "Q7".into(),
        x_label: "producers → consumers".into(),
        unit: MMSG,
        log_x: false,
        points: vec![],
    };
    for (x, p, ours, vy, aq) in [
        (
            1.0,
            "1x1",
            "Q1".to_string(),
            "P7b".to_string(),
            "P1a".to_string(),
        ),
        (
            2.0,
            "2x1",
            "Q7@2x1".into(),
            "P7b@2x1".into(),
            "P1a@2x1".into(),
        ),
        (
            4.0,
            "4x1",
            "Q7@4x1".into(),
            "P7b@4x1".into(),
            "P1a@4x1".into(),
        ),
    ] {
        let _ = p;
        q7.points.push(("ours → 1".into(), x, ours));
        q7.points.push(("P7b → 1".into(), x, vy));
        q7.points.push(("P1a → 1".into(), x, aq));
    }
    for (x, ours, vy, aq) in [
        (2.0, "Q2", "P7c", "P1b"),
        (4.0, "Q7@4x4", "P7b@4x4", "P1a@4x4"),
    ] {
        q7.points.push(("ours M→M".into(), x, ours.into()));
        q7.points.push(("P7b M→M".into(), x, vy.into()));
        q7.points.push(("P1a M→M".into(), x, aq.into()));
    }
    curves.push(q7);
    let mut k5 = Curve {
        name: "K5".into(),
        x_label: "workers".into(),
        unit: SPEEDUP,
        log_x: false,
        points: vec![],
    };
    for w in &workers {
        k5.points
            .push(("Pool(w)".into(), *w as f64, format!("K5@{w}")));
        k5.points
            .push(("L7 (2 procs)".into(), *w as f64, "L7".into()));
    }
    curves.push(k5);

    Registry {
        rows: b.rows,
        targets,
        curves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_consistent() {
        for quick in [false, true] {
            let reg = build(quick);
            let mut ids: Vec<&str> = reg.rows.iter().map(|r| r.id.as_str()).collect();
            ids.sort_unstable();
            let before = ids.len();
            ids.dedup();
            assert_eq!(before, ids.len(), "duplicate row ids");
            for t in &reg.targets {
                assert!(reg.row(&t.ours).is_some(), "{}", t.ours);
                if let RefSel::Row(r) = &t.reference {
                    assert!(reg.row(r).is_some(), "{r}");
                }
            }
            for c in &reg.curves {
                for (_, _, id) in &c.points {
                    assert!(reg.row(id).is_some(), "{id}");
                }
            }
        }
    }

    #[test]
    fn async_rows_run_in_their_reference_group() {
        let reg = build(true);
        for (a, reference) in [("A1", "Q5"), ("A2", "C3d"), ("A3", "Q3"), ("A4", "K1")] {
            let (row, r) = (reg.row(a).unwrap(), reg.row(reference).unwrap());
            assert_eq!(row.group, r.group, "{a}");
            assert!(reg
                .targets
                .iter()
                .any(|t| t.ours == a && t.reference == RefSel::Row(reference.into())));
        }
        assert!(reg.row("A1").unwrap().parked);
    }

    #[test]
    fn quick_n() {
        let reg = build(true);
        let r = reg.row("P9a").unwrap();
        assert_eq!(r.n_for(true, 1.0), 624);
        assert_eq!(reg.row("py-V3").unwrap().n_for(true, 1.0), 1);
        assert_eq!(
            Target {
                ours: "x".into(),
                reference: RefSel::Own,
                what: String::new(),
                op: Op::Ge,
                threshold: 0.8,
                goal: Some(1.0),
                max_threads: None,
            }
            .label(),
            "≥ 0.8× (1.0×)"
        );
    }
}
