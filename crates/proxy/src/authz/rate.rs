//! Linkerd's `HttpLocalRateLimit` for an inbound server: a total rate for all its
//! requests, a rate per client identity, and overrides of that rate for named identities.
//! Per proxy instance; each rate is a token bucket holding one second of requests.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use linkerd2_proxy_api::inbound::HttpLocalRateLimit;
use tokio::time::Instant;

use crate::policy::ObjectLabels;

/// Per-identity buckets kept at most; past it the oldest are forgotten (their clients
/// start again with a full bucket).
const MAX_IDENTITIES: usize = 10_000;

/// A compiled local rate limit.
pub struct RateLimit {
    /// The `HTTPLocalRateLimitPolicy`, for logs.
    pub labels: ObjectLabels,
    identity: Option<u32>,
    overrides: HashMap<Arc<str>, u32>,
    /// The buckets, under one lock: a request takes from its client's and the total's at once.
    buckets: Mutex<Buckets>,
}

struct Buckets {
    total: Option<Bucket>,
    /// Buckets of client identities (per-identity rate or an override).
    clients: HashMap<Arc<str>, Bucket>,
}

/// A token bucket of `rate` tokens a second, holding at most `rate`.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: now,
        }
    }

    /// Refills for the time since the last look; whether a token is there.
    fn refill(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        self.tokens >= 1.0
    }
}

impl RateLimit {
    /// Compiles the message; `None` when it limits nothing.
    pub fn new(rl: &HttpLocalRateLimit) -> Option<Self> {
        let rate = |l: &Option<linkerd2_proxy_api::inbound::http_local_rate_limit::Limit>| {
            l.as_ref().map(|l| l.requests_per_second)
        };
        let overrides: HashMap<Arc<str>, u32> = rl
            .overrides
            .iter()
            .filter_map(|o| Some((o.clients.as_ref()?, rate(&o.limit)?)))
            .flat_map(|(clients, rps)| {
                clients
                    .identities
                    .iter()
                    .map(move |i| (Arc::from(i.name.as_str()), rps))
            })
            .collect();
        let total = rate(&rl.total);
        let identity = rate(&rl.identity);
        if total.is_none() && identity.is_none() && overrides.is_empty() {
            return None;
        }
        Some(Self {
            labels: ObjectLabels::from_meta(rl.metadata.as_ref()),
            identity,
            overrides,
            buckets: Mutex::new(Buckets {
                total: total.map(|r| Bucket::new(r, Instant::now())),
                clients: HashMap::new(),
            }),
        })
    }

    /// Whether a request from `client` (its mTLS identity; `None` for plaintext, which
    /// only the total limits) may go now; if so its tokens are taken.
    pub fn check(&self, client: Option<&str>) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Buckets { total, clients } = &mut *b;
        let rate = client.and_then(|id| self.overrides.get(id).copied().or(self.identity));
        let own = match (client, rate) {
            (Some(id), Some(rate)) => {
                if !clients.contains_key(id) && clients.len() >= MAX_IDENTITIES {
                    clients.clear();
                }
                let bucket = clients
                    .entry(Arc::from(id))
                    .or_insert_with(|| Bucket::new(rate, now));
                if !bucket.refill(now) {
                    return false;
                }
                Some(bucket)
            }
            _ => None,
        };
        if let Some(total) = total {
            if !total.refill(now) {
                return false;
            }
            total.tokens -= 1.0;
        }
        if let Some(own) = own {
            own.tokens -= 1.0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::inbound::{self as pb, http_local_rate_limit as l};
    use std::time::Duration;

    fn limit(rps: u32) -> Option<l::Limit> {
        Some(l::Limit {
            requests_per_second: rps,
        })
    }

    fn admitted(rl: &RateLimit, client: Option<&str>, n: usize) -> usize {
        (0..n).filter(|_| rl.check(client)).count()
    }

    #[tokio::test(start_paused = true)]
    async fn total_identity_and_overrides_refill_over_time() {
        let rl = RateLimit::new(&pb::HttpLocalRateLimit {
            total: limit(10),
            identity: limit(3),
            overrides: vec![l::Override {
                limit: limit(5),
                clients: Some(l::r#override::ClientIdentities {
                    identities: vec![pb::Identity { name: "vip".into() }],
                }),
            }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(admitted(&rl, Some("a"), 10), 3, "per identity");
        assert_eq!(admitted(&rl, Some("vip"), 10), 5, "the override");
        assert_eq!(
            admitted(&rl, None, 10),
            2,
            "plaintext: what the total has left"
        );
        assert_eq!(admitted(&rl, Some("b"), 10), 0, "the total is spent");

        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(admitted(&rl, None, 10), 5, "half a second refills half");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            admitted(&rl, None, 100),
            10,
            "never more than a second's worth"
        );

        // A limited client does not spend the total.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(admitted(&rl, Some("c"), 50), 3);
        assert_eq!(admitted(&rl, None, 50), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_client_gets_the_rate() {
        let rl = RateLimit::new(&pb::HttpLocalRateLimit {
            total: limit(20),
            ..Default::default()
        })
        .unwrap();
        let mut ok = 0;
        // 100 requests a second for 5 s: 20 a second plus the first second's burst.
        for _ in 0..500 {
            ok += usize::from(rl.check(Some("a")));
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!((100..=121).contains(&ok), "{ok}");
        assert!(RateLimit::new(&pb::HttpLocalRateLimit::default()).is_none());
    }
}
