//! `ferry-bench-backend`: the origin the benchmark harness (`bench/run.py`) measures against.
//! A minimal HTTP/1.1 keep-alive server, an h2c server (plain answers and gRPC-style unary
//! calls), a TCP echo server and a TCP source (`--source`: every connection gets an endless
//! one-way stream, for the bulk cells), each on the address given; it runs until killed.
//!
//! ```text
//! ferry-bench-backend [--http1 ADDR] [--h2c ADDR] [--echo ADDR] [--source ADDR] [--body TEXT]
//! ```
//!
//! Every answer is a constant so that the origin costs as little as possible and the
//! difference between variants is the middle hop's. `--body` sets the plain HTTP answer
//! (tests that run several of these tell them apart by it).

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The default HTTP answer body; small, like a typical API reply's framing cost dominates.
const DEFAULT_BODY: &str = "hello from ferry-bench-backend\n";
/// The HTTP answer body: [`DEFAULT_BODY`] or `--body`, set once at start.
static BODY: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
/// A gRPC reply: an uncompressed, length-prefixed 2-byte protobuf message.
const GRPC_REPLY: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];

#[derive(Default)]
struct Args {
    http1: Option<SocketAddr>,
    h2c: Option<SocketAddr>,
    echo: Option<SocketAddr>,
    source: Option<SocketAddr>,
    body: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        if flag == "--body" {
            args.body = Some(value);
            continue;
        }
        let addr: SocketAddr = value
            .parse()
            .with_context(|| format!("{flag} {value:?} is not an address"))?;
        match flag.as_str() {
            "--http1" => args.http1 = Some(addr),
            "--h2c" => args.h2c = Some(addr),
            "--echo" => args.echo = Some(addr),
            "--source" => args.source = Some(addr),
            other => {
                bail!("unknown flag {other:?} (want --http1, --h2c, --echo, --source, --body)")
            }
        }
    }
    if args.http1.is_none() && args.h2c.is_none() && args.echo.is_none() && args.source.is_none() {
        bail!("nothing to serve: give at least one of --http1, --h2c, --echo, --source");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let body = args
        .body
        .clone()
        .unwrap_or_else(|| DEFAULT_BODY.to_string());
    BODY.get_or_init(|| Box::leak(body.into_boxed_str()).as_bytes());
    // One worker per core it may run on: the harness pins it with taskset.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let mut servers = tokio::task::JoinSet::new();
        if let Some(addr) = args.http1 {
            let listener = bind(addr).await?;
            servers.spawn(serve(listener, Proto::Http1));
        }
        if let Some(addr) = args.h2c {
            let listener = bind(addr).await?;
            servers.spawn(serve(listener, Proto::H2c));
        }
        if let Some(addr) = args.echo {
            let listener = bind(addr).await?;
            servers.spawn(echo(listener));
        }
        if let Some(addr) = args.source {
            let listener = bind(addr).await?;
            servers.spawn(source(listener));
        }
        // The harness waits for this line before it sends load.
        println!("ready");
        while let Some(done) = servers.join_next().await {
            done??;
        }
        Ok(())
    })
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

#[derive(Clone, Copy)]
enum Proto {
    Http1,
    H2c,
}

async fn serve(listener: TcpListener, proto: Proto) -> anyhow::Result<()> {
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            let io = TokioIo::new(sock);
            let svc = hyper::service::service_fn(answer);
            let _ = match proto {
                Proto::Http1 => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                }
                Proto::H2c => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1024)
                        .serve_connection(io, svc)
                        .await
                }
            };
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Read the request to its end, as a real handler would (and so h2 flow control moves).
    let _ = req.into_body().collect().await;
    let mut rsp = if grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut rsp = Response::new(Reply {
            data: Some(Bytes::from_static(GRPC_REPLY)),
            trailers: Some(trailers),
        });
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        rsp
    } else {
        let mut rsp = Response::new(Reply {
            data: Some(Bytes::from_static(body())),
            trailers: None,
        });
        rsp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        rsp
    };
    if !grpc {
        rsp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body().len()));
    }
    Ok(rsp)
}

fn body() -> &'static [u8] {
    BODY.get().copied().unwrap_or(DEFAULT_BODY.as_bytes())
}

/// A body of at most one data frame and, for gRPC, a trailers frame.
struct Reply {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        http_body::SizeHint::with_exact(len)
    }
}

async fn echo(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(echo_conn(sock));
    }
}

async fn echo_conn(mut sock: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if sock.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends every connection 1 MiB writes of one constant buffer until it goes away.
async fn source(listener: TcpListener) -> anyhow::Result<()> {
    let chunk: &'static [u8] = Box::leak(vec![b'x'; 1 << 20].into_boxed_slice());
    loop {
        let (mut sock, _) = listener.accept().await?;
        tokio::spawn(async move { while sock.write_all(chunk).await.is_ok() {} });
    }
}
