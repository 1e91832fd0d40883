//! `limmat demo`: the whole platform in one process, to try it in a minute. A relay (with its
//! admin dashboard), a gateway on the simulated BLE world registered on the relay as
//! `gw-demo`, and a local webhook receiver that verifies and prints every delivery. It then
//! prints the URLs and copy-paste `curl` commands that go through the relay, as a web client
//! behind the relay would.
//!
//! The state lives in a temporary directory removed at exit, so every run starts clean. The
//! gateway may deliver webhooks to the demo's own receiver only: `allow_networks` covers
//! 127.0.0.1 and nothing else.

use anyhow::Context;
use clap::Args;
use limmat_gateway::config::GatewayConfig;
use limmat_gateway::server::{Gateway, Options};
use limmat_gateway::webhook::receiver::{Receiver, ReceiverOptions};
use limmat_gateway::webhook::sign;
use limmat_relay::{Listen, Relay, RelayConfig};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// The domain the demo gateway registers.
const DOMAIN: &str = "gw-demo";

/// The demo's log filter without `-v`: warnings and errors only, except the gateway's warning
/// that its API has no token, which the demo means (its curl commands use none).
pub const QUIET_LOG: &str = "warn,limmat_gateway::server=error";

/// The simulated world's speed-ups that the gateway accepts (`sim.time_scale`).
const TIME_SCALES: std::ops::RangeInclusive<f64> = 0.001..=1e6;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The relay's listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    relay_listen: SocketAddr,
    /// The relay's admin listener (dashboard, metrics).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// The gateway's local API listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    gateway_listen: SocketAddr,
    /// The webhook receiver's listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8900")]
    receiver_listen: SocketAddr,
    /// Run the simulated world this many times faster than real time (0.001 to 1000000).
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = time_scale)]
    time_scale: f64,
    /// Log every event at info (the relay's access log, the gateway's and agent's lines), not
    /// only warnings. RUST_LOG, when set, chooses instead.
    #[arg(short, long)]
    pub verbose: bool,
}

/// A `--time-scale`, checked before anything listens.
fn time_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if TIME_SCALES.contains(&x) => Ok(x),
        _ => Err(format!(
            "{s:?} is not a speed-up from {} to {} (1 is real time)",
            TIME_SCALES.start(),
            TIME_SCALES.end()
        )),
    }
}

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let prometheus = crate::metrics::install();
    let state = tempdir().context("cannot create the demo's state directory")?;

    let relay_config = RelayConfig {
        listen: vec![Listen {
            addr: args.relay_listen,
            tls: false,
        }],
        admin: Some(args.admin),
        ..RelayConfig::default()
    };
    let relay = Relay::bind(relay_config)
        .await
        .context("the demo relay cannot start")?;
    let relay_addr = relay.local_addrs()[0];
    let admin_addr = relay.admin_addr();
    let relay_handle = relay.handle();
    let relay_task = tokio::spawn(relay.run());

    let key = sign::generate_secret().context("the system's random generator failed")?;
    let secret = sign::format_secret(&key);
    let receiver = Receiver::start_with(
        args.receiver_listen,
        vec![key],
        ReceiverOptions {
            tls: None,
            print: true,
        },
    )
    .await
    .context("the demo webhook receiver cannot start")?;

    let mut config = GatewayConfig::default();
    config.gateway.name = "limmat-demo".into();
    config.gateway.state_dir = state.path().to_path_buf();
    config.api.listen = Some(args.gateway_listen.to_string());
    config.relay.address = Some(relay_addr.to_string());
    config.relay.domain = Some(DOMAIN.into());
    config.webhooks.allow_networks = vec!["127.0.0.1/32".into()];
    config.sim.time_scale = args.time_scale;
    // The default world's beacons are silent for 15 s (Eddystone URL) and 20 s (AltBeacon) of
    // each cycle, less than the default leave_after of 30 s: they would never leave, and the
    // entered/left subscription the demo suggests would never receive anything. Ten simulated
    // seconds lets both leave and come back each cycle.
    config.presence.leave_after =
        std::time::Duration::try_from_secs_f64((10.0 / args.time_scale).clamp(0.05, 30.0))
            .unwrap_or(std::time::Duration::from_secs(30));
    let gateway = Gateway::start(Options { config, prometheus }, shutdown.clone())
        .await
        .context("the demo gateway cannot start")?;

    let base = format!("http://{relay_addr}/{DOMAIN}");
    let hook = receiver.url("/hook");
    crate::key::print_out(format_args!(
        "{}",
        instructions(&base, gateway.local_addr(), admin_addr, &hook, &secret)
    ))?;

    // The gateway stops first, while its relay is still there: stopping the relay first would
    // make the gateway's agent see its connections cut and warn about it.
    shutdown.cancelled().await;
    gateway.wait().await;
    relay_handle.shutdown();
    let _ = relay_task.await;
    drop(receiver);
    Ok(())
}

fn instructions(
    base: &str,
    local: SocketAddr,
    admin: Option<SocketAddr>,
    hook: &str,
    secret: &str,
) -> String {
    let dashboard = admin
        .map(|a| format!("http://{a}/"))
        .unwrap_or_else(|| "(no admin listener)".into());
    format!(
        r#"Limmat demo is running. Press Ctrl-C to stop.
(Only warnings are logged; `limmat demo -v` logs every request and event.)

  gateway through the relay   {base}/
  gateway, local listener     http://{local}/
  relay dashboard             {dashboard}
  webhook receiver            {hook}

Try (every request goes through the relay):

  # scan: the simulated beacons and peripherals
  curl -s '{base}/gap/nodes?active=1'

  # connect "Limmat HRM", then read its battery level (0x64 = 100 %)
  curl -s -X PUT '{base}/gap/nodes/c0ffee000010?connect=1'
  curl -s '{base}/gatt/nodes/c0ffee000010/characteristics/0022/value'

  # write the vendor characteristic and read it back
  curl -s -X PUT '{base}/gatt/nodes/c0ffee000010/characteristics/0042/value/0102'
  curl -s '{base}/gatt/nodes/c0ffee000010/characteristics/0042/value'

  # heart-rate notifications as Server-Sent Events
  curl -sN '{base}/gatt/nodes/c0ffee000010/characteristics/0032/value?notify=1&event=1'

  # the beacons present now, and the live event stream
  curl -s '{base}/beacon/beacons'
  curl -sN '{base}/beacon/events'

  # register a webhook: signed deliveries appear below, verified by the receiver
  curl -s -X POST -H 'Content-Type: application/json' \
    -d '{{"url": "{hook}", "secret": "{secret}", "types": ["beacon.entered", "beacon.left"]}}' \
    '{base}/beacon/subscriptions'
"#
    )
}

/// A fresh directory under the system's temporary directory, removed on drop.
fn tempdir() -> std::io::Result<TempDir> {
    let path = std::env::temp_dir().join(format!(
        "limmat-demo-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir(path))
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
