//! In-process tests of the proxy's data path: real sockets on 127.0.0.1, real servers and
//! clients, the proxy's `run` on its own listeners. Process-level checks live in `e2e.rs`.

mod authz;
mod bulk;
mod discovery;
mod errors;
mod fast_path;
mod grpc;
mod http1;
mod http2;
mod orig_dst;
mod tap;
mod tcp;
mod test_ca;

use std::{net::SocketAddr, time::Duration};

use ferry_proxy::{config::UpstreamSpec, Config, Listeners};
use tokio::{sync::oneshot, task::JoinHandle};

/// A proxy running in this process; stopped (drained) on drop.
pub struct Proxy {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub tap: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Proxy {
    /// A proxy whose inbound side forwards to `app`.
    pub async fn inbound_to(app: SocketAddr) -> Self {
        Self::start(Config::for_tests(app)).await
    }

    /// A proxy with one upstream listener per target (inbound forwards nowhere useful).
    pub async fn upstreams(targets: &[&str]) -> Self {
        let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
        config.upstreams = targets
            .iter()
            .map(|t| format!("127.0.0.1:0={t}").parse::<UpstreamSpec>().unwrap())
            .collect();
        Self::start(config).await
    }

    /// A proxy with `config` (listeners should be on port 0).
    pub async fn start(config: Config) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("FERRY_TEST_LOG"))
            .with_test_writer()
            .try_init();
        let listeners = Listeners::bind(&config)
            .await
            .expect("bind proxy listeners");
        let (inbound, outbound, admin) = (
            listeners.inbound_addr(),
            listeners.outbound_addr(),
            listeners.admin_addr(),
        );
        let upstreams = listeners.upstream_addrs();
        let tap = listeners.tap_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ferry_proxy::run(config, listeners, None, async {
            let _ = stopped.await;
        }));
        Self {
            inbound,
            outbound,
            admin,
            tap,
            upstreams,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The first upstream listener's URL base.
    pub fn upstream_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.upstreams[0])
    }

    /// Starts the drain; the returned handle finishes when `run` returns.
    pub fn shutdown(&mut self) -> JoinHandle<()> {
        let _ = self.stop.take().expect("shut down once").send(());
        self.task.take().expect("running")
    }

    /// The admin server's `/metrics`.
    pub async fn metrics(&self) -> String {
        ferry_testkit::client::get(&format!("http://{}/metrics", self.admin))
            .await
            .expect("scrape /metrics")
            .text()
    }

    /// Waits until `name{want…}` reaches `value` (metrics are recorded as bodies end).
    pub async fn wait_metric(&self, name: &str, want: &[(&str, &str)], value: f64) -> String {
        let r = ferry_testkit::wait_until(Duration::from_secs(5), name, || async {
            let text = self.metrics().await;
            (ferry_testkit::metric_sum(&text, name, want) == value).then_some(text)
        })
        .await;
        match r {
            Ok(text) => text,
            Err(e) => panic!("{e}: {name}{want:?} != {value}\n{}", self.metrics().await),
        }
    }
}

/// A proxy pair: A's upstream listener → B's inbound → `app`.
pub struct Pair {
    pub a: Proxy,
    pub b: Proxy,
}

impl Pair {
    pub async fn to(app: SocketAddr) -> Self {
        let b = Proxy::inbound_to(app).await;
        let a = Proxy::upstreams(&[&b.inbound.to_string()]).await;
        Self { a, b }
    }

    pub fn url(&self, path: &str) -> String {
        self.a.upstream_url(path)
    }
}
