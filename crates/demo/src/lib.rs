//! The emoji-voting demo app that `ferry demo` runs in a local mesh: a `web` front end
//! (HTTP/1) calling `emoji` and `voting` (gRPC), and a `vote-bot`. Voting still looks emojis
//! up through emoji's old HTTP/1 endpoint, retired for the bottom half of the list, so those
//! votes fail — the broken hop that Ferry's `stat` and `tap` find without touching the app.
//!
//! # Layout
//! - [`emojis`]: the list, and which half the old endpoint still serves.
//! - [`proto`]: hand-written protobuf messages (no `protoc`) and unary gRPC plumbing.
//! - [`serve`]: the HTTP/1 + h2c server loop every workload uses.
//! - [`emoji`], [`voting`], [`web`]: the three services, each a [`serve::Handler`].
//! - [`bot`]: the traffic generator.
//!
//! Each workload runs as its own process: `ferry-emojivoto web|emoji|voting|vote-bot`.

pub mod bot;
pub mod emoji;
pub mod emojis;
pub mod proto;
pub mod serve;
pub mod voting;
pub mod web;
