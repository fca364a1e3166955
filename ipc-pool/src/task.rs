//! The task core: how a `fn(A) -> R` crosses into a worker, and the wire format of jobs and
//! results.
//!
//! A task is a plain function pointer. Workers are forked (never exec'd) from the parent's
//! image, so the pointer's address means the same function there. The parent sends two
//! addresses per job: the function's and that of a *trampoline*, `run::<F>`, monomorphised
//! for the function's type, which decodes the arguments with postcard, calls the function
//! under `catch_unwind` and encodes the results. Only the parent writes a worker's socket (a
//! private `socketpair`), so the addresses a worker calls always come from the same image.
//!
//! Wire format (all integers little-endian), many records per frame:
//! - job (parent to worker): `id u64, trampoline u64, func u64, count u32, len u64`, then
//!   `len` bytes: `count` postcard-encoded arguments back to back. An empty frame means stop.
//! - result (worker to parent): `id u64, status u8, count u32, nanos u64, len u64`, then `len`
//!   bytes: `count` postcard-encoded results (status 0) or a UTF-8 message (panic, decode or
//!   encode failure). `nanos` is the time the worker spent on the job (adaptive chunking).
//!
//! The parent treats result frames as untrusted: every length is checked against the frame
//! and every id against the worker's in-flight table.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sync::Mutex;
use crate::sys;
use crate::Error;

/// Size of a job record's header.
pub(crate) const JOB_HDR: usize = 36;
/// Size of a result record's header.
pub(crate) const RES_HDR: usize = 29;

pub(crate) const ST_OK: u8 = 0;
pub(crate) const ST_PANICKED: u8 = 1;
pub(crate) const ST_DECODE: u8 = 2;
pub(crate) const ST_ENCODE: u8 = 3;

/// The signature of every trampoline: `(func, count, input, out) -> status`; on failure `out`
/// holds the message.
pub(crate) type Trampoline = fn(u64, u32, &[u8], &mut Vec<u8>) -> u8;

mod sealed {
    pub trait Sealed {}
    impl<A, R> Sealed for fn(A) -> R {}

    /// How a function of a [`StarArgs`](super::StarArgs) tuple's arity is called and sent:
    /// implemented only for `fn(A1, ..., An) -> R`, which is what makes the address round
    /// trip in [`from_addr`](SpreadFn::from_addr) sound. Not nameable outside the crate.
    pub trait SpreadFn<T, R>: Copy + 'static {
        /// Calls the function with the tuple's fields as its arguments.
        fn spread(self, args: T) -> R;
        /// The function's address.
        fn addr(self) -> u64;
        /// # Safety
        /// `addr` must come from [`SpreadFn::addr`] of the same type in a process with the
        /// same executable image (this process or a fork of it).
        unsafe fn from_addr(addr: u64) -> Self;
    }
}

/// A tuple of arguments [`Pool::starmap`](crate::Pool::starmap) spreads over a function of as
/// many parameters: `(A1, ..., An)` for `n` = 1 to 8, each `Ai: Serialize + DeserializeOwned`.
///
/// Sealed: implemented for those tuples only. [`Fn<R>`](StarArgs::Fn) is the matching
/// function pointer type `fn(A1, ..., An) -> R`.
pub trait StarArgs: Serialize + DeserializeOwned + Sized + 'static {
    /// `fn(A1, ..., An) -> R` for the tuple `(A1, ..., An)`.
    type Fn<R: Serialize + DeserializeOwned + 'static>: sealed::SpreadFn<Self, R>;
}

