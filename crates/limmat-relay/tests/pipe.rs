//! The pipe on real sockets: compatibility checklist items 33–37, and the end-to-end tunnel
//! conventions that the relay must forward untouched (38, 41).

mod common;

use common::*;
use limmat_relay::DataPath;
use rand::RngCore;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client paired with a device; the 101 and the client's head are already read.
async fn paired(relay: &TestRelay) -> (TcpStream, TcpStream) {
    let mut device = relay.device("dom").await;
    let request = b"GET /dom HTTP/1.1\r\n\r\n";
    let client = relay.send(request).await;
    let got = read_n(&mut device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[UPGRADE.len()..], request);
    relay.pipes(1).await;
    (client, device)
}

async fn item_33_ten_mib_each_way_arrive_unmodified(case: Case) {
    let relay = start(|c| {
        (c.data_path, c.accept_runtimes) = case;
    })
    .await;
    let (client, device) = paired(&relay).await;
    let mut up = vec![0u8; 10 << 20];
    let mut down = vec![0u8; 10 << 20];
    rand::rng().fill_bytes(&mut up);
    rand::rng().fill_bytes(&mut down);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut device_rx, mut device_tx) = device.into_split();
    let send_up = {
        let up = up.clone();
        tokio::spawn(async move {
            client_tx.write_all(&up).await.unwrap();
            client_tx.shutdown().await.unwrap();
            client_tx
        })
    };
    let send_down = {
        let down = down.clone();
        tokio::spawn(async move {
            device_tx.write_all(&down).await.unwrap();
            device_tx.shutdown().await.unwrap();
            device_tx
        })
    };
    let mut got_up = Vec::new();
    let mut got_down = Vec::new();
    let (a, b) = tokio::join!(
        device_rx.read_to_end(&mut got_up),
        client_rx.read_to_end(&mut got_down)
    );
    a.unwrap();
    b.unwrap();
    assert!(got_up == up, "client to device differs");
    assert!(got_down == down, "device to client differs");
    drop((send_up.await.unwrap(), send_down.await.unwrap()));
    relay.pipes(0).await;
    relay.stop().await;
}

async fn item_34_half_close_both_ways(case: Case) {
    let relay = start(|c| {
        (c.data_path, c.accept_runtimes) = case;
    })
    .await;
    // The client finishes first; the device still answers.
    let (mut client, mut device) = paired(&relay).await;
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut device).await, b"last words");
    device.write_all(b"reply after FIN").await.unwrap();
    device.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"reply after FIN");
    relay.pipes(0).await;
    relay.open_connections(0).await;
    drop((client, device));
    // The device finishes first; the client still sends.
    let (mut client, mut device) = paired(&relay).await;
    device.write_all(b"response").await.unwrap();
    device.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"response");
    client.write_all(b"more").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut device).await, b"more");
    relay.pipes(0).await;
    relay.open_connections(0).await;
    drop((client, device));
    relay.stop().await;
}

async fn item_35_idle_pipes_close_busy_ones_do_not(case: Case) {
    let idle = Duration::from_millis(400);
    let relay = start(|c| {
        c.idle_timeout = idle;
        (c.data_path, c.accept_runtimes) = case;
    })
    .await;
    let (mut client, mut device) = paired(&relay).await;
    // Busy for three idle periods: still open.
    for i in 0..12u8 {
        client.write_all(&[i]).await.unwrap();
        assert_eq!(read_n(&mut device, 1).await, [i]);
        tokio::time::sleep(idle / 4).await;
    }
    // Then idle: both legs are closed.
    assert_eq!(read_to_end(&mut client).await, b"");
    assert_eq!(read_to_end(&mut device).await, b"");
    relay.pipes(0).await;
    relay.stop().await;
}

#[tokio::test]
async fn item_35_zero_idle_timeout_never_closes() {
    let relay = start(|c| c.idle_timeout = Duration::ZERO).await;
    let (mut client, mut device) = paired(&relay).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.write_all(b"still here").await.unwrap();
    assert_eq!(read_n(&mut device, 10).await, b"still here");
    drop((client, device));
    relay.stop().await;
}

