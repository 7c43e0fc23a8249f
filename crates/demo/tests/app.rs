//! The demo app's pieces in one process, on real sockets (`127.0.0.1:0`), no mesh: emoji's
//! two endpoints, voting failing for the bottom half, web's API and page, the bot's spread.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use ferry_demo::{
    bot,
    emoji::EmojiApp,
    emojis, proto, serve,
    voting::{Version, VotingApp, V3_DELAY, V3_FAIL_EVERY},
    web::WebApp,
    Peer,
};
use ferry_testkit::client;
use http::StatusCode;
use tokio::sync::oneshot;
use tonic::Code;

/// A workload serving on an ephemeral port, stopped when dropped.
struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start<H: serve::Handler>(name: &'static str, app: H) -> Running {
    let listener = serve::bind(name, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve::serve(listener, Arc::new(app), async {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

/// emoji, voting and web wired directly to each other.
async fn app() -> (Running, Running, Running) {
    let emoji = start("emoji", EmojiApp).await;
    let voting = start("voting", VotingApp::new(Peer::direct(emoji.addr))).await;
    let web = start(
        "web",
        WebApp::new(&Peer::direct(emoji.addr), &Peer::direct(voting.addr)),
    )
    .await;
    (emoji, voting, web)
}

fn json(reply: &client::Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.text()))
}

#[tokio::test]
async fn emoji_serves_grpc_for_all_and_the_old_endpoint_for_the_top_half() {
    let emoji = start("emoji", EmojiApp).await;
    let channel = proto::channel(&Peer::direct(emoji.addr));

    let all: proto::ListAllResponse =
        proto::call(&channel, proto::LIST_ALL, proto::ListAllRequest {})
            .await
            .unwrap();
    assert_eq!(all.list.len(), emojis::ALL.len());
    assert_eq!(all.list[0].shortcode, ":joy:");

    for shortcode in [":joy:", ":bacon:"] {
        let found: proto::FindByShortcodeResponse = proto::call(
            &channel,
            proto::FIND_BY_SHORTCODE,
            proto::FindByShortcodeRequest {
                shortcode: shortcode.into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            found.emoji.unwrap().shortcode,
            shortcode,
            "gRPC serves every emoji"
        );
    }
    let missing = proto::call::<_, proto::FindByShortcodeResponse>(
        &channel,
        proto::FIND_BY_SHORTCODE,
        proto::FindByShortcodeRequest {
            shortcode: ":nope:".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let base = format!("http://{}/api/FindByShortcode", emoji.addr);
    let top = client::get(&format!("{base}?shortcode=:joy:"))
        .await
        .unwrap();
    assert_eq!(top.status, StatusCode::OK, "{}", top.text());
    assert_eq!(json(&top)["unicode"], "😂");
    let bottom = client::get(&format!("{base}?shortcode=%3Abacon%3A"))
        .await
        .unwrap();
    assert_eq!(bottom.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        bottom.text().contains("retired for :bacon:"),
        "{}",
        bottom.text()
    );
    let unknown = client::get(&format!("{base}?shortcode=:nope:"))
        .await
        .unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn voting_counts_top_half_votes_and_fails_bottom_half_ones() {
    let emoji = start("emoji", EmojiApp).await;
    let voting = start("voting", VotingApp::new(Peer::direct(emoji.addr))).await;
    let channel = proto::channel(&Peer::direct(voting.addr));
    let vote = |method: &str| {
        let path = format!("{}{method}", proto::VOTING_SERVICE);
        let channel = channel.clone();
        async move {
            proto::call::<_, proto::VoteResponse>(&channel, &path, proto::VoteRequest {}).await
        }
    };

    vote("VoteJoy").await.unwrap();
    vote("VoteJoy").await.unwrap();
    vote("VoteSunWithFace").await.unwrap();
    let failed = vote("VoteBacon").await.unwrap_err();
    assert_eq!(failed.code(), Code::Internal);
    assert!(
        failed.message().contains("500") && failed.message().contains(":bacon:"),
        "the error names the hop and the emoji: {failed:?}"
    );
    assert_eq!(
        vote("VoteNope").await.unwrap_err().code(),
        Code::Unimplemented
    );

    let results: proto::ResultsResponse =
        proto::call(&channel, proto::RESULTS, proto::ResultsRequest {})
            .await
            .unwrap();
    let board: Vec<(&str, u64)> = results
        .results
        .iter()
        .map(|r| (r.shortcode.as_str(), r.votes))
        .collect();
    assert_eq!(board, [(":joy:", 2), (":sun_with_face:", 1)]);
}

#[tokio::test]
async fn voting_v2_counts_every_vote_and_v3_is_slower_and_loses_one_in_four() {
    let emoji = start("emoji", EmojiApp).await;
    for version in [Version::V2, Version::V3] {
        let voting = start(
            "voting",
            VotingApp::version(Peer::direct(emoji.addr), version),
        )
        .await;
        let channel = proto::channel(&Peer::direct(voting.addr));
        let mut failed = Vec::new();
        let started = std::time::Instant::now();
        let methods = ["VoteBacon", "VoteJoy", "VoteDoughnut", "VoteSunWithFace"];
        for method in methods.iter().cycle().take(8) {
            let path = format!("{}{method}", proto::VOTING_SERVICE);
            if let Err(status) =
                proto::call::<_, proto::VoteResponse>(&channel, &path, proto::VoteRequest {}).await
            {
                failed.push(status);
            }
        }
        let took = started.elapsed();
        match version {
            Version::V2 => {
                assert!(failed.is_empty(), "v2 fixed the bottom half: {failed:?}");
            }
            _ => {
                assert_eq!(failed.len() as u64, 8 / V3_FAIL_EVERY, "{failed:?}");
                assert!(
                    failed
                        .iter()
                        .all(|s| s.code() == Code::Internal && s.message().contains("voting v3")),
                    "{failed:?}"
                );
                assert!(took >= V3_DELAY * 8, "v3 is slower: 8 votes in {took:?}");
            }
        }
        let results: proto::ResultsResponse =
            proto::call(&channel, proto::RESULTS, proto::ResultsRequest {})
                .await
                .unwrap();
        let counted: u64 = results.results.iter().map(|r| r.votes).sum();
        assert_eq!(counted, 8 - failed.len() as u64, "{version:?}");
        assert!(
            results.results.iter().any(|r| r.shortcode == ":bacon:"),
            "{version:?} counts bottom-half votes: {results:?}"
        );
    }
}

#[tokio::test]
async fn voting_without_emoji_fails_unavailable() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let voting = start("voting", VotingApp::new(Peer::direct(gone))).await;
    let path = format!("{}VoteJoy", proto::VOTING_SERVICE);
    let err = proto::call::<_, proto::VoteResponse>(
        &proto::channel(&Peer::direct(voting.addr)),
        &path,
        proto::VoteRequest {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn web_lists_votes_and_carries_voting_errors_back() {
    let (_emoji, _voting, web) = app().await;
    let url = |p: &str| format!("http://{}{p}", web.addr);

    let list = client::get(&url("/api/list")).await.unwrap();
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(json(&list).as_array().unwrap().len(), emojis::ALL.len());

    let ok = client::get(&url("/api/vote?choice=:joy:")).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(json(&ok)["voted"], ":joy:");

    let failed = client::get(&url("/api/vote?choice=:bacon:")).await.unwrap();
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        failed.text().contains("voting for :bacon:"),
        "{}",
        failed.text()
    );
    assert!(
        failed.text().contains("retired"),
        "voting's reason travels back: {}",
        failed.text()
    );

    let unknown = client::get(&url("/api/vote?choice=:nope:")).await.unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let missing = client::get(&url("/api/vote")).await.unwrap();
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);

    let board = client::get(&url("/api/leaderboard")).await.unwrap();
    assert_eq!(board.status, StatusCode::OK);
    assert_eq!(
        json(&board),
        serde_json::json!([{ "shortcode": ":joy:", "unicode": "😂", "votes": 1 }])
    );

    let page = client::get(&url("/")).await.unwrap();
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("vote(':bacon:')") && html.contains("<td>:joy:</td><td>1</td>"),
        "{html}"
    );
}

#[tokio::test]
async fn web_answers_500_when_emoji_is_down() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let web = start("web", WebApp::new(&Peer::direct(gone), &Peer::direct(gone))).await;
    let reply = client::get(&format!("http://{}/api/list", web.addr))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn a_taken_port_names_the_workload_and_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve::bind("web", addr).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!("web: cannot listen on {addr} (the port is taken by another process)")
    );
}

#[tokio::test]
async fn the_bot_votes_for_both_halves_at_its_rate() {
    let (_emoji, voting, web) = app().await;
    let config = bot::BotConfig {
        web: Peer::direct(web.addr),
        rate: 50.0,
        voting: Some(Peer::direct(voting.addr)),
    };
    let tally = bot::run(config, tokio::time::sleep(Duration::from_secs(2))).await;
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    assert!(
        (60..=120).contains(&(ok + failed)),
        "about 100 votes in 2 s at 50/s: {ok} + {failed}"
    );
    assert!(
        ok > 10 && failed > 10,
        "both halves are voted for: {ok} ok, {failed} failed"
    );
    let read = tally.results_ok.load(Ordering::Relaxed);
    assert!(
        (1..=3).contains(&read) && tally.results_failed.load(Ordering::Relaxed) == 0,
        "the bot read voting's results directly about once a second: {read}"
    );
}