macro_rules! star_args {
    ($($a:ident),+) => {
        impl<$($a),+> StarArgs for ($($a,)+)
        where
            $($a: Serialize + DeserializeOwned + 'static),+
        {
            type Fn<R: Serialize + DeserializeOwned + 'static> = fn($($a),+) -> R;
        }

        impl<$($a,)+ R> sealed::SpreadFn<($($a,)+), R> for fn($($a),+) -> R
        where
            $($a: 'static,)+
            R: 'static,
        {
            #[allow(non_snake_case)]
            fn spread(self, ($($a,)+): ($($a,)+)) -> R {
                self($($a),+)
            }
            fn addr(self) -> u64 {
                self as usize as u64
            }
            unsafe fn from_addr(addr: u64) -> Self {
                let a = addr as usize;
                // SAFETY: by the contract, `a` is the address of a function of this very
                // pointer type in this image; function pointers and `usize` have the same
                // size on every supported target.
                unsafe { std::mem::transmute::<usize, fn($($a),+) -> R>(a) }
            }
        }
    };
}

star_args!(A1);
star_args!(A1, A2);
star_args!(A1, A2, A3);
star_args!(A1, A2, A3, A4);
star_args!(A1, A2, A3, A4, A5);
star_args!(A1, A2, A3, A4, A5, A6);
star_args!(A1, A2, A3, A4, A5, A6, A7);
star_args!(A1, A2, A3, A4, A5, A6, A7, A8);

/// A task function of `starmap`: `T::Fn<R>` called with a tuple's fields (its own type, so
/// its trampoline differs from that of `map` over a one-field tuple's function).
pub(crate) struct Spread<T: StarArgs, R: Serialize + DeserializeOwned + 'static>(pub T::Fn<R>);

impl<T: StarArgs, R: Serialize + DeserializeOwned + 'static> Clone for Spread<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: StarArgs, R: Serialize + DeserializeOwned + 'static> Copy for Spread<T, R> {}

impl<T: StarArgs, R: Serialize + DeserializeOwned + 'static> sealed::Sealed for Spread<T, R> {}

/// A function pointer type a worker can call: `fn(A) -> R` (map, apply) and [`Spread`]
/// (starmap). Implemented only for function pointer types (and `Spread` over them), which is
/// what makes the address round trip in [`Callable::from_addr`] sound.
pub(crate) trait Callable: Copy + sealed::Sealed + 'static {
    type In: Serialize + DeserializeOwned;
    type Out: Serialize + DeserializeOwned;
    fn call(self, x: Self::In) -> Self::Out;
    fn addr(self) -> u64;
    /// # Safety
    /// `addr` must come from [`Callable::addr`] of the same type in a process with the same
    /// executable image (this process or a fork of it).
    unsafe fn from_addr(addr: u64) -> Self;
}

impl<A, R> Callable for fn(A) -> R
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    type In = A;
    type Out = R;
    fn call(self, x: A) -> R {
        self(x)
    }
    fn addr(self) -> u64 {
        self as usize as u64
    }
    unsafe fn from_addr(addr: u64) -> Self {
        let a = addr as usize;
        // SAFETY: by the contract, `a` is the address of a `fn(A) -> R` of this image;
        // function pointers and `usize` have the same size on every supported target.
        unsafe { std::mem::transmute::<usize, fn(A) -> R>(a) }
    }
}

impl<T, R> Callable for Spread<T, R>
where
    T: StarArgs,
    R: Serialize + DeserializeOwned + 'static,
{
    type In = T;
    type Out = R;
    fn call(self, x: T) -> R {
        sealed::SpreadFn::spread(self.0, x)
    }
    fn addr(self) -> u64 {
        sealed::SpreadFn::addr(self.0)
    }
    unsafe fn from_addr(addr: u64) -> Self {
        // SAFETY: the contract is `SpreadFn::from_addr`'s: `addr` came from `Spread::addr`,
        // which is `SpreadFn::addr` of the same `T::Fn<R>`.
        Spread(unsafe { <T::Fn<R> as sealed::SpreadFn<T, R>>::from_addr(addr) })
    }
}

/// The address of `F`'s trampoline, to send with a job.
pub(crate) fn trampoline_addr<F: Callable>() -> u64 {
    let t: Trampoline = run::<F>;
    t as usize as u64
}

/// Calls the trampoline at `tramp` (worker side).
///
/// # Safety
/// `tramp` must come from [`trampoline_addr`] in a process with this executable image, and
/// `func` from the matching `Callable::addr`.
pub(crate) unsafe fn call_trampoline(
    tramp: u64,
    func: u64,
    count: u32,
    input: &[u8],
    out: &mut Vec<u8>,
) -> u8 {
    // SAFETY: by the contract `tramp` is the address of a `Trampoline` of this image.
    let t = unsafe { std::mem::transmute::<usize, Trampoline>(tramp as usize) };
    t(func, count, input, out)
}

/// The address of an initializer, to pass to a fork server.
pub(crate) fn init_addr(f: fn()) -> u64 {
    f as usize as u64
}

/// The initializer at `addr`.
///
/// # Safety
/// `addr` must come from [`init_addr`] in a process with this executable image.
pub(crate) unsafe fn init_from_addr(addr: u64) -> fn() {
    // SAFETY: by the contract `addr` is a `fn()` of this image.
    unsafe { std::mem::transmute::<usize, fn()>(addr as usize) }
}

