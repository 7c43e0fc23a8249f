//! `ferry-bench-load`: the benchmark harness's own load generator, for the two jobs the
//! established generators cannot do here.
//!
//! - **TCP echo at full speed** (no `--rate`): wrk, h2load and oha speak only HTTP, and no TCP
//!   request/response generator ships in Debian. N connections on one thread, each sending a
//!   fixed-size message and waiting for its echo, back to back.
//! - **Any protocol at a fixed rate** (`--rate RPS`; `tcp`, `http1`, `h2c`, `grpc`): requests evenly
//!   spaced in time, one in flight per connection. h2load's `--rps` does not do this: each
//!   connection sends its due requests when its timer fires, and the timers of all connections
//!   fire together, so 2,000 RPS over 16 connections arrives as a burst of 16 every 8 ms and the
//!   latency it reports is mostly queueing behind the burst (bench/README.md has the figures).
//!   Here every connection has its own thread that sleeps until its slot with `nanosleep`
//!   (microseconds, where tokio's timer wheel has 1 ms ticks), and the connections' slots are
//!   staggered, so the server sees one request every 1/RPS seconds. HTTP is spoken by hyper's
//!   client connection, driven on the connection's thread only while a request is out. `grpc`
//!   is a unary call over h2c (POST `--path`, a 2-byte message) that must end with
//!   `grpc-status: 0`.
//!
//! - **One-way TCP streams** (`--proto stream`): N connections that only read, as fast as they
//!   can, whatever the far end sends (`ferry-bench-backend --source`), for the bulk cells; prints
//!   `bytes`, `seconds`, `gbps` (10^9 bytes a second) and `errors` instead.
//!
//! ```text
//! ferry-bench-load ADDR --connections N --seconds S [--rate RPS] [--proto tcp|http1|h2c|grpc|stream]
//!                  [--size BYTES] [--path PATH] [--log-file FILE] [--pooling]
//! ```
//!
//! Prints one JSON line: `requests`, `seconds`, `rps`, `p50_us`, `p99_us`, `p99_1s_us`, `max_us`,
//! `errors`. `p99_1s_us` is the p99 of a typical second: the median of the run's per-second
//! p99s (`null` when no second has 100 requests). `--pooling` adds what it takes to pool
//! runs (the harness does): `p99_seconds_us`, the p99 of each of those seconds in order, and
//! `histogram`, every recorded latency as `[microseconds, requests]` pairs in ascending order.
//! `--log-file` also writes every answered request as `start_us<TAB>latency_us`, in order of
//! start (microseconds since the run began), to look at when slow requests happened.
//! At a fixed rate each connection first carries one request that is not recorded.
//! Latency is counted from the slot when the previous request on that connection made it miss
//! the slot (no coordinated omission), but not when only the timer woke late.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const USAGE: &str = "usage: ferry-bench-load ADDR --connections N --seconds S [--rate RPS] \
                     [--proto tcp|http1|h2c|grpc|stream] [--size BYTES] [--path PATH] [--log-file FILE] \
                     [--pooling]";

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Tcp,
    Http1,
    H2c,
    Grpc,
    Stream,
}