#[tokio::test]
async fn item_37_further_requests_reach_the_same_device() {
    let relay = start(|_| {}).await;
    let (mut client, mut device) = paired(&relay).await;
    let other = relay.device("dom").await;
    for i in 0..3 {
        let request = format!("GET /dom/{i} HTTP/1.1\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(read_n(&mut device, request.len()).await, request.as_bytes());
        device
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        read_n(&mut client, 27).await;
    }
    drop((client, device, other));
    relay.stop().await;
}

#[tokio::test]
async fn item_38_yaler_connect_is_forwarded_verbatim() {
    let relay = start(|_| {}).await;
    let mut device = relay.device("dom").await;
    let connect = b"CONNECT /dom HTTP/1.1\r\nHost: relay:80\r\n\r\n";
    let mut client = relay.send(connect).await;
    let got = read_n(&mut device, UPGRADE.len() + connect.len()).await;
    assert_eq!(&got[UPGRADE.len()..], connect);
    device
        .write_all(b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-limmat\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_n(&mut client, 35).await,
        b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-limmat\r\n"
    );
    client.write_all(b"SSH-2.0-client\r\n").await.unwrap();
    assert_eq!(read_n(&mut device, 16).await, b"SSH-2.0-client\r\n");
    drop((client, device));
    relay.stop().await;
}

#[tokio::test]
async fn item_41_plainsocket_upgrade_is_forwarded() {
    let relay = start(|_| {}).await;
    let mut device = relay.device("dom").await;
    let request = b"OPTIONS /dom HTTP/1.1\r\nUpgrade: plainsocket\r\nConnection: Upgrade\r\n\r\n";
    let mut client = relay.send(request).await;
    let got = read_n(&mut device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[UPGRADE.len()..], request);
    let answer =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: plainsocket\r\nConnection: Upgrade\r\n\r\n";
    device.write_all(answer).await.unwrap();
    assert_eq!(read_n(&mut client, answer.len()).await, answer);
    drop((client, device));
    relay.stop().await;
}

async fn reset_on_one_leg_closes_both(case: Case) {
    let relay = start(|c| {
        (c.data_path, c.accept_runtimes) = case;
    })
    .await;
    let (client, mut device) = paired(&relay).await;
    // SO_LINGER 0 makes close() send a RST.
    client.set_zero_linger().unwrap();
    drop(client);
    assert_eq!(read_to_end(&mut device).await, b"");
    relay.pipes(0).await;
    relay.open_connections(0).await;
    relay.stop().await;
}

async fn drain_lets_in_flight_pipes_finish(case: Case) {
    let relay = start(|c| {
        c.drain_timeout = Duration::from_secs(30);
        (c.data_path, c.accept_runtimes) = case;
    })
    .await;
    let (mut client, mut device) = paired(&relay).await;
    relay.handle.shutdown();
    // New connections are refused once every listener is closed (with `per-core`, each
    // runtime closes its own `SO_REUSEPORT` twin on its own thread; nothing signals the last
    // one, so the test polls)...
    let addr = relay.addr;
    let start = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            start.elapsed() < PATIENCE,
            "listener still accepting during drain"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...but the open pipe still carries its response.
    device.write_all(b"slow response").await.unwrap();
    device.shutdown().await.unwrap();
    assert_eq!(read_n(&mut client, 13).await, b"slow response");
    drop(client);
    relay.stop().await;
    drop(device);
}

async fn drain_timeout_closes_remaining_pipes(case: Case) {
    let relay = start(|c| {
        c.drain_timeout = Duration::from_millis(300);
        (c.data_path, c.accept_runtimes) = case;
    })
    .await;
    let (mut client, mut device) = paired(&relay).await;
    relay.stop().await;
    assert_eq!(read_to_end(&mut client).await, b"");
    assert_eq!(read_to_end(&mut device).await, b"");
}

/// A data path, and the runtimes the relay starts besides the test's (the `per-core` layout).
type Case = (DataPath, usize);

/// Each of these runs on every data path: `splice(2)` between plain TCP legs (Linux), `auto`
/// (copied, then spliced once a direction is bulk) and the copying pipe, which must behave
/// identically (bytes, half-close, idle, reset, drain); and once more with three more
/// runtimes accepting on `SO_REUSEPORT` sockets, where a device and its client are often
/// accepted on different runtimes.
macro_rules! both_paths {
    ($($name:ident),*) => {
        mod spliced {
            $(#[tokio::test] async fn $name() { super::$name((super::DataPath::Splice, 0)).await })*
        }
        mod auto {
            $(#[tokio::test] async fn $name() { super::$name((super::DataPath::Auto, 0)).await })*
        }
        mod copied {
            $(#[tokio::test] async fn $name() { super::$name((super::DataPath::Copy, 0)).await })*
        }
        mod per_core {
            $(#[tokio::test] async fn $name() { super::$name((super::DataPath::Auto, 3)).await })*
        }
    };
}

both_paths!(
    item_33_ten_mib_each_way_arrive_unmodified,
    item_34_half_close_both_ways,
    item_35_idle_pipes_close_busy_ones_do_not,
    reset_on_one_leg_closes_both,
    drain_lets_in_flight_pipes_finish,
    drain_timeout_closes_remaining_pipes
);
