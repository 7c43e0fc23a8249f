//! Judging a step on the mesh's own metrics: what callers saw of the canary Service and of
//! the stable one (outbound `response_total` and `response_latency_ms` by `dst_service`),
//! over the same window, from whichever [`MetricsBackend`] the control plane uses.

use std::time::{Duration, SystemTime};

use ferry_api::metrics as names;
use ferry_api::rollout::{AnalysisRecord, Figures, Verdict};

use super::spec::Thresholds;
use crate::metrics::{unix_ms, Matcher, MetricsBackend, MetricsError, Query};
use crate::stat::select::dst_labels;

/// The golden metrics of `service` in `namespace` as its callers saw them over `window`
/// ending at `at`.
pub async fn measure<B: MetricsBackend>(
    backend: &B,
    namespace: &str,
    service: &str,
    window: Duration,
    at: SystemTime,
) -> Result<Figures, MetricsError> {
    let keys = dst_labels("service");
    let matchers = vec![
        Matcher::eq(names::LABEL_DIRECTION, "outbound"),
        Matcher::eq(&keys[0], namespace),
        Matcher::eq(&keys[1], service),
    ];
    let responses = Query::Rate {
        metric: names::RESPONSE_TOTAL,
        matchers: matchers.clone(),
        by: vec![names::LABEL_CLASSIFICATION.into()],
    };
    let p99 = Query::Quantile {
        q: 0.99,
        metric: names::RESPONSE_LATENCY_MS,
        matchers,
        by: Vec::new(),
    };
    let (mut success, mut total) = (0.0, 0.0);
    for (labels, rate) in backend.query(&responses, window, at).await? {
        total += rate;
        if labels.get(names::LABEL_CLASSIFICATION).map(String::as_str) == Some("success") {
            success += rate;
        }
    }
    let requests = total * window.as_secs_f64();
    let p99_ms = backend
        .query(&p99, window, at)
        .await?
        .first()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite());
    Ok(Figures {
        requests: (requests * 10.0).round() / 10.0,
        success: (total > 0.0).then(|| 100.0 * success / total),
        p99_ms: if total > 0.0 { p99_ms } else { None },
    })
}

/// Judges canary against stable: too few canary requests is no verdict; otherwise every
/// threshold must hold (a stable-relative one is skipped while stable has no traffic).
pub fn judge(
    t: &Thresholds,
    step: usize,
    at: SystemTime,
    canary: Figures,
    stable: Figures,
) -> AnalysisRecord {
    let mut failed = Vec::new();
    let (verdict, reason) = if canary.requests < t.min_requests as f64 {
        (
            Verdict::Inconclusive,
            format!(
                "{} canary requests in the window, fewer than the {} needed to judge",
                canary.requests, t.min_requests
            ),
        )
    } else {
        if let (Some(min), Some(sr)) = (t.success_min, canary.success) {
            if sr < min {
                failed.push(format!("canary success rate {sr:.2}% is below {min}%"));
            }
        }
        if let (Some(drop), Some(sr), Some(base)) =
            (t.success_max_drop, canary.success, stable.success)
        {
            if base - sr > drop {
                failed.push(format!(
                    "canary success rate {sr:.2}% is {:.2} points below stable's {base:.2}% (at most {drop})",
                    base - sr
                ));
            }
        }
        if let (Some(max), Some(p99)) = (t.p99_max_ms, canary.p99_ms) {
            if p99 > max {
                failed.push(format!("canary p99 {p99:.0}ms is above {max}ms"));
            }
        }
        if let (Some(ratio), Some(p99), Some(base)) =
            (t.p99_max_ratio, canary.p99_ms, stable.p99_ms)
        {
            if base > 0.0 && p99 > base * ratio {
                failed.push(format!(
                    "canary p99 {p99:.0}ms is {:.2}x stable's {base:.0}ms (at most {ratio}x)",
                    p99 / base
                ));
            }
        }
        if failed.is_empty() {
            (Verdict::Passed, String::new())
        } else {
            (Verdict::Failed, failed.join("; "))
        }
    };
    AnalysisRecord {
        at_ms: unix_ms(at),
        step,
        window_seconds: t.interval.as_secs_f64(),
        canary,
        stable,
        verdict,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            interval: Duration::from_secs(10),
            min_requests: 20,
            failure_limit: 1,
            success_min: Some(95.0),
            success_max_drop: Some(2.0),
            p99_max_ms: Some(500.0),
            p99_max_ratio: Some(2.0),
        }
    }

    fn figures(requests: f64, success: f64, p99: f64) -> Figures {
        Figures {
            requests,
            success: Some(success),
            p99_ms: Some(p99),
        }
    }

    #[test]
    fn too_few_requests_is_no_verdict_however_bad() {
        let r = judge(
            &thresholds(),
            0,
            SystemTime::UNIX_EPOCH,
            figures(19.0, 0.0, 9000.0),
            figures(100.0, 100.0, 5.0),
        );
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.reason.contains("19 canary requests"), "{}", r.reason);
    }

    #[test]
    fn each_threshold_fails_on_its_own() {
        let t = thresholds();
        let stable = figures(100.0, 100.0, 100.0);
        let at = SystemTime::UNIX_EPOCH;
        assert_eq!(
            judge(&t, 0, at, figures(20.0, 99.0, 150.0), stable.clone()).verdict,
            Verdict::Passed
        );
        let floor = judge(
            &t,
            0,
            at,
            figures(20.0, 90.0, 100.0),
            figures(100.0, 90.0, 100.0),
        );
        assert_eq!(floor.verdict, Verdict::Failed);
        assert_eq!(floor.reason, "canary success rate 90.00% is below 95%");
        let drop = judge(&t, 0, at, figures(20.0, 97.0, 100.0), stable.clone());
        assert_eq!(
            drop.reason,
            "canary success rate 97.00% is 3.00 points below stable's 100.00% (at most 2)"
        );
        let ceiling = judge(
            &t,
            0,
            at,
            figures(20.0, 100.0, 600.0),
            figures(100.0, 100.0, 400.0),
        );
        assert_eq!(ceiling.reason, "canary p99 600ms is above 500ms");
        let ratio = judge(&t, 0, at, figures(20.0, 100.0, 250.0), stable);
        assert_eq!(
            ratio.reason,
            "canary p99 250ms is 2.50x stable's 100ms (at most 2x)"
        );
    }

    #[test]
    fn stable_without_traffic_skips_the_relative_thresholds() {
        let r = judge(
            &thresholds(),
            0,
            SystemTime::UNIX_EPOCH,
            figures(20.0, 96.0, 300.0),
            Figures::default(),
        );
        assert_eq!(r.verdict, Verdict::Passed, "{}", r.reason);
    }
}
