//! `voting`: counts votes. gRPC `VotingService/Vote<Emoji>` (one method per emoji, like
//! Linkerd's emojivoto) and `Results`. Before counting a vote it looks the emoji up on emoji,
//! and how it does so is what tells its three versions apart ([`Version`]):
//!
//! - **v1** looks it up through emoji's **old HTTP/1 endpoint** — the voting team never moved
//!   to gRPC — so votes for the bottom half of the list fail with the 500 emoji answers, as a
//!   gRPC `INTERNAL` error.
//! - **v2** fixes it: it calls emoji's gRPC `FindByShortcode`, as web does.
//! - **v3** is v2 made worse: every vote takes [`V3_DELAY`] longer, and every
//!   [`V3_FAIL_EVERY`]th vote fails (`INTERNAL`), the regression a rollout must catch.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tonic::{body::Body, transport::Channel, Status};

use crate::{
    emoji::OLD_FIND_BY_SHORTCODE,
    emojis,
    proto::{
        self, FindByShortcodeRequest, FindByShortcodeResponse, ResultsRequest, ResultsResponse,
        VoteRequest, VoteResponse, VotingResult,
    },
    serve::{self, Handler},
    Peer,
};

const EMOJI_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer v3 takes over each vote.
pub const V3_DELAY: Duration = Duration::from_millis(300);
/// v3 fails one vote in this many.
pub const V3_FAIL_EVERY: u64 = 4;

/// Which voting the process is: `--version 1|2|3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    /// Looks emojis up on emoji's old HTTP/1 endpoint: the bottom half fails.
    #[value(name = "1")]
    V1,
    /// Looks them up over gRPC: every vote counts.
    #[value(name = "2")]
    V2,
    /// v2, slower, and failing one vote in [`V3_FAIL_EVERY`].
    #[value(name = "3")]
    V3,
}

/// The voting service: vote counts, and its client for emoji.
#[derive(Clone)]
pub struct VotingApp {
    emoji: Peer,
    version: Version,
    client: Client<HttpConnector, Empty<Bytes>>,
    grpc: Channel,
    votes: Arc<AtomicU64>,
    counts: Arc<Mutex<HashMap<&'static str, u64>>>,
}

impl VotingApp {
    /// Voting v1, which looks emojis up on `emoji`'s old HTTP/1 endpoint.
    pub fn new(emoji: Peer) -> Self {
        Self::version(emoji, Version::V1)
    }

    /// Voting `version`, which looks emojis up on `emoji`.
    pub fn version(emoji: Peer, version: Version) -> Self {
        Self {
            grpc: proto::channel(&emoji),
            emoji,
            version,
            client: Client::builder(TokioExecutor::new()).build_http(),
            votes: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// Looks `shortcode` up the way this version does.
    async fn look_up(&self, shortcode: &str) -> Result<(), Status> {
        match self.version {
            Version::V1 => self.look_up_old(shortcode).await,
            Version::V2 => self.look_up_grpc(shortcode).await,
            Version::V3 => {
                tokio::time::sleep(V3_DELAY).await;
                let n = self.votes.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(V3_FAIL_EVERY) {
                    return Err(Status::internal(format!(
                        "voting v3 lost vote {n} for {shortcode}: the new vote store dropped it"
                    )));
                }
                self.look_up_grpc(shortcode).await
            }
        }
    }

    /// Looks `shortcode` up with emoji's gRPC `FindByShortcode`.
    async fn look_up_grpc(&self, shortcode: &str) -> Result<(), Status> {
        let request = FindByShortcodeRequest {
            shortcode: shortcode.to_string(),
        };
        let call = proto::call(&self.grpc, proto::FIND_BY_SHORTCODE, request);
        match tokio::time::timeout(EMOJI_TIMEOUT, call).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "emoji did not answer FindByShortcode within {EMOJI_TIMEOUT:?}"
            ))),
            Ok(Err(status)) => Err(Status::new(
                status.code(),
                format!("emoji FindByShortcode {shortcode}: {}", status.message()),
            )),
            Ok(Ok(FindByShortcodeResponse { emoji: Some(_) })) => Ok(()),
            Ok(Ok(FindByShortcodeResponse { emoji: None })) => {
                Err(Status::not_found(format!("emoji knows no {shortcode}")))
            }
        }
    }

    /// Looks `shortcode` up on emoji's old endpoint; any answer but 200 fails the vote.
    async fn look_up_old(&self, shortcode: &str) -> Result<(), Status> {
        let uri = format!(
            "http://{}{OLD_FIND_BY_SHORTCODE}?shortcode={}",
            self.emoji.addr,
            serve::percent_encode(shortcode)
        );
        let uri: http::Uri = uri
            .parse()
            .map_err(|e| Status::internal(format!("building {uri}: {e}")))?;
        let call = async {
            let mut request =
                http::Request::get(uri.clone()).header(http::header::HOST, &self.emoji.authority);
            for (name, value) in crate::serve::context() {
                request = request.header(name, value);
            }
            let request = request.body(Empty::new())?;
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        match tokio::time::timeout(EMOJI_TIMEOUT, call).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "emoji did not answer GET {uri} within {EMOJI_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => Err(Status::unavailable(format!("calling emoji GET {uri}: {e}"))),
            Ok(Ok((status, _))) if status.is_success() => Ok(()),
            Ok(Ok((status, body))) => Err(Status::internal(format!(
                "emoji answered {status} to GET {} ({})",
                uri.path_and_query().map_or("", |p| p.as_str()),
                String::from_utf8_lossy(&body).trim()
            ))),
        }
    }

    async fn vote(&self, method: &str) -> Result<VoteResponse, Status> {
        let Some(emoji) = emojis::by_vote_method(method) else {
            return Err(Status::unimplemented(format!("no method {method}")));
        };
        if let Err(status) = self.look_up(emoji.shortcode).await {
            tracing::debug!(shortcode = emoji.shortcode, %status, "vote failed");
            return Err(status);
        }
        *self
            .counts
            .lock()
            .expect("the vote counts lock is never poisoned")
            .entry(emoji.shortcode)
            .or_default() += 1;
        Ok(VoteResponse {})
    }

    fn results(&self) -> ResultsResponse {
        let counts = self
            .counts
            .lock()
            .expect("the vote counts lock is never poisoned");
        let mut results: Vec<VotingResult> = counts
            .iter()
            .map(|(shortcode, votes)| VotingResult {
                shortcode: shortcode.to_string(),
                votes: *votes,
            })
            .collect();
        results.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.shortcode.cmp(&b.shortcode)));
        ResultsResponse { results }
    }
}

impl Handler for VotingApp {
    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        let path = req.uri().path().to_string();
        if path == proto::RESULTS {
            let app = self.clone();
            return proto::serve_unary(
                req,
                move |_: ResultsRequest| async move { Ok(app.results()) },
            )
            .await;
        }
        match path.strip_prefix(proto::VOTING_SERVICE) {
            Some(method) if method.starts_with("Vote") => {
                let app = self.clone();
                let method = method.to_string();
                proto::serve_unary(
                    req,
                    move |_: VoteRequest| async move { app.vote(&method).await },
                )
                .await
            }
            _ => proto::unimplemented(&path),
        }
    }
}
