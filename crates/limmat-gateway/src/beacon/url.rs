//! The Eddystone-URL compression (`gateway-api.md` §4.4): a scheme-prefix byte, then bytes that
//! are either expansion codes (`00`–`0D`) or printable ASCII (`21`–`7E`) standing for itself.
//! Other scheme bytes and the reserved bytes `0E`–`20` and `7F`–`FF` make the frame malformed.
//! Encoding tries every scheme prefix the URL starts with and encodes the rest greedily (the
//! longest expansion at each position). Greedy is optimal after the prefix, because every
//! expansion starts with `.` and contains no other `.`; the prefix is not (`http://www.info/`
//! is 4 bytes after `http://` but 5 after `http://www.`), hence the choice.

use super::Reason;

/// Scheme prefixes by byte value.
const SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];

/// Expansion codes by byte value.
const EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];

/// The most bytes of encoded URL a frame carries (after the TX power and scheme bytes).
pub const MAX_ENCODED: usize = 17;

/// Why a URL cannot be broadcast as Eddystone-URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlEncodeError {
    /// It starts with none of `http://www.`, `https://www.`, `http://`, `https://`.
    #[error("the URL starts with no Eddystone scheme prefix")]
    Scheme,
    /// It holds a character outside printable ASCII `!`–`~`.
    #[error("the URL holds a character Eddystone-URL cannot carry")]
    Character,
    /// It needs more than 17 encoded bytes.
    #[error("the URL needs {0} encoded bytes, more than 17")]
    TooLong(usize),
}

/// Expands a scheme byte and encoded bytes into the URL.
pub fn expand(scheme: u8, encoded: &[u8]) -> Result<String, Reason> {
    let mut url = String::from(
        *SCHEMES
            .get(usize::from(scheme))
            .ok_or(Reason::UrlScheme(scheme))?,
    );
    for (offset, &byte) in encoded.iter().enumerate() {
        match EXPANSIONS.get(usize::from(byte)) {
            Some(expansion) => url.push_str(expansion),
            None if (0x21..=0x7e).contains(&byte) => url.push(char::from(byte)),
            None => return Err(Reason::UrlReserved { byte, offset }),
        }
    }
    Ok(url)
}

/// Compresses a URL into its scheme byte and encoded bytes (at most 17).
pub fn compress(url: &str) -> Result<(u8, Vec<u8>), UrlEncodeError> {
    let mut best: Option<(u8, Vec<u8>)> = None;
    for (scheme, prefix) in (0u8..).zip(SCHEMES) {
        let Some(rest) = url.strip_prefix(prefix) else {
            continue;
        };
        let encoded = compress_rest(rest)?;
        if best
            .as_ref()
            .is_none_or(|(_, shortest)| encoded.len() < shortest.len())
        {
            best = Some((scheme, encoded));
        }
    }
    let (scheme, encoded) = best.ok_or(UrlEncodeError::Scheme)?;
    if encoded.len() > MAX_ENCODED {
        return Err(UrlEncodeError::TooLong(encoded.len()));
    }
    Ok((scheme, encoded))
}

/// Greedy encoding of what follows the scheme prefix.
fn compress_rest(mut rest: &str) -> Result<Vec<u8>, UrlEncodeError> {
    let mut encoded = Vec::new();
    while !rest.is_empty() {
        if let Some((code, after)) = longest_expansion(rest) {
            encoded.push(code);
            rest = after;
        } else {
            let (&byte, after) = rest.as_bytes().split_first().unwrap_or((&0, b""));
            if !(0x21..=0x7e).contains(&byte) {
                return Err(UrlEncodeError::Character);
            }
            encoded.push(byte);
            // An ASCII byte is a whole character, so `after` is still valid UTF-8.
            rest = std::str::from_utf8(after).map_err(|_| UrlEncodeError::Character)?;
        }
    }
    Ok(encoded)
}

/// The code of the longest expansion that `text` starts with, and the text after it.
fn longest_expansion(text: &str) -> Option<(u8, &str)> {
    (0u8..)
        .zip(EXPANSIONS)
        .filter_map(|(code, expansion)| Some((code, text.strip_prefix(expansion)?)))
        .min_by_key(|(_, after)| after.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expands_every_scheme_and_code() {
        assert_eq!(expand(0, b"a").as_deref(), Ok("http://www.a"));
        assert_eq!(expand(1, b"a").as_deref(), Ok("https://www.a"));
        assert_eq!(expand(2, b"a").as_deref(), Ok("http://a"));
        assert_eq!(expand(3, b"").as_deref(), Ok("https://"));
        let all_codes: Vec<u8> = (0..=0x0d).collect();
        assert_eq!(
            expand(3, &all_codes).as_deref(),
            Ok("https://.com/.org/.edu/.net/.info/.biz/.gov/.com.org.edu.net.info.biz.gov")
        );
        assert_eq!(expand(3, b"!~").as_deref(), Ok("https://!~"));
    }

    #[test]
    fn refuses_other_schemes_and_reserved_bytes() {
        assert_eq!(expand(4, b"a"), Err(Reason::UrlScheme(4)));
        assert_eq!(expand(0xff, b""), Err(Reason::UrlScheme(0xff)));
        for byte in (0x0e..=0x20).chain(0x7f..=0xff) {
            assert_eq!(
                expand(2, &[b'a', byte]),
                Err(Reason::UrlReserved { byte, offset: 1 })
            );
        }
    }

    #[test]
    fn compresses_greedily() {
        assert_eq!(
            compress("https://www.example.com/"),
            Ok((1, b"example\x00".to_vec()))
        );
        assert_eq!(
            compress("http://example.org/b/17"),
            Ok((2, b"example\x01b/17".to_vec()))
        );
        assert_eq!(compress("http://a.com"), Ok((2, b"a\x07".to_vec())));
        // The shorter prefix wins when the longer one would split an expansion.
        assert_eq!(compress("http://www.info/"), Ok((2, b"www\x04".to_vec())));
        assert_eq!(compress("http://www.a"), Ok((0, b"a".to_vec())));
        assert_eq!(compress("https://"), Ok((3, vec![])));
        assert_eq!(compress("ftp://a"), Err(UrlEncodeError::Scheme));
        assert_eq!(compress("http://a b"), Err(UrlEncodeError::Character));
        assert_eq!(compress("http://ä"), Err(UrlEncodeError::Character));
        assert_eq!(
            compress("https://aaaaaaaaaaaaaaaaaa"),
            Err(UrlEncodeError::TooLong(18))
        );
    }

    proptest! {
        #[test]
        fn compressing_an_expansion_gives_it_back(
            scheme in 0u8..4,
            encoded in proptest::collection::vec(
                prop_oneof![0u8..=0x0d, 0x21u8..=0x7e], 0..=MAX_ENCODED),
        ) {
            let url = expand(scheme, &encoded).unwrap();
            let (scheme2, encoded2) = compress(&url).unwrap();
            prop_assert!(encoded2.len() <= encoded.len());
            prop_assert_eq!(expand(scheme2, &encoded2).unwrap(), url);
        }

        #[test]
        fn never_panics(scheme in any::<u8>(), encoded in proptest::collection::vec(any::<u8>(), 0..24),
                        text in ".{0,40}") {
            let _ = expand(scheme, &encoded);
            let _ = compress(&text);
        }
    }
}
