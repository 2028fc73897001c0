//! Log-linear latency buckets: 4 sub-buckets per doubling from 1.024 µs to 17.2 s.
//!
//! Bucket `i` holds values `v` (nanoseconds) with `lower(i) < v <= upper(i)`, the same
//! inclusive upper bound a Prometheus `le` label has, so buckets export without rounding.
//! Bucket 0 holds everything up to 1.024 µs and the last bucket everything above 17.2 s.
//! The same function runs in the kernel, so it has no loops and no division.

/// log2 of the first sub-divided range (1024 ns).
const FIRST_POWER: u32 = 10;
/// log2 of the last sub-divided range (2^33 ns .. 2^34 ns = 8.6 s .. 17.2 s).
const LAST_POWER: u32 = 33;
const SUB_BITS: u32 = 2;
const SUBS: u32 = 1 << SUB_BITS;

/// Number of buckets, the last one being +Inf.
pub const BUCKETS: usize = (1 + (LAST_POWER - FIRST_POWER + 1) * SUBS + 1) as usize;

/// Floor of log2(v) for v > 0, without loops (BPF has no count-leading-zeros instruction).
#[inline(always)]
pub fn log2(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket index of a latency in nanoseconds.
#[inline(always)]
pub fn bucket(ns: u64) -> usize {
    // Shift by one so that a value equal to a bound lands in the bucket it bounds (le is <=).
    let v = ns.saturating_sub(1);
    if v < 1 << FIRST_POWER {
        return 0;
    }
    let e = log2(v);
    if e > LAST_POWER {
        return BUCKETS - 1;
    }
    let sub = (v >> (e - SUB_BITS)) as u32 & (SUBS - 1);
    (1 + (e - FIRST_POWER) * SUBS + sub) as usize
}

/// Inclusive upper bound of bucket `i` in nanoseconds; `None` for the +Inf bucket.
pub fn upper_bound_ns(i: usize) -> Option<u64> {
    if i == 0 {
        return Some(1 << FIRST_POWER);
    }
    if i >= BUCKETS - 1 {
        return None;
    }
    let k = i as u32 - 1;
    let e = FIRST_POWER + k / SUBS;
    let sub = k % SUBS;
    Some(((SUBS + sub + 1) as u64) << (e - SUB_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_matches_leading_zeros() {
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) | 1,
                (1u64 << shift).wrapping_mul(3) >> 1,
            ] {
                if v > 0 {
                    assert_eq!(log2(v), 63 - v.leading_zeros(), "v={v}");
                }
            }
        }
        assert_eq!(log2(u64::MAX), 63);
    }

    #[test]
    fn covers_1us_to_10s_with_four_buckets_per_doubling() {
        assert_eq!(upper_bound_ns(0), Some(1024));
        assert!(upper_bound_ns(BUCKETS - 2).unwrap() >= 10_000_000_000);
        assert_eq!(upper_bound_ns(BUCKETS - 1), None);
        for i in 1..BUCKETS - 1 - 4 {
            let ratio = upper_bound_ns(i + 4).unwrap() as f64 / upper_bound_ns(i).unwrap() as f64;
            assert!((ratio - 2.0).abs() < 1e-9, "bucket {i} ratio {ratio}");
        }
    }

    #[test]
    fn every_value_lands_between_its_bounds() {
        for i in 0..BUCKETS - 1 {
            let up = upper_bound_ns(i).unwrap();
            assert_eq!(bucket(up), i, "upper bound of {i} belongs to {i}");
            assert_eq!(
                bucket(up + 1),
                i + 1,
                "upper bound of {i} + 1 belongs to next"
            );
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bounds_increase_strictly() {
        for i in 1..BUCKETS - 1 {
            assert!(upper_bound_ns(i).unwrap() > upper_bound_ns(i - 1).unwrap());
        }
    }
}
