//! `limmat gateway`: the BLE gateway (`gateway-api.md`). Settings come from `gateway.toml`
//! (`--config`, sections as in the spec's §5.10), overridden by `LIMMAT_GATEWAY_…` variables,
//! overridden by flags. Each flag's variable is named after it; they carry a `GATEWAY_` infix
//! so that a relay and a gateway can share one environment (a container, the demo) without one
//! reading the other's `LIMMAT_LISTEN`. The relay secret key is the exception: it is the same
//! `LIMMAT_SECRET_KEY` that `limmat tunnel` reads, because it is the same device key.

use crate::settings::{self, from_str, one, path, socket_addr, text};
use anyhow::Context;
use clap::Args;
use limmat_agent::RelayAddr;
use limmat_gateway::config::{BackendKind, GatewayConfig};
use limmat_gateway::server::{Gateway, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug, Default)]
pub struct GatewayArgs {
    /// gateway.toml (see examples/gateway.toml). Flags override variables, which override it.
    #[arg(long, value_name = "FILE", env = "LIMMAT_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration, print "configuration OK" and exit.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub settings: GatewaySettings,
}

settings::settings! {
    /// The gateway settings that have a flag (and a `LIMMAT_GATEWAY_…` variable, which clap
    /// reads); every other one is a key of `gateway.toml` only, defined in its section of
    /// [`GatewayConfig`]. Each entry says where its value lands in the file's sections.
    pub struct GatewaySettings => GatewayConfig {
        /// The local API listener [file: api.listen] [default: 127.0.0.1:8000].
        #[arg(value_name = "ADDR", env = "LIMMAT_GATEWAY_LISTEN")]
        listen: SocketAddr = one(socket_addr) => |c, v| c.api.listen = Some(v.to_string());
        /// The BLE backend [file: backend.kind] [default: sim].
        #[arg(value_name = "KIND", env = "LIMMAT_GATEWAY_BACKEND")]
        backend: BackendKind = one(parse_backend) => |c, v| c.backend.kind = v;
        /// The BlueZ adapter [file: backend.adapter] [default: hci0].
        #[arg(value_name = "NAME", env = "LIMMAT_GATEWAY_ADAPTER")]
        adapter: String = one(text) => |c, v| c.backend.adapter = v;
        /// Serve the API through this relay as well, [tls:|tcp:]host[:port]
        /// [file: relay.address].
        #[arg(value_name = "HOST:PORT", env = "LIMMAT_GATEWAY_RELAY")]
        relay: RelayAddr = one(from_str::<RelayAddr>)
            => |c, v| c.relay.address = Some(v.to_string());
        /// The relay domain to register [file: relay.domain].
        #[arg(value_name = "D", env = "LIMMAT_GATEWAY_DOMAIN")]
        domain: String = one(text) => |c, v| c.relay.domain = Some(v);
        /// Device key for the relay [file: relay.secret_key].
        #[arg(value_name = "K", env = "LIMMAT_SECRET_KEY", hide_env_values = true)]
        secret_key: String = one(text) => |c, v| {
            let key = v.trim();
            if !key.is_empty() {
                c.relay.secret_key = Some(key.to_owned());
            }
        };
        /// Reach the relay through this outbound proxy: http://[user:password@]host:port,
        /// https://…, socks5://…, socks5h://… or `none`; unset reads https_proxy, http_proxy,
        /// all_proxy and no_proxy as curl does [file: relay.relay_proxy].
        #[arg(value_name = "URL|none", env = "LIMMAT_GATEWAY_RELAY_PROXY")]
        relay_proxy: String = one(text) => |c, v| {
            c.relay.relay_proxy = Some(v);
            c.relay.relay_proxy_from = Some("--relay-proxy or LIMMAT_GATEWAY_RELAY_PROXY");
        };
        /// Deliver webhooks through this HTTP forward proxy, normally the relay
        /// (http://relay:port) [file: webhooks.proxy].
        #[arg(value_name = "URL", env = "LIMMAT_GATEWAY_EGRESS_PROXY")]
        egress_proxy: String = one(text) => |c, v| c.webhooks.proxy = Some(v);
        /// Where the state database lives [file: gateway.state_dir]
        /// [default: ./limmat-gateway-state].
        #[arg(value_name = "DIR", env = "LIMMAT_GATEWAY_STATE_DIR")]
        state_dir: PathBuf = one(path) => |c, v| c.gateway.state_dir = v;
        /// The gateway's name in events [file: gateway.name] [default: limmat-gateway].
        #[arg(value_name = "NAME", env = "LIMMAT_GATEWAY_NAME")]
        name: String = one(text) => |c, v| c.gateway.name = v;
    }
}

