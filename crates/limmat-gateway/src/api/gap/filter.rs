//! The SSE scan's filters (`gateway-api.md` §2.4). Every filter given must match: addresses,
//! a minimum RSSI, names (a trailing `*` makes a prefix match), service UUIDs (advertised or
//! service-data keys), company ids, and `filter_duplicates=1`, which passes a node only on its
//! first report or when its data changed.

use crate::address::Address;
use crate::api::problem::Problem;
use crate::api::query::Params;
use crate::backend::Report;
use crate::uuid::Uuid;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A stream's filters, and what `filter_duplicates` remembers.
#[derive(Debug, Default)]
pub struct Filter {
    macs: Vec<Address>,
    rssi: Option<i16>,
    names: Vec<String>,
    uuids: Vec<Uuid>,
    companies: Vec<u16>,
    duplicates: bool,
    /// A fingerprint of each node's last passed data.
    seen: HashMap<Address, u64>,
}

impl Filter {
    /// Take the `filter_…` parameters; a malformed value gets `400` naming its parameter.
    pub fn parse(params: &mut Params) -> Result<Filter, Problem> {
        let macs = params
            .list("filter_mac")
            .iter()
            .map(|m| {
                m.parse().map_err(|_| {
                    Problem::bad_request("filter_mac", format!("`{m}` is not an address"))
                })
            })
            .collect::<Result<_, _>>()?;
        let rssi = params.parsed("filter_rssi", "a number of dBm")?;
        let names = params.list("filter_name");
        let uuids = params
            .list("filter_uuid")
            .iter()
            .map(|u| {
                u.parse().map_err(|_| {
                    Problem::bad_request("filter_uuid", format!("`{u}` is not a UUID"))
                })
            })
            .collect::<Result<_, _>>()?;
        let companies = params
            .list("filter_company")
            .iter()
            .map(|c| {
                company(c).ok_or_else(|| {
                    Problem::bad_request("filter_company", format!("`{c}` is not 4 hex digits"))
                })
            })
            .collect::<Result<_, _>>()?;
        let duplicates = params.flag("filter_duplicates")?.unwrap_or(false);
        Ok(Filter {
            macs,
            rssi,
            names,
            uuids,
            companies,
            duplicates,
            seen: HashMap::new(),
        })
    }

    /// Whether the report goes out (and, with `filter_duplicates`, remember it).
    pub fn pass(&mut self, r: &Report) -> bool {
        let matches = (self.macs.is_empty() || self.macs.contains(&r.address))
            && self
                .rssi
                .is_none_or(|min| r.rssi.is_some_and(|rssi| rssi >= min))
            && (self.names.is_empty()
                || r.name
                    .as_deref()
                    .is_some_and(|n| self.names.iter().any(|p| name_matches(p, n))))
            && (self.uuids.is_empty()
                || self
                    .uuids
                    .iter()
                    .any(|u| r.service_uuids.contains(u) || r.service_data.contains_key(u)))
            && (self.companies.is_empty()
                || self
                    .companies
                    .iter()
                    .any(|c| r.manufacturer_data.contains_key(c)));
        if !matches || !self.duplicates {
            return matches;
        }
        let print = fingerprint(r);
        self.seen.insert(r.address, print) != Some(print)
    }
}

fn company(text: &str) -> Option<u16> {
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(text, 16).ok())
        .flatten()
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// The node's data, without what changes on every report (RSSI, times).
fn fingerprint(r: &Report) -> u64 {
    let mut h = DefaultHasher::new();
    r.raw.hash(&mut h);
    r.name.hash(&mut h);
    r.flags.hash(&mut h);
    r.tx_power.hash(&mut h);
    r.connectable.hash(&mut h);
    r.service_uuids.hash(&mut h);
    r.manufacturer_data.hash(&mut h);
    r.service_data.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::AddressType;
    use std::collections::BTreeMap;
    use std::time::{Instant, SystemTime};

    fn report(rssi: i16, name: &str, company: u16) -> Report {
        Report {
            address: "c0ffee000001".parse().unwrap(),
            address_type: AddressType::Random,
            rssi: Some(rssi),
            tx_power: None,
            name: Some(name.into()),
            flags: None,
            service_uuids: vec![Uuid::from_u16(0x180f)],
            manufacturer_data: BTreeMap::from([(company, vec![1])]),
            service_data: BTreeMap::new(),
            raw: None,
            connectable: None,
            received: SystemTime::now(),
            at: Instant::now(),
        }
    }

    fn filter(query: &str) -> Filter {
        let mut params = Params::parse(Some(query)).unwrap();
        let f = Filter::parse(&mut params).unwrap();
        params.finish().unwrap();
        f
    }

    #[test]
    fn every_given_filter_must_match() {
        let mut f = filter("filter_rssi=-70&filter_company=004C&filter_name=Lim*,x");
        assert!(f.pass(&report(-70, "Limmat", 0x004c)));
        assert!(!f.pass(&report(-71, "Limmat", 0x004c)));
        assert!(!f.pass(&report(-60, "Other", 0x004c)));
        assert!(!f.pass(&report(-60, "Limmat", 0x0118)));
        let mut f = filter("filter_uuid=0x180F&filter_mac=C0:FF:EE:00:00:01");
        assert!(f.pass(&report(-60, "a", 1)));
        let mut f = filter("filter_uuid=180d");
        assert!(!f.pass(&report(-60, "a", 1)));
    }

    #[test]
    fn duplicates_pass_only_when_the_data_changes() {
        let mut f = filter("filter_duplicates=1");
        assert!(f.pass(&report(-60, "a", 1)));
        assert!(!f.pass(&report(-50, "a", 1)));
        assert!(f.pass(&report(-50, "b", 1)));
    }

    #[test]
    fn malformed_filters_name_their_parameter() {
        for (query, field) in [
            ("filter_company=4c", "filter_company"),
            ("filter_mac=zz", "filter_mac"),
            ("filter_uuid=18", "filter_uuid"),
            ("filter_rssi=loud", "filter_rssi"),
        ] {
            let mut params = Params::parse(Some(query)).unwrap();
            let e = Filter::parse(&mut params).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{query}");
        }
    }
}
