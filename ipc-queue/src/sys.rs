//! The crate's only raw OS call: raising `SIGKILL` at a test fault point.

/// Kills the calling process with `SIGKILL` (a test fault: no handler, no cleanup).
pub(crate) fn kill_self() -> ! {
    // SAFETY: `raise` has no memory-safety preconditions; SIGKILL cannot be caught, so the
    // process ends here.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
    // SIGKILL is delivered before `raise` returns; abort if it somehow is not.
    std::process::abort()
}