struct Args {
    addr: SocketAddr,
    proto: Proto,
    connections: usize,
    seconds: f64,
    rate: Option<f64>,
    size: usize,
    path: String,
    log_file: Option<std::path::PathBuf>,
    pooling: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let addr = it
        .next()
        .context(USAGE)?
        .parse()
        .context("ADDR must be host:port")?;
    let mut args = Args {
        addr,
        proto: Proto::Tcp,
        connections: 32,
        seconds: 10.0,
        rate: None,
        size: 64,
        path: "/".into(),
        log_file: None,
        pooling: false,
    };
    while let Some(flag) = it.next() {
        if flag == "--pooling" {
            args.pooling = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--connections" => args.connections = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--rate" => args.rate = Some(value.parse()?),
            "--size" => args.size = value.parse()?,
            "--path" => args.path = value,
            "--log-file" => args.log_file = Some(value.into()),
            "--proto" => {
                args.proto = match value.as_str() {
                    "tcp" => Proto::Tcp,
                    "http1" => Proto::Http1,
                    "h2c" => Proto::H2c,
                    "grpc" => Proto::Grpc,
                    "stream" => Proto::Stream,
                    other => {
                        bail!("--proto must be tcp, http1, h2c, grpc or stream, not {other:?}")
                    }
                }
            }
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    if args.connections == 0 || args.size == 0 || args.seconds <= 0.0 {
        bail!("--connections, --size and --seconds must be positive");
    }
    if args.rate.is_some_and(|r| r <= 0.0) {
        bail!("--rate must be positive");
    }
    if args.proto == Proto::Stream && args.rate.is_some() {
        bail!("--proto stream reads at full speed: no --rate");
    }
    if args.rate.is_none() && !matches!(args.proto, Proto::Tcp | Proto::Stream) {
        bail!("HTTP at full speed is wrk's and h2load's job: give --rate, or --proto tcp");
    }
    Ok(args)
}

/// What one connection measured: each answered request's start (since the run began) and
/// latency, in microseconds.
struct Sample {
    epoch: Instant,
    requests: Vec<(u32, u32)>,
    errors: u64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Sample {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            requests: Vec::new(),
            errors: 0,
        }
    }

    fn record(&mut self, since: Instant) {
        let start = micros(since.saturating_duration_since(self.epoch));
        self.requests.push((start, micros(since.elapsed())));
    }

    fn merge(&mut self, other: Sample) {
        self.requests.extend(other.requests);
        self.errors += other.errors;
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.proto == Proto::Stream {
        let (bytes, seconds, errors) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(drain_streams(&args))?;
        println!(
            "{{\"bytes\":{bytes},\"seconds\":{seconds:.3},\"gbps\":{:.4},\"errors\":{errors}}}",
            bytes as f64 / seconds / 1e9
        );
        return Ok(());
    }
    let (mut all, seconds) = match args.rate {
        Some(rate) => paced(&args, rate)?,
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(flat_out_tcp(&args))?,
    };
    if let Some(path) = &args.log_file {
        all.requests.sort_unstable();
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (start, latency) in &all.requests {
            writeln!(out, "{start}\t{latency}")?;
        }
        out.flush()?;
    }
    let mut v: Vec<u32> = all.requests.iter().map(|r| r.1).collect();
    v.sort_unstable();
    let p99s = p99_of_each_second(&all.requests);
    let p99_1s = typical_second(&p99s).map_or("null".into(), |p| p.to_string());
    let pooling = if args.pooling {
        let p99s: Vec<String> = p99s.iter().map(u32::to_string).collect();
        format!(
            ",\"p99_seconds_us\":[{}],\"histogram\":{}",
            p99s.join(","),
            histogram_json(&v)
        )
    } else {
        String::new()
    };
    println!(
        "{{\"requests\":{},\"seconds\":{seconds:.3},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p99_1s_us\":{p99_1s},\"max_us\":{},\"errors\":{}{pooling}}}",
        v.len(),
        v.len() as f64 / seconds,
        percentile(&v, 0.50),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(0),
        all.errors
    );
    Ok(())
}

/// Sorted latencies as `[[microseconds, count], ...]`, one pair per distinct value, so that
/// runs can be pooled exactly: the harness merges the runs of a cell and takes their
/// percentiles together, where a median of each run's p99 rests on a few hundred requests.
fn histogram_json(sorted: &[u32]) -> String {
    let mut out = String::from("[");
    for chunk in sorted.chunk_by(|a, b| a == b) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&format!("[{},{}]", chunk[0], chunk.len()));
    }
    out.push(']');
    out
}

/// The `p` quantile of sorted values, nearest rank; 0 for none.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Fewest requests a one-second window needs for its p99 to count.
const MIN_WINDOW_REQUESTS: usize = 100;

/// Each whole second of the run (by request start) with at least [`MIN_WINDOW_REQUESTS`]
/// requests, in order: that second's p99.
fn p99_of_each_second(requests: &[(u32, u32)]) -> Vec<u32> {
    let mut windows: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for &(start, latency) in requests {
        windows.entry(start / 1_000_000).or_default().push(latency);
    }
    windows
        .into_values()
        .filter(|w| w.len() >= MIN_WINDOW_REQUESTS)
        .map(|mut w| {
            w.sort_unstable();
            percentile(&w, 0.99)
        })
        .collect()
}

/// The p99 of a typical second: the median of the [`p99_of_each_second`] (the upper one for an
/// even count). A second in which the host descheduled the machine moves the whole run's p99
/// by as much as it stalled; it moves this by one window. `None` when no second has enough
/// requests.
fn typical_second(p99s: &[u32]) -> Option<u32> {
    let mut p99s = p99s.to_vec();
    p99s.sort_unstable();
    p99s.get(p99s.len() / 2).copied()
}

// ---------------------------------------------------------------- fixed rate

