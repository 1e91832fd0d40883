//! `limmat`: one binary for every part of Limmat.
//!
//! - `limmat relay`: the public reverse-HTTP relay.
//! - `limmat tunnel server|proxy|client`: the device side, in YalerTunnel's argument shape.
//! - `limmat gateway`: the BLE gateway, served locally and through a relay.
//! - `limmat demo`: a relay, a simulated gateway and a webhook receiver in one process.

#[cfg(feature = "gateway")]
mod demo;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "relay")]
mod key;
mod logging;
#[cfg(feature = "relay")]
mod metrics;
#[cfg(feature = "relay")]
mod relay;
// `per-core` and its extra runtimes are the relay's.
#[cfg_attr(not(feature = "relay"), allow(unused))]
mod runtime;
// An agent-only build reads no settings table; it keeps the check of misspelt variables.
#[cfg_attr(not(feature = "relay"), allow(unused))]
mod settings;
mod tunnel;
mod tunnel_services;
mod tunnel_status;
// The tunnel's durations use it too, in an agent-only build.
#[cfg_attr(not(feature = "relay"), allow(unused))]
mod units;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "limmat",
    version,
    about = "Connect devices behind NAT and firewalls with the Web"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text` for people, `json` for one JSON object per line.
    #[arg(
        long,
        global = true,
        help_heading = "Logging",
        value_name = "FORMAT",
        env = "LIMMAT_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run a relay: devices connect out to it, web clients reach them through it.
    #[cfg(feature = "relay")]
    Relay(Box<relay::RelayArgs>),
    /// Run the device side (server, proxy) or its client counterpart, as YalerTunnel does.
    Tunnel(Box<tunnel::TunnelArgs>),
    /// Run the BLE gateway: GAP/GATT REST, Beacon API and webhooks, locally and through a relay.
    #[cfg(feature = "gateway")]
    Gateway(Box<gateway::GatewayArgs>),
    /// Try everything in one process: relay, simulated gateway and webhook receiver.
    #[cfg(feature = "gateway")]
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let command = Cli::command();
    #[cfg(feature = "relay")]
    let command = command.mut_subcommand("relay", relay::with_env_in_help);
    let known_env = known_env(&command);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The demo prints its own instructions and the verified webhooks on stdout; its log shows
    // only what needs attention unless asked (`-v`, or RUST_LOG).
    let default_filter = match &cli.command {
        #[cfg(feature = "gateway")]
        Command::Demo(args) if !args.verbose => demo::QUIET_LOG,
        _ => "info",
    };
    logging::init(cli.log_format, default_filter);
    for (name, near) in settings::unknown_env(&known_env) {
        match near {
            Some(near) => tracing::warn!(
                "{name} is not a Limmat variable and is ignored (did you mean {near}?)"
            ),
            None => tracing::warn!("{name} is not a Limmat variable and is ignored"),
        }
    }
    // The relay's settings choose its runtime, so they are read before it exists.
    let command = match cli.command {
        #[cfg(feature = "relay")]
        Command::Relay(args) => match relay::prepare(*args) {
            Ok(Some(prepared)) => Ready::Relay(Box::new(prepared)),
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                report(format_args!("error: {e:#}"));
                return ExitCode::FAILURE;
            }
        },
        other => Ready::Other(other),
    };
    let choice = match &command {
        #[cfg(feature = "relay")]
        Ready::Relay(prepared) => prepared.runtime,
        Ready::Other(Command::Tunnel(args)) => args.runtime(),
        Ready::Other(_) => runtime::Choice {
            layout: runtime::Layout::MultiThread,
            threads: 0,
        },
    };
    let runtime = match choice.build() {
        Ok(rt) => rt,
        Err(e) => {
            report(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let command = match command {
            #[cfg(feature = "relay")]
            Ready::Relay(prepared) => return relay::run(*prepared, shutdown).await,
            Ready::Other(command) => command,
        };
        match command {
            #[cfg(feature = "relay")]
            Command::Relay(_) => Ok(()),
            Command::Tunnel(args) => match args.config.clone() {
                Some(_) => tunnel_services::run(*args, shutdown).await,
                None => tunnel::run(*args, shutdown).await,
            },
            #[cfg(feature = "gateway")]
            Command::Gateway(args) => gateway::run(*args, shutdown).await,
            #[cfg(feature = "gateway")]
            Command::Demo(args) => demo::run(args, shutdown).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(format_args!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A command whose settings have been read: the relay's choose its runtime.
enum Ready {
    #[cfg(feature = "relay")]
    Relay(Box<relay::Prepared>),
    Other(Command),
}

/// Every `LIMMAT_…` variable some command reads: those clap reads for its flags, the relay's
/// settings, and the device key.
fn known_env(command: &clap::Command) -> Vec<String> {
    fn walk(command: &clap::Command, out: &mut Vec<String>) {
        let names = command.get_arguments().filter_map(|a| a.get_env());
        out.extend(names.filter_map(|n| n.to_str()).map(str::to_owned));
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    // `limmat tunnel` reads LIMMAT_SECRET_KEY itself; the gateway's flag names it for clap.
    let mut known = vec!["LIMMAT_SECRET_KEY".to_owned()];
    #[cfg(feature = "relay")]
    known.extend(relay::env_names());
    walk(command, &mut known);
    known
}

/// The exit status after a second SIGINT or SIGTERM: 128 + SIGINT, as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

/// SIGINT or SIGTERM starts a graceful stop; a second one during the drain exits at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                let _ = tokio::signal::ctrl_c().await;
                return exit_now();
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stop requested (again to stop at once)");
        shutdown.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        exit_now();
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stop requested (again to stop at once)");
        shutdown.cancel();
        let _ = tokio::signal::ctrl_c().await;
        exit_now();
    }
}

/// Leaves without waiting for open connections: what a second signal asks for.
fn exit_now() {
    tracing::warn!("second stop request: exiting without waiting for open connections");
    std::process::exit(EXIT_INTERRUPTED);
}

/// Writes a final error to stderr; if stderr is gone there is nobody to tell, and `eprintln!`
/// would panic instead of exiting with the failure status.
fn report(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}
