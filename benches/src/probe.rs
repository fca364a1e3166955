//! The placement probe: L1 with 50,000 round trips pinned to cpus 0 and 1, before every timed
//! repeat. Its ns/RT classes the repeat as close, near or far.

use serde::Serialize;

/// Round trips of one probe.
pub const PROBE_RT: u64 = 50_000;

/// Placement class of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Below the first edge (default 45 ns/RT): cpus sharing a core or cache.
    Close,
    /// Between the edges (45–150 ns/RT).
    Near,
    /// At or above the second edge (150 ns/RT).
    Far,
}

impl Class {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Class::Close => "close",
            Class::Near => "near",
            Class::Far => "far",
        }
    }
    /// Parses `close`, `near` or `far`.
    pub fn parse(s: &str) -> Option<Class> {
        match s {
            "close" => Some(Class::Close),
            "near" => Some(Class::Near),
            "far" => Some(Class::Far),
            _ => None,
        }
    }
}

/// Class edges in ns/RT: close < `.0` ≤ near < `.1` ≤ far.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Edges(pub f64, pub f64);

impl Default for Edges {
    fn default() -> Self {
        Edges(45.0, 150.0)
    }
}

impl Edges {
    /// The class of a probe figure.
    pub fn class(&self, ns_per_rt: f64) -> Class {
        if ns_per_rt < self.0 {
            Class::Close
        } else if ns_per_rt < self.1 {
            Class::Near
        } else {
            Class::Far
        }
    }
}

/// Runs one probe; ns per round trip.
pub fn probe() -> Result<f64, String> {
    let m = crate::refs_queue::spin_pingpong(PROBE_RT, crate::os::cpus() >= 2)?;
    Ok(m.elapsed * 1e9 / PROBE_RT as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let e = Edges::default();
        assert_eq!(e.class(28.0), Class::Close);
        assert_eq!(e.class(68.0), Class::Near);
        assert_eq!(e.class(320.0), Class::Far);
        assert_eq!(Class::parse("near"), Some(Class::Near));
    }

    #[test]
    fn probe_runs() {
        assert!(probe().unwrap() > 0.0);
    }
}
