//! `web`: the front end. An HTML page (the emojis with vote buttons, and the leaderboard) and
//! a JSON API over HTTP/1 — `/api/list`, `/api/vote?choice=:bacon:`, `/api/leaderboard` —
//! backed by emoji (gRPC `ListAll`, `FindByShortcode`) and voting (gRPC `Vote<Emoji>`,
//! `Results`). A failed vote is answered 500, carrying voting's error.

use std::fmt::Write as _;

use hyper::body::Incoming;
use serde_json::json;
use tonic::{body::Body, transport::Channel, Code, Status};

use crate::{
    emojis,
    proto::{
        self, Emoji, FindByShortcodeRequest, FindByShortcodeResponse, ListAllRequest,
        ListAllResponse, ResultsRequest, ResultsResponse, VoteRequest, VoteResponse,
    },
    serve::{self, Handler},
    Peer,
};

/// The front end, with gRPC channels to emoji and voting.
#[derive(Clone)]
pub struct WebApp {
    emoji: Channel,
    voting: Channel,
}

impl WebApp {
    /// A front end calling emoji and voting (gRPC, h2c).
    pub fn new(emoji: &Peer, voting: &Peer) -> Self {
        Self {
            emoji: proto::channel(emoji),
            voting: proto::channel(voting),
        }
    }

    async fn list(&self) -> Result<Vec<Emoji>, Status> {
        let r: ListAllResponse =
            proto::call(&self.emoji, proto::LIST_ALL, ListAllRequest {}).await?;
        Ok(r.list)
    }

    /// Checks the choice with emoji (gRPC), then votes through the emoji's own method.
    async fn vote(&self, choice: &str) -> Result<Emoji, Status> {
        let found: FindByShortcodeResponse = proto::call(
            &self.emoji,
            proto::FIND_BY_SHORTCODE,
            FindByShortcodeRequest {
                shortcode: choice.to_string(),
            },
        )
        .await?;
        let emoji = found
            .emoji
            .ok_or_else(|| Status::not_found(format!("no emoji {choice}")))?;
        let path = format!(
            "{}{}",
            proto::VOTING_SERVICE,
            emojis::vote_method(&emoji.shortcode)
        );
        let _: VoteResponse = proto::call(&self.voting, &path, VoteRequest {}).await?;
        Ok(emoji)
    }

    async fn leaderboard(&self) -> Result<Vec<serde_json::Value>, Status> {
        let results: ResultsResponse =
            proto::call(&self.voting, proto::RESULTS, ResultsRequest {}).await?;
        let list = self.list().await?;
        Ok(results
            .results
            .iter()
            .map(|r| {
                let unicode = list
                    .iter()
                    .find(|e| e.shortcode == r.shortcode)
                    .map_or("", |e| e.unicode.as_str());
                json!({ "shortcode": r.shortcode, "unicode": unicode, "votes": r.votes })
            })
            .collect())
    }

    async fn page(&self) -> http::Response<Body> {
        let (list, board) = tokio::join!(self.list(), self.leaderboard());
        match (list, board) {
            (Ok(list), Ok(board)) => serve::respond(
                http::StatusCode::OK,
                "text/html; charset=utf-8",
                render_page(&list, &board),
            ),
            (Err(status), _) | (_, Err(status)) => failed("loading the page", &status),
        }
    }
}

/// The JSON answer for a failed call: 404 for an unknown emoji, 500 for everything else.
fn failed(what: &str, status: &Status) -> http::Response<Body> {
    let code = if status.code() == Code::NotFound {
        http::StatusCode::NOT_FOUND
    } else {
        http::StatusCode::INTERNAL_SERVER_ERROR
    };
    tracing::debug!(what, %status, "request failed");
    serve::json(
        code,
        &json!({ "error": format!("{what} failed: {}", status.message()), "grpcStatus": status.code() as i32 }),
    )
}

impl Handler for WebApp {
    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        let ok = |v: serde_json::Value| serve::json(http::StatusCode::OK, &v);
        match req.uri().path() {
            "/" | "/index.html" => self.page().await,
            "/api/list" => match self.list().await {
                Ok(list) => ok(json!(list
                    .iter()
                    .map(|e| json!({ "shortcode": e.shortcode, "unicode": e.unicode }))
                    .collect::<Vec<_>>())),
                Err(status) => failed("listing emojis", &status),
            },
            "/api/vote" => {
                let Some(choice) = serve::query_param(req.uri(), "choice") else {
                    return serve::json(
                        http::StatusCode::BAD_REQUEST,
                        &json!({ "error": "missing query parameter choice" }),
                    );
                };
                match self.vote(&choice).await {
                    Ok(e) => ok(json!({ "voted": e.shortcode, "unicode": e.unicode })),
                    Err(status) => failed(&format!("voting for {choice}"), &status),
                }
            }
            "/api/leaderboard" => match self.leaderboard().await {
                Ok(board) => ok(json!(board)),
                Err(status) => failed("loading the leaderboard", &status),
            },
            path => serve::json(
                http::StatusCode::NOT_FOUND,
                &json!({ "error": format!("no route {path}") }),
            ),
        }
    }
}

fn render_page(list: &[Emoji], board: &[serde_json::Value]) -> String {
    let mut buttons = String::new();
    for e in list {
        let _ = write!(
            buttons,
            r#"<button title="{s}" onclick="vote('{s}')">{u}</button>"#,
            s = e.shortcode,
            u = e.unicode
        );
    }
    let mut rows = String::new();
    for r in board {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            r["unicode"].as_str().unwrap_or(""),
            r["shortcode"].as_str().unwrap_or(""),
            r["votes"]
        );
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Emoji vote</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}
button{{font-size:2em;margin:.2em;cursor:pointer}}#msg{{min-height:1.5em}}</style></head>
<body><h1>🗳 Emoji vote</h1><p>Pick your favourite.</p>
<div>{buttons}</div><p id="msg"></p>
<h2>Leaderboard</h2><table><tr><th></th><th>emoji</th><th>votes</th></tr>{rows}</table>
<script>
async function vote(choice) {{
  const r = await fetch('/api/vote?choice=' + encodeURIComponent(choice), {{method: 'POST'}});
  const body = await r.json();
  document.getElementById('msg').textContent =
    r.ok ? 'Voted for ' + body.unicode : 'Something went wrong: ' + body.error;
  if (r.ok) setTimeout(() => location.reload(), 600);
}}
</script></body></html>
"#
    )
}
