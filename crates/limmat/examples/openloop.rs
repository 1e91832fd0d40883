//! Open-loop HTTP/1.1 load for `bench/http.sh` (wrk2 is not packaged here): requests leave on
//! a fixed schedule whatever the server does, and each latency is measured from the moment its
//! request was *due*, not sent, so a stall is charged to every request it delays (no
//! coordinated omission).
//!
//! `openloop HOST:PORT PATH RATE SECONDS CONNECTIONS` spreads RATE requests/s over CONNECTIONS
//! keep-alive connections and prints one line:
//! `requests=N errors=E p50_ms=.. p90_ms=.. p99_ms=.. p999_ms=.. max_ms=..`.
//! Bench tool only: no TLS, no chunked bodies (the origin answers with Content-Length).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    match args.get(i).and_then(|a| a.parse().ok()) {
        Some(v) => v,
        None => {
            eprintln!("usage: openloop HOST:PORT PATH RATE SECONDS CONNECTIONS ({what})");
            std::process::exit(2)
        }
    }
}

/// Reads one response (head plus Content-Length body) from `s`, keeping extra bytes in `buf`.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            if buf.len() >= total {
                buf.drain(..total);
                return Ok(());
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: String = arg(&args, 1, "address");
    let path: String = arg(&args, 2, "path");
    let rate: f64 = arg(&args, 3, "rate");
    let seconds: f64 = arg(&args, 4, "seconds");
    let conns: usize = arg(&args, 5, "connections");
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let per_conn = (rate * seconds / conns as f64) as usize;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (addr, request) = (addr.clone(), request.clone());
        // Stagger the connections evenly over one interval.
        let first = start + interval.mul_f64(c as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_conn);
            let mut errors = 0usize;
            let Ok(mut s) = TcpStream::connect(&addr).await else {
                return (lat, per_conn);
            };
            let _ = s.set_nodelay(true);
            let mut buf = Vec::new();
            for k in 0..per_conn {
                let due = first + interval * k as u32;
                tokio::time::sleep_until(due).await;
                let ok =
                    s.write_all(&request).await.is_ok() && response(&mut s, &mut buf).await.is_ok();
                if !ok {
                    errors += per_conn - k;
                    break;
                }
                lat.push(due.elapsed().as_micros() as u64);
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    all.sort_unstable();
    let q = |p: f64| {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p) as usize).min(all.len() - 1);
        all[i] as f64 / 1000.0
    };
    println!(
        "requests={} errors={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        all.len(),
        errors,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        all.last().map_or(f64::NAN, |&m| m as f64 / 1000.0)
    );
}
