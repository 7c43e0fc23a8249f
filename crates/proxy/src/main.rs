//! `ferry-proxy`: parse flags → validate → init tracing → bind → run until SIGTERM.

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use ferry_proxy::{
    admin::LogControl,
    config::{Args, Command, LogFormat},
    Config, Listeners,
};
use tracing_subscriber::{
    filter::Targets, layer::SubscriberExt, reload, util::SubscriberInitExt, Registry,
};

/// The log filter: `target=level` directives and a default level (`info`,
/// `ferry_proxy=debug,warn`). `Targets` rather than `EnvFilter`: the span and field-value
/// directives only `EnvFilter` has bring a regex engine, about 0.3 MB of code resident in
/// every proxy (docs/proxy.md, "Memory").
struct Reload(reload::Handle<Targets, Registry>);

impl LogControl for Reload {
    fn get(&self) -> String {
        self.0.with_current(|f| f.to_string()).unwrap_or_default()
    }
    fn set(&self, filter: &str) -> Result<(), String> {
        let filter = filter
            .trim()
            .parse::<Targets>()
            .map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

fn init_tracing(args: &Args) -> anyhow::Result<Arc<dyn LogControl>> {
    let filter = args
        .log
        .trim()
        .parse::<Targets>()
        .map_err(|e| anyhow::anyhow!("invalid --log filter {:?}: {e}", args.log))?;
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Plain => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
    }
    Ok(Arc::new(Reload(handle)))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Init(init)) = &args.command {
        return match ferry_proxy::init::run(init) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry-proxy init: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match init_tracing(&args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferry-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let cores = args.cores.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let mut runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cores);
        b
    };
    let runtime = runtime
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    runtime.block_on(async move {
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, cause = %e.source, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        ferry_proxy::run(config, listeners, Some(log), shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
