//! `vote-bot`: steady traffic. Votes at a fixed rate through web's JSON API, each vote for an
//! emoji picked at random from the whole list, so every emoji — top and bottom half — gets
//! its share. Given voting's address too, it also reads the results straight from voting
//! once a second (gRPC `Results`), bypassing web: the call an authorization policy that
//! locks voting to web refuses.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;

use crate::{
    emojis,
    proto::{self, ResultsRequest, ResultsResponse},
    serve::percent_encode,
    Peer,
};

/// Votes in flight at most; past it the bot skips a tick rather than pile up.
const MAX_IN_FLIGHT: usize = 32;
const VOTE_TIMEOUT: Duration = Duration::from_secs(10);
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often the bot reads voting's results directly.
const RESULTS_EVERY: Duration = Duration::from_secs(1);

/// The bot's settings.
#[derive(Clone, Debug)]
pub struct BotConfig {
    /// web (in the demo: the bot's proxy's upstream listener for web-svc).
    pub web: Peer,
    /// Votes per second.
    pub rate: f64,
    /// voting, read directly once a second when set.
    pub voting: Option<Peer>,
}

/// Votes counted by outcome.
#[derive(Debug, Default)]
pub struct Tally {
    /// Votes web answered 2xx.
    pub ok: AtomicU64,
    /// Votes web answered otherwise, or that failed to reach it.
    pub failed: AtomicU64,
    /// Direct reads of voting's results that succeeded.
    pub results_ok: AtomicU64,
    /// Direct reads of voting's results that failed (refused by policy, say).
    pub results_failed: AtomicU64,
}

/// Votes until `shutdown` completes, then waits for the votes in flight; returns the tally.
pub async fn run(config: BotConfig, shutdown: impl Future<Output = ()>) -> Arc<Tally> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let tally = Arc::new(Tally::default());
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let period = Duration::from_secs_f64(1.0 / config.rate.max(0.01));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.tick().await;
    let voting = config.voting.as_ref().map(proto::channel);
    let mut results = tokio::time::interval(RESULTS_EVERY);
    results.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(web = %config.web.addr, rate = config.rate, "voting");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = report.tick() => tracing::info!(
                ok = tally.ok.load(Ordering::Relaxed),
                failed = tally.failed.load(Ordering::Relaxed),
                results_ok = tally.results_ok.load(Ordering::Relaxed),
                results_failed = tally.results_failed.load(Ordering::Relaxed),
                "votes so far"
            ),
            _ = results.tick(), if voting.is_some() => {
                let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                let (channel, tally) = (voting.clone().expect("voting is set"), tally.clone());
                tokio::spawn(async move {
                    let call = proto::call::<_, ResultsResponse>(&channel, proto::RESULTS, ResultsRequest {});
                    let counter = match tokio::time::timeout(VOTE_TIMEOUT, call).await {
                        Ok(Ok(_)) => &tally.results_ok,
                        Ok(Err(status)) => {
                            tracing::debug!(%status, "voting refused the bot's direct read of the results");
                            &tally.results_failed
                        }
                        Err(_) => &tally.results_failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            _ = ticks.tick() => {
                let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                let choice = emojis::ALL[fastrand::usize(..emojis::ALL.len())].shortcode;
                let (client, tally, web) = (client.clone(), tally.clone(), config.web.clone());
                tokio::spawn(async move {
                    let ok = vote(&client, &web, choice).await;
                    let counter = if ok { &tally.ok } else { &tally.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        }
    }
    // Let the votes in flight land (bounded), so the tally is final.
    let _ = tokio::time::timeout(VOTE_TIMEOUT, permits.acquire_many(MAX_IN_FLIGHT as u32)).await;
    tally
}

/// Casts one vote; true when web answered 2xx.
async fn vote(client: &Client<HttpConnector, Empty<Bytes>>, web: &Peer, choice: &str) -> bool {
    let uri = format!(
        "http://{}/api/vote?choice={}",
        web.addr,
        percent_encode(choice)
    );
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return false;
    };
    let request = http::Request::post(uri)
        .header(http::header::HOST, &web.authority)
        .body(Empty::new())
        .expect("a POST with a parsed URI is a valid request");
    let call = async {
        let response = client.request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
    };
    match tokio::time::timeout(VOTE_TIMEOUT, call).await {
        Ok(Ok(status)) => {
            tracing::debug!(choice, %status, "voted");
            status.is_success()
        }
        Ok(Err(error)) => {
            tracing::debug!(choice, %error, "vote did not reach web");
            false
        }
        Err(_) => {
            tracing::debug!(choice, "vote timed out");
            false
        }
    }
}