fn parse_backend(value: &str) -> Result<BackendKind, String> {
    match value {
        "sim" => Ok(BackendKind::Sim),
        "bluez" => Ok(BackendKind::Bluez),
        other => Err(format!(
            "unknown backend `{other}`; expected `sim` or `bluez`"
        )),
    }
}

/// The default local listener (§1.2).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

impl GatewayArgs {
    /// The file (if any) with the flags and variables laid over it, validated.
    pub fn into_config(self) -> anyhow::Result<GatewayConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                GatewayConfig::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => GatewayConfig::default(),
        };
        self.settings.apply(&mut config);
        if config.api.listen.is_none() {
            config.api.listen = Some(DEFAULT_LISTEN.into());
        }
        check(&config)?;
        Ok(config)
    }
}

/// What the types and `GatewayConfig::validate` cannot see: cross-field rules.
fn check(config: &GatewayConfig) -> anyhow::Result<()> {
    config.validate()?;
    if let Some(listen) = &config.api.listen {
        listen.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!("api.listen = {listen}: expected an address such as 127.0.0.1:8000")
        })?;
    }
    let relay = &config.relay;
    match (&relay.address, &relay.domain) {
        (Some(address), Some(domain)) => {
            address
                .parse::<RelayAddr>()
                .map_err(|e| anyhow::anyhow!("relay.address = {address}: {e}"))?;
            limmat_wire::route::parse_domain(domain)
                .map_err(|e| anyhow::anyhow!("relay.domain = {domain}: {e}"))?;
            if let Some(proxy) = &relay.relay_proxy {
                proxy
                    .parse::<limmat_agent::RelayProxy>()
                    .map_err(|e| anyhow::anyhow!("relay.relay_proxy = {proxy}: {e}"))?;
            }
        }
        (Some(_), None) => {
            anyhow::bail!("relay.address is set but relay.domain is not: --relay needs --domain")
        }
        (None, Some(_)) => {
            anyhow::bail!("relay.domain is set but relay.address is not: --domain needs --relay")
        }
        (None, None) => {}
    }
    if config.backend.kind == BackendKind::Bluez && !cfg!(feature = "bluez") {
        anyhow::bail!(
            "backend.kind = bluez: this build has no BlueZ backend; rebuild with `--features bluez`"
        );
    }
    Ok(())
}

pub async fn run(args: GatewayArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let check_only = args.check_config;
    let config = args.into_config()?;
    if check_only {
        crate::key::print_out(format_args!("configuration OK"))?;
        return Ok(());
    }
    let options = Options {
        config,
        prometheus: crate::metrics::install(),
    };
    let gateway = Gateway::start(options, shutdown)
        .await
        .context("the gateway cannot start")?;
    gateway.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    fn config(line: &str) -> anyhow::Result<GatewayConfig> {
        let cli = Cli::try_parse_from(std::iter::once("gateway").chain(line.split_whitespace()))?;
        cli.args.into_config()
    }

    #[test]
    fn flags_fill_the_sections() {
        let c = config(
            "--listen 127.0.0.1:9000 --relay relay:80 --domain gw-1 --secret-key k --name n",
        )
        .unwrap();
        assert_eq!(c.api.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(c.relay.address.as_deref(), Some("relay:80"));
        assert_eq!(c.relay.domain.as_deref(), Some("gw-1"));
        assert_eq!(c.relay.secret_key.as_deref(), Some("k"));
        assert_eq!(c.gateway.name, "n");
        assert_eq!(
            config("").unwrap().api.listen.as_deref(),
            Some(DEFAULT_LISTEN)
        );
    }

    #[test]
    fn bad_settings_name_the_problem() {
        for (line, expected) in [
            ("--relay relay:80", "needs --domain"),
            ("--domain gw", "needs --relay"),
            ("--relay relay:80 --domain gap", "relay.domain"),
            ("--relay relay:80 --domain a/b", "relay.domain"),
            ("--backend ble", "unknown backend `ble`"),
            ("--listen nowhere", "nowhere"),
            (
                "--relay relay:80 --domain gw --relay-proxy ftp://proxy:21",
                "relay.relay_proxy = ftp://proxy:21: proxy scheme `ftp` is not supported",
            ),
        ] {
            let err = format!("{:#}", config(line).unwrap_err());
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
