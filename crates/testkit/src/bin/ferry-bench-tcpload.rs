//! `ferry-bench-tcpload`: the TCP echo load generator of the benchmark harness. wrk, h2load
//! and oha speak only HTTP, and no TCP request/response generator ships in Debian, so this
//! one stays deliberately small: N connections, each sending a fixed-size message and
//! waiting for its echo, either back to back (throughput) or on a fixed schedule (latency).
//!
//! ```text
//! ferry-bench-tcpload ADDR --connections N --seconds S [--rate RPS] [--size BYTES]
//! ```
//!
//! Prints one JSON line: `requests`, `seconds`, `rps`, `p50_us`, `p99_us`, `max_us`, `errors`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

struct Args {
    addr: SocketAddr,
    connections: usize,
    seconds: f64,
    rate: Option<f64>,
    size: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let addr = it
        .next()
        .context("usage: ferry-bench-tcpload ADDR --connections N --seconds S [--rate RPS] [--size BYTES]")?
        .parse()
        .context("ADDR must be host:port")?;
    let mut args = Args {
        addr,
        connections: 32,
        seconds: 10.0,
        rate: None,
        size: 64,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--connections" => args.connections = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--rate" => args.rate = Some(value.parse()?),
            "--size" => args.size = value.parse()?,
            other => bail!("unknown flag {other:?}"),
        }
    }
    if args.connections == 0 || args.size == 0 || args.seconds <= 0.0 {
        bail!("--connections, --size and --seconds must be positive");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// What one connection measured.
#[derive(Default)]
struct Sample {
    latencies_us: Vec<u32>,
    errors: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut socks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let sock = TcpStream::connect(args.addr)
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        sock.set_nodelay(true)?;
        socks.push(sock);
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    // Each connection sends every `interval`, staggered so the total rate is even.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    let tasks: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(i, sock)| {
            let offset = interval.map(|iv| iv.mul_f64(i as f64 / args.connections as f64));
            tokio::spawn(connection(sock, args.size, start, end, interval, offset))
        })
        .collect();
    let mut all = Sample::default();
    for task in tasks {
        let s = task.await?;
        all.latencies_us.extend(s.latencies_us);
        all.errors += s.errors;
    }
    let seconds = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let v = &all.latencies_us;
        if v.is_empty() {
            return 0;
        }
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    };
    let requests = all.latencies_us.len();
    println!(
        "{{\"requests\":{requests},\"seconds\":{seconds:.3},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"errors\":{}}}",
        requests as f64 / seconds,
        pct(0.50),
        pct(0.99),
        all.latencies_us.last().copied().unwrap_or(0),
        all.errors
    );
    Ok(())
}

async fn connection(
    mut sock: TcpStream,
    size: usize,
    start: Instant,
    end: Instant,
    interval: Option<Duration>,
    offset: Option<Duration>,
) -> Sample {
    // Not HTTP, TLS or an HTTP/2 preface: the proxy's detection calls it opaque at once.
    let msg = vec![0u8; size];
    let mut reply = vec![0u8; size];
    let mut sample = Sample::default();
    let mut next = offset.map(|o| start + o);
    loop {
        // On a schedule, latency counts from the slot when the previous echo made us miss
        // it (no coordinated omission), but not when only the timer woke late.
        let sent_at = match (next, interval) {
            (Some(slot), Some(iv)) => {
                next = Some(slot + iv);
                let now = Instant::now();
                if now < slot {
                    tokio::time::sleep_until(slot.into()).await;
                    Instant::now()
                } else {
                    slot
                }
            }
            _ => Instant::now(),
        };
        if sent_at >= end {
            return sample;
        }
        let ok = sock.write_all(&msg).await.is_ok() && sock.read_exact(&mut reply).await.is_ok();
        if !ok {
            sample.errors += 1;
            return sample;
        }
        let us = sent_at.elapsed().as_micros();
        sample
            .latencies_us
            .push(u32::try_from(us).unwrap_or(u32::MAX));
    }
}
