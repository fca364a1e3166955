//! The M producers × N consumers checksum rule.
//!
//! Each producer sends `per = n / M` values `0..per` (u64, or the first 8 bytes LE of a byte
//! message); each consumer receives exactly `per·M/N` and sums them (wrapping). The total must be
//! `M·per·(per−1)/2`, every count must match and the counters must end at `n`; otherwise the
//! repeat fails, so a lost or duplicated message never passes.

use crate::harness::RoleOut;

/// The shape of one M×N run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Producers.
    pub m: usize,
    /// Consumers.
    pub c: usize,
    /// Values each producer sends.
    pub per: u64,
}

impl Plan {
    /// The plan for about `n` messages: `n` is rounded down to a multiple of `m` and `c` (lcm).
    pub fn new(n: u64, m: usize, c: usize) -> Self {
        let l = lcm(m as u64, c as u64);
        let n = (n / l).max(1) * l;
        Plan {
            m,
            c,
            per: n / m as u64,
        }
    }
    /// Messages in total.
    pub fn n(&self) -> u64 {
        self.per * self.m as u64
    }
    /// Messages each consumer receives.
    pub fn per_consumer(&self) -> u64 {
        self.n() / self.c as u64
    }
    /// The sum every run must reach (wrapping).
    pub fn expected_sum(&self) -> u64 {
        let p = self.per as u128;
        (self.m as u128 * p * p.saturating_sub(1) / 2) as u64
    }
    /// Checks the consumers' reports (`consumers`) and the producers' counts (`producers`).
    pub fn verify(&self, producers: &[RoleOut], consumers: &[RoleOut]) -> Result<(), String> {
        if producers.len() != self.m || consumers.len() != self.c {
            return Err(format!(
                "checksum: {} producers and {} consumers reported, want {} and {}",
                producers.len(),
                consumers.len(),
                self.m,
                self.c
            ));
        }
        for (i, p) in producers.iter().enumerate() {
            if p.count != self.per {
                return Err(format!(
                    "checksum: producer {i} sent {} of {}",
                    p.count, self.per
                ));
            }
        }
        for (i, c) in consumers.iter().enumerate() {
            if c.count != self.per_consumer() {
                return Err(format!(
                    "checksum: consumer {i} received {} of {}",
                    c.count,
                    self.per_consumer()
                ));
            }
        }
        let total: u64 = consumers.iter().map(|c| c.count).sum();
        if total != self.n() {
            return Err(format!(
                "checksum: {total} messages received, want {}",
                self.n()
            ));
        }
        let sum = consumers.iter().fold(0u64, |a, c| a.wrapping_add(c.sum));
        if sum != self.expected_sum() {
            return Err(format!("checksum: sum {sum}, want {}", self.expected_sum()));
        }
        Ok(())
    }
    /// Verifies a gated run whose first `m` roles are producers and the next `c` consumers.
    pub fn verify_roles(&self, roles: &[RoleOut]) -> Result<(), String> {
        if roles.len() < self.m + self.c {
            return Err("checksum: missing roles".into());
        }
        self.verify(&roles[..self.m], &roles[self.m..self.m + self.c])
    }
}

/// A consumer's running sum and count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Acc {
    /// Wrapping sum.
    pub sum: u64,
    /// Values seen.
    pub count: u64,
}

impl Acc {
    /// Adds one received value.
    #[inline(always)]
    pub fn add(&mut self, v: u64) {
        self.sum = self.sum.wrapping_add(v);
        self.count += 1;
    }
    /// Adds the first 8 bytes (LE) of a byte message; shorter messages count their bytes padded.
    #[inline(always)]
    pub fn add_bytes(&mut self, b: &[u8]) {
        let mut w = [0u8; 8];
        let k = b.len().min(8);
        w[..k].copy_from_slice(&b[..k]);
        self.add(u64::from_le_bytes(w));
    }
    /// As a role report.
    pub fn out(&self) -> RoleOut {
        RoleOut {
            sum: self.sum,
            count: self.count,
        }
    }
}

