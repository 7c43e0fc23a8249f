//! `voting`: counts votes. gRPC `VotingService/Vote<Emoji>` (one method per emoji, like
//! Linkerd's emojivoto) and `Results`. Before counting a vote it looks the emoji up through
//! emoji's **old HTTP/1 endpoint** — the voting team never moved to gRPC — so votes for the
//! bottom half of the list fail with the 500 emoji answers, as a gRPC `INTERNAL` error.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tonic::{body::Body, Status};

use crate::{
    emoji::OLD_FIND_BY_SHORTCODE,
    emojis,
    proto::{self, ResultsRequest, ResultsResponse, VoteRequest, VoteResponse, VotingResult},
    serve::{self, Handler},
    Peer,
};

const EMOJI_TIMEOUT: Duration = Duration::from_secs(5);

/// The voting service: vote counts, and an HTTP/1 client for emoji.
#[derive(Clone)]
pub struct VotingApp {
    emoji: Peer,
    client: Client<HttpConnector, Empty<Bytes>>,
    counts: Arc<Mutex<HashMap<&'static str, u64>>>,
}

impl VotingApp {
    /// A voting service that looks emojis up on `emoji` (HTTP/1).
    pub fn new(emoji: Peer) -> Self {
        Self {
            emoji,
            client: Client::builder(TokioExecutor::new()).build_http(),
            counts: Arc::default(),
        }
    }

    /// Looks `shortcode` up on emoji's old endpoint; any answer but 200 fails the vote.
    async fn look_up(&self, shortcode: &str) -> Result<(), Status> {
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
