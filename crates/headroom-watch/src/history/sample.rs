//! What one series saw in one stretch of time, and the two readings the SLOs take of it: a
//! latency quantile and the count of requests fast enough.

/// Requests, 5xx answers and a latency histogram over some stretch of time.
///
/// `buckets` holds non-cumulative counts, one per latency bound plus a last one for `+Inf`
/// (so `buckets.len() == bounds.len() + 1`). The default is the empty sample (no buckets);
/// the history's queries always answer with `bounds.len() + 1` buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Requests answered.
    pub total: u64,
    /// Requests answered with a 5xx status.
    pub errors: u64,
    /// Latency histogram: requests per bucket, non-cumulative, the last bucket is `+Inf`.
    pub buckets: Vec<u64>,
}

impl Sample {
    /// An empty sample with `buckets` zeroed buckets. Cost: one allocation.
    pub fn empty(buckets: usize) -> Sample {
        Sample {
            total: 0,
            errors: 0,
            buckets: vec![0; buckets],
        }
    }

    /// Adds `other` into `self`, bucket by bucket (saturating; extra buckets of `other`
    /// beyond `self.buckets.len()` are ignored). Never panics.
    pub fn add(&mut self, other: &Sample) {
        self.total = self.total.saturating_add(other.total);
        self.errors = self.errors.saturating_add(other.errors);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// True when the sample counts nothing at all.
    pub fn is_empty(&self) -> bool {
        self.total == 0 && self.errors == 0 && self.buckets.iter().all(|&b| b == 0)
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of the latency histogram, in seconds, by linear
/// interpolation inside the bucket the rank falls in, as Prometheus' `histogram_quantile`
/// does: the first bucket starts at 0; a rank in the `+Inf` bucket answers the highest finite
/// bound.
///
/// `None` when the histogram is empty, when `q` is not within `[0, 1]` (or NaN), or when
/// `sample.buckets.len() != bounds.len() + 1`. Cost: one pass over the buckets, no
/// allocation. Never panics.
pub fn quantile(sample: &Sample, bounds: &[f64], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || bounds.is_empty() || sample.buckets.len() != bounds.len() + 1 {
        return None;
    }
    let observations: u64 = sample
        .buckets
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b));
    if observations == 0 {
        return None;
    }
    let rank = q * observations as f64;
    let mut below = 0u64; // cumulative count of the buckets before the current one
    for (i, &upper) in bounds.iter().enumerate() {
        let in_bucket = sample.buckets[i];
        let cumulative = below.saturating_add(in_bucket);
        if cumulative as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            if i == 0 && upper <= 0.0 {
                return Some(upper);
            }
            if in_bucket == 0 {
                return Some(lower);
            }
            let within = (rank - below as f64) / in_bucket as f64;
            return Some(lower + (upper - lower) * within);
        }
        below = cumulative;
    }
    // The rank is in the +Inf bucket: the highest finite bound is the best we know.
    bounds.last().copied()
}

/// Requests whose latency is known to be at most `threshold` seconds: the sum of the buckets
/// whose upper bound is `<= threshold`.
///
/// A threshold between two bounds counts only the buckets wholly under it (a threshold of
/// 0.3 s with bounds 0.25 and 0.5 counts the requests up to 0.25 s), so pick SLO thresholds
/// among the bounds. The `+Inf` bucket never counts. Cost: one pass over the bounds. Never
/// panics (a histogram shorter than the bounds counts what it has).
pub fn good_within(sample: &Sample, bounds: &[f64], threshold: f64) -> u64 {
    bounds
        .iter()
        .zip(&sample.buckets)
        .filter(|(&upper, _)| upper <= threshold)
        .fold(0u64, |sum, (_, &count)| sum.saturating_add(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.1, 0.5, 1.0];

    fn histogram(buckets: [u64; 4]) -> Sample {
        Sample {
            total: buckets.iter().sum(),
            errors: 0,
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn median_is_interpolated_inside_its_bucket() {
        // 10 requests: 2 under 0.1 s, 8 in (0.1, 0.5]. Rank 5 is 3/8 into the second bucket.
        let sample = histogram([2, 8, 0, 0]);
        let median = quantile(&sample, &BOUNDS, 0.5).unwrap();
        assert!((median - (0.1 + 0.4 * 3.0 / 8.0)).abs() < 1e-12, "{median}");
    }

    #[test]
    fn first_bucket_starts_at_zero() {
        let sample = histogram([4, 0, 0, 0]);
        let q = quantile(&sample, &BOUNDS, 0.25).unwrap();
        assert!((q - 0.025).abs() < 1e-12, "{q}");
    }

    #[test]
    fn rank_in_the_infinite_bucket_answers_the_highest_bound() {
        let sample = histogram([1, 0, 0, 9]);
        assert_eq!(quantile(&sample, &BOUNDS, 0.99), Some(1.0));
    }

    #[test]
    fn quantile_of_nothing_or_of_a_bad_q_is_none() {
        assert_eq!(quantile(&histogram([0, 0, 0, 0]), &BOUNDS, 0.5), None);
        assert_eq!(quantile(&histogram([1, 0, 0, 0]), &BOUNDS, 1.5), None);
        assert_eq!(quantile(&histogram([1, 0, 0, 0]), &BOUNDS, f64::NAN), None);
        let short = Sample {
            buckets: vec![1, 2],
            ..Sample::default()
        };
        assert_eq!(quantile(&short, &BOUNDS, 0.5), None);
    }

    #[test]
    fn good_within_counts_buckets_wholly_under_the_threshold() {
        let sample = histogram([2, 3, 5, 7]);
        assert_eq!(good_within(&sample, &BOUNDS, 0.5), 5);
        // 0.7 s is between 0.5 and 1.0: the (0.5, 1.0] bucket is not wholly under it.
        assert_eq!(good_within(&sample, &BOUNDS, 0.7), 5);
        assert_eq!(good_within(&sample, &BOUNDS, 1.0), 10);
        assert_eq!(good_within(&sample, &BOUNDS, 1e9), 10, "+Inf never counts");
        assert_eq!(good_within(&sample, &BOUNDS, 0.05), 0);
    }
}
