//! PromQL's arithmetic, so the embedded store and a real Prometheus agree on the same
//! samples: `rate()` with counter resets and extrapolation to the window's edges, and
//! `histogram_quantile()` with linear interpolation inside a bucket.

/// PromQL's `rate(counter[window])` over `points` (`(Unix ms, value)`, oldest first, all
/// inside the window `(end - window_ms, end]`): the per-second increase, `None` with
/// fewer than two points.
///
/// A value lower than the one before it is a counter reset (the proxy restarted): the
/// increase continues from zero, as Prometheus counts it. The sampled increase is then
/// extrapolated towards the window's edges (at most half an average scrape interval past
/// the first and last sample, and never below zero at the start), exactly as
/// Prometheus 2's `extrapolatedRate` does.
pub fn rate(points: &[(i64, f64)], end_ms: i64, window_ms: i64) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    if points.len() < 2 || window_ms <= 0 {
        return None;
    }
    let mut increase = last.1 - first.1;
    let mut previous = 0.0;
    for &(_, v) in points {
        if v < previous {
            increase += previous;
        }
        previous = v;
    }
    let start_ms = end_ms - window_ms;
    let mut to_start = (first.0 - start_ms) as f64 / 1000.0;
    let to_end = (end_ms - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    if sampled <= 0.0 {
        return None;
    }
    let average = sampled / (points.len() - 1) as f64;
    if increase > 0.0 && first.1 >= 0.0 {
        // The counter cannot have been below zero: don't extrapolate past where it was 0.
        to_start = to_start.min(sampled * (first.1 / increase));
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    Some(increase * (interval / sampled) / (window_ms as f64 / 1000.0))
}

/// PromQL's `histogram_quantile(q, ...)` over cumulative `(upper bound, count)` buckets,
/// which must include `+Inf`. `None` when there are no observations (PromQL's NaN).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    let mut buckets: Vec<(f64, f64)> = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return None;
    }
    // Coalesce equal bounds, then force counts to be monotonic (rates of separate
    // series can be slightly out of step).
    buckets.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 += later.1;
            true
        } else {
            false
        }
    });
    let mut max = f64::NEG_INFINITY;
    for b in &mut buckets {
        if b.1 < max {
            b.1 = max;
        } else {
            max = b.1;
        }
    }
    if buckets.len() < 2 {
        return None;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations <= 0.0 || observations.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut rank = q * observations;
    let last = buckets.len() - 1;
    let b = buckets[..last]
        .iter()
        .position(|b| b.1 >= rank)
        .unwrap_or(last);
    if b == last {
        return Some(buckets[last - 1].0);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    Some(start + (end - start) * (rank / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn rate_of_a_steady_counter_is_its_slope() {
        // 10/s, scraped every second, the window exactly covered.
        let points: Vec<(i64, f64)> = (0..=60)
            .map(|i| (i * 1000, 100.0 + 10.0 * i as f64))
            .collect();
        let r = rate(&points[1..], 60_000, 60_000).unwrap();
        assert!(close(r, 10.0), "{r}");
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // Two samples 10 s apart in a 35 s window: 10 s before the first is within
        // 1.1 × the average interval, so extrapolated fully; 15 s after the last is not,
        // so only half an interval is added: 20 × (25/10) / 35.
        let points = [(10_000, 100.0), (20_000, 120.0)];
        let r = rate(&points, 35_000, 35_000).unwrap();
        assert!(close(r, 20.0 * 2.5 / 35.0), "{r}");
        // A young counter is not extrapolated below zero: starts at 5, +10 over 10 s,
        // 10 s before the window's start bound: to_start = 10 × 5/10 = 5 s.
        let points = [(10_000, 5.0), (20_000, 15.0)];
        let r = rate(&points, 20_000, 20_000).unwrap();
        assert!(close(r, 10.0 * (15.0 / 10.0) / 20.0), "{r}");
    }

    #[test]
    fn a_counter_reset_continues_from_zero() {
        // 50 → 60, restart, 5 → 15: increase 10 + 5 + 10 = 25... PromQL adds the value
        // before the drop: (15 - 50) + 60 = 25.
        let points = [(0, 50.0), (1000, 60.0), (2000, 5.0), (3000, 15.0)];
        let r = rate(&points, 3000, 3000).unwrap();
        assert!(close(r, 25.0 / 3.0), "{r}");
        assert_eq!(rate(&points[..1], 3000, 3000), None);
        assert_eq!(rate(&[], 3000, 3000), None);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let buckets = [
            (10.0, 0.0),
            (20.0, 50.0),
            (30.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!(close(histogram_quantile(0.5, &buckets).unwrap(), 20.0));
        assert!(close(histogram_quantile(0.75, &buckets).unwrap(), 25.0));
        assert!(close(histogram_quantile(0.99, &buckets).unwrap(), 29.8));
        // Beyond the last finite bound: that bound.
        let tail = [(10.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.99, &tail), Some(10.0));
        // No observations, or no +Inf bucket: no answer (PromQL's NaN).
        assert_eq!(
            histogram_quantile(0.5, &[(10.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.5, &[(10.0, 5.0)]), None);
        // Non-monotonic counts are flattened, duplicate bounds summed.
        let odd = [(10.0, 5.0), (20.0, 4.0), (20.0, 1.0), (f64::INFINITY, 10.0)];
        assert!(histogram_quantile(0.5, &odd).unwrap() <= 20.0);
    }
}
