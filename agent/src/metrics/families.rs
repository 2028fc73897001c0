//! The one way the exposition writes metric families and their series. Every HELP text
//! and every label value goes through [`escape`](super::escape) here, so a metric added
//! later cannot forget: the exposition never touches prometheus-client's encoders itself.
use std::fmt;

use prometheus_client::{
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, MetricEncoder, NoLabelSet,
    },
    metrics::MetricType,
    registry::Unit,
};

use super::escape::{self, Escaped};

pub struct Families<'a, 'e>(&'a mut DescriptorEncoder<'e>);

impl<'a, 'e> Families<'a, 'e> {
    pub fn new(e: &'a mut DescriptorEncoder<'e>) -> Self {
        Self(e)
    }

    /// Starts a family: HELP (escaped), TYPE and, with a unit, UNIT.
    pub fn family<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        unit: Option<&'s Unit>,
        metric_type: MetricType,
    ) -> Result<Family<'s>, fmt::Error> {
        let help = escape::help(help);
        Ok(Family(self.0.encode_descriptor(
            name,
            &help,
            unit,
            metric_type,
        )?))
    }
}

/// One family's series.
pub struct Family<'s>(MetricEncoder<'s>);

impl Family<'_> {
    /// One series: label `names` (code) and `values` (any text, escaped on the way) pair up.
    pub fn counter_row<C: EncodeCounterValue>(
        &mut self,
        names: &[&'static str],
        values: &[&str],
        n: C,
    ) -> fmt::Result {
        self.with_row(names, values, |m| {
            m.encode_counter::<NoLabelSet, _, u64>(&n, None)
        })
    }

    pub fn gauge_row<G: EncodeGaugeValue>(
        &mut self,
        names: &[&'static str],
        values: &[&str],
        v: G,
    ) -> fmt::Result {
        self.with_row(names, values, |m| m.encode_gauge(&v))
    }

    /// `buckets` are (upper bound, count in that bucket alone); +Inf is f64::MAX.
    pub fn histogram_row(
        &mut self,
        names: &[&'static str],
        values: &[&str],
        sum: f64,
        count: u64,
        buckets: &[(f64, u64)],
    ) -> fmt::Result {
        self.with_row(names, values, |m| {
            m.encode_histogram::<NoLabelSet>(sum, count, buckets, None)
        })
    }

    fn with_row(
        &mut self,
        names: &[&'static str],
        values: &[&str],
        encode: impl FnOnce(&mut MetricEncoder) -> fmt::Result,
    ) -> fmt::Result {
        debug_assert_eq!(
            names.len(),
            values.len(),
            "a row's labels against its names"
        );
        if names.is_empty() {
            return encode(&mut self.0);
        }
        // Identity labels are left out where empty: outside Kubernetes nothing changes.
        let escaped: Vec<_> = names
            .iter()
            .zip(values)
            .filter(|(name, value)| !(value.is_empty() && crate::catalog::omitted_if_empty(name)))
            .map(|(name, value)| (*name, Escaped(value)))
            .collect();
        if escaped.is_empty() {
            return encode(&mut self.0);
        }
        encode(&mut self.0.encode_family(&escaped)?)
    }
}
