//! The GATT objects of `gateway-api.md` §2.7: service, characteristic, descriptor and value,
//! each with `self.href` and links to its neighbours.

use crate::address::Address;
use crate::api::Base;
pub use crate::api::gap::node::link;
use crate::backend::{Characteristic, Descriptor, Handle, NotifyKind, Service, props};
use crate::hex;
use serde_json::{Value, json};

fn node_path(address: Address) -> String {
    format!("/gatt/nodes/{}", address.handle())
}

pub fn service_json(base: &Base, address: Address, s: &Service) -> Value {
    let path = format!("{}/services/{:04x}", node_path(address), s.handle);
    json!({
        "self": link(base, &path),
        "handle": format!("{:04x}", s.handle),
        "uuid": s.uuid,
        "primary": s.primary,
        "characteristics": link(base, &format!("{path}/characteristics")),
    })
}

pub fn characteristic_json(
    base: &Base,
    address: Address,
    c: &Characteristic,
    notifying: Option<NotifyKind>,
) -> Value {
    let node = node_path(address);
    let path = format!("{node}/characteristics/{:04x}", c.handle);
    let flags: Vec<&str> = props::NAMES
        .iter()
        .filter(|(bit, _)| c.properties & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    json!({
        "self": link(base, &path),
        "handle": format!("{:04x}", c.handle),
        "uuid": c.uuid,
        "service": link(base, &format!("{node}/services/{:04x}", c.service)),
        "properties": c.properties,
        "flags": flags,
        "notifying": notifying.map_or("none", NotifyKind::as_str),
        "value": link(base, &format!("{path}/value")),
        "descriptors": link(base, &format!("{path}/descriptors")),
    })
}

pub fn descriptor_json(base: &Base, address: Address, d: &Descriptor) -> Value {
    let node = node_path(address);
    json!({
        "self": link(base, &format!("{node}/descriptors/{:04x}", d.handle)),
        "handle": format!("{:04x}", d.handle),
        "uuid": d.uuid,
        "characteristic": link(base, &format!("{node}/characteristics/{:04x}", d.characteristic)),
    })
}

/// Where an attribute's value lives: `…/characteristics/{c}/value` or `…/descriptors/{d}/value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Characteristic,
    Descriptor,
}

pub fn value_path(address: Address, attribute: Attribute, handle: Handle) -> String {
    let kind = match attribute {
        Attribute::Characteristic => "characteristics",
        Attribute::Descriptor => "descriptors",
    };
    format!("{}/{kind}/{handle:04x}/value", node_path(address))
}

pub fn value_json(
    base: &Base,
    address: Address,
    attribute: Attribute,
    handle: Handle,
    value: &[u8],
) -> Value {
    json!({
        "self": link(base, &value_path(address, attribute, handle)),
        "handle": format!("{handle:04x}"),
        "value": hex::encode(value),
    })
}
