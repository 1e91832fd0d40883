//! The fault proxy does what it says, on real sockets: an echo server behind it, a client in
//! front. Delays are checked from below only (a loaded machine can only add to them).

use limmat_faults::{FaultProxy, Profile};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn proxy(profile: Profile) -> FaultProxy {
    let upstream = echo_server().await;
    FaultProxy::start("127.0.0.1:0".parse().unwrap(), upstream, profile)
        .await
        .unwrap()
}

async fn round_trip(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<Duration> {
    let start = Instant::now();
    stream.write_all(data).await?;
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).await?;
    assert_eq!(back, data);
    Ok(start.elapsed())
}

#[tokio::test]
async fn a_clean_link_forwards_and_closes_with_a_fin() {
    let link = proxy(Profile::clean()).await;
    let mut s = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut s, b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    // The echo server sees the FIN, ends its copy and closes: EOF, not a reset.
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(link.stats().resets, 0);
}

#[tokio::test]
async fn latency_applies_each_way_and_bandwidth_paces() {
    let link = proxy(Profile {
        latency: Duration::from_millis(100),
        ..Profile::clean()
    })
    .await;
    let mut s = TcpStream::connect(link.addr()).await.unwrap();
    let rtt = round_trip(&mut s, b"ping").await.unwrap();
    assert!(rtt >= Duration::from_millis(200), "{rtt:?}");

    // 20 KB at 100 KB/s: at least 0.2 s (the way back overlaps the way there).
    link.set_profile(Profile {
        bandwidth: Some(100_000),
        ..Profile::clean()
    });
    let mut s = TcpStream::connect(link.addr()).await.unwrap();
    let took = round_trip(&mut s, &vec![7u8; 20_000]).await.unwrap();
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[tokio::test]
async fn reset_after_n_bytes_sends_an_rst() {
    let link = proxy(Profile {
        reset_after: Some(1000),
        ..Profile::clean()
    })
    .await;
    let mut s = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut s, &[1u8; 100]).await.unwrap();
    let _ = s.write_all(&[2u8; 2000]).await;
    let mut buf = vec![0u8; 4096];
    let err = loop {
        match s.read(&mut buf).await {
            Ok(0) => panic!("a FIN, not a reset"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(link.stats().resets, 1);
}

#[tokio::test]
async fn a_blackhole_holds_bytes_until_it_lifts() {
    let link = proxy(Profile::clean()).await;
    let mut s = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut s, b"before").await.unwrap();
    link.set_blackhole(true);
    s.write_all(b"during").await.unwrap();
    let mut back = [0u8; 6];
    let held = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut back)).await;
    assert!(held.is_err(), "bytes crossed a blackhole");
    link.set_blackhole(false);
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"during");
}

#[tokio::test]
async fn a_nat_forgets_an_idle_flow_and_its_bytes_vanish() {
    let link = proxy(Profile {
        nat_idle: Some(Duration::from_millis(300)),
        ..Profile::clean()
    })
    .await;
    let mut s = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut s, b"busy").await.unwrap();
    while link.stats().expired == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.write_all(b"lost").await.unwrap();
    let mut back = [0u8; 4];
    let vanished = tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut back)).await;
    assert!(vanished.is_err(), "bytes crossed a forgotten flow");
    // A new flow is a new mapping.
    let mut fresh = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut fresh, b"new").await.unwrap();
}

#[tokio::test]
async fn link_down_resets_new_and_open_flows() {
    let link = proxy(Profile::clean()).await;
    let mut open = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut open, b"up").await.unwrap();
    link.set_refuse(true);
    link.reset_all();
    let mut buf = [0u8; 8];
    let err = open.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let mut new = TcpStream::connect(link.addr()).await.unwrap();
    let refused = round_trip(&mut new, b"x").await.unwrap_err();
    assert!(
        matches!(
            refused.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
        ),
        "{refused}"
    );
    assert_eq!(link.stats().refused, 1);
    link.set_refuse(false);
    let mut back = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut back, b"again").await.unwrap();
}
