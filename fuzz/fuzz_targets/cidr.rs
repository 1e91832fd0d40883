//! Arbitrary bytes through the address-range parser and the built-in deny set of spec 6.4.3
//! (`limmat_wire::net`), which both the relay's egress policy and the gateway's webhooks obey.
//!
//! Besides "no panic", it checks: a parsed range prints as text that parses back to the same
//! range and contains its own address (unless that is IPv4-mapped and the range is a wider
//! IPv6 one); the deny set judges an IPv6 address that carries an IPv4
//! address exactly as that IPv4 address; and a denial names a range that holds the address.

#![no_main]

use libfuzzer_sys::fuzz_target;
use limmat_wire::net::{Cidr, canonical, deny_range, embedded_v4, is_denied};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_parse(text);
    }
    // The first 16 bytes as an IPv6 address, the first 4 as an IPv4 address.
    if let Some(bytes) = data.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        check_address(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    if let Some(bytes) = data.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        check_address(IpAddr::V4(Ipv4Addr::from(bytes)));
    }
});

fn check_parse(text: &str) {
    let Ok(cidr) = text.parse::<Cidr>() else {
        return;
    };
    let max = if cidr.addr().is_ipv4() { 32 } else { 128 };
    assert!(cidr.prefix() <= max, "{cidr}");
    // An IPv6 range wider than `::ffff:0:0/96` holds no IPv4 address, not even a mapped one
    // written as its own address.
    let mapped_in_wide_v6 = match cidr.addr() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some() && cidr.prefix() < 96,
        IpAddr::V4(_) => false,
    };
    assert_eq!(
        cidr.contains(cidr.addr()),
        !mapped_in_wide_v6,
        "{cidr} and its own address"
    );
    let printed = cidr.to_string();
    assert_eq!(printed.parse::<Cidr>(), Ok(cidr), "{text:?} printed as {printed:?}");
}

fn check_address(ip: IpAddr) {
    let denial = deny_range(ip);
    assert_eq!(is_denied(ip), denial.is_some());
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_v4(v6)
    {
        assert_eq!(canonical(ip), IpAddr::V4(v4));
        assert_eq!(denial.map(|d| d.range), deny_range(IpAddr::V4(v4)).map(|d| d.range));
        if let Some(d) = denial {
            assert_eq!(d.embedded_in, Some(v6));
        }
    }
    if let Some(d) = denial {
        assert!(d.range.contains(canonical(ip)), "{d} does not hold {ip}");
    }
}