/// Writes `v` into the first 8 bytes (LE) of a message (fewer when the message is shorter).
#[inline(always)]
pub fn stamp(msg: &mut [u8], v: u64) {
    let k = msg.len().min(8);
    msg[..k].copy_from_slice(&v.to_le_bytes()[..k]);
}

/// A producer role of byte messages: stamps `msg` with 0..`per` and hands each to `send`.
pub fn produce_bytes(
    per: u64,
    msg: &mut Vec<u8>,
    mut send: impl FnMut(&Vec<u8>) -> Result<(), String>,
) -> Result<RoleOut, String> {
    for i in 0..per {
        stamp(msg, i);
        send(msg)?;
    }
    Ok(RoleOut { sum: 0, count: per })
}

/// A consumer role of byte messages: `count` messages from `recv`, each checked to be `size`
/// bytes long, summed by their stamps.
pub fn consume_bytes<M: AsRef<[u8]>>(
    count: u64,
    size: usize,
    mut recv: impl FnMut() -> Result<M, String>,
) -> Result<RoleOut, String> {
    let mut acc = Acc::default();
    for _ in 0..count {
        let m = recv()?;
        let m = m.as_ref();
        if m.len() != size {
            return Err(format!("length {} != {size}", m.len()));
        }
        acc.add_bytes(m);
    }
    Ok(acc.out())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers every producer's values round-robin to the consumers, applying `tamper` to the
    /// stream first, and returns the role reports.
    fn simulate(plan: Plan, tamper: impl Fn(&mut Vec<u64>)) -> (Vec<RoleOut>, Vec<RoleOut>) {
        let mut stream: Vec<u64> = (0..plan.m).flat_map(|_| 0..plan.per).collect();
        tamper(&mut stream);
        let producers = vec![
            RoleOut {
                sum: 0,
                count: plan.per
            };
            plan.m
        ];
        let mut accs = vec![Acc::default(); plan.c];
        // Each consumer takes at most its quota, as the workloads do.
        let mut it = stream.into_iter();
        for acc in accs.iter_mut() {
            for v in it.by_ref().take(plan.per_consumer() as usize) {
                acc.add(v);
            }
        }
        (producers, accs.iter().map(Acc::out).collect())
    }

    #[test]
    fn intact_stream_passes() {
        for (m, c) in [(1, 1), (2, 2), (4, 1), (2, 4), (3, 2)] {
            let plan = Plan::new(1000, m, c);
            let (p, cs) = simulate(plan, |_| {});
            plan.verify(&p, &cs).unwrap();
        }
    }

    #[test]
    fn dropped_message_fails() {
        let plan = Plan::new(1000, 2, 2);
        let (p, cs) = simulate(plan, |s| {
            s.remove(17);
        });
        assert!(plan.verify(&p, &cs).is_err());
        // Even when the dropped value is padded by a zero so that the counts look right.
        let (p, cs) = simulate(plan, |s| {
            s.remove(17);
            s.push(0);
        });
        assert!(plan.verify(&p, &cs).is_err());
    }

    #[test]
    fn duplicated_message_fails() {
        let plan = Plan::new(1000, 2, 2);
        let (p, cs) = simulate(plan, |s| {
            let v = s[300];
            s.insert(301, v);
        });
        assert!(plan.verify(&p, &cs).is_err());
        let plan = Plan::new(1000, 1, 1);
        let (p, cs) = simulate(plan, |s| {
            let v = s[5];
            s.insert(6, v);
        });
        assert!(plan.verify(&p, &cs).is_err());
    }

    #[test]
    fn plan_rounds_to_roles() {
        let p = Plan::new(1001, 4, 4);
        assert_eq!(p.n(), 1000);
        assert_eq!(p.per_consumer(), 250);
        assert_eq!(Plan::new(10, 2, 1).expected_sum(), 2 * 10);
        let mut m = [0u8; 16];
        stamp(&mut m, 0x0102);
        let mut a = Acc::default();
        a.add_bytes(&m);
        assert_eq!(a.sum, 0x0102);
    }
}
