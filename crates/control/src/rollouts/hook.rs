//! The optional webhook: the rollout's state `POST`ed as JSON at every transition, in the
//! background (a slow or dead hook never holds a rollout up), within a deadline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_api::rollout::RolloutView;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

/// How long one call may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Calls in flight at most; more are dropped (and logged).
const MAX_IN_FLIGHT: usize = 16;

/// Sends webhook calls.
#[derive(Clone)]
pub struct Hooks {
    client: Client<HttpConnector, Full<Bytes>>,
    in_flight: Arc<Semaphore>,
}

impl Default for Hooks {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(crate::fetch::CONNECT_TIMEOUT));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

/// How long a confirm step's webhook may take to answer.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

impl Hooks {
    /// `POST`s `view` to a confirm step's `url`: whether it answered 200 within
    /// [`CONFIRM_TIMEOUT`].
    pub async fn confirm(&self, url: &str, view: &RolloutView) -> bool {
        let Ok(body) = serde_json::to_vec(view) else {
            return false;
        };
        let Ok(request) = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
        else {
            return false;
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(rsp)) => rsp.status() == http::StatusCode::OK,
            Ok(Err(e)) => {
                tracing::debug!(%url, error = %ferry_api::cause::innermost_cause(&e), "a confirm webhook failed");
                false
            }
            Err(_) => false,
        }
    }

    /// `POST`s `view` to `url` in the background.
    pub fn send(&self, url: &str, view: RolloutView) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(%url, "too many rollout webhook calls in flight; not calling");
            return;
        };
        let body = match serde_json::to_vec(&view) {
            Ok(body) => body,
            Err(_) => return,
        };
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else {
            tracing::warn!(%url, "the rollout webhook's URL is not valid");
            return;
        };
        let client = self.client.clone();
        let url = url.to_string();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                Ok(Ok(rsp)) if rsp.status().is_success() => {}
                Ok(Ok(rsp)) => {
                    tracing::warn!(%url, status = %rsp.status(), "the rollout webhook refused a call")
                }
                Ok(Err(e)) => {
                    tracing::warn!(%url, error = %ferry_api::cause::innermost_cause(&e), "the rollout webhook failed")
                }
                Err(_) => {
                    tracing::warn!(%url, ?TIMEOUT, "the rollout webhook did not answer in time")
                }
            }
        });
    }
}
