//! `emoji`: the emoji catalogue. gRPC `EmojiService/ListAll` and `/FindByShortcode`, and the
//! old HTTP/1 endpoint of the same name (`GET /api/FindByShortcode?shortcode=:bacon:`), which
//! the emoji team retired for the bottom half of the list: there it answers 500.

use hyper::body::Incoming;
use serde_json::json;
use tonic::{body::Body, Status};

use crate::{
    emojis::{self, EmojiInfo},
    proto::{
        self, FindByShortcodeRequest, FindByShortcodeResponse, ListAllRequest, ListAllResponse,
    },
    serve::{self, Handler},
};

/// The old HTTP/1 endpoint's path.
pub const OLD_FIND_BY_SHORTCODE: &str = "/api/FindByShortcode";

/// The emoji service; it keeps no state.
#[derive(Clone, Debug, Default)]
pub struct EmojiApp;

fn wire(e: &EmojiInfo) -> proto::Emoji {
    proto::Emoji {
        unicode: e.unicode.to_string(),
        shortcode: e.shortcode.to_string(),
    }
}

impl Handler for EmojiApp {
    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        let path = req.uri().path().to_string();
        match path.as_str() {
            proto::LIST_ALL => {
                proto::serve_unary(req, |_: ListAllRequest| async {
                    Ok(ListAllResponse {
                        list: emojis::ALL.iter().map(wire).collect(),
                    })
                })
                .await
            }
            proto::FIND_BY_SHORTCODE => {
                proto::serve_unary(req, |r: FindByShortcodeRequest| async move {
                    match emojis::find(&r.shortcode) {
                        Some((_, e)) => Ok(FindByShortcodeResponse {
                            emoji: Some(wire(e)),
                        }),
                        None => Err(Status::not_found(format!("no emoji {}", r.shortcode))),
                    }
                })
                .await
            }
            OLD_FIND_BY_SHORTCODE if req.method() == http::Method::GET => old_find(req.uri()),
            _ if proto::is_grpc(&req) => proto::unimplemented(&path),
            _ => serve::json(
                http::StatusCode::NOT_FOUND,
                &json!({ "error": format!("no route {path}") }),
            ),
        }
    }
}

/// `GET /api/FindByShortcode?shortcode=…`: still served for the top half of the list.
fn old_find(uri: &http::Uri) -> http::Response<Body> {
    let Some(shortcode) = serve::query_param(uri, "shortcode") else {
        return serve::json(
            http::StatusCode::BAD_REQUEST,
            &json!({ "error": "missing query parameter shortcode" }),
        );
    };
    match emojis::find(&shortcode) {
        None => serve::json(
            http::StatusCode::NOT_FOUND,
            &json!({ "error": format!("no emoji {shortcode}") }),
        ),
        Some(_) if !emojis::old_endpoint_serves(&shortcode) => {
            tracing::debug!(%shortcode, "old endpoint retired for this emoji");
            serve::json(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "error": format!(
                    "GET {OLD_FIND_BY_SHORTCODE} is retired for {shortcode}; \
                     call emojivoto.v1.EmojiService/FindByShortcode over gRPC"
                ) }),
            )
        }
        Some((_, e)) => serve::json(
            http::StatusCode::OK,
            &json!({ "shortcode": e.shortcode, "unicode": e.unicode }),
        ),
    }
}