/// The signature of an initializer's trampoline: `(func, encoded args) -> Err(message)` if
/// the arguments do not decode. The initializer's own panic unwinds out of it.
pub(crate) type InitTrampoline = fn(u64, &[u8]) -> Result<(), String>;

/// The addresses of an initializer with arguments and of its trampoline.
pub(crate) fn init_with_addrs<A>(f: fn(A)) -> (u64, u64)
where
    A: Serialize + DeserializeOwned + 'static,
{
    let t: InitTrampoline = run_init::<A>;
    (f as usize as u64, t as usize as u64)
}

/// Worker side of an initializer with arguments: decode them, call it.
fn run_init<A: DeserializeOwned + 'static>(func: u64, args: &[u8]) -> Result<(), String> {
    // SAFETY: the parent made `func` with `init_with_addrs::<A>`, which also made the address
    // of this very trampoline (whose type fixes `A`); the worker is a fork of the parent.
    let f = unsafe { std::mem::transmute::<usize, fn(A)>(func as usize) };
    let a: A = postcard::from_bytes(args).map_err(|e| format!("initializer arguments: {e}"))?;
    f(a);
    Ok(())
}

/// Calls the initializer trampoline at `tramp` (worker side).
///
/// # Safety
/// `tramp` and `func` must come from one [`init_with_addrs`] call in a process with this
/// executable image.
pub(crate) unsafe fn call_init_trampoline(
    tramp: u64,
    func: u64,
    args: &[u8],
) -> Result<(), String> {
    // SAFETY: by the contract `tramp` is the address of an `InitTrampoline` of this image.
    let t = unsafe { std::mem::transmute::<usize, InitTrampoline>(tramp as usize) };
    t(func, args)
}

/// The code a pool's workers have: the modules mapped when its fork server was forked, and
/// the addresses already found in them.
///
/// A task's function pointer names the same code in a worker only if the module holding it
/// was mapped when the fork server was forked (the workers are forks of that image). Before a
/// job is sent, its trampoline and function addresses are looked up with `dladdr` and must
/// lie in an executable segment of a module recorded then (same base); otherwise the task
/// fails with [`Error::CodeNotInWorkers`]. Checked addresses are remembered, so a `map` or
/// repeated `apply` pays a hash lookup.
pub(crate) struct CodeMap {
    modules: Vec<sys::Module>,
    ok: Mutex<HashSet<u64>>,
}

