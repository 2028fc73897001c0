//! Latency buckets on Prometheus' native histogram schema 2: bucket bounds at 2^(k/4)
//! seconds for k = -80..=16, about 0.954 µs to 16 s, four per doubling.
//!
//! Bucket `i` holds latencies `v` (whole nanoseconds) with `upper(i-1) < v <= upper(i)`,
//! where `upper(i)` is floor(1e9 * 2^((i-80)/4)): for whole `v`, `v <= 2^(k/4) s` iff
//! `v <= floor(1e9 * 2^(k/4))`, so each kernel bucket is exactly one native bucket (index
//! `i - 80`) and exports without re-bucketing. Bucket 0 holds everything up to 2^-20 s
//! (the native zero bucket) and the last bucket everything above 16 s (+Inf).
//! The same function runs in the kernel, so it has no loops, no division and no floats.

/// The native histogram schema the bounds follow: 2^(2^-SCHEMA) = 2^(1/4) per bucket.
pub const NATIVE_SCHEMA: i32 = 2;
/// The native bucket index of kernel bucket 1 (bucket 0 is the zero bucket).
pub const FIRST_NATIVE_INDEX: i32 = -79;

/// floor(1e9 * 2^(k/4)) nanoseconds for k = -80..=16, computed exactly (see the test that
/// recomputes them in integers); padded with u64::MAX to 128 entries for the search.
static UPPER_NS: [u64; 128] = {
    // One doubling a line, each starting at a power of two seconds (2^-20 s to 16 s).
    #[rustfmt::skip]
    const BOUNDS: [u64; 97] = [
        953, 1_134, 1_348, 1_603,
        1_907, 2_268, 2_697, 3_207,
        3_814, 4_536, 5_394, 6_415,
        7_629, 9_072, 10_789, 12_831,
        15_258, 18_145, 21_579, 25_662,
        30_517, 36_291, 43_158, 51_324,
        61_035, 72_583, 86_316, 102_648,
        122_070, 145_166, 172_633, 205_296,
        244_140, 290_333, 345_266, 410_593,
        488_281, 580_667, 690_533, 821_187,
        976_562, 1_161_335, 1_381_067, 1_642_375,
        1_953_125, 2_322_670, 2_762_135, 3_284_751,
        3_906_250, 4_645_340, 5_524_271, 6_569_503,
        7_812_500, 9_290_680, 11_048_543, 13_139_006,
        15_625_000, 18_581_361, 22_097_086, 26_278_012,
        31_250_000, 37_162_722, 44_194_173, 52_556_025,
        62_500_000, 74_325_444, 88_388_347, 105_112_051,
        125_000_000, 148_650_889, 176_776_695, 210_224_103,
        250_000_000, 297_301_778, 353_553_390, 420_448_207,
        500_000_000, 594_603_557, 707_106_781, 840_896_415,
        1_000_000_000, 1_189_207_115, 1_414_213_562, 1_681_792_830,
        2_000_000_000, 2_378_414_230, 2_828_427_124, 3_363_585_661,
        4_000_000_000, 4_756_828_460, 5_656_854_249, 6_727_171_322,
        8_000_000_000, 9_513_656_920, 11_313_708_498, 13_454_342_644,
        16_000_000_000,
    ];
    let mut t = [u64::MAX; 128];
    let mut i = 0;
    while i < BOUNDS.len() {
        t[i] = BOUNDS[i];
        i += 1;
    }
    t
};

/// Finite bounds: 97 (k = -80..=16).
const FINITE: usize = 97;

/// Number of buckets, the last one being +Inf.
pub const BUCKETS: usize = FINITE + 1;

