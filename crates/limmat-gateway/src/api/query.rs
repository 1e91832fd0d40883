//! Strict query parameters (`gateway-api.md` §0): an unknown parameter or a repeated scalar
//! gets `400` naming it, so typos such as `notfy=1` never pass silently. Handlers take the raw
//! query, pull what they understand with [`Params::scalar`] / [`Params::list`], and finish with
//! [`Params::finish`], which refuses whatever is left.

use super::problem::Problem;
use std::str::FromStr;

/// The decoded `name=value` pairs of one query string, consumed as they are understood.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decode a raw query string (`a=1&b=x%2Cy`); `None` is an empty query.
    pub fn parse(raw: Option<&str>) -> Result<Params, Problem> {
        let raw = raw.unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(raw)?;
        Ok(Params { pairs })
    }

    /// Take a scalar parameter: `None` when absent, `400` when repeated.
    pub fn scalar(&mut self, name: &str) -> Result<Option<String>, Problem> {
        let mut found = self.take(name);
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(Problem::bad_request(
                name,
                format!("`{name}` is given more than once"),
            )),
        }
    }

    /// Take a scalar and parse it; a value that does not parse gets `400` naming it.
    pub fn parsed<T: FromStr>(&mut self, name: &str, expected: &str) -> Result<Option<T>, Problem> {
        match self.scalar(name)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Problem::bad_request(name, format!("`{name}={v}` is not {expected}"))),
        }
    }

    /// Take a `0|1` flag (§0; `true`, `yes` and the like are refused): `None` when absent.
    pub fn flag(&mut self, name: &str) -> Result<Option<bool>, Problem> {
        match self.scalar(name)?.as_deref() {
            None => Ok(None),
            Some("1") => Ok(Some(true)),
            Some("0") => Ok(Some(false)),
            Some(v) => Err(Problem::bad_request(
                name,
                format!("`{name}={v}` is not 0 or 1"),
            )),
        }
    }

    /// Take a list parameter: repeated and comma-separated values, flattened, empties dropped.
    /// Items are taken as they are, spaces included, so that `/openapi.json` can state what
    /// a list accepts as a pattern (`openapi::list_pattern`).
    pub fn list(&mut self, name: &str) -> Vec<String> {
        self.take(name)
            .iter()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Whether `name` is present (without taking it).
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    /// Refuse any parameter nobody took.
    pub fn finish(self) -> Result<(), Problem> {
        match self.pairs.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => Err(Problem::bad_request(
                &name,
                format!("unknown query parameter `{name}`"),
            )),
        }
    }

    fn take(&mut self, name: &str) -> Vec<String> {
        let mut taken = Vec::new();
        self.pairs.retain(|(n, v)| {
            if n == name {
                taken.push(v.clone());
                false
            } else {
                true
            }
        });
        taken
    }
}

/// `application/x-www-form-urlencoded` decoding of a query string.
fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, Problem> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(text: &str) -> Result<String, Problem> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Problem::bad_request("query", "malformed percent-encoding"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Problem::bad_request("query", "query is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_lists_and_leftovers() {
        let mut p = Params::parse(Some("active=1&key=a%3Ab&key=c,d&x=1")).unwrap();
        assert_eq!(p.flag("active").unwrap(), Some(true));
        assert_eq!(p.list("key"), ["a:b", "c", "d"]);
        assert_eq!(p.finish().unwrap_err().field.as_deref(), Some("x"));
    }

    #[test]
    fn repeated_scalars_and_bad_values_name_the_parameter() {
        let mut p = Params::parse(Some("duration=1&duration=2")).unwrap();
        assert_eq!(
            p.scalar("duration").unwrap_err().field.as_deref(),
            Some("duration")
        );
        let mut p = Params::parse(Some("duration=abc")).unwrap();
        let e = p.parsed::<u32>("duration", "a number").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("duration"));
        assert!(Params::parse(Some("a=%zz")).is_err());
        let mut p = Params::parse(Some("notfy=1")).unwrap();
        assert_eq!(p.flag("notify").unwrap(), None);
        assert_eq!(p.finish().unwrap_err().field.as_deref(), Some("notfy"));
    }
}
