//! `[labels] classic_buckets`: the `le` bounds the classic latency histograms export.
//!
//! Each bound must be one of the kernel's own bucket bounds (gimbal_common::hist: native
//! schema 2, 2^(k/4) s, 4 per doubling from 0.954 µs to 16 s), so an exported bucket is a
//! sum of whole kernel buckets and its count stays exact: nothing is rounded or
//! re-bucketed. `"full"` keeps all 97 of them. A bound is written as any duration that
//! agrees with it in whole nanoseconds (the kernel counts whole nanoseconds): `3.814us`,
//! `3.814697265625us` and `0.000003814697265625s` all name 2^-18 s.
use std::fmt;

use gimbal_common::hist;
use serde::{
    de::{self, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

/// The kernel bucket indices whose upper bounds are exported as `le`, increasing; +Inf
/// (the last kernel bucket) always follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicBuckets(Vec<usize>, Problems);

/// The list's bounds that are none, by their place in it: reported by validate.rs at the
/// element's own line and column (a deserializer's error has only the list's).
pub(super) type Problems = Vec<(usize, String)>;

impl ClassicBuckets {
    /// Every kernel bound (today's 98 buckets with +Inf).
    pub fn full() -> Self {
        Self((0..hist::BUCKETS - 1).collect(), Vec::new())
    }

    /// The finite kernel bucket indices exported, increasing.
    pub fn indices(&self) -> &[usize] {
        &self.0
    }

    pub(super) fn problems(&self) -> &Problems {
        &self.1
    }
}

/// One bucket per doubling, the powers of two seconds from 2^-18 s (3.81 µs) to 8 s: 22
/// bounds and +Inf, a quarter of the full resolution's series.
impl Default for ClassicBuckets {
    fn default() -> Self {
        Self(
            (0..hist::BUCKETS - 1)
                .filter(|&i| {
                    // Bucket 80 is 2^0 s; every 4th is a power of two seconds.
                    let k = i as i64 - 80;
                    k % 4 == 0 && (-72..=12).contains(&k)
                })
                .collect(),
            Vec::new(),
        )
    }
}

/// A kernel bound's index from its text ("3.814us"), or why it is none, naming the
/// nearest bounds that are.
fn kernel_index(text: &str) -> Result<usize, String> {
    let ns = parse_ns(text)?;
    let bounds = (0..hist::BUCKETS - 1).filter_map(|i| Some((i, hist::upper_bound_ns(i)?)));
    if let Some((i, _)) = bounds.clone().find(|&(_, b)| b == ns) {
        return Ok(i);
    }
    let below = bounds.clone().rfind(|&(_, b)| b < ns);
    let above = bounds.clone().find(|&(_, b)| b > ns);
    let nearest = match (below, above) {
        (Some((_, b)), Some((_, a))) => format!("the nearest are {} and {}", human(b), human(a)),
        (None, Some((_, a))) => format!("the smallest is {}", human(a)),
        (Some((_, b)), None) => format!("the largest is {}", human(b)),
        (None, None) => unreachable!("the kernel has bounds"),
    };
    Err(format!(
        "is `{text}`, not a kernel bucket bound (2^(k/4) seconds, 4 per doubling); {nearest}"
    ))
}

/// "3.814us", "1.5ms", "8s", "953ns" (also "µs") as whole nanoseconds, exactly (digits
/// below a nanosecond are dropped: the kernel's bounds are floors): decimal digits, never a
/// float.
fn parse_ns(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale_digits: u32 = match unit {
        "ns" => 0,
        "us" | "µs" => 3,
        "ms" => 6,
        "s" => 9,
        _ => {
            return Err(format!(
                "is `{text}`: expected a number and ns, us, ms or s, like \"3.814us\""
            ))
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let bad = || format!("is `{text}`, not a number of {unit}");
    if whole.is_empty() || fraction.contains('.') || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Digits as whole nanoseconds: "3.8146" us -> "3814" (the rest is below 1 ns).
    let fraction = &fraction[..fraction.len().min(scale_digits as usize)];
    let digits = format!(
        "{whole}{fraction}{}",
        "0".repeat(scale_digits as usize - fraction.len())
    );
    digits
        .parse::<u64>()
        .map_err(|_| format!("is `{text}`, too large for a bucket bound"))
}

/// Nanoseconds in the largest unit that keeps them at least 1, exactly ("3.814us").
pub fn human(ns: u64) -> String {
    let (unit, digits) = match ns {
        0..1_000 => return format!("{ns}ns"),
        1_000..1_000_000 => ("us", 3),
        1_000_000..1_000_000_000 => ("ms", 6),
        _ => ("s", 9),
    };
    let scale = 10u64.pow(digits);
    let fraction = format!("{:0width$}", ns % scale, width = digits as usize);
    match fraction.trim_end_matches('0') {
        "" => format!("{}{unit}", ns / scale),
        f => format!("{}.{f}{unit}", ns / scale),
    }
}

impl<'de> Deserialize<'de> for ClassicBuckets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BucketsVisitor)
    }
}

struct BucketsVisitor;

impl<'de> Visitor<'de> for BucketsVisitor {
    type Value = ClassicBuckets;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"full\" or a list of kernel bucket bounds like [\"3.814us\", \"1.953125ms\"]")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v {
            "full" => Ok(ClassicBuckets::full()),
            other => Err(E::custom(format!(
                "`{other}`: expected \"full\" or a list of kernel bucket bounds like [\"3.814us\", \"1.953125ms\"]"
            ))),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut indices, mut problems): (Vec<usize>, Problems) = (Vec::new(), Vec::new());
        let mut place = 0;
        while let Some(text) = seq.next_element::<String>()? {
            match kernel_index(&text) {
                Ok(i) if indices.last().is_some_and(|&last| i <= last) => problems.push((
                    place,
                    format!("is `{text}`: the bounds must increase, and it follows a larger or equal one"),
                )),
                Ok(i) => indices.push(i),
                Err(why) => problems.push((place, why)),
            }
            place += 1;
        }
        if place == 0 {
            return Err(de::Error::custom(
                "no bucket bounds: name at least one, or \"full\"",
            ));
        }
        Ok(ClassicBuckets(indices, problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_one_bound_per_doubling_from_4us_to_8s() {
        let indices = ClassicBuckets::default().indices().to_vec();
        let bounds: Vec<_> = indices
            .iter()
            .map(|&i| human(hist::upper_bound_ns(i).unwrap()))
            .collect();
        assert_eq!(bounds.len(), 22);
        assert_eq!(bounds[0], "3.814us");
        assert_eq!(bounds[1], "7.629us");
        assert_eq!(bounds[18], "1s");
        assert_eq!(bounds[21], "8s");
        // Powers of two seconds, exactly.
        for (n, &i) in indices.iter().enumerate() {
            let s = hist::upper_bound_seconds(i).unwrap();
            assert_eq!(s, 2f64.powi(n as i32 - 18), "{}", bounds[n]);
        }
        assert_eq!(ClassicBuckets::full().indices().len(), hist::BUCKETS - 1);
    }

    #[test]
    fn bounds_parse_to_whole_nanoseconds_and_others_name_their_neighbours() {
        assert_eq!(kernel_index("953ns"), Ok(0));
        assert_eq!(kernel_index("0.953us"), Ok(0));
        assert_eq!(kernel_index("1.134µs"), Ok(1));
        assert_eq!(kernel_index("3.814us"), Ok(8));
        assert_eq!(kernel_index("3.8140us"), Ok(8));
        // The exact bound, and the exported `le`, name it too: below 1 ns is dropped.
        assert_eq!(kernel_index("3.814697265625us"), Ok(8));
        assert_eq!(kernel_index("0.000003814697265625s"), Ok(8));
        assert_eq!(kernel_index("1.189207115002721s"), Ok(81));
        assert_eq!(kernel_index("1s"), Ok(80));
        assert_eq!(kernel_index("16s"), Ok(hist::BUCKETS - 2));
        let e = kernel_index("4us").unwrap_err();
        assert!(
            e.starts_with("is `4us`, not a kernel bucket bound")
                && e.contains("the nearest are 3.814us and 4.536us"),
            "{e}"
        );
        let e = kernel_index("3.815us").unwrap_err();
        assert!(e.contains("the nearest are 3.814us and 4.536us"), "{e}");
        let e = kernel_index("900ns").unwrap_err();
        assert!(e.contains("the smallest is 953ns"), "{e}");
        let e = kernel_index("20s").unwrap_err();
        assert!(e.contains("the largest is 16s"), "{e}");
        assert!(kernel_index("4").unwrap_err().contains("ns, us, ms or s"));
        assert!(kernel_index("4m").unwrap_err().contains("ns, us, ms or s"));
        assert!(kernel_index(".5s").unwrap_err().contains("not a number"));
        assert!(kernel_index("1..5s").unwrap_err().contains("not a number"));
        assert!(kernel_index("99999999999999999999s")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn human_is_exact() {
        assert_eq!(human(999), "999ns");
        assert_eq!(human(1_000), "1us");
        assert_eq!(human(3_814), "3.814us");
        assert_eq!(human(1 << 20), "1.048576ms");
        assert_eq!(human(1 << 33), "8.589934592s");
    }
}
