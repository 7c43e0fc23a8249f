//! The demo's gRPC contract: protobuf messages written by hand with `prost`'s derive (so the
//! build needs no `protoc`), the method paths, and the small amount of tonic plumbing that
//! generated code would otherwise provide — a unary client call and a unary server handler.
//!
//! ```proto
//! package emojivoto.v1;
//! service EmojiService  { rpc ListAll(ListAllRequest) returns (ListAllResponse);
//!                         rpc FindByShortcode(FindByShortcodeRequest) returns (FindByShortcodeResponse); }
//! service VotingService { rpc VoteJoy(VoteRequest) returns (VoteResponse); /* one per emoji */
//!                         rpc Results(ResultsRequest) returns (ResultsResponse); }
//! ```

use std::future::Future;

use http::uri::PathAndQuery;
use tonic::{body::Body, transport::Channel, Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::Peer;

/// `/emojivoto.v1.EmojiService/ListAll`.
pub const LIST_ALL: &str = "/emojivoto.v1.EmojiService/ListAll";
/// `/emojivoto.v1.EmojiService/FindByShortcode`.
pub const FIND_BY_SHORTCODE: &str = "/emojivoto.v1.EmojiService/FindByShortcode";
/// The voting service's path prefix; a vote method is `Vote<Name>` after it.
pub const VOTING_SERVICE: &str = "/emojivoto.v1.VotingService/";
/// `/emojivoto.v1.VotingService/Results`.
pub const RESULTS: &str = "/emojivoto.v1.VotingService/Results";

/// An emoji on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Emoji {
    /// The character.
    #[prost(string, tag = "1")]
    pub unicode: String,
    /// The shortcode, colons included.
    #[prost(string, tag = "2")]
    pub shortcode: String,
}

/// `ListAll` takes nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListAllRequest {}

/// Every emoji, in page order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListAllResponse {
    /// The emojis.
    #[prost(message, repeated, tag = "1")]
    pub list: Vec<Emoji>,
}

/// `FindByShortcode`'s question.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FindByShortcodeRequest {
    /// The shortcode, colons included.
    #[prost(string, tag = "1")]
    pub shortcode: String,
}

/// `FindByShortcode`'s answer; `emoji` is empty when there is none.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FindByShortcodeResponse {
    /// The emoji found.
    #[prost(message, optional, tag = "1")]
    pub emoji: Option<Emoji>,
}

/// A vote: the method says for which emoji.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VoteRequest {}

/// A vote was counted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VoteResponse {}

/// `Results` takes nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResultsRequest {}

/// One line of the leaderboard.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VotingResult {
    /// The emoji's shortcode.
    #[prost(string, tag = "1")]
    pub shortcode: String,
    /// Votes counted for it.
    #[prost(uint64, tag = "2")]
    pub votes: u64,
}

/// The leaderboard, most votes first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResultsResponse {
    /// Its lines.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<VotingResult>,
}

/// A lazily connecting h2c channel to `peer`; the first call connects.
pub fn channel(peer: &Peer) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{}", peer.addr))
        .expect("http://HOST:PORT (ferry_demo::parse_addr) is a valid URI");
    let endpoint = match format!("http://{}", peer.authority).parse() {
        Ok(origin) => endpoint.origin(origin),
        Err(_) => endpoint,
    };
    endpoint.connect_lazy()
}

/// Calls the unary method at `path` on `channel`.
pub async fn call<Req, Resp>(channel: &Channel, path: &str, message: Req) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let path = PathAndQuery::try_from(path)
        .map_err(|_| Status::internal(format!("invalid method path {path}")))?;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connecting: {e}")))?;
    let codec: ProstCodec<Req, Resp> = ProstCodec::default();
    let mut request = Request::new(message);
    for (name, value) in crate::serve::context() {
        if let Ok(value) = value.parse() {
            request
                .metadata_mut()
                .insert(tonic::metadata::MetadataKey::from_static(name), value);
        }
    }
    Ok(grpc.unary(request, path, codec).await?.into_inner())
}

/// Answers one unary gRPC request with `handler`, decoding and encoding the messages.
pub async fn serve_unary<Req, Resp, F, Fut>(
    req: http::Request<hyper::body::Incoming>,
    handler: F,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    let codec: ProstCodec<Resp, Req> = ProstCodec::default();
    let service = tower::service_fn(move |r: Request<Req>| {
        let handler = handler.clone();
        async move { handler(r.into_inner()).await.map(Response::new) }
    });
    tonic::server::Grpc::new(codec).unary(service, req).await
}

/// The gRPC answer for a path no service here has (`UNIMPLEMENTED`).
pub fn unimplemented(path: &str) -> http::Response<Body> {
    Status::unimplemented(format!("no method {path}")).into_http()
}

/// Whether a request is gRPC (by its content type).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
