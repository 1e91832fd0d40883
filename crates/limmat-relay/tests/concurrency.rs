//! Many devices and clients racing on a few domains: every client is served exactly once by a
//! device of its own domain, nobody is paired twice, and every connection is closed afterwards.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

const DOMAINS: usize = 4;
const PER_DOMAIN: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_devices_and_clients_pair_one_to_one() {
    let relay = start(|c| {
        c.client_wait = Duration::from_secs(20);
        c.max_per_domain = 0;
    })
    .await;
    let addr = relay.addr;
    let mut tasks = JoinSet::new();
    for d in 0..DOMAINS {
        for i in 0..PER_DOMAIN {
            // A device answers whatever client it gets with that client's request line.
            tasks.spawn(async move {
                let mut device = tokio::net::TcpStream::connect(addr).await.unwrap();
                device
                    .write_all(&handshake(&format!("dom{d}")))
                    .await
                    .unwrap();
                let mut got = vec![0; UPGRADE.len()];
                device.read_exact(&mut got).await.unwrap();
                assert_eq!(got, UPGRADE);
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while line.last() != Some(&b'\n') {
                    device.read_exact(&mut byte).await.unwrap();
                    line.push(byte[0]);
                }
                assert!(line.starts_with(format!("GET /dom{d}/").as_bytes()));
                device.write_all(&line).await.unwrap();
                device.shutdown().await.unwrap();
                let mut rest = Vec::new();
                device.read_to_end(&mut rest).await.unwrap();
            });
            tasks.spawn(async move {
                let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
                let request = format!("GET /dom{d}/{i} HTTP/1.1\r\n\r\n");
                client.write_all(request.as_bytes()).await.unwrap();
                let mut echoed = Vec::new();
                client.read_to_end(&mut echoed).await.unwrap();
                assert_eq!(echoed, format!("GET /dom{d}/{i} HTTP/1.1\r\n").as_bytes());
            });
        }
    }
    let all = tokio::time::timeout(PATIENCE * 3, async {
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
    })
    .await;
    assert!(all.is_ok(), "every client was served");
    relay.open_connections(0).await;
    relay.waiting_devices(0).await;
    relay.waiting_clients(0).await;
    relay.stop().await;
}
