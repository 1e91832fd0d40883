//! Shared harness of the API tests: the real router over the real simulator, served by axum on
//! a real `127.0.0.1:0` listener, and a real HTTP/1.1 client (hyper) with an SSE reader. The
//! client ([`Client`]) also serves alone, against any listener (`tests/bluez_http.rs`).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use limmat_gateway::api::{self, ApiSettings, index::IndexInfo};
use limmat_gateway::backend::Backend;
use limmat_gateway::ble::Ble;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A served gateway API; everything stops when it drops. It is a [`Client`] of itself.
pub struct Gateway {
    client: Client,
    pub ble: Arc<Ble>,
    stop: CancellationToken,
}

impl std::ops::Deref for Gateway {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// An HTTP/1.1 client of the API at `addr`: one connection per request.
pub struct Client {
    pub addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Gateway {
    pub async fn start(backend: Arc<dyn Backend>, settings: ApiSettings) -> Gateway {
        let stop = CancellationToken::new();
        let ble = Ble::start(backend, stop.clone()).await;
        let router = api::router(
            settings,
            api::ble_parts(ble.clone(), IndexInfo::local("test-gateway")),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await
                .unwrap();
        });
        Gateway {
            client: Client { addr },
            ble,
            stop,
        }
    }
}

impl Client {
    /// A request; the body is JSON (or empty).
    pub async fn send(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        let body = match body {
            Some((content_type, bytes)) => {
                builder = builder.header("content-type", content_type);
                Bytes::copy_from_slice(bytes)
            }
            None => Bytes::new(),
        };
        self.request(builder.body(Full::new(body)).unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None).await
    }

    pub async fn put(&self, path: &str) -> Reply {
        self.send("PUT", path, None).await
    }

    /// Any request, answered in full.
    pub async fn request(&self, request: Request<Full<Bytes>>) -> Reply {
        let response = self.open(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request whose response stays open (SSE).
    pub async fn open(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    }

    /// Open an SSE stream at `path`.
    pub async fn events(&self, path: &str) -> Events {
        let request = Request::builder()
            .uri(path)
            .header("host", self.addr.to_string())
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.open(request).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Events {
            body: response.into_body(),
            buffer: String::new(),
        }
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (every JSON answer must parse).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Assert a problem document with this status, and return it.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let p = self.json();
        assert_eq!(p["status"], status);
        p
    }

    /// Assert `200` JSON with `self.href` (every resource object has one) and return it.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/json");
        let value = self.json();
        assert!(value["self"]["href"].is_string(), "no self.href: {value}");
        value
    }
}

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// An open SSE stream.
pub struct Events {
    body: Incoming,
    buffer: String,
}

impl Events {
    /// The next event (comments skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event::default();
                let mut any = false;
                for line in block.lines() {
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => event.id = Some(value.into()),
                        "event" => event.event = value.into(),
                        "data" => {
                            assert!(event.data.is_empty(), "one data line per event");
                            event.data = value.into();
                        }
                        _ => continue,
                    }
                    any = true;
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The next raw chunk of the body, comments included.
    pub async fn next_chunk(&mut self) -> Option<String> {
        loop {
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                return Some(String::from_utf8(data.to_vec()).unwrap());
            }
        }
    }

    /// The next event, within `limit` (of tokio time).
    pub async fn next_within(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.next())
            .await
            .expect("an event in time")
    }
}
