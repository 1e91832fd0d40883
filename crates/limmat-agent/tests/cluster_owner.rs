//! Issue 14 item 5 for limmat-mux/1: a device redirected to its domain's owner (a cluster
//! node) whose mux connection ends without GOAWAY — the owner was killed — goes back to the
//! relay address it was configured with at once, not to the dead owner, so that it is
//! redirected to the new owner without waiting for a backoff step.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::FakeRelay;
use limmat_agent::{Agent, CancellationToken, Transport};
use limmat_relay::{Relay, RelayConfig};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(20);

/// A real relay in a runtime of its own, so that dropping the runtime ends every connection
/// without a GOAWAY, as a SIGKILL would.
struct Owner {
    addr: SocketAddr,
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Owner {
    fn start() -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let relay = Relay::bind(RelayConfig {
                    listen: vec!["127.0.0.1:0".parse().unwrap()],
                    ..RelayConfig::default()
                })
                .await
                .unwrap();
                addr_tx.send(relay.local_addrs()[0]).unwrap();
                tokio::spawn(relay.run());
            });
            let _ = killed.recv();
            runtime.shutdown_background();
        });
        Self {
            addr: addr_rx.recv().unwrap(),
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        drop(self.kill.take());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn a_mux_device_whose_owner_dies_goes_home_at_once() {
    let home = FakeRelay::bind().await;
    let mut owner = Owner::start();
    let mut config = home.config("dom");
    config.transport = Transport::Mux;
    let agent = Agent::new(config).unwrap();
    let mut status = agent.status();
    let stop = CancellationToken::new();
    let running = tokio::spawn(agent.run(|_conn| async {}, stop.clone()));
    // Home sends the device to the owner, where its mux connection comes up.
    let (mut peer, _) = home.accept_head().await;
    peer.send(
        format!(
            "HTTP/1.1 307 \r\nLocation: http://127.0.0.1:{}/dom\r\n\r\n",
            owner.addr.port()
        )
        .as_bytes(),
    )
    .await;
    timeout(WAIT, status.wait_for(|s| s.mux == 1))
        .await
        .unwrap()
        .unwrap();
    // The owner dies: the next handshake is at home, at once (a backoff step is 0.67-1.33 s).
    let died = Instant::now();
    owner.kill();
    let (_peer, head) = timeout(WAIT, home.accept_head()).await.unwrap();
    let took = died.elapsed();
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("POST /dom HTTP/1.1\r\nUpgrade: limmat-mux/1\r\n"),
        "{head}"
    );
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(status.borrow().failures, 0, "no attempt at the dead owner");
    stop.cancel();
    timeout(WAIT, running).await.unwrap().unwrap();
}
