//! Abuse limits (spec 4.3): per-source connection caps and rates, a bucket of failed
//! authentications per source, and a handshake rate per domain that pairings refill.
//!
//! IPv4 sources count one by one and IPv6 sources per /64, since one host usually owns a
//! whole /64. Sources in `limit_exempt` (loopback by default) are never limited. Buckets that
//! have refilled completely carry no information and are swept away, so the maps stay as
//! large as the set of sources that are currently being limited.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// A token-bucket rate: `per_second` tokens per second, at most `burst` saved up.
/// Written `RATE/UNIT[:BURST]` (`500/s:1000`, `10/min:20`); `0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// The most tokens saved up.
    pub burst: f64,
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        per_second: 0.0,
        burst: 0.0,
    };

    /// `count` tokens per `per`, at most `burst` saved up.
    pub fn new(count: f64, per: Duration, burst: f64) -> Self {
        Self {
            per_second: count / per.as_secs_f64(),
            burst,
        }
    }

    /// Whether the rate limits nothing (`0`, or a burst under one token).
    pub fn is_off(&self) -> bool {
        self.per_second <= 0.0 || self.burst < 1.0
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a rate such as 500/s:1000 or 10/min:20 (or 0 for none)");
        if s.trim() == "0" {
            return Ok(Rate::OFF);
        }
        let (rate, burst) = match s.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (s, None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: f64 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst: f64 = match burst {
            Some(b) => b.trim().parse().map_err(|_| bad())?,
            None => count.max(1.0),
        };
        // A burst below one token could never admit anything: refuse it rather than let the
        // limit silently block everything or (as a zero rate) nothing.
        if !(count.is_finite() && count > 0.0 && burst.is_finite() && burst >= 1.0) {
            return Err(bad());
        }
        Ok(Rate::new(count, per, burst))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_off() {
            write!(f, "0")
        } else {
            write!(f, "{}/s:{}", self.per_second, self.burst)
        }
    }
}

/// A classic token bucket on the tokio clock (so tests can pause time).
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(rate))
        }
    }

    /// Is a token there, without taking it?
    fn check(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait(rate))
        }
    }

    /// Time until the next token, at most an hour (the largest `Retry-After`, 4.3), so a
    /// tiny configured rate cannot overflow a `Duration`.
    fn wait(&self, rate: Rate) -> Duration {
        let secs = ((1.0 - self.tokens) / rate.per_second).clamp(0.0, 3600.0);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(3600))
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = self.clone();
        b.refill(rate, now);
        b.tokens >= rate.burst
    }
}

/// Buckets by key, swept of full ones when the map has doubled since the last sweep.
struct Buckets<K> {
    rate: Rate,
    map: Mutex<(HashMap<K, Bucket>, usize)>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Self {
            rate,
            map: Mutex::new((HashMap::new(), 64)),
        }
    }

    fn with<T>(&self, key: &K, f: impl FnOnce(&mut Bucket, Rate, Instant) -> T) -> T {
        let now = Instant::now();
        let mut guard = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, sweep_at) = &mut *guard;
        if map.len() >= *sweep_at {
            let rate = self.rate;
            map.retain(|_, b| !b.is_full(rate, now));
            *sweep_at = (map.len() * 2).max(64);
        }
        let bucket = map
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(self.rate, now));
        f(bucket, self.rate, now)
    }

    fn take(&self, key: &K) -> Result<(), Duration> {
        if self.rate.is_off() {
            return Ok(());
        }
        self.with(key, |b, rate, now| b.take(rate, now))
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        if self.rate.is_off() {
            return Ok(());
        }
        self.with(key, |b, rate, now| b.check(rate, now))
    }

    /// Returns a token, up to the burst.
    fn give(&self, key: &K) {
        if self.rate.is_off() {
            return;
        }
        let mut guard = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = guard.0.get_mut(key) {
            b.tokens = (b.tokens + 1.0).min(self.rate.burst);
        }
    }
}

/// An address range in `limit_exempt`, such as `127.0.0.0/8` or `::1/128`: the one address
/// range type of the project.
pub use limmat_wire::net::Cidr;

