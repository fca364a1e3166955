//! Absolute deadlines on `CLOCK_MONOTONIC`, computed once per blocking call.

use std::time::Duration;

use crate::sys;

/// A point on `CLOCK_MONOTONIC` after which a blocking call gives up, or never.
///
/// Computed once when the call starts; every re-wait after `EINTR` or a spurious wake-up
/// uses the same absolute value, so retries never stretch the total wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    at_ns: Option<u64>,
}

impl Deadline {
    /// A deadline that never passes.
    pub const fn never() -> Self {
        Deadline { at_ns: None }
    }

    /// `timeout` from now. A timeout too large to represent is the same as [`Deadline::never`].
    pub fn after(timeout: Duration) -> Self {
        let now = sys::monotonic_now_ns();
        let ns = u64::try_from(timeout.as_nanos()).ok();
        Deadline {
            at_ns: ns.and_then(|ns| now.checked_add(ns)),
        }
    }

    /// [`Deadline::after`] for `Some`, [`Deadline::never`] for `None`.
    pub fn from_timeout(timeout: Option<Duration>) -> Self {
        timeout.map_or(Self::never(), Self::after)
    }

    /// A deadline that has already passed: waits return at once (the `try_` forms).
    pub const fn expired() -> Self {
        Deadline { at_ns: Some(0) }
    }

    /// Whether this deadline never passes.
    pub const fn is_never(&self) -> bool {
        self.at_ns.is_none()
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        match self.at_ns {
            None => false,
            Some(0) => true,
            Some(at) => sys::monotonic_now_ns() >= at,
        }
    }

    /// Time left (zero once passed), or `None` for a deadline that never passes.
    pub fn remaining(&self) -> Option<Duration> {
        self.at_ns
            .map(|at| Duration::from_nanos(at.saturating_sub(sys::monotonic_now_ns())))
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self.at_ns, other.at_ns) {
            (None, _) => other,
            (_, None) => self,
            (Some(a), Some(b)) => Deadline {
                at_ns: Some(a.min(b)),
            },
        }
    }

    /// The absolute `CLOCK_MONOTONIC` time in nanoseconds, if any.
    pub const fn as_monotonic_nanos(&self) -> Option<u64> {
        self.at_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_and_expiry() {
        assert!(!Deadline::never().is_expired());
        assert!(Deadline::expired().is_expired());
        assert!(Deadline::after(Duration::ZERO).is_expired());
        let later = Deadline::after(Duration::from_secs(60));
        assert!(!later.is_expired());
        assert_eq!(later.min(Deadline::never()), later);
        assert_eq!(Deadline::never().min(later), later);
        assert_eq!(later.min(Deadline::expired()), Deadline::expired());
        assert!(later.remaining().unwrap() <= Duration::from_secs(60));
        assert_eq!(Deadline::after(Duration::MAX), Deadline::never());
    }
}
