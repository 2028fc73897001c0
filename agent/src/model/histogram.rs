//! Latency histograms: the kernel's wrapping per-CPU u32 buckets summed into u64 totals.
use gimbal_common::{hist::BUCKETS, LatencyHist};

/// A histogram as the kernel holds it, summed over CPUs with wrapping arithmetic.
///
/// The sum of per-CPU u32 counters modulo 2^32 changes by exactly the true increase modulo
/// 2^32, so one wrapped sum per key is all userspace needs to keep (not one per CPU), as long
/// as fewer than 2^32 events land in one bucket between two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrappedHist {
    pub buckets: [u32; BUCKETS],
    pub sum_ns: u64,
}

impl Default for WrappedHist {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            sum_ns: 0,
        }
    }
}

impl WrappedHist {
    pub fn from_cpus<'a>(cpus: impl IntoIterator<Item = &'a LatencyHist>) -> Self {
        let mut h = Self::default();
        for cpu in cpus {
            h.sum_ns = h.sum_ns.wrapping_add(cpu.sum_ns);
            for (b, c) in h.buckets.iter_mut().zip(cpu.buckets) {
                *b = b.wrapping_add(c);
            }
        }
        h
    }

    /// Changes whenever anything is recorded (used to find idle keys).
    pub fn fingerprint(&self) -> u64 {
        let count: u64 = self.buckets.iter().map(|&b| b as u64).sum();
        self.sum_ns ^ count.rotate_left(32)
    }

    /// The increase since `earlier`.
    pub fn since(&self, earlier: &WrappedHist) -> HistTotals {
        let mut d = HistTotals {
            sum_ns: self.sum_ns.wrapping_sub(earlier.sum_ns),
            ..Default::default()
        };
        for ((d, now), then) in d.buckets.iter_mut().zip(self.buckets).zip(earlier.buckets) {
            *d = now.wrapping_sub(then) as u64;
        }
        d
    }
}

/// Monotonic totals of one exported histogram series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistTotals {
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl Default for HistTotals {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            sum_ns: 0,
        }
    }
}

impl HistTotals {
    pub fn add(&mut self, other: &HistTotals) {
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimbal_common::hist::bucket;

    fn cpu(values_ns: &[u64], start: u32) -> LatencyHist {
        let mut h = LatencyHist {
            sum_ns: 0,
            buckets: [start; BUCKETS],
        };
        for &v in values_ns {
            h.sum_ns += v;
            h.buckets[bucket(v)] = h.buckets[bucket(v)].wrapping_add(1);
        }
        h
    }

    #[test]
    fn sums_cpus_and_survives_u32_wrap() {
        // Two CPUs whose counters sit just below the u32 limit, then wrap.
        let before = WrappedHist::from_cpus(&[cpu(&[], u32::MAX - 1), cpu(&[], u32::MAX)]);
        let after = WrappedHist::from_cpus(&[
            cpu(&[5_000, 5_000, 5_000], u32::MAX - 1),
            cpu(&[2_000_000], u32::MAX),
        ]);
        let d = after.since(&before);
        assert_eq!(d.count(), 4);
        assert_eq!(d.buckets[bucket(5_000)], 3);
        assert_eq!(d.buckets[bucket(2_000_000)], 1);
        assert_eq!(d.sum_ns, 2_015_000);
    }
}
