//! Repetitions and their summary (median, min, max), and how figures are written.

use std::time::Duration;

/// The values of one figure over the repetitions, in the order they were measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Samples(pub(crate) Vec<f64>);

/// Median, minimum and maximum of some samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) n: usize,
}

impl Samples {
    pub(crate) fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub(crate) fn push_duration(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }

    /// The summary; `None` when there are no samples (a skipped figure).
    pub(crate) fn summary(&self) -> Option<Summary> {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        // The mean of the two middle values for an even count, as usual.
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// Element-wise `self[i] / other[i]`: ratios of pairs measured back to back in one repetition.
    pub(crate) fn ratio_to(&self, other: &Samples) -> Samples {
        Samples(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| if *b == 0.0 { f64::NAN } else { a / b })
                .collect(),
        )
    }

    /// Element-wise `self[i] - other[i]`: differences of pairs measured back to back in one repetition.
    pub(crate) fn minus(&self, other: &Samples) -> Samples {
        Samples(self.0.iter().zip(&other.0).map(|(a, b)| a - b).collect())
    }

    /// Every sample divided by a constant (a nominal critical path).
    pub(crate) fn divided_by(&self, d: f64) -> Samples {
        Samples(self.0.iter().map(|a| a / d).collect())
    }

    /// The median, or NaN without samples.
    pub(crate) fn median(&self) -> f64 {
        self.summary().map_or(f64::NAN, |s| s.median)
    }

    /// The `p`-th percentile (0 < `p` ≤ 100) by the nearest-rank method: the smallest sample with at least
    /// `p` % of the samples at or below it, so p95 of 200 samples is the 190th smallest. NaN without samples;
    /// non-finite samples are left out, as in [`Samples::summary`].
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() || !(p > 0.0 && p <= 100.0) {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// Appends every sample of `other`.
    pub(crate) fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }
}

/// How a figure's numbers are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Seconds, written as `1.23 s`, `45.6 ms` or `789 µs` by size.
    Seconds,
    /// A plain ratio, `1.07×`.
    Ratio,
    /// A count.
    Count,
    /// Bytes, written in MiB.
    Bytes,
}

/// Writes one value in `unit`.
pub(crate) fn format_value(v: f64, unit: Unit) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    match unit {
        Unit::Seconds => {
            let a = v.abs();
            if a >= 1.0 {
                format!("{v:.2} s")
            } else if a >= 1e-3 {
                format!("{:.1} ms", v * 1e3)
            } else {
                format!("{:.0} µs", v * 1e6)
            }
        }
        Unit::Ratio if v.abs() < 0.1 => format!("{v:.4}×"),
        Unit::Ratio => format!("{v:.2}×"),
        Unit::Count => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        }
        Unit::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = Samples(vec![3.0, 1.0, 2.0]).summary();
        assert_eq!(
            s,
            Some(Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                n: 3
            })
        );
        let s = Samples(vec![4.0, 1.0, 3.0, 2.0]).summary().map(|s| s.median);
        assert_eq!(s, Some(2.5));
        assert_eq!(Samples::default().summary(), None);
        // Non-finite values (a failed repetition) are left out rather than poisoning the order.
        assert_eq!(Samples(vec![f64::NAN, 5.0]).summary().map(|s| s.n), Some(1));
    }

    #[test]
    fn ratios_pair_repetitions() {
        let a = Samples(vec![2.0, 3.0, 9.0]);
        let b = Samples(vec![1.0, 2.0]);
        assert_eq!(a.ratio_to(&b), Samples(vec![2.0, 1.5]));
        assert_eq!(a.divided_by(2.0).median(), 1.5);
        assert_eq!(a.minus(&b), Samples(vec![1.0, 1.0]));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s = Samples((1..=200).rev().map(f64::from).collect());
        assert_eq!(s.percentile(95.0), 190.0);
        assert_eq!(s.percentile(50.0), 100.0);
        assert_eq!(s.percentile(100.0), 200.0);
        assert_eq!(s.percentile(0.1), 1.0);
        // Fewer samples than 1 / (1 - p): the largest.
        assert_eq!(Samples(vec![3.0, 1.0, 2.0]).percentile(95.0), 3.0);
        assert_eq!(Samples(vec![7.0]).percentile(95.0), 7.0);
        assert!(Samples::default().percentile(95.0).is_nan());
        assert!(Samples(vec![1.0]).percentile(0.0).is_nan());
        assert_eq!(Samples(vec![f64::NAN, 4.0, 2.0]).percentile(95.0), 4.0);
        let mut a = Samples(vec![1.0]);
        a.extend(&Samples(vec![2.0, 3.0]));
        assert_eq!(a, Samples(vec![1.0, 2.0, 3.0]));
    }

    #[test]
    fn values_are_written_by_size() {
        assert_eq!(format_value(1.234, Unit::Seconds), "1.23 s");
        assert_eq!(format_value(0.0456, Unit::Seconds), "45.6 ms");
        assert_eq!(format_value(0.000_789, Unit::Seconds), "789 µs");
        assert_eq!(format_value(1.071, Unit::Ratio), "1.07×");
        assert_eq!(format_value(0.00123, Unit::Ratio), "0.0012×");
        assert_eq!(format_value(7.0, Unit::Count), "7");
        assert_eq!(format_value(3.0 * 1024.0 * 1024.0, Unit::Bytes), "3.0 MiB");
        assert_eq!(format_value(f64::NAN, Unit::Ratio), "–");
    }
}
