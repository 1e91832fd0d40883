//! Extractors for what GAP and GATT paths address (`gateway-api.md` §2.1) and for strict
//! queries (§0), so every handler checks its input the same way and before anything goes on
//! air: a malformed node gets `400 field: node`, a malformed handle `400` naming its segment
//! (`service`, `characteristic`, `descriptor`), a malformed or oversized value `400 field:
//! value`, and the query is [`Params`] (unknown or repeated parameters get `400`).

use super::problem::Problem;
use super::query::Params;
use crate::address::Address;
use crate::backend::Handle;
use crate::hex;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

/// The longest attribute value (§2.6).
pub const MAX_VALUE: usize = 512;

/// `{node}`.
pub struct Node(pub Address);

/// `{node}` and one attribute handle (`{service}`, `{characteristic}` or `{descriptor}`).
pub struct Attr(pub Address, pub Handle);

/// `{node}`, an attribute handle and `{value}` (1–512 bytes of hex).
pub struct AttrValue(pub Address, pub Handle, pub Vec<u8>);

/// The query, strictly: take what the handler knows, then [`Params::finish`].
pub struct Query(pub Params);

/// A query that must be empty.
pub struct NoQuery;

/// A node address: 12 hex digits or the colon form.
pub fn parse_node(text: &str) -> Result<Address, Problem> {
    text.parse()
        .map_err(|_| Problem::bad_request("node", format!("`{text}` is not a node address")))
}

/// An attribute handle: 4 hex digits.
pub fn parse_handle(field: &str, text: &str) -> Result<Handle, Problem> {
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(text, 16).ok())
        .flatten()
        .ok_or_else(|| Problem::bad_request(field, format!("`{text}` is not a 4-hex-digit handle")))
}

/// A hex value of `min..=512` bytes.
pub fn parse_value(text: &str, min: usize) -> Result<Vec<u8>, Problem> {
    let value = hex::decode(text)
        .map_err(|e| Problem::bad_request("value", format!("`value` is not hex: {e}")))?;
    if value.len() < min || value.len() > MAX_VALUE {
        return Err(Problem::bad_request(
            "value",
            format!("a value has {min}–{MAX_VALUE} bytes, not {}", value.len()),
        ));
    }
    Ok(value)
}

/// The path's parameters, in route order.
async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<(String, String)>, Problem> {
    let raw = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| Problem::bad_request("path", "the path is not valid UTF-8"))?;
    Ok(raw
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The node, the attribute handle (if the route has one) and the value (if it has one).
async fn target<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<(Address, Option<Handle>, Option<Vec<u8>>), Problem> {
    let params = path_params(parts, state).await?;
    let mut node = None;
    let mut handle = None;
    let mut value = None;
    for (name, text) in &params {
        match name.as_str() {
            "node" => node = Some(parse_node(text)?),
            "service" | "characteristic" | "descriptor" => handle = Some(parse_handle(name, text)?),
            "value" => value = Some(parse_value(text, 1)?),
            _ => {}
        }
    }
    let node = node.ok_or_else(|| Problem::bad_request("node", "the route has no node"))?;
    Ok((node, handle, value))
}

impl<S: Send + Sync> FromRequestParts<S> for Node {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Node, Problem> {
        Ok(Node(target(parts, state).await?.0))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Attr {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Attr, Problem> {
        match target(parts, state).await? {
            (node, Some(handle), _) => Ok(Attr(node, handle)),
            _ => Err(Problem::bad_request(
                "path",
                "the route has no attribute handle",
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AttrValue {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<AttrValue, Problem> {
        match target(parts, state).await? {
            (node, Some(handle), Some(value)) => Ok(AttrValue(node, handle, value)),
            _ => Err(Problem::bad_request("path", "the route has no value")),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Query, Problem> {
        Params::parse(parts.uri.query()).map(Query)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<NoQuery, Problem> {
        Params::parse(parts.uri.query())?.finish().map(|()| NoQuery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_values_are_checked() {
        assert_eq!(parse_handle("service", "00Af").unwrap(), 0x00af);
        for bad in ["af", "00afe", "zz00", "+0af"] {
            let p = parse_handle("service", bad).unwrap_err();
            assert_eq!(p.field.as_deref(), Some("service"), "{bad}");
        }
        assert_eq!(parse_value("0A0b", 1).unwrap(), [0x0a, 0x0b]);
        assert_eq!(parse_value("", 0).unwrap(), [] as [u8; 0]);
        for (bad, min) in [("", 1), ("012", 1), ("0g", 1)] {
            assert_eq!(
                parse_value(bad, min).unwrap_err().field.as_deref(),
                Some("value")
            );
        }
        assert!(parse_value(&"00".repeat(512), 1).is_ok());
        assert!(parse_value(&"00".repeat(513), 1).is_err());
        assert_eq!(parse_node("zz").unwrap_err().field.as_deref(), Some("node"));
    }
}
