//! `[labels] classic_buckets`: the `le` bounds the classic latency histograms export.
//!
//! Each bound must be one of the kernel's own bucket bounds (gimbal_common::hist: 4 per
//! doubling from 1.024 µs), so an exported bucket is a sum of whole kernel buckets and its
//! count stays exact: nothing is rounded or re-bucketed. `"full"` keeps all 97 of them.
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

/// One bucket per doubling from 4.096 µs (2^12 ns) to 8.59 s (2^33 ns): 22 bounds and
/// +Inf, a quarter of the full resolution's series.
impl Default for ClassicBuckets {
    fn default() -> Self {
        Self(
            (0..hist::BUCKETS - 1)
                .filter(|&i| {
                    let ns = hist::upper_bound_ns(i).unwrap_or(0);
                    ns.is_power_of_two() && (1 << 12..=1 << 33).contains(&ns)
                })
                .collect(),
            Vec::new(),
        )
    }
}

/// A kernel bound's index from its text ("4.096us"), or why it is none, naming the
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
        "is `{text}`, not a kernel bucket bound (4 per doubling from 1.024us); {nearest}"
    ))
}

/// "4.096us", "1.5ms", "8.589934592s", "1024ns" (also "µs") as whole nanoseconds, exactly:
/// decimal digits, never a float.
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
                "is `{text}`: expected a number and ns, us, ms or s, like \"4.096us\""
            ))
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let bad = || format!("is `{text}`, not a number of {unit}");
    if whole.is_empty() || fraction.contains('.') || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale_digits as usize {
        return Err(format!(
            "is `{text}`, not a whole number of nanoseconds, so not a kernel bucket bound"
        ));
    }
    // Digits as nanoseconds: "4.096" us -> "4096" followed by 3 - 3 zeros.
    let digits = format!(
        "{whole}{fraction}{}",
        "0".repeat(scale_digits as usize - fraction.len())
    );
    digits
        .parse::<u64>()
        .map_err(|_| format!("is `{text}`, too large for a bucket bound"))
}

/// Nanoseconds in the largest unit that keeps them at least 1, exactly ("3.584us").
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
        f.write_str("\"full\" or a list of kernel bucket bounds like [\"4.096us\", \"1.048576ms\"]")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v {
            "full" => Ok(ClassicBuckets::full()),
            other => Err(E::custom(format!(
                "`{other}`: expected \"full\" or a list of kernel bucket bounds like [\"4.096us\", \"1.048576ms\"]"
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
        let bounds: Vec<_> = ClassicBuckets::default()
            .indices()
            .iter()
            .map(|&i| human(hist::upper_bound_ns(i).unwrap()))
            .collect();
        assert_eq!(bounds.len(), 22);
        assert_eq!(bounds[0], "4.096us");
        assert_eq!(bounds[1], "8.192us");
        assert_eq!(bounds[21], "8.589934592s");
        assert_eq!(ClassicBuckets::full().indices().len(), hist::BUCKETS - 1);
    }

    #[test]
    fn bounds_parse_exactly_and_others_name_their_neighbours() {
        assert_eq!(kernel_index("1.024us"), Ok(0));
        assert_eq!(kernel_index("1024ns"), Ok(0));
        assert_eq!(kernel_index("1.28µs"), Ok(1));
        assert_eq!(kernel_index("4.0960us"), Ok(8));
        assert_eq!(kernel_index("0.000004096s"), Ok(8));
        assert_eq!(kernel_index("17.179869184s"), Ok(hist::BUCKETS - 2));
        let e = kernel_index("4us").unwrap_err();
        assert!(
            e.starts_with("is `4us`, not a kernel bucket bound")
                && e.contains("the nearest are 3.584us and 4.096us"),
            "{e}"
        );
        let e = kernel_index("1us").unwrap_err();
        assert!(e.contains("the smallest is 1.024us"), "{e}");
        let e = kernel_index("20s").unwrap_err();
        assert!(e.contains("the largest is 17.179869184s"), "{e}");
        assert!(kernel_index("4.0965us")
            .unwrap_err()
            .contains("whole number"));
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
        assert_eq!(human(3_584), "3.584us");
        assert_eq!(human(1 << 20), "1.048576ms");
        assert_eq!(human(1 << 33), "8.589934592s");
    }
}
