//! `limmat tunnel (server|proxy|client) <local> <relay> <domain>`: the device side and its
//! client counterpart, in YalerTunnel2's argument shape (spec 2.9), so that scripts written
//! for YalerTunnel keep working.
//!
//! Arguments are parsed into typed addresses and a checked domain by clap, so a typo stops the
//! program with a message naming the bad value instead of being retried by the backoff.

use anyhow::Context;
use clap::{Args, ValueEnum};
use limmat_agent::tunnel::{self as modes, ClientConfig, TunnelClient};
use limmat_agent::{Agent, AgentConfig, LocalAddr, RelayAddr};
use tokio_util::sync::CancellationToken;

/// Where the key is read from when `--secret-key` is not given, to keep it out of `ps`.
const SECRET_KEY_ENV: &str = "LIMMAT_SECRET_KEY";

#[derive(Args, Debug)]
pub struct TunnelArgs {
    /// server: relay clients to <LOCAL>; proxy: the same after a `CONNECT /<domain>` from a
    /// tunnel client; client: accept on <LOCAL> and tunnel to <DOMAIN>'s proxy.
    #[arg(value_enum)]
    mode: Mode,
    /// host:port of the local service (server, proxy) or to listen on (client).
    #[arg(value_name = "LOCAL")]
    local: LocalAddr,
    /// The relay, host[:port] (default port 80). `tls:` and port 443 select TLS (not yet
    /// supported); `tcp:` forces plain TCP.
    #[arg(value_name = "RELAY")]
    relay: RelayAddr,
    /// The relay domain to register (server, proxy) or to reach (client).
    #[arg(value_name = "DOMAIN", value_parser = parse_domain)]
    domain: String,
    /// Device key, sent as `Authorization: Bearer` (server, proxy). Defaults to the
    /// LIMMAT_SECRET_KEY environment variable.
    #[arg(long, value_name = "K")]
    secret_key: Option<String>,
    /// Connections kept waiting at the relay (server, proxy).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    min_listeners: usize,
    /// Cap on waiting plus relayed connections (server, proxy).
    #[arg(long, value_name = "M", default_value_t = 128, value_parser = at_least_one)]
    max_sockets: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Server,
    Proxy,
    Client,
}

fn parse_domain(domain: &str) -> Result<String, limmat_wire::route::DomainError> {
    limmat_wire::route::parse_domain(domain)
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("must be a whole number".into()),
    }
}

pub async fn run(args: TunnelArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.mode != Mode::Client && args.local.port == 0 {
        anyhow::bail!(
            "the local address {} has port 0: server and proxy modes connect to it, so it needs a real port",
            args.local
        );
    }
    match args.mode {
        Mode::Client => {
            if args.secret_key.is_some() {
                tracing::warn!("--secret-key is for server and proxy modes; ignored");
            }
            let config = ClientConfig::new(args.relay, args.domain);
            let client = TunnelClient::bind(&args.local, config).await?;
            client.run(shutdown).await;
        }
        Mode::Server => {
            let local = args.local.clone();
            modes::run_server(agent(args)?, local, shutdown).await;
        }
        Mode::Proxy => {
            let local = args.local.clone();
            modes::run_proxy(agent(args)?, local, shutdown).await;
        }
    }
    Ok(())
}

/// The device side of server and proxy modes.
fn agent(args: TunnelArgs) -> anyhow::Result<Agent> {
    let mut config = AgentConfig::new(args.relay, args.domain);
    config.secret_key = args
        .secret_key
        .or_else(|| std::env::var(SECRET_KEY_ENV).ok());
    config.min_listeners = args.min_listeners;
    config.max_sockets = args.max_sockets;
    Agent::new(config).context("cannot start the tunnel")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: TunnelArgs,
    }

    fn parse(line: &str) -> Result<TunnelArgs, String> {
        Cli::try_parse_from(std::iter::once("tunnel").chain(line.split_whitespace()))
            .map(|cli| cli.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn yalertunnel_argument_shape() {
        let args =
            parse("proxy localhost:22 relay.example.com:80 GsIoT-1 --min-listeners 4").unwrap();
        assert_eq!(args.mode, Mode::Proxy);
        assert_eq!(args.local, LocalAddr::new("localhost", 22));
        assert_eq!(args.relay, RelayAddr::plain("relay.example.com", 80));
        assert_eq!(args.domain, "gsiot-1");
        assert_eq!((args.min_listeners, args.max_sockets), (4, 128));
        let args = parse("client 127.0.0.1:10022 relay dom --secret-key k").unwrap();
        assert_eq!(args.relay.port, 80);
        assert_eq!(args.secret_key.as_deref(), Some("k"));
    }

    #[test]
    fn bad_arguments_name_the_problem() {
        for (line, expected) in [
            ("server localhost relay dom", "port is required"),
            ("server localhost:22 relay:x dom", "relay:x"),
            ("server localhost:22 relay relay_domain", "reserved"),
            ("server localhost:22 relay a/b", "domain contains"),
            (
                "server localhost:22 relay dom --min-listeners 0",
                "min-listeners",
            ),
            ("bridge localhost:22 relay dom", "bridge"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