/// An IPv4-mapped IPv6 address counts as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The unit a per-source limit counts: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// The limit settings (4.3).
#[derive(Debug, Clone)]
pub struct LimitConfig {
    /// Open connections per source; over it: `429 Retry-After: 10` without reading.
    pub max_conns_per_ip: usize,
    /// New connections per source.
    pub conn_rate_per_ip: Rate,
    /// Failed authentications per source; while empty, device handshakes get `429`.
    pub auth_failures_per_ip: Rate,
    /// Device handshakes that enter waiting, per domain; each pairing returns a token.
    pub handshake_rate_per_domain: Rate,
    /// Sources that no per-source limit applies to.
    pub limit_exempt: Vec<Cidr>,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            max_conns_per_ip: 1024,
            conn_rate_per_ip: Rate::new(500.0, Duration::from_secs(1), 1000.0),
            auth_failures_per_ip: Rate::new(10.0, Duration::from_secs(60), 20.0),
            handshake_rate_per_domain: Rate::new(10.0, Duration::from_secs(1), 64.0),
            limit_exempt: vec![
                Cidr::v4(std::net::Ipv4Addr::new(127, 0, 0, 0), 8),
                Cidr::v6(std::net::Ipv6Addr::LOCALHOST, 128),
            ],
        }
    }
}

/// The live state of every limit of one relay.
pub(crate) struct Limits {
    config: LimitConfig,
    open: Mutex<HashMap<Source, usize>>,
    conn_rate: Buckets<Source>,
    auth_failures: Buckets<Source>,
    handshakes: Buckets<Arc<str>>,
}

/// Why a connection or handshake is refused: the `Retry-After` to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) retry_after: Duration,
}

impl Refusal {
    /// Whole seconds, rounded up, within 1 to 3600 (4.3).
    pub(crate) fn secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.clamp(1, 3600)
    }
}

/// Keeps one connection counted against its source until dropped.
pub(crate) struct OpenGuard {
    limits: Arc<Limits>,
    source: Source,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

impl Limits {
    pub(crate) fn new(config: LimitConfig) -> Arc<Self> {
        Arc::new(Self {
            conn_rate: Buckets::new(config.conn_rate_per_ip),
            auth_failures: Buckets::new(config.auth_failures_per_ip),
            handshakes: Buckets::new(config.handshake_rate_per_domain),
            open: Mutex::default(),
            config,
        })
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.config.limit_exempt.iter().any(|c| c.contains(ip))
    }

