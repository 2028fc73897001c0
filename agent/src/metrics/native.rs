//! A kernel latency histogram as a protobuf `Histogram`: the native histogram's fields at
//! schema 2, where each kernel bucket is exactly one native bucket (hist.rs: bucket `i` is
//! native index `i - 80`, bucket 0 the zero bucket), and the classic buckets beside them,
//! as client_golang writes both, so a scraper that stores classic buckets still can.
use gimbal_common::hist;

use super::proto::{Bucket, BucketSpan, Histogram};
use crate::model::HistTotals;

/// The native index the kernel's +Inf bucket (above 16 s) is counted in: schema 2 has no
/// +Inf bucket, so those latencies go to the next one, (16 s, 19.03 s]. A quantile that
/// lands there reads 16-19 s where the classic buckets read their last bound.
pub const OVERFLOW_INDEX: i32 = 17;

/// `classic`: (last kernel bucket an exported bucket takes in, its `le`), increasing; a
/// last +Inf entry is left out (the scraper adds it from the count).
pub fn histogram(h: &HistTotals, classic: &[(usize, f64)]) -> Histogram {
    let mut cumulative = 0u64;
    let mut from = 0;
    let mut bucket = Vec::with_capacity(classic.len());
    for &(last, le) in classic {
        if last >= hist::BUCKETS - 1 {
            break;
        }
        cumulative = h
            .buckets
            .get(from..=last)
            .map_or(0, |b| b.iter().fold(cumulative, |s, &n| s.wrapping_add(n)));
        from = last + 1;
        bucket.push(Bucket {
            cumulative_count: Some(cumulative),
            upper_bound: Some(le),
        });
    }
    let (positive_span, positive_delta) = spans(h);
    Histogram {
        sample_count: Some(h.count()),
        sample_sum: Some(h.sum_ns as f64 / 1e9),
        bucket,
        schema: Some(2),
        // Always set: Prometheus takes a histogram with a zero threshold for a native one
        // even before anything is counted.
        zero_threshold: hist::upper_bound_seconds(0),
        zero_count: Some(h.buckets[0]),
        negative_span: Vec::new(),
        negative_delta: Vec::new(),
        positive_span,
        positive_delta,
    }
}

/// The non-empty buckets above the zero bucket as spans of consecutive native indices and
/// their counts as deltas.
fn spans(h: &HistTotals) -> (Vec<BucketSpan>, Vec<i64>) {
    let (mut spans, mut deltas) = (Vec::<BucketSpan>::new(), Vec::new());
    let (mut previous_count, mut next_index) = (0i64, None::<i32>);
    for (i, &n) in h.buckets.iter().enumerate().skip(1) {
        if n == 0 {
            continue;
        }
        let index = hist::native_index(i).unwrap_or(OVERFLOW_INDEX);
        match (next_index, spans.last_mut()) {
            (Some(next), Some(span)) if next == index => {
                span.length = Some(span.length.unwrap_or(0) + 1);
            }
            _ => spans.push(BucketSpan {
                // The first span's offset is its index; later ones count the gap.
                offset: Some(next_index.map_or(index, |next| index - next)),
                length: Some(1),
            }),
        }
        let count = i64::try_from(n).unwrap_or(i64::MAX);
        deltas.push(count.wrapping_sub(previous_count));
        previous_count = count;
        next_index = Some(index + 1);
    }
    (spans, deltas)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Expands spans and deltas back to (native index, count), as Prometheus reads them.
    pub fn expand(h: &Histogram) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let (mut index, mut count, mut deltas) = (0i32, 0i64, h.positive_delta.iter());
        for (n, span) in h.positive_span.iter().enumerate() {
            index = match n {
                0 => span.offset.unwrap(),
                _ => index + span.offset.unwrap(),
            };
            for _ in 0..span.length.unwrap() {
                count += deltas.next().unwrap();
                out.push((index, count as u64));
                index += 1;
            }
        }
        assert!(deltas.next().is_none(), "more deltas than spans hold");
        out
    }

    fn totals(values_ns: &[(u64, u64)]) -> HistTotals {
        let mut h = HistTotals::default();
        for &(ns, n) in values_ns {
            h.buckets[hist::bucket(ns)] += n;
            h.sum_ns += ns * n;
        }
        h
    }

    #[test]
    fn each_kernel_bucket_is_one_native_bucket() {
        // 500 ns: zero bucket; 1 us: index -79; 1.2 us: -78; 1 s: 0; 1.1 s: 1; 20 s: +Inf.
        let h = totals(&[
            (500, 2),
            (1_000, 3),
            (1_200, 1),
            (1_000_000_000, 7),
            (1_100_000_000, 5),
            (20_000_000_000, 4),
        ]);
        let p = histogram(&h, &[]);
        assert_eq!(p.schema, Some(2));
        assert_eq!(p.zero_threshold, Some(2f64.powi(-20)));
        assert_eq!(p.zero_count, Some(2));
        assert_eq!(p.sample_count, Some(22));
        assert_eq!(
            expand(&p),
            [(-79, 3), (-78, 1), (0, 7), (1, 5), (OVERFLOW_INDEX, 4)]
        );
        let offsets: Vec<_> = p.positive_span.iter().map(|s| s.offset.unwrap()).collect();
        assert_eq!(offsets, [-79, 77, 15]);
        assert_eq!(p.positive_delta, [3, -2, 6, -2, -1]);
        // Every native bucket's bound holds its values: 2^(index/4) s.
        for &(ns, _) in &[(1_000u64, 0), (1_200, 0), (1_000_000_000, 0)] {
            let i = hist::bucket(ns);
            let index = hist::native_index(i).unwrap();
            let upper = 2f64.powf(index as f64 / 4.0);
            let lower = 2f64.powf((index - 1) as f64 / 4.0);
            let s = ns as f64 / 1e9;
            assert!(
                lower < s && s <= upper * (1.0 + 1e-15),
                "{ns} ns in {index}"
            );
        }
    }

    #[test]
    fn an_empty_histogram_is_still_native() {
        let p = histogram(
            &HistTotals::default(),
            &[(8, 3.814697265625e-6), (97, f64::MAX)],
        );
        assert!(p.zero_threshold.unwrap() > 0.0);
        assert!(p.positive_span.is_empty() && p.positive_delta.is_empty());
        assert_eq!(p.sample_count, Some(0));
        assert_eq!(p.bucket.len(), 1, "+Inf left out");
    }

    #[test]
    fn classic_buckets_are_cumulative_at_the_chosen_bounds() {
        let h = totals(&[(500, 2), (3_000, 3), (5_000, 1), (20_000_000_000, 4)]);
        let classic = [
            (8, hist::upper_bound_seconds(8).unwrap()),
            (12, hist::upper_bound_seconds(12).unwrap()),
            (96, 16.0),
            (97, f64::MAX),
        ];
        let p = histogram(&h, &classic);
        let got: Vec<_> = p
            .bucket
            .iter()
            .map(|b| (b.upper_bound.unwrap(), b.cumulative_count.unwrap()))
            .collect();
        assert_eq!(
            got,
            [(3.814697265625e-6, 5), (7.62939453125e-6, 6), (16.0, 6)]
        );
        assert_eq!(p.sample_count, Some(10));
    }
}
