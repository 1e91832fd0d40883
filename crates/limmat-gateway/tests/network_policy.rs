//! One network policy: the gateway refuses a webhook destination in every range the relay's
//! forward proxy refuses (relay-protocol §6.4.3), whether the URL names the address or a name
//! that resolves to it, at registration and at every delivery attempt.
//!
//! The ranges are written out here from the specification, not taken from the code, so the
//! test fails if either side drifts from the text.

use limmat_gateway::webhook::ssrf::{
    AllowList, SsrfError, StaticResolver, check_registration_with, parse_url, resolve_for_attempt,
};
use limmat_relay::egress::{EgressConfig, Policy};
use limmat_wire::proxy::Host;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The built-in deny set of §6.4.3, as the specification lists it.
const SPEC_V4: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

const SPEC_V6: [&str; 7] = [
    "::/128",
    "::1/128",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The first, a middle and the last address of a range.
fn samples(range: &str) -> Vec<IpAddr> {
    let (net, prefix) = range.split_once('/').unwrap();
    let prefix: u32 = prefix.parse().unwrap();
    match net.parse::<IpAddr>().unwrap() {
        IpAddr::V4(net) => {
            let host = u32::MAX.checked_shr(prefix).unwrap_or(0);
            let base = u32::from(net);
            [base, base | (host / 2), base | host]
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .to_vec()
        }
        IpAddr::V6(net) => {
            let host = u128::MAX.checked_shr(prefix).unwrap_or(0);
            let base = u128::from(net);
            [base, base | (host / 2), base | host]
                .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .to_vec()
        }
    }
}

/// An IPv4 address in each of the IPv6 forms §6.4.3 extracts: mapped, NAT64, 6to4, and the
/// IPv4-compatible `::a.b.c.d` (the last only where it is not `::` or `::1`).
fn embeddings(v4: Ipv4Addr) -> Vec<IpAddr> {
    let v = u128::from(u32::from(v4));
    let mut forms = vec![
        v4.to_ipv6_mapped(),
        Ipv6Addr::from((0x64_ff9b_u128 << 96) | v),
        Ipv6Addr::from((0x2002_u128 << 112) | (v << 80)),
    ];
    if v > 1 {
        forms.push(Ipv6Addr::from(v));
    }
    forms.into_iter().map(IpAddr::V6).collect()
}

/// Every address the test judges: samples of every range, and the IPv4 ones in every IPv6
/// embedding.
fn denied_addresses() -> Vec<IpAddr> {
    let mut all = Vec::new();
    for range in SPEC_V4 {
        for ip in samples(range) {
            all.push(ip);
            if let IpAddr::V4(v4) = ip {
                all.extend(embeddings(v4));
            }
        }
    }
    for range in SPEC_V6 {
        all.extend(samples(range));
    }
    all
}

fn relay_policy() -> Policy {
    Policy::new(EgressConfig::default(), Vec::new())
}

fn relay_allows(policy: &Policy, ip: IpAddr) -> bool {
    let addr = SocketAddr::new(ip, 443);
    policy.check("dom", &Host::Ip(ip), addr).allowed
}

fn url_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}/hook"),
        IpAddr::V6(v6) => format!("https://[{v6}]/hook"),
    }
}

#[test]
fn the_relay_refuses_every_range_of_6_4_3() {
    let policy = relay_policy();
    for ip in denied_addresses() {
        assert!(!relay_allows(&policy, ip), "the relay allows {ip}");
    }
}

#[tokio::test]
async fn the_gateway_refuses_every_address_the_relay_refuses() {
    let none = AllowList::default();
    let policy = relay_policy();
    let mut resolver = StaticResolver::new();
    let addresses = denied_addresses();
    for (i, ip) in addresses.iter().enumerate() {
        resolver = resolver.with(&format!("h{i}.example"), &[*ip]);
    }
    for (i, ip) in addresses.iter().copied().enumerate() {
        assert!(!relay_allows(&policy, ip), "the relay allows {ip}");
        // The URL names the address, or a name that resolves to it.
        for url in [url_of(ip), format!("https://h{i}.example/hook")] {
            let registered = check_registration_with(&url, &none, &resolver).await;
            let target = parse_url(&url).unwrap();
            let attempt = resolve_for_attempt(&target, &none, &resolver).await;
            for outcome in [registered, attempt.map(drop)] {
                let denied = matches!(outcome, Err(SsrfError::Denied(_)));
                assert!(denied, "{url} ({ip}): {outcome:?}");
            }
        }
    }
}

/// The same public addresses pass both, so the two checks agree on both sides of the line.
#[tokio::test]
async fn public_addresses_pass_both() {
    let none = AllowList::default();
    let policy = relay_policy();
    let resolver = StaticResolver::new();
    for ip in [
        "93.184.215.14",
        "1.1.1.1",
        "172.32.0.1",
        "198.20.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(relay_allows(&policy, ip), "the relay refuses {ip}");
        let url = url_of(ip);
        check_registration_with(&url, &none, &resolver)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let target = parse_url(&url).unwrap();
        let attempt = resolve_for_attempt(&target, &none, &resolver).await;
        assert_eq!(attempt, Ok(vec![SocketAddr::new(ip, 443)]), "{url}");
    }
}

/// `webhooks.allow_networks` opens a part of the set, as an egress `allow` rule does on the
/// relay, including an embedded form of an address it covers.
#[tokio::test]
async fn allow_networks_opens_a_range_like_an_allow_rule() {
    let allow = AllowList::parse(&["10.1.2.0/24"]).unwrap();
    let resolver = StaticResolver::new();
    for url in [
        "http://10.1.2.3/hook",
        "http://[::ffff:10.1.2.3]/hook",
        "http://[2002:a01:203::]/hook",
    ] {
        check_registration_with(url, &allow, &resolver)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    let denied = check_registration_with("http://10.1.3.1/hook", &allow, &resolver).await;
    assert!(matches!(denied, Err(SsrfError::Denied(_))), "{denied:?}");
}
