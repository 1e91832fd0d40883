//! Address ranges and the one network policy every outgoing connection obeys (spec 6.4.3).
//!
//! A relay's forward proxy and a gateway's webhooks both connect where a user tells them to,
//! so both must refuse the same destinations: every range that is not the public Internet.
//! [`deny_range`] is that built-in deny set, written once: the relay's egress policy falls back
//! on it after the operator's rules, and the gateway refuses a webhook address in it unless
//! `webhooks.allow_networks` opens it. An IPv6 address that carries an IPv4 address a packet
//! can reach ([`embedded_v4`]) is judged as that IPv4 address, so `::ffff:127.0.0.1`,
//! `64:ff9b::7f00:1`, `2002:7f00:1::` and `::127.0.0.1` are all loopback.
//!
//! [`Cidr`] is the one address-range type (`10.1.2.0/24`, `::1/128`, or a bare address).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 address range: `10.1.2.0/24`, `fd00::/8`, or a single address.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is in an IPv4 range when its IPv4 address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `prefix` leading bits of `addr`; `None` if `prefix` is longer than the
    /// address (32 or 128 bits).
    pub const fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return None;
        }
        Some(Self { addr, prefix })
    }

    /// An IPv4 range, for constant tables; a prefix over 32 is taken as 32.
    pub const fn v4(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = if prefix > 32 { 32 } else { prefix };
        Self {
            addr: IpAddr::V4(addr),
            prefix,
        }
    }

    /// An IPv6 range, for constant tables; a prefix over 128 is taken as 128.
    pub const fn v6(addr: Ipv6Addr, prefix: u8) -> Self {
        let prefix = if prefix > 128 { 128 } else { prefix };
        Self {
            addr: IpAddr::V6(addr),
            prefix,
        }
    }

    /// The address as written (its host bits are kept).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The number of leading bits that must match.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address is its IPv4 address, and a
    /// range inside `::ffff:0:0/96` is the IPv4 range it maps; otherwise the families never
    /// meet (`::/0` holds no IPv4 address, so an IPv6 rule cannot open IPv4 ranges).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (net, prefix) = match self.addr {
            IpAddr::V6(v6) if self.prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), self.prefix - 96),
                None => (self.addr, self.prefix),
            },
            _ => (self.addr, self.prefix),
        };
        match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    /// The error names the text and shows the syntax, ready for a configuration error.
    type Err = String;

    /// `addr/prefix` or a bare address (the range of that one address); spaces around either
    /// part are ignored.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address range such as 127.0.0.0/8 or ::1/128");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The built-in deny set for IPv4 (6.4.3): every range that is not the public Internet.
pub const DENIED_V4: [Cidr; 14] = [
    Cidr::v4(Ipv4Addr::new(0, 0, 0, 0), 8),
    Cidr::v4(Ipv4Addr::new(10, 0, 0, 0), 8),
    Cidr::v4(Ipv4Addr::new(100, 64, 0, 0), 10),
    Cidr::v4(Ipv4Addr::new(127, 0, 0, 0), 8),
    Cidr::v4(Ipv4Addr::new(169, 254, 0, 0), 16),
    Cidr::v4(Ipv4Addr::new(172, 16, 0, 0), 12),
    Cidr::v4(Ipv4Addr::new(192, 0, 0, 0), 24),
    Cidr::v4(Ipv4Addr::new(192, 0, 2, 0), 24),
    Cidr::v4(Ipv4Addr::new(192, 168, 0, 0), 16),
    Cidr::v4(Ipv4Addr::new(198, 18, 0, 0), 15),
    Cidr::v4(Ipv4Addr::new(198, 51, 100, 0), 24),
    Cidr::v4(Ipv4Addr::new(203, 0, 113, 0), 24),
    Cidr::v4(Ipv4Addr::new(224, 0, 0, 0), 4),
    Cidr::v4(Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The built-in deny set for IPv6 (6.4.3). Addresses with an IPv4 address inside are judged by
/// [`DENIED_V4`] instead (see [`embedded_v4`]).
pub const DENIED_V6: [Cidr; 7] = [
    Cidr::v6(Ipv6Addr::UNSPECIFIED, 128),
    Cidr::v6(Ipv6Addr::LOCALHOST, 128),
    Cidr::v6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
    Cidr::v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    Cidr::v6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    Cidr::v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    Cidr::v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// The IPv4 address an IPv6 address carries, if it is one of the embeddings a packet can
/// reach an IPv4 host through: mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`,
/// and the deprecated compatible `::/96` (except `::` and `::1`).
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if let Some(v4) = v6.to_ipv4_mapped() {
        Some(v4)
    } else if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        Some(low32)
    } else if bits >> 112 == 0x2002 {
        Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32))
    } else if bits >> 32 == 0 && bits > 1 {
        Some(low32)
    } else {
        None
    }
}

