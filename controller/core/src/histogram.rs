//! Envoy's histograms as its admin API gives them: cumulative buckets, `(upper bound,
//! count at or below it)`, ascending. The arithmetic `modelsplit status` and the
//! rollouts both need: adding two histograms, the window between two readings, and
//! which bucket a quantile falls in.

/// A cumulative histogram: `(upper bound, count at or below it)`, ascending.
pub type Buckets = Vec<(f64, u64)>;

/// The bucket-wise sum of two histograms with the same bounds; an empty one adds nothing.
pub fn sum(a: &[(f64, u64)], b: &[(f64, u64)]) -> Buckets {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    a.iter()
        .zip(b)
        .map(|(&(bound, x), &(_, y))| (bound, x + y))
        .collect()
}

/// What was recorded between `earlier` and `now` (bucket-wise, never below 0).
pub fn since(now: &[(f64, u64)], earlier: &[(f64, u64)]) -> Buckets {
    now.iter()
        .enumerate()
        .map(|(i, &(bound, n))| (bound, n.saturating_sub(earlier.get(i).map_or(0, |b| b.1))))
        .collect()
}

/// How many values a histogram holds (below its last bound).
pub fn count(cumulative: &[(f64, u64)]) -> u64 {
    cumulative.last().map_or(0, |(_, n)| *n)
}

/// The upper bound of the bucket the `q` quantile falls in (None when empty).
pub fn quantile(cumulative: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    cumulative
        .iter()
        .find(|(_, n)| *n >= rank)
        .map(|(bound, _)| *bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let buckets = [(1.0, 0), (2.0, 90), (5.0, 99), (10.0, 100)];
        assert_eq!(quantile(&buckets, 0.5), Some(2.0));
        assert_eq!(quantile(&buckets, 0.99), Some(5.0));
        assert_eq!(quantile(&buckets, 1.0), Some(10.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[(1.0, 0), (2.0, 0)], 0.5), None);
    }

    #[test]
    fn sums_and_windows_go_bucket_by_bucket() {
        let a = [(1.0, 2), (5.0, 4)];
        let b = [(1.0, 1), (5.0, 10)];
        assert_eq!(sum(&a, &b), vec![(1.0, 3), (5.0, 14)]);
        assert_eq!(sum(&[], &b), b.to_vec());
        assert_eq!(sum(&a, &[]), a.to_vec());
        assert_eq!(since(&b, &a), vec![(1.0, 0), (5.0, 6)]);
        assert_eq!(since(&a, &[]), a.to_vec());
    }
}