    /// A new connection from `ip`: counted until the guard drops, or refused.
    pub(crate) fn connection(self: &Arc<Self>, ip: IpAddr) -> Result<Option<OpenGuard>, Refusal> {
        if self.exempt(ip) {
            return Ok(None);
        }
        let source = Source::of(ip);
        self.conn_rate
            .take(&source)
            .map_err(|retry_after| Refusal { retry_after })?;
        if self.config.max_conns_per_ip == 0 {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(source).or_insert(0);
        if *n >= self.config.max_conns_per_ip {
            return Err(Refusal {
                retry_after: Duration::from_secs(10),
            });
        }
        *n += 1;
        Ok(Some(OpenGuard {
            limits: self.clone(),
            source,
        }))
    }

    /// Before authenticating: is the source's failure bucket empty?
    pub(crate) fn auth_allowed(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.exempt(ip) {
            return Ok(());
        }
        self.auth_failures
            .check(&Source::of(ip))
            .map_err(|retry_after| Refusal { retry_after })
    }

    /// A failed authentication from `ip` takes a token.
    pub(crate) fn auth_failed(&self, ip: IpAddr) {
        if !self.exempt(ip) {
            let _ = self.auth_failures.take(&Source::of(ip));
        }
    }

    /// A device handshake about to enter waiting for `domain`.
    pub(crate) fn handshake(&self, domain: &Arc<str>) -> Result<(), Refusal> {
        self.handshakes
            .take(domain)
            .map_err(|retry_after| Refusal { retry_after })
    }

    /// A pairing returns one handshake token to its domain: a busy device that replaces each
    /// paired connection is not mistaken for a reconnect loop.
    pub(crate) fn paired(&self, domain: &Arc<str>) {
        self.handshakes.give(domain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            "500/s:1000".parse(),
            Ok(Rate::new(500.0, Duration::from_secs(1), 1000.0))
        );
        assert_eq!(
            "10/min:20".parse(),
            Ok(Rate::new(10.0, Duration::from_secs(60), 20.0))
        );
        assert_eq!(
            "5/s".parse(),
            Ok(Rate::new(5.0, Duration::from_secs(1), 5.0))
        );
        assert!("0".parse::<Rate>().unwrap().is_off());
        assert!("fast".parse::<Rate>().unwrap_err().contains("fast"));
        assert!("1/fortnight".parse::<Rate>().is_err());
        assert!("-1/s".parse::<Rate>().is_err());
        assert!("10/min:0.5".parse::<Rate>().is_err());
        assert!("0/s:5".parse::<Rate>().is_err());
    }

    #[test]
    fn cidrs() {
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains("127.1.2.3".parse().unwrap()));
        assert!(lo.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!lo.contains("128.0.0.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a = Source::of("2001:db8:1:2::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    fn public_only(config: LimitConfig) -> Arc<Limits> {
        Limits::new(LimitConfig {
            limit_exempt: vec![],
            ..config
        })
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_over_time_and_say_how_long() {
        let limits = public_only(LimitConfig {
            conn_rate_per_ip: "2/s:2".parse().unwrap(),
            max_conns_per_ip: 0,
            ..LimitConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.connection(ip).is_ok());
        assert!(limits.connection(ip).is_ok());
        let refusal = limits.connection(ip).err().unwrap();
        assert_eq!(refusal.secs(), 1);
        // Another source is unaffected.
        assert!(limits.connection("192.0.2.2".parse().unwrap()).is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limits.connection(ip).is_ok());
    }

    #[test]
    fn open_connections_per_source_and_exemption() {
        let limits = Limits::new(LimitConfig {
            max_conns_per_ip: 2,
            conn_rate_per_ip: Rate::OFF,
            ..LimitConfig::default()
        });
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let a = limits.connection(ip).unwrap();
        let _b = limits.connection(ip).unwrap();
        assert_eq!(limits.connection(ip).err().map(|r| r.secs()), Some(10));
        drop(a);
        assert!(limits.connection(ip).is_ok());
        // Loopback is exempt by default.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let guards: Vec<_> = (0..10).map(|_| limits.connection(lo).unwrap()).collect();
        assert!(guards.iter().all(Option::is_none));
    }

    #[tokio::test(start_paused = true)]
    async fn auth_failures_and_handshakes() {
        let limits = public_only(LimitConfig {
            auth_failures_per_ip: "1/min:2".parse().unwrap(),
            handshake_rate_per_domain: "1/s:2".parse().unwrap(),
            ..LimitConfig::default()
        });
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        assert!(limits.auth_allowed(ip).is_ok());
        limits.auth_failed(ip);
        limits.auth_failed(ip);
        let refusal = limits.auth_allowed(ip).err().unwrap();
        assert_eq!(refusal.secs(), 60);
        let dom: Arc<str> = "dom".into();
        assert!(limits.handshake(&dom).is_ok());
        assert!(limits.handshake(&dom).is_ok());
        assert!(limits.handshake(&dom).is_err());
        // A pairing gives a token back.
        limits.paired(&dom);
        assert!(limits.handshake(&dom).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn tiny_rates_do_not_overflow() {
        let limits = public_only(LimitConfig {
            conn_rate_per_ip: "1e-300/s:1".parse().unwrap(),
            max_conns_per_ip: 0,
            ..LimitConfig::default()
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(limits.connection(ip).is_ok());
        assert_eq!(limits.connection(ip).err().map(|r| r.secs()), Some(3600));
    }

    #[test]
    fn retry_after_is_rounded_up_and_bounded() {
        let r = |ms| Refusal {
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(r(1).secs(), 1);
        assert_eq!(r(1001).secs(), 2);
        assert_eq!(r(99_999_999).secs(), 3600);
    }
}