/// Bucket index of a latency in nanoseconds: the number of bounds below it, by an unrolled
/// binary search over the padded table (7 steps; the mask keeps every index provably in
/// the table for the verifier).
#[inline(always)]
pub fn bucket(ns: u64) -> usize {
    let mut i = 0usize;
    if UPPER_NS[(i + 63) & 127] < ns {
        i += 64;
    }
    if UPPER_NS[(i + 31) & 127] < ns {
        i += 32;
    }
    if UPPER_NS[(i + 15) & 127] < ns {
        i += 16;
    }
    if UPPER_NS[(i + 7) & 127] < ns {
        i += 8;
    }
    if UPPER_NS[(i + 3) & 127] < ns {
        i += 4;
    }
    if UPPER_NS[(i + 1) & 127] < ns {
        i += 2;
    }
    if UPPER_NS[i & 127] < ns {
        i += 1;
    }
    // At most 97 (ns above every finite bound): the padding is u64::MAX.
    i
}

/// Inclusive upper bound of bucket `i` in whole nanoseconds (floor of the exact bound);
/// `None` for the +Inf bucket.
pub fn upper_bound_ns(i: usize) -> Option<u64> {
    (i < FINITE).then(|| UPPER_NS[i])
}

/// The native bucket index of kernel bucket `i` (upper bound 2^(index/4) s): `None` for
/// bucket 0 (the zero bucket, `<= 2^-20 s`) and for +Inf.
pub fn native_index(i: usize) -> Option<i32> {
    (1..FINITE)
        .contains(&i)
        .then(|| FIRST_NATIVE_INDEX + i as i32 - 1)
}

