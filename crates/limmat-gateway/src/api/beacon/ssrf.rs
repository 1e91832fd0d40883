//! The registration half of the SSRF check (§5.8), interim until the delivery engineer's
//! `webhook::ssrf` is merged (then [`check_registration`] delegates to it): literal addresses
//! are checked directly, `localhost` and `*.localhost` are denied without resolving, a name is
//! resolved and refused if every address is denied, and a name that does not resolve passes
//! (the gateway may be offline). `webhooks.allow_networks` CIDRs exempt addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Why a subscription URL was refused (`400 url-not-allowed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Check a subscription URL's host at registration.
pub async fn check_registration(
    host: &str,
    port: u16,
    allow_networks: &[String],
) -> Result<(), Denied> {
    let allow: Vec<(IpAddr, u8)> = allow_networks.iter().filter_map(|c| cidr(c)).collect();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if allowed(ip, &allow) {
            Ok(())
        } else {
            Err(Denied(format!("{ip} is a denied destination")))
        };
    }
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Err(Denied(format!("{host} is a denied destination")));
    }
    let lookup = tokio::net::lookup_host((lower.as_str(), port));
    let Ok(Ok(addresses)) = tokio::time::timeout(Duration::from_secs(3), lookup).await else {
        return Ok(());
    };
    let addresses: Vec<IpAddr> = addresses.map(|a| a.ip()).collect();
    if !addresses.is_empty() && addresses.iter().all(|ip| !allowed(*ip, &allow)) {
        return Err(Denied(format!(
            "{host} resolves only to denied destinations"
        )));
    }
    Ok(())
}

fn allowed(ip: IpAddr, allow: &[(IpAddr, u8)]) -> bool {
    !denied(ip) || allow.iter().any(|(net, len)| contains(*net, *len, ip))
}

/// Whether `ip` is in a denied range of §5.8.
pub fn denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[..6] == [0, 0, 0, 0, 0, 0xffff] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return denied_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6 == Ipv6Addr::LOCALHOST
                || v6 == Ipv6Addr::UNSPECIFIED
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xff00) == 0xff00
        }
    }
}

fn denied_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 127
        || a == 10
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 168)
        || (a == 169 && b == 254)
        || a == 0
        || (a == 100 && (64..=127).contains(&b))
        || a >= 224
}

/// `a.b.c.d/n` or `x::/n` (a bare address is a host route).
fn cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
        None => {
            let ip = text.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_localhost_are_denied_unless_allowed() {
        for host in [
            "127.0.0.1",
            "[::1]",
            "10.1.2.3",
            "169.254.169.254",
            "localhost",
            "a.localhost",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(check_registration(host, 80, &[]).await.is_err(), "{host}");
        }
        assert!(check_registration("8.8.8.8", 80, &[]).await.is_ok());
        let allow = vec!["127.0.0.1/32".to_string()];
        assert!(check_registration("127.0.0.1", 80, &allow).await.is_ok());
        assert!(check_registration("127.0.0.2", 80, &allow).await.is_err());
    }
}
