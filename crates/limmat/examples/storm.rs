//! Many devices in one process, for `bench/storm.sh` (issue 13 item 6, the reconnect storm):
//! `storm RELAY COUNT TRANSPORT PREFIX` runs COUNT agents (`limmat_agent::Agent`, one
//! waiting connection or one mux connection each) registering `PREFIX-0` … `PREFIX-<COUNT-1>`
//! on RELAY, with TRANSPORT `ptth` or `mux`, and prints one line every 100 ms:
//! `t_ms=<unix ms> online=<devices with a connection waiting or a mux connection up>
//! count=<COUNT> failures=<attempts failed so far>`, until Ctrl-C or SIGTERM.
//! Bench tool only: every relayed connection is dropped at once.

use limmat_agent::{Agent, AgentConfig, AgentStatus, CancellationToken, RelayAddr, Transport};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

fn usage(what: &str) -> ! {
    eprintln!("usage: storm RELAY COUNT ptth|mux PREFIX ({what})");
    std::process::exit(2)
}

/// Whether a device is reachable now: a connection waits at the relay, or a mux one is up.
fn online(s: &AgentStatus) -> bool {
    s.waiting > 0 || s.mux > 0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let relay: RelayAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage("RELAY"));
    let count: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage("COUNT"));
    let transport: Transport = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage("TRANSPORT"));
    let prefix = args.get(4).cloned().unwrap_or_else(|| usage("PREFIX"));

    let stop = CancellationToken::new();
    let up = Arc::new(AtomicUsize::new(0));
    let mut statuses: Vec<watch::Receiver<AgentStatus>> = Vec::with_capacity(count);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut config = AgentConfig::new(relay.clone(), format!("{prefix}-{i}"));
        config.transport = transport;
        config.max_sockets = 4;
        let agent = match Agent::new(config) {
            Ok(agent) => agent,
            Err(e) => {
                eprintln!("storm: {e}");
                std::process::exit(2)
            }
        };
        statuses.push(agent.status());
        let stop = stop.clone();
        tasks.spawn(agent.run(|conn| async move { drop(conn) }, stop));
    }
    let report = {
        let up = up.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let mut online_now = 0;
                let mut failures = 0;
                for s in &statuses {
                    let s = s.borrow();
                    online_now += usize::from(online(&s));
                    failures += s.failures;
                }
                up.store(online_now, Ordering::Relaxed);
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                println!("t_ms={ms} online={online_now} count={count} failures={failures}");
            }
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::exit(2)
        }
    };
    tokio::select! {
        () = report => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}