/// Inclusive upper bound of bucket `i` in seconds, the double nearest 2^((i-80)/4): the
/// same double Prometheus computes for a native bucket's bound (its schema-2 table scaled
/// by a power of two), so a classic `le` and the native bucket name the same number.
/// `None` for +Inf. Userspace only: the kernel has no floats.
#[cfg(feature = "user")]
pub fn upper_bound_seconds(i: usize) -> Option<f64> {
    // Prometheus' exponentialBounds[2]: 2^(-1), 2^(-3/4), 2^(-1/2), 2^(-1/4), rounded.
    const FRACTIONS: [f64; 4] = [
        0.5,
        0.594_603_557_501_360_5,
        0.707_106_781_186_547_5,
        0.840_896_415_253_714_4,
    ];
    if i >= FINITE {
        return None;
    }
    let k = i as i32 - 80;
    // 2^(k/4) = fraction(k mod 4) * 2^(k div 4 + 1); the power of two scales exactly.
    let scale = f64::from_bits(((k.div_euclid(4) + 1 + 1023) as u64) << 52);
    Some(FRACTIONS[k.rem_euclid(4) as usize] * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 256-bit product of two u128 as (high, low).
    fn wide_mul(a: u128, b: u128) -> (u128, u128) {
        let (a1, a0) = (a >> 64, a & u64::MAX as u128);
        let (b1, b0) = (b >> 64, b & u64::MAX as u128);
        let (lo, mid1, mid2, hi) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
        let (mid, carry) = mid1.overflowing_add(mid2);
        let (low, c2) = lo.overflowing_add(mid << 64);
        let high = hi + (mid >> 64) + ((carry as u128) << 64) + c2 as u128;
        (high, low)
    }

    /// Whether t <= 1e9 * 2^(k/4) exactly, i.e. t^4 <= 1e36 * 2^k, in integers: with
    /// k = 2j + r, (t^2 * 2^-j)^2 <= 2^r * (1e18 * 2^j)^2 (negative powers moved across).
    fn at_most_bound(t: u64, k: i32) -> bool {
        let (j, r) = (k.div_euclid(2), k.rem_euclid(2));
        let u = (t as u128 * t as u128) << (-j).max(0);
        let v = 1_000_000_000_000_000_000u128 << j.max(0);
        let (uu, vv) = (wide_mul(u, u), wide_mul(v, v));
        let vv = match r {
            0 => vv,
            _ => ((vv.0 << 1) | (vv.1 >> 127), vv.1 << 1),
        };
        uu <= vv
    }

    #[test]
    fn wide_mul_is_exact() {
        assert_eq!(wide_mul(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(wide_mul(1 << 64, 1 << 64), (1, 0));
        assert_eq!(wide_mul(12345, 678), (0, 12345 * 678));
    }

    #[test]
    fn the_table_is_floor_of_1e9_times_2_to_the_k_quarters() {
        assert!(at_most_bound(1_000_000_000, 0) && !at_most_bound(1_000_000_001, 0));
        assert!(at_most_bound(1_414_213_562, 2) && !at_most_bound(1_414_213_563, 2));
        for i in 0..FINITE {
            let k = i as i32 - 80;
            let t = upper_bound_ns(i).unwrap();
            assert!(at_most_bound(t, k), "bucket {i}: {t} ns above 2^({k}/4) s");
            assert!(
                !at_most_bound(t + 1, k),
                "bucket {i}: {t} ns is not the floor"
            );
            // And against f64, which is close enough to catch a typo.
            let f = 1e9 * 2f64.powf(k as f64 / 4.0);
            assert!(
                (f - t as f64) < 1.0 && f >= t as f64 - 1e-6,
                "bucket {i}: {t} vs {f}"
            );
        }
        assert_eq!(upper_bound_ns(0), Some(953));
        assert_eq!(upper_bound_ns(80), Some(1_000_000_000));
        assert_eq!(upper_bound_ns(96), Some(16_000_000_000));
        assert_eq!(upper_bound_ns(97), None);
        assert!(UPPER_NS[FINITE..].iter().all(|&t| t == u64::MAX));
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
            assert_eq!(bucket(up - 1), if up - 1 > 953 { i } else { 0 });
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // Against a linear scan, over a spread of values.
        let linear = |ns: u64| UPPER_NS[..FINITE].iter().filter(|&&t| t < ns).count();
        let mut v = 1u64;
        while v < 1 << 40 {
            for d in [v, v + 1, v * 3 / 2, v * 5 / 4 + 7] {
                assert_eq!(bucket(d), linear(d), "{d} ns");
            }
            v = v * 9 / 8 + 1;
        }
    }

    #[test]
    fn native_indices_name_the_bound() {
        assert_eq!(native_index(0), None);
        assert_eq!(native_index(1), Some(-79));
        assert_eq!(native_index(80), Some(0));
        assert_eq!(native_index(96), Some(16));
        assert_eq!(native_index(97), None);
    }

    #[cfg(feature = "user")]
    #[test]
    fn seconds_are_the_nearest_double_and_agree_with_the_ns_table() {
        for i in 0..FINITE {
            let k = i as i32 - 80;
            let s = upper_bound_seconds(i).unwrap();
            let want = 2f64.powf(k as f64 / 4.0);
            assert!(
                (s - want).abs() <= want * f64::EPSILON,
                "bucket {i}: {s} vs {want}"
            );
            // Exactly: with s = m * 2^e, T <= 1e9 * s < T + 1, i.e. a whole number of
            // nanoseconds is <= s iff it is <= T: a `le` printed from s is exact.
            let bits = s.to_bits();
            let m = (bits & ((1 << 52) - 1)) | (1 << 52);
            let e = ((bits >> 52) & 0x7ff) as i32 - 1075;
            assert!(e < 0 && e > -100, "bucket {i}: exponent {e}");
            let t = upper_bound_ns(i).unwrap() as u128;
            let lhs = m as u128 * 1_000_000_000;
            assert!(
                t << -e <= lhs && lhs < (t + 1) << -e,
                "bucket {i}: {s} s vs {t} ns"
            );
        }
        assert_eq!(upper_bound_seconds(0), Some(2f64.powi(-20)));
        assert_eq!(upper_bound_seconds(80), Some(1.0));
        assert_eq!(upper_bound_seconds(96), Some(16.0));
        assert_eq!(upper_bound_seconds(97), None);
    }
}