/// An address as what it reaches: an IPv6 address with an IPv4 address inside is that IPv4
/// address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The range of the built-in deny set that holds an address, and the IPv6 address it was
/// found embedded in, if any. Its `Display` is what an audit log shows:
/// `10.0.0.0/8`, or `127.0.0.0/8 (embedded in 2002:7f00:1::)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The denied range.
    pub range: Cidr,
    /// The IPv6 address that carried the IPv4 address in `range`.
    pub embedded_in: Option<Ipv6Addr>,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.range)?;
        if let Some(v6) = self.embedded_in {
            write!(f, " (embedded in {v6})")?;
        }
        Ok(())
    }
}

/// The built-in deny set (6.4.3): the range that denies `ip`, or `None` for a public address.
pub fn deny_range(ip: IpAddr) -> Option<Denial> {
    let v4 = |v4: Ipv4Addr| DENIED_V4.into_iter().find(|c| c.contains(IpAddr::V4(v4)));
    match ip {
        IpAddr::V4(a) => v4(a).map(|range| Denial {
            range,
            embedded_in: None,
        }),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(a) => v4(a).map(|range| Denial {
                range,
                embedded_in: Some(v6),
            }),
            None => DENIED_V6
                .into_iter()
                .find(|c| c.contains(ip))
                .map(|range| Denial {
                    range,
                    embedded_in: None,
                }),
        },
    }
}

/// Whether the built-in deny set holds `ip`.
pub fn is_denied(ip: IpAddr) -> bool {
    deny_range(ip).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One address at each end of every range of 6.4.3, and its neighbours outside.
    #[test]
    fn every_range_of_6_4_3_and_its_edges() {
        for c in DENIED_V4.iter().chain(&DENIED_V6) {
            let (first, last) = bounds(*c);
            assert!(is_denied(first), "{first} in {c}");
            assert!(is_denied(last), "{last} in {c}");
            assert_eq!(deny_range(first).map(|d| d.range), Some(*c));
        }
        for outside in [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "191.255.255.255",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "::2:0:0",
            "100:0:0:1::",
            "2001:db7:ffff:ffff::",
            "2001:db9::",
            "fbff:ffff::",
            "fe00::",
            "fec0::1",
            "feff::",
            "2606:4700::1111",
        ] {
            assert!(!is_denied(ip(outside)), "{outside} is public");
        }
    }

    fn bounds(c: Cidr) -> (IpAddr, IpAddr) {
        match c.addr() {
            IpAddr::V4(a) => {
                let host = u32::MAX.checked_shr(u32::from(c.prefix())).unwrap_or(0);
                (
                    IpAddr::V4(a),
                    IpAddr::V4(Ipv4Addr::from(u32::from(a) | host)),
                )
            }
            IpAddr::V6(a) => {
                let host = u128::MAX.checked_shr(u32::from(c.prefix())).unwrap_or(0);
                (
                    IpAddr::V6(a),
                    IpAddr::V6(Ipv6Addr::from(u128::from(a) | host)),
                )
            }
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        for (v6, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
            ("2002:7f00:1::", "127.0.0.1"),
            ("2002:c0a8:101:1::1", "192.168.1.1"),
            ("::10.0.0.1", "10.0.0.1"),
        ] {
            let IpAddr::V6(v6) = ip(v6) else { panic!() };
            assert_eq!(embedded_v4(v6), Some(v4.parse().unwrap()), "{v6}");
            let denial = deny_range(IpAddr::V6(v6)).unwrap();
            assert_eq!(denial.embedded_in, Some(v6));
            assert!(denial.to_string().ends_with(&format!("(embedded in {v6})")));
        }
        for public in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"] {
            assert!(!is_denied(ip(public)), "{public}");
        }
        // Not embeddings: `::` and `::1` themselves, and a NAT64 prefix other than the
        // well-known one.
        for v6 in ["::", "::1", "64:ff9b:1::a00:1"] {
            let IpAddr::V6(v6) = ip(v6) else { panic!() };
            assert_eq!(embedded_v4(v6), None, "{v6}");
        }
        assert_eq!(
            deny_range(ip("::1")).map(|d| d.to_string()),
            Some("::1/128".into())
        );
    }

    #[test]
    fn cidr_syntax_and_containment() {
        let c: Cidr = "10.1.2.0/24".parse().unwrap();
        assert!(c.contains(ip("10.1.2.255")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("10.1.3.0")));
        assert!(!c.contains(ip("::a01:203")));
        assert_eq!(c.to_string(), "10.1.2.0/24");
        assert_eq!(" ::1 ".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix(), 32);
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("1.2.3.4")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("ff02::1")));
        // `::/0` holds no IPv4 address, mapped or not.
        assert!(!"::/0".parse::<Cidr>().unwrap().contains(ip("1.2.3.4")));
        assert!(
            !"::/0"
                .parse::<Cidr>()
                .unwrap()
                .contains(ip("::ffff:1.2.3.4"))
        );
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(mapped.contains(mapped.addr()));
        assert!(!mapped.contains(ip("11.0.0.0")));
        for bad in [
            "",
            "1.2.3/8",
            "1.2.3.4/33",
            "::/129",
            "localhost/8",
            "1.2.3.4/x",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.starts_with(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(Cidr::new(ip("1.2.3.4"), 33), None);
        assert_eq!(Cidr::v4(Ipv4Addr::LOCALHOST, 40).prefix(), 32);
    }
}