impl CodeMap {
    /// The modules mapped now: call it just before forking the fork server.
    pub(crate) fn snapshot() -> CodeMap {
        CodeMap {
            modules: sys::loaded_modules(),
            ok: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the code at `addr` is in the fork server's image.
    ///
    /// # Errors
    /// [`Error::CodeNotInWorkers`] if it is not.
    pub(crate) fn check(&self, addr: u64) -> Result<(), Error> {
        if self.ok.lock().contains(&addr) {
            return Ok(());
        }
        let fail = |module: String| Error::CodeNotInWorkers { addr, module };
        let a = usize::try_from(addr).map_err(|_| fail(String::new()))?;
        let (base, name) = sys::module_of(a).ok_or_else(|| fail(String::new()))?;
        let known = self.modules.iter().any(|m| {
            (m.map_start == base || m.bias == base) && m.exec.iter().any(|&(s, e)| s <= a && a < e)
        });
        if !known {
            return Err(fail(name));
        }
        self.ok.lock().insert(addr);
        Ok(())
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Worker side of one job: decode `count` arguments from `input`, call `F` on each, encode
/// each result onto `out`. On failure `out` is replaced by the message.
fn run<F: Callable>(func: u64, count: u32, input: &[u8], out: &mut Vec<u8>) -> u8 {
    // SAFETY: the parent built this job with `F::addr` and `trampoline_addr::<F>` (the
    // trampoline's own type fixes `F`), and the worker is a fork of the parent.
    let f = unsafe { F::from_addr(func) };
    let start = out.len();
    let mut de = postcard::Deserializer::from_bytes(input);
    // One unwind guard for the whole job (a panic fails the job, whichever item it was).
    let done = catch_unwind(AssertUnwindSafe(|| -> Result<(), (u8, String)> {
        for _ in 0..count {
            let a =
                F::In::deserialize(&mut de).map_err(|e| (ST_DECODE, format!("argument: {e}")))?;
            let r = f.call(a);
            encode_onto(&r, out).map_err(|e| (ST_ENCODE, format!("result: {e}")))?;
        }
        Ok(())
    }));
    match done {
        Ok(Ok(())) => {}
        Ok(Err((status, msg))) => return fail(out, start, status, &msg),
        Err(p) => return fail(out, start, ST_PANICKED, &panic_message(&*p)),
    }
    if !matches!(de.finalize(), Ok([])) {
        return fail(out, start, ST_DECODE, "trailing bytes after the arguments");
    }
    ST_OK
}

fn fail(out: &mut Vec<u8>, start: usize, status: u8, msg: &str) -> u8 {
    out.truncate(start);
    out.extend_from_slice(msg.as_bytes());
    status
}

// ------------------------------------------------------------- encoding

/// A postcard output that appends to a `Vec<u8>`. postcard's own `to_extend` goes through
/// `Extend<u8>` with a slice iterator, which becomes a `memcpy` call for every varint (1 to 10
/// bytes): a quarter of the CPU time of a trivial `map`. Short pieces are pushed byte by
/// byte instead; the encoding is postcard's, unchanged.
struct VecOut<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `v` to `out` (on failure `out` may hold part of it).
pub(crate) fn encode_onto<T: Serialize + ?Sized>(
    v: &T,
    out: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    postcard::serialize_with_flavor(v, VecOut(out))
}

/// Appends a job header to `out`.
pub(crate) fn put_job_header(
    out: &mut Vec<u8>,
    id: u64,
    tramp: u64,
    func: u64,
    count: u32,
    len: u64,
) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&tramp.to_le_bytes());
    out.extend_from_slice(&func.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

/// One parsed job record.
pub(crate) struct JobRec<'a> {
    pub id: u64,
    pub tramp: u64,
    pub func: u64,
    pub count: u32,
    pub payload: &'a [u8],
}

/// One parsed result record.
pub(crate) struct ResRec<'a> {
    pub id: u64,
    pub status: u8,
    pub count: u32,
    pub nanos: u64,
    pub payload: &'a [u8],
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Splits the next job record off `buf`; `Err` on a malformed record.
pub(crate) fn next_job<'a>(buf: &mut &'a [u8]) -> Result<JobRec<'a>, ()> {
    let b = *buf;
    if b.len() < JOB_HDR {
        return Err(());
    }
    let len = usize::try_from(u64_at(b, 28)).map_err(|_| ())?;
    let end = JOB_HDR.checked_add(len).ok_or(())?;
    if end > b.len() {
        return Err(());
    }
    *buf = &b[end..];
    Ok(JobRec {
        id: u64_at(b, 0),
        tramp: u64_at(b, 8),
        func: u64_at(b, 16),
        count: u32_at(b, 24),
        payload: &b[JOB_HDR..end],
    })
}

/// Appends a result record (header, then the payload already in `payload`).
pub(crate) fn put_result(
    out: &mut Vec<u8>,
    id: u64,
    status: u8,
    count: u32,
    nanos: u64,
    payload: &[u8],
) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(status);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits the next result record off `buf`; `Err` on a malformed (untrusted) record.
pub(crate) fn next_result<'a>(buf: &mut &'a [u8]) -> Result<ResRec<'a>, ()> {
    let b = *buf;
    if b.len() < RES_HDR {
        return Err(());
    }
    let len = usize::try_from(u64_at(b, 21)).map_err(|_| ())?;
    let end = RES_HDR.checked_add(len).ok_or(())?;
    if end > b.len() {
        return Err(());
    }
    *buf = &b[end..];
    Ok(ResRec {
        id: u64_at(b, 0),
        status: b[8],
        count: u32_at(b, 9),
        nanos: u64_at(b, 13),
        payload: &b[RES_HDR..end],
    })
}

