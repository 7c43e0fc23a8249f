//! `ferry-emojivoto`: one binary, one workload per process —
//! `ferry-emojivoto emoji|voting|web|vote-bot` with its listen address and its peers'.

use std::{
    future::Future, io::IsTerminal as _, net::SocketAddr, process::ExitCode, sync::Arc,
    time::Duration,
};

use clap::{Parser, Subcommand};
use ferry_demo::{
    bot,
    emoji::EmojiApp,
    serve,
    voting::{self, VotingApp},
    web::WebApp,
    Peer,
};
use tokio::io::AsyncReadExt;

/// The emoji-voting demo app of `ferry demo`.
#[derive(Parser, Debug)]
#[command(name = "ferry-emojivoto", version = ferry_api::version::LONG, about)]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
    /// `tracing` filter.
    #[arg(
        long,
        global = true,
        env = "FERRY_EMOJIVOTO_LOG",
        default_value = "info"
    )]
    log: String,
    /// Exit when standard input closes: `ferry demo` holds the other end, so the app goes
    /// away with it even if it is killed.
    #[arg(long, global = true, hide = true)]
    exit_on_stdin_eof: bool,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// The emoji catalogue: gRPC ListAll/FindByShortcode and the old HTTP/1 endpoint.
    Emoji {
        /// Where to listen (HTTP/1 and gRPC on one port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Counts votes; v1 looks emojis up through emoji's old HTTP/1 endpoint, v2 over gRPC,
    /// v3 too but slower and losing one vote in four.
    Voting {
        /// Where to listen (gRPC).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// emoji's address, `HOST:PORT` (in the local mesh: this proxy's upstream listener
        /// for emoji-svc; on a cluster: `emoji-svc.emojivoto:8080`).
        #[arg(long, value_parser = ferry_demo::parse_addr)]
        emoji_addr: String,
        /// The authority (`Host`) to call emoji by [default: --emoji-addr].
        #[arg(long)]
        emoji_authority: Option<String>,
        /// Which version runs: 1 (the bug), 2 (the fix), 3 (a regression).
        #[arg(long = "app-version", value_enum, default_value = "1")]
        app_version: voting::Version,
    },
    /// The front end: HTML page and JSON API over HTTP/1.
    Web {
        /// Where to listen (HTTP/1).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// emoji's address (gRPC), `HOST:PORT`.
        #[arg(long, value_parser = ferry_demo::parse_addr)]
        emoji_addr: String,
        /// The authority to call emoji by [default: --emoji-addr].
        #[arg(long)]
        emoji_authority: Option<String>,
        /// voting's address (gRPC), `HOST:PORT`.
        #[arg(long, value_parser = ferry_demo::parse_addr)]
        voting_addr: String,
        /// The authority to call voting by [default: --voting-addr].
        #[arg(long)]
        voting_authority: Option<String>,
    },
    /// Votes continuously through web's JSON API.
    VoteBot {
        /// web's address, `HOST:PORT`.
        #[arg(long, value_parser = ferry_demo::parse_addr)]
        web_addr: String,
        /// The authority (`Host`) to call web by [default: --web-addr].
        #[arg(long)]
        web_authority: Option<String>,
        /// Votes per second.
        #[arg(long, default_value_t = 5.0, value_parser = parse_rate)]
        rate: f64,
        /// voting's address (gRPC): with it, the bot also reads the results straight from
        /// voting once a second, a call that bypasses web.
        #[arg(long, value_parser = ferry_demo::parse_addr)]
        voting_addr: Option<String>,
        /// The authority to call voting by [default: --voting-addr].
        #[arg(long, requires = "voting_addr")]
        voting_authority: Option<String>,
    },
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.01..=10_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate between 0.01 and 10000 votes per second"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(workload(cli));
    // The stdin watch is a blocking read that never returns on its own; don't wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn workload(cli: Cli) -> ExitCode {
    let shutdown = shutdown_signal(cli.exit_on_stdin_eof);
    let result = match cli.workload {
        Workload::Emoji { listen } => run("emoji", listen, EmojiApp, shutdown).await,
        Workload::Voting {
            listen,
            emoji_addr,
            emoji_authority,
            app_version,
        } => {
            let emoji = Peer::new(emoji_addr, emoji_authority);
            let app = VotingApp::version(emoji, app_version);
            run("voting", listen, app, shutdown).await
        }
        Workload::Web {
            listen,
            emoji_addr,
            emoji_authority,
            voting_addr,
            voting_authority,
        } => {
            let emoji = Peer::new(emoji_addr, emoji_authority);
            let voting = Peer::new(voting_addr, voting_authority);
            run("web", listen, WebApp::new(&emoji, &voting), shutdown).await
        }
        Workload::VoteBot {
            web_addr,
            web_authority,
            rate,
            voting_addr,
            voting_authority,
        } => {
            let web = Peer::new(web_addr, web_authority);
            let voting = voting_addr.map(|addr| Peer::new(addr, voting_authority));
            bot::run(bot::BotConfig { web, rate, voting }, shutdown).await;
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run<H: serve::Handler>(
    name: &'static str,
    listen: SocketAddr,
    app: H,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = serve::bind(name, listen).await?;
    tracing::info!(workload = name, addr = %listener.local_addr()?, "listener bound");
    serve::serve(listener, Arc::new(app), shutdown).await;
    tracing::info!(workload = name, "stopped");
    Ok(())
}

/// Completes on ctrl-c, SIGTERM, or (when asked) standard input closing.
async fn shutdown_signal(watch_stdin: bool) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let stdin_closed = async {
        if !watch_stdin {
            return std::future::pending::<()>().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
        () = stdin_closed => {}
    }
}
