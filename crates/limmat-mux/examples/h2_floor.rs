//! The floor of the mux transport for `bench/http.sh`: the cheapest pair of programs we can
//! write that carry TCP connections as CONNECT streams of one HTTP/2 connection with `h2` and a
//! current-thread tokio runtime, the stack limmat-mux/1 is built on, and nothing else: no
//! handshake, no metadata, no routing, no limits, no keepalive, no counts, no logs.
//!
//! ```text
//! h2_floor relay LISTEN AGENT_LISTEN   # waits for one agent, then serves visitors at LISTEN
//! h2_floor agent RELAY ORIGIN          # one stream per visitor, a new connection to ORIGIN each
//! ```
//!
//! Both ends use limmat-mux/1's HTTP/2 settings (`limmat_mux::settings`: windows, frame size,
//! send buffer), so what limmat's mux costs above this pair is limmat's own. A measuring tool,
//! not a product: errors end the stream or the process.

use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use http::{Method, Request, Response};
use std::future::poll_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest read handed to `h2` as one DATA frame: limmat-mux/1's frame size.
const CHUNK: usize = limmat_mux::settings::MAX_FRAME as usize;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["relay", listen, agent] => rt.block_on(relay(listen, agent)),
        ["agent", relay_at, origin] => rt.block_on(agent(relay_at, origin)),
        _ => Err("usage: h2_floor relay LISTEN AGENT_LISTEN | h2_floor agent RELAY ORIGIN".into()),
    }
}

/// The relay's side: the HTTP/2 client, a CONNECT stream per visitor.
async fn relay(listen: &str, agent_listen: &str) -> Result<(), Error> {
    let agents = TcpListener::bind(agent_listen).await?;
    let (agent, _) = agents.accept().await?;
    agent.set_nodelay(true)?;
    let (send, conn) = limmat_mux::settings::client()
        .handshake::<_, Bytes>(agent)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
        std::process::exit(0);
    });
    let visitors = TcpListener::bind(listen).await?;
    loop {
        let (visitor, _) = visitors.accept().await?;
        let send = send.clone();
        tokio::spawn(async move {
            let _ = visitor.set_nodelay(true);
            let Ok(mut send) = send.ready().await else {
                return;
            };
            let request = Request::builder()
                .method(Method::CONNECT)
                .uri("origin:80")
                .body(())
                .unwrap_or_default();
            let Ok((response, body)) = send.send_request(request, false) else {
                return;
            };
            drop(send);
            let Ok(response) = response.await else {
                return;
            };
            pump(visitor, body, response.into_body()).await;
        });
    }
}

/// The device's side: the HTTP/2 server, a new connection to the origin per stream.
async fn agent(relay_at: &str, origin: &str) -> Result<(), Error> {
    let relay = TcpStream::connect(relay_at).await?;
    relay.set_nodelay(true)?;
    let mut conn = limmat_mux::settings::server(limmat_mux::settings::DEVICE_MAX_STREAMS)
        .handshake::<_, Bytes>(relay)
        .await?;
    let origin = origin.to_owned();
    while let Some(accepted) = conn.accept().await {
        let (request, mut respond) = accepted?;
        let origin = origin.clone();
        tokio::spawn(async move {
            let Ok(local) = TcpStream::connect(&origin).await else {
                return;
            };
            let _ = local.set_nodelay(true);
            let Ok(send) = respond.send_response(Response::new(()), false) else {
                return;
            };
            pump(local, send, request.into_body()).await;
        });
    }
    Ok(())
}

/// Copies both ways between a TCP connection and a stream until both directions end.
async fn pump(tcp: TcpStream, mut send: SendStream<Bytes>, mut recv: RecvStream) {
    let (mut r, mut w) = tcp.into_split();
    let up = async move {
        // One block, read into and split off; taken back whole once `h2` has written it.
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(CHUNK);
            match r.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut data = buf.split().freeze();
            while !data.is_empty() {
                send.reserve_capacity(data.len());
                let n = match poll_fn(|cx| send.poll_capacity(cx)).await {
                    Some(Ok(n)) => n.min(data.len()),
                    _ => return,
                };
                if n > 0 && send.send_data(data.split_to(n), false).is_err() {
                    return;
                }
            }
        }
        let _ = send.send_data(Bytes::new(), true);
    };
    let down = async move {
        while let Some(Ok(data)) = recv.data().await {
            if w.write_all(&data).await.is_err() {
                return;
            }
            let _ = recv.flow_control().release_capacity(data.len());
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(up, down);
}