/// Decodes exactly `count` values of `R` from `bytes` into `out`.
pub(crate) fn decode_results<R: DeserializeOwned>(
    bytes: &[u8],
    count: u32,
    out: &mut Vec<R>,
) -> Result<(), String> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    out.reserve(count as usize);
    for _ in 0..count {
        out.push(R::deserialize(&mut de).map_err(|e| e.to_string())?);
    }
    match de.finalize() {
        Ok([]) => Ok(()),
        _ => Err("trailing bytes after the results".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sq(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn trampoline_round_trip_in_process() {
        let f: fn(u64) -> u64 = sq;
        let mut input = Vec::new();
        for x in [3u64, 4] {
            input = postcard::to_extend(&x, input).unwrap();
        }
        let mut out = Vec::new();
        // SAFETY: the contract of `call_trampoline`: `trampoline_addr` and `Callable::addr`
        // of the same `fn(u64) -> u64` type, taken in this process (same executable image).
        let st = unsafe {
            call_trampoline(
                trampoline_addr::<fn(u64) -> u64>(),
                f.addr(),
                2,
                &input,
                &mut out,
            )
        };
        assert_eq!(st, ST_OK);
        let mut v: Vec<u64> = Vec::new();
        decode_results(&out, 2, &mut v).unwrap();
        assert_eq!(v, [9, 16]);
    }

    fn boom(x: u64) -> u64 {
        assert!(x != 2, "two is not allowed");
        x
    }

    #[test]
    fn a_panic_or_bad_bytes_fail_the_whole_job() {
        let mut input = Vec::new();
        for x in [1u64, 2, 3] {
            encode_onto(&x, &mut input).unwrap();
        }
        let f: fn(u64) -> u64 = boom;
        let tramp = trampoline_addr::<fn(u64) -> u64>();
        let mut out = b"kept".to_vec();
        // SAFETY: the contract of `call_trampoline`: `tramp` and `f.addr()` belong to the same
        // `fn(u64) -> u64` type and were taken in this process (same executable image).
        let st = unsafe { call_trampoline(tramp, f.addr(), 3, &input, &mut out) };
        assert_eq!(st, ST_PANICKED);
        // What was in `out` before the job stays; the results of items 1 and 3 do not.
        assert_eq!(out, b"kepttwo is not allowed");
        // One argument too many for the count: trailing bytes.
        let mut out = Vec::new();
        // SAFETY: as above: the same `tramp` and `f`, from this process.
        let st = unsafe { call_trampoline(tramp, f.addr(), 1, &input, &mut out) };
        assert_eq!(st, ST_DECODE);
        let mut v: Vec<u64> = Vec::new();
        assert!(decode_results(&input, 2, &mut v).is_err());
        assert!(decode_results(&input[..1], 2, &mut v).is_err());
        v.clear();
        decode_results(&input, 3, &mut v).unwrap();
        assert_eq!(v, [1, 2, 3]);
    }

    #[allow(clippy::too_many_arguments)]
    fn eight(a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: String) -> String {
        format!("{a}{b}{c}{d}{e}{f}{g}{h}")
    }

    #[test]
    fn spread_trampoline_round_trip_in_process() {
        type T = (u8, u16, u32, u64, i8, i16, i32, String);
        let f: fn(u8, u16, u32, u64, i8, i16, i32, String) -> String = eight;
        let s = Spread::<T, String>(f);
        let mut input = Vec::new();
        encode_onto(&(1u8, 2u16, 3u32, 4u64, -5i8, 6i16, -7i32, "x"), &mut input).unwrap();
        let mut out = Vec::new();
        // SAFETY: the contract of `call_trampoline`: the trampoline and the address of the
        // same `Spread` type, taken in this process.
        let st = unsafe {
            call_trampoline(
                trampoline_addr::<Spread<T, String>>(),
                s.addr(),
                1,
                &input,
                &mut out,
            )
        };
        assert_eq!(st, ST_OK);
        let mut v: Vec<String> = Vec::new();
        decode_results(&out, 1, &mut v).unwrap();
        assert_eq!(v, ["1234-56-7x"]);
    }

    fn check_init(x: (u32, String)) {
        assert_eq!(x, (7, "seven".to_string()), "wrong initializer arguments");
    }

    #[test]
    fn init_trampoline_decodes_its_arguments() {
        let (func, tramp) = init_with_addrs(check_init as fn((u32, String)));
        let mut args = Vec::new();
        encode_onto(&(7u32, "seven"), &mut args).unwrap();
        // SAFETY: both addresses from one `init_with_addrs` call in this process.
        let r = unsafe { call_init_trampoline(tramp, func, &args) };
        assert_eq!(r, Ok(()));
        // Arguments that do not decode are an error, not a call.
        // SAFETY: as above.
        let r = unsafe { call_init_trampoline(tramp, func, &args[..3]) };
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn records_parse_and_reject_bad_lengths() {
        let mut b = Vec::new();
        put_result(&mut b, 7, ST_OK, 1, 5, b"xy");
        let mut s = &b[..];
        let r = next_result(&mut s).unwrap();
        assert_eq!((r.id, r.count, r.nanos, r.payload), (7, 1, 5, &b"xy"[..]));
        assert!(s.is_empty());
        let mut short = &b[..b.len() - 1];
        assert!(next_result(&mut short).is_err());
        let mut j = Vec::new();
        put_job_header(&mut j, 1, 2, 3, 4, u64::MAX);
        let mut s = &j[..];
        assert!(next_job(&mut s).is_err());
    }
}