/// Every connection on its own thread, its slots `connections / rate` apart and offset from
/// the others' by `1 / rate`. Returns the merged sample and the measured span in seconds.
fn paced(args: &Args, rate: f64) -> anyhow::Result<(Sample, f64)> {
    let interval = Duration::from_secs_f64(args.connections as f64 / rate);
    // Connections are set up, and each carries one request that is not recorded, before the
    // clock starts: what is measured is connections in use, not a server (or proxy) taking
    // a new one, which matters when the harness alternates variants in short runs.
    let clients = (0..args.connections)
        .map(|_| {
            let mut client = Client::connect(args)?;
            // Only a broken connection stops the run here; an error answer is counted as
            // one when a recorded request gets it.
            client.exchange().context("the warm-up request")?;
            Ok(client)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Every thread waits for its first slot.
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(args.seconds);
    let n = args.connections as f64;
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let first = start + interval.mul_f64(i as f64 / n);
            std::thread::spawn(move || client.run_schedule(start, first, interval, end))
        })
        .collect();
    let mut all = Sample::new(start);
    for t in threads {
        all.merge(
            t.join()
                .map_err(|_| anyhow::anyhow!("a connection thread panicked"))?,
        );
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

/// One connection of the paced mode.
enum Client {
    Tcp {
        sock: std::net::TcpStream,
        msg: Vec<u8>,
        reply: Vec<u8>,
    },
    Http {
        rt: tokio::runtime::Runtime,
        sender: Sender,
        uri: Uri,
        host: String,
        grpc: bool,
    },
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Client {
    fn connect(args: &Args) -> anyhow::Result<Client> {
        let connecting = || format!("connecting to {}", args.addr);
        if args.proto == Proto::Tcp {
            let sock = std::net::TcpStream::connect(args.addr).with_context(connecting)?;
            sock.set_nodelay(true)?;
            return Ok(Client::Tcp {
                sock,
                msg: opaque_message(args.size),
                reply: vec![0; args.size],
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let proto = args.proto;
        let sender = rt.block_on(async {
            let sock = tokio::net::TcpStream::connect(args.addr)
                .await
                .with_context(connecting)?;
            sock.set_nodelay(true)?;
            let io = TokioIo::new(sock);
            // The connection task runs on this runtime, i.e. whenever the thread drives a request.
            anyhow::Ok(if proto != Proto::Http1 {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::H2(send)
            } else {
                let (send, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::H1(send)
            })
        })?;
        // HTTP/1.1 sends the path (origin form) and a Host header; HTTP/2 needs the whole URI
        // for its :scheme and :authority.
        let uri = match proto {
            Proto::Http1 => args.path.parse()?,
            _ => format!("http://{}{}", args.addr, args.path).parse()?,
        };
        Ok(Client::Http {
            rt,
            sender,
            uri,
            host: args.addr.to_string(),
            grpc: proto == Proto::Grpc,
        })
    }

    fn run_schedule(
        mut self,
        epoch: Instant,
        first: Instant,
        interval: Duration,
        end: Instant,
    ) -> Sample {
        let mut sample = Sample::new(epoch);
        let mut slot = first;
        while slot < end {
            let now = Instant::now();
            let sent_at = if now < slot {
                // A plain thread, outside any runtime between requests: nanosleep's
                // microseconds are the point (tokio's timer has 1 ms ticks).
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(slot - now);
                Instant::now()
            } else {
                slot
            };
            slot += interval;
            match self.exchange() {
                Ok(true) => sample.record(sent_at),
                Ok(false) => sample.errors += 1,
                Err(_) => {
                    sample.errors += 1;
                    return sample;
                }
            }
        }
        sample
    }

    /// One request and its whole answer: `Ok(false)` for a non-2xx HTTP answer (or a gRPC
    /// status other than 0), `Err` when the connection broke.
    fn exchange(&mut self) -> anyhow::Result<bool> {
        match self {
            Client::Tcp { sock, msg, reply } => {
                sock.write_all(msg)?;
                sock.read_exact(reply)?;
                Ok(true)
            }
            Client::Http {
                rt,
                sender,
                uri,
                host,
                grpc,
            } => rt.block_on(async {
                let mut req = if *grpc {
                    Request::post(uri.clone())
                        .header(header::CONTENT_TYPE, "application/grpc")
                        .header(header::TE, "trailers")
                        .body(Full::new(Bytes::from_static(GRPC_MESSAGE)))?
                } else {
                    Request::get(uri.clone()).body(Full::default())?
                };
                let resp = match sender {
                    Sender::H1(s) => {
                        req.headers_mut().insert(header::HOST, host.parse()?);
                        s.ready().await?;
                        s.send_request(req).await?
                    }
                    Sender::H2(s) => {
                        s.ready().await?;
                        s.send_request(req).await?
                    }
                };
                let (head, body) = resp.into_parts();
                let body = body.collect().await?;
                // A gRPC answer's status is in its trailers (or its headers, trailers-only).
                let grpc_ok = || {
                    let status = body.trailers().and_then(|t| t.get("grpc-status"));
                    let status = status.or(head.headers.get("grpc-status"));
                    status.is_some_and(|s| s.as_bytes() == b"0")
                };
                Ok(head.status.is_success() && (!*grpc || grpc_ok()))
            }),
        }
    }
}

/// A unary gRPC request: uncompressed, 2 bytes long, a protobuf varint field 1 = 1.
const GRPC_MESSAGE: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];

/// Not HTTP, TLS or an HTTP/2 preface: the proxy's detection calls it opaque at once.
fn opaque_message(size: usize) -> Vec<u8> {
    vec![0u8; size]
}

// ---------------------------------------------------------------- TCP at full speed

/// `--proto stream`: every connection reads, into a 256 KiB buffer, until the run's end.
/// Returns the bytes read, the seconds taken and the connections that failed.
async fn drain_streams(args: &Args) -> anyhow::Result<(u64, f64, u64)> {
    let mut socks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let sock = tokio::net::TcpStream::connect(args.addr)
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        socks.push(sock);
    }
    let start = Instant::now();
    let end = tokio::time::Instant::from_std(start + Duration::from_secs_f64(args.seconds));
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|mut sock| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut bytes = 0u64;
                loop {
                    match tokio::time::timeout_at(end, sock.read(&mut buf)).await {
                        Err(_) => return (bytes, false),
                        Ok(Ok(0)) | Ok(Err(_)) => return (bytes, true),
                        Ok(Ok(n)) => bytes += n as u64,
                    }
                }
            })
        })
        .collect();
    let (mut bytes, mut errors) = (0, 0);
    for task in tasks {
        let (n, failed) = task.await?;
        bytes += n;
        errors += u64::from(failed);
    }
    Ok((bytes, start.elapsed().as_secs_f64(), errors))
}

async fn flat_out_tcp(args: &Args) -> anyhow::Result<(Sample, f64)> {
    let mut socks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let sock = tokio::net::TcpStream::connect(args.addr)
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        sock.set_nodelay(true)?;
        socks.push(sock);
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let size = args.size;
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|sock| tokio::spawn(back_to_back(sock, size, start, end)))
        .collect();
    let mut all = Sample::new(start);
    for task in tasks {
        all.merge(task.await?);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

async fn back_to_back(
    mut sock: tokio::net::TcpStream,
    size: usize,
    epoch: Instant,
    end: Instant,
) -> Sample {
    let msg = opaque_message(size);
    let mut reply = vec![0u8; size];
    let mut sample = Sample::new(epoch);
    loop {
        let sent_at = Instant::now();
        if sent_at >= end {
            return sample;
        }
        let ok = sock.write_all(&msg).await.is_ok() && sock.read_exact(&mut reply).await.is_ok();
        if !ok {
            sample.errors += 1;
            return sample;
        }
        sample.record(sent_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten seconds of 1,000 requests each, every one 50 µs except the slowest 2 % of each
    /// second at 400 µs; in one second the host stalls and every request takes 30 ms.
    #[test]
    fn a_stalled_second_moves_the_run_p99_but_not_a_typical_seconds() {
        let mut requests = Vec::new();
        for second in 0..10u32 {
            for i in 0..1000u32 {
                let latency = match (second, i) {
                    (4, _) => 30_000,
                    (_, i) if i % 50 == 0 => 400,
                    _ => 50,
                };
                requests.push((second * 1_000_000 + i * 1000, latency));
            }
        }
        let mut all: Vec<u32> = requests.iter().map(|r| r.1).collect();
        all.sort_unstable();
        assert_eq!(percentile(&all, 0.99), 30_000);
        assert_eq!(typical_second(&p99_of_each_second(&requests)), Some(400));
    }

    #[test]
    fn seconds_with_too_few_requests_do_not_count() {
        let sparse: Vec<(u32, u32)> = (0..50).map(|i| (i * 20_000, 90)).collect();
        assert_eq!(typical_second(&p99_of_each_second(&sparse)), None);

        // One full second of 200 µs answers and a trailing partial second of 99 slow ones.
        let mut requests: Vec<(u32, u32)> = (0..200).map(|i| (i * 5000, 200)).collect();
        requests.extend((0..99).map(|i| (1_000_000 + i * 100, 9000)));
        assert_eq!(typical_second(&p99_of_each_second(&requests)), Some(200));
    }
}
