//! The `ferry` binary: parses the command line and hands it to one subcommand module.
//! Adding a subcommand is one variant here and one module in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::dashboard;
use ferry::{
    authz, check, demo, diagnostics, edges, inject, install, rollout, routes, stat, tap, top,
    trace, version,
};

/// Ferry, a small service mesh.
#[derive(Parser, Debug)]
#[command(name = "ferry", version = ferry_api::version::LONG, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the emoji-voting demo in a local mesh, until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Print the control plane's Kubernetes manifests.
    Install(install::InstallArgs),
    /// Add the proxy to every pod template of a YAML stream.
    Inject(inject::InjectArgs),
    /// Remove the proxy from every pod template of a YAML stream.
    Uninject(inject::UninjectArgs),
    /// Check a cluster before or after installing Ferry.
    Check(check::CheckArgs),
    /// Print the web dashboard's URL and open it in a browser.
    Dashboard(dashboard::DashboardArgs),
    /// Look inside the control plane: what it tells proxies.
    #[command(alias = "dg")]
    Diagnostics(diagnostics::DiagnosticsArgs),
    /// Golden metrics per resource: success rate, RPS, latencies, TCP connections.
    Stat(stat::StatArgs),
    /// Per-route success, RPS and latency of a resource's outbound routes (effective and actual).
    Routes(routes::RoutesArgs),
    /// A workload's servers, routes and authorization policies, with what each allowed and denied.
    Authz(authz::AuthzArgs),
    /// Progressive delivery: rollouts' steps and analyses; promote, pause, resume, abort.
    Rollout(rollout::RolloutArgs),
    /// Which resources talk to which, and whether with mTLS.
    Edges(edges::EdgesArgs),
    /// Stream live requests of a resource (req, rsp and end events).
    Tap(tap::TapArgs),
    /// A live table of a resource's most frequent requests, from tap.
    Top(top::TopArgs),
    /// Recent traces (slow or failed with --min-duration, --errors), or one as a waterfall.
    Trace(trace::TraceArgs),
    /// Print the CLI's version and, when reachable, the control plane's and its proxies'.
    Version(version::VersionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Install(args) => install::run(args),
        Command::Inject(args) => inject::run_inject(args),
        Command::Uninject(args) => inject::run_uninject(args),
        Command::Check(args) => check::run(args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Diagnostics(args) => diagnostics::run(args),
        Command::Stat(args) => stat::run(args),
        Command::Routes(args) => routes::run(args),
        Command::Authz(args) => authz::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Edges(args) => edges::run(args),
        Command::Tap(args) => tap::run(args),
        Command::Top(args) => top::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Version(args) => version::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
