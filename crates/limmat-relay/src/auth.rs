//! Device keys (relay-protocol.md 4.1 and 4.2): which key may register which domain.
//!
//! A device proves that it may hold a domain with `Authorization: Bearer <key>` in its
//! handshake. Two kinds of key are accepted:
//!
//! - **static keys**, of which the relay keeps only the SHA-256, per domain (4.1.2). A leaked
//!   configuration therefore leaks no key; a fast hash suffices because the keys that
//!   `limmat relay key --new` makes carry 256 random bits;
//! - **derived keys** `lmk1.<D>.<M>`, an HMAC of the domain under a master secret (4.1.3), so
//!   the relay stores nothing per device and a fleet needs one secret.
//!
//! The module is synchronous and does no I/O, except [`Authenticator::load`] and
//! [`read_master_secret`], which read the configured files once at start. The connection code
//! calls [`Authenticator::check`] at step 3 of 4.4; the forward proxy calls
//! [`Authenticator::domain_of_key`] (6.2). Hashes and MACs are compared in constant time, and
//! neither keys nor secrets appear in errors or `Debug` output: a key is named by its
//! [`fingerprint`] (4.1.4).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use limmat_wire::Authorization;
use limmat_wire::route::{MAX_DOMAIN_LEN, parse_domain};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;
type Hash = [u8; 32];

/// Start of a derived key; the version number lets a later scheme coexist with this one.
const DERIVED_PREFIX: &[u8] = b"lmk1.";
/// Domain separation: a master secret that is also used elsewhere cannot mint device keys.
const DERIVED_LABEL: &[u8] = b"limmat-device-key/1";
/// Longest well-formed derived key: the prefix, the longest domain in base64, `.`, the MAC.
/// Anything longer is refused before it is decoded.
const MAX_DERIVED_LEN: usize = DERIVED_PREFIX.len() + (4 * MAX_DOMAIN_LEN).div_ceil(3) + 1 + 43;
/// The prefix of a `revoked_keys` entry.
const REVOKED_PREFIX: &str = "sha256:";

/// `auth = "open" | "keys"` (4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Development only: any device may register any registrable domain.
    Open,
    /// Every device handshake needs a valid key for its domain.
    Keys,
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::Open => "open",
            AuthMode::Keys => "keys",
        })
    }
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(AuthMode::Open),
            "keys" => Ok(AuthMode::Keys),
            _ => Err(format!("auth is {s:?}; expected \"open\" or \"keys\"")),
        }
    }
}

/// Why the relay cannot pick an authentication mode (4.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModeError {
    #[error(
        "auth = \"keys\" needs a key source: give --keys-file, --master-secret-file or [[device_key]] entries"
    )]
    /// `auth = "keys"` without any key source.
    KeysWithoutSource,
    #[error(
        "no device key source is configured and a listener is not bound to a loopback address, \
         so anyone could register any domain: give --keys-file or --master-secret-file, or \
         --auth open to run without authentication (development only)"
    )]
    /// No key source, no explicit `auth = "open"`, and a listener off loopback.
    OpenOnPublicListener,
}

/// Picks the mode of 4.2 from the `auth` setting, if given, whether any key source is
/// configured ([`KeySources::any`]), and whether every public listener is bound to a loopback
/// address. The caller logs a warning at every start when `auth = "open"` was given
/// explicitly.
pub fn resolve_mode(
    requested: Option<AuthMode>,
    has_sources: bool,
    all_loopback: bool,
) -> Result<AuthMode, ModeError> {
    match (requested, has_sources) {
        (Some(AuthMode::Open), _) => Ok(AuthMode::Open),
        (Some(AuthMode::Keys), false) => Err(ModeError::KeysWithoutSource),
        (_, true) => Ok(AuthMode::Keys),
        (None, false) if all_loopback => Ok(AuthMode::Open),
        (None, false) => Err(ModeError::OpenOnPublicListener),
    }
}

/// One `[[device_key]]` entry (4.1.2), from the main configuration or a keys file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKey {
    /// The domain that the key may register.
    pub domain: String,
    /// The SHA-256 of the key's bytes, 64 lower-case hex digits.
    pub sha256: String,
}

/// Where keys come from, as configured; [`Authenticator::load`] reads and checks them.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// `keys_file` (`--keys-file`): TOML files with `[[device_key]]` and `revoked_keys`.
    pub keys_files: Vec<PathBuf>,
    /// `master_secret_files` (`--master-secret-file`, repeatable) for derived keys.
    pub master_secret_files: Vec<PathBuf>,
    /// `[[device_key]]` entries of the main configuration.
    pub device_keys: Vec<DeviceKey>,
    /// `revoked_keys` of the main configuration: `"sha256:<hex>"`.
    pub revoked_keys: Vec<String>,
}

impl KeySources {
    /// Whether a key source is configured, which makes `auth = "keys"` the default (4.2).
    /// A keys file counts even if it turns out to hold no entry: the relay then refuses every
    /// device instead of silently running open.
    pub fn any(&self) -> bool {
        !self.keys_files.is_empty()
            || !self.master_secret_files.is_empty()
            || !self.device_keys.is_empty()
    }
}

/// The layout of a keys file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    device_key: Vec<DeviceKey>,
    #[serde(default)]
    revoked_keys: Vec<String>,
}

/// Where a configuration entry came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The main configuration or the command line.
    Config,
    /// A keys file.
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Config => f.write_str("the configuration"),
            Origin::File(path) => write!(f, "keys file {}", path.display()),
        }
    }
}

/// A key source the relay refuses to start with. Messages name the file and the entry, and
/// never contain a key or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {error}", path.display())]
    Read {
        /// What the file is (`keys file`, `master secret file`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A keys file is not valid TOML of the expected shape.
    #[error("keys file {} is not valid: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// One entry is not valid.
    #[error("{origin}: {entry}: {problem}")]
    Entry {
        /// Where the entry is (a keys file, or the relay's own configuration).
        origin: Origin,
        /// For example `device_key #2 (domain "dom")` or `revoked_keys #1`, counted from 1.
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
    #[error(
        "the key with fingerprint {fingerprint} is configured for two domains, in {first} and in \
         {second}; a key must identify one domain"
    )]
    /// One key configured for two domains.
    SameKeyTwoDomains {
        /// The key's fingerprint.
        fingerprint: String,
        /// Where it was configured first.
        first: String,
        /// Where it was configured again.
        second: String,
    },
    /// A master secret file without a secret.
    #[error("master secret file {} is empty", path.display())]
    EmptySecret {
        /// The file.
        path: PathBuf,
    },
    /// A master secret file whose secret could be guessed.
    #[error(
        "master secret file {} is not a usable secret: {weakness}; anyone who can guess it can \
         mint device keys. Make one with: head -c 32 /dev/urandom | base64 > {}",
        path.display(),
        path.display()
    )]
    WeakSecret {
        /// The file.
        path: PathBuf,
        /// What is wrong with the secret.
        weakness: SecretWeakness,
    },
}

/// Why a master secret is refused (4.1.3): derived keys are only as strong as the secret that
/// mints them, so it must carry at least [`MIN_SECRET_BYTES`] bytes of random material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretWeakness {
    /// Text that a template or manifest leaves for the operator to replace.
    #[error("it looks like a placeholder ({0:?})")]
    Placeholder(&'static str),
    /// Fewer bytes of key material than [`MIN_SECRET_BYTES`], after decoding hex or base64.
    #[error("it holds {0} bytes of key material, at least 32 are needed")]
    TooShort(usize),
    /// Long enough, but made of very few distinct bytes (`aaaa…`, `0101…`).
    #[error("it repeats too few distinct bytes to be random")]
    Repetitive,
}

/// The least key material a master secret must hold: 256 bits, as a static key (4.1.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks that a master secret can be random: not a placeholder, and at least
/// [`MIN_SECRET_BYTES`] bytes once decoded (hex first, then standard or URL-safe base64, else
/// the bytes as they are), with more than a handful of distinct bytes. The secret itself stays
/// the file's bytes (the MAC key is not the decoded form), so existing keys keep verifying.
pub fn check_master_secret(secret: &[u8]) -> Result<(), SecretWeakness> {
    const PLACEHOLDERS: [&str; 7] = [
        "replace",
        "changeme",
        "change-me",
        "change me",
        "/dev/urandom",
        "example",
        "secret here",
    ];
    let lower = secret.to_ascii_lowercase();
    if let Some(word) = PLACEHOLDERS
        .iter()
        .find(|word| lower.windows(word.len()).any(|w| w == word.as_bytes()))
    {
        return Err(SecretWeakness::Placeholder(word));
    }
    let material = decode_secret(secret.trim_ascii());
    if material.len() < MIN_SECRET_BYTES {
        return Err(SecretWeakness::TooShort(material.len()));
    }
    let mut seen = [false; 256];
    material.iter().for_each(|&b| seen[usize::from(b)] = true);
    // 32 random bytes have about 30 distinct values; 8 leaves room for any real encoding.
    if seen.iter().filter(|&&s| s).count() < 8 {
        return Err(SecretWeakness::Repetitive);
    }
    Ok(())
}

/// The key material of a secret's text: hex or base64 decoded where the whole text is one.
fn decode_secret(text: &[u8]) -> Vec<u8> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    if text.len().is_multiple_of(2) && !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit) {
        // Every byte is a hex digit, so `to_digit` cannot fail here.
        let nibble = |b: u8| char::from(b).to_digit(16).unwrap_or(0) as u8;
        return text
            .chunks(2)
            .map(|pair| nibble(pair[0]) << 4 | nibble(pair[1]))
            .collect();
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .unwrap_or_else(|| text.to_vec())
}

/// How a device was authenticated; for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A key listed for its domain.
    Static,
    /// A key derived from a master secret (4.1.3).
    Derived,
}

/// The key a device was authenticated with, named by its fingerprint only (4.1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId {
    /// Static or derived.
    pub kind: KeyKind,
    /// The first 8 hex digits of the key's SHA-256.
    pub fingerprint: String,
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            KeyKind::Static => "static",
            KeyKind::Derived => "derived",
        };
        write!(f, "{kind} key {}", self.fingerprint)
    }
}

/// Why a device handshake failed authentication (4.1.1); every case gets the same 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No `Authorization` line.
    #[error("no Authorization field")]
    Missing,
    /// More than one.
    #[error("more than one Authorization field")]
    Several,
    /// Not the Bearer scheme.
    #[error("the Authorization field is not `Bearer` followed by SP")]
    NotBearer,
    /// `Bearer` with nothing after it.
    #[error("Authorization: Bearer without a key")]
    NoToken,
    /// A key that is not one of the domain's.
    #[error("key {fingerprint} is not valid for this domain")]
    Invalid {
        /// The presented key's fingerprint.
        fingerprint: String,
    },
    /// A revoked key.
    #[error("key {fingerprint} is revoked")]
    Revoked {
        /// The presented key's fingerprint.
        fingerprint: String,
    },
}

impl AuthFailure {
    /// The fingerprint of the key that was tried, if there was one.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            AuthFailure::Invalid { fingerprint } | AuthFailure::Revoked { fingerprint } => {
                Some(fingerprint)
            }
            _ => None,
        }
    }
}

/// The loaded key sources: decides whether a key may register a domain.
#[derive(Clone, Default)]
pub struct Authenticator {
    /// Static key hashes by domain key.
    static_keys: HashMap<String, Vec<Hash>>,
    /// One keyed MAC per master secret, keyed once at load.
    masters: Vec<HmacSha256>,
    revoked: Vec<Hash>,
    has_sources: bool,
}

/// Counts only: the secrets and hashes stay out of logs.
impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("domains", &self.static_keys.len())
            .field(
                "static_keys",
                &self.static_keys.values().map(Vec::len).sum::<usize>(),
            )
            .field("master_secrets", &self.masters.len())
            .field("revoked_keys", &self.revoked.len())
            .finish()
    }
}

impl Authenticator {
    /// Reads the keys files and master secret files and checks every entry.
    pub fn load(sources: &KeySources) -> Result<Self, KeyError> {
        let mut builder = Builder::default();
        builder.add(Origin::Config, &sources.device_keys, &sources.revoked_keys)?;
        for path in &sources.keys_files {
            let text = std::fs::read_to_string(path).map_err(|error| KeyError::Read {
                what: "keys file",
                path: path.clone(),
                error,
            })?;
            let file: KeysFile = toml::from_str(&text).map_err(|e| KeyError::Syntax {
                path: path.clone(),
                message: syntax_message(&text, &e),
            })?;
            builder.add(
                Origin::File(path.clone()),
                &file.device_key,
                &file.revoked_keys,
            )?;
        }
        let mut masters = Vec::with_capacity(sources.master_secret_files.len());
        for path in &sources.master_secret_files {
            masters.push(keyed_mac(&read_master_secret(path)?));
        }
        Ok(Self {
            static_keys: builder.static_keys,
            masters,
            revoked: builder.revoked,
            has_sources: sources.any(),
        })
    }

    /// Whether any key source was configured ([`KeySources::any`]).
    pub fn has_sources(&self) -> bool {
        self.has_sources
    }

    /// Authenticates a device handshake for `domain` (its domain key) by its `Authorization`
    /// lines (4.1.1).
    pub fn check(
        &self,
        domain: &str,
        authorization: Authorization<'_>,
    ) -> Result<KeyId, AuthFailure> {
        match authorization {
            Authorization::None => Err(AuthFailure::Missing),
            Authorization::Several => Err(AuthFailure::Several),
            Authorization::One(value) => self.check_key(domain, bearer_token(value)?),
        }
    }

    /// Whether `key` may register `domain` (a domain key): a static key configured for it or a
    /// derived key for it, and not revoked. Also serves `Proxy-Authorization: Basic` (6.2).
    pub fn check_key(&self, domain: &str, key: &[u8]) -> Result<KeyId, AuthFailure> {
        if key.is_empty() {
            return Err(AuthFailure::NoToken);
        }
        let hash = sha256(key);
        let fingerprint = hex(&hash[..4]);
        if ct_contains(&self.revoked, &hash) {
            return Err(AuthFailure::Revoked { fingerprint });
        }
        let kind = if self
            .static_keys
            .get(domain)
            .is_some_and(|hashes| ct_contains(hashes, &hash))
        {
            KeyKind::Static
        } else if decode_derived(key)
            .is_some_and(|(d, tag)| d == domain.as_bytes() && self.verify(&d, &tag))
        {
            KeyKind::Derived
        } else {
            return Err(AuthFailure::Invalid { fingerprint });
        };
        Ok(KeyId { kind, fingerprint })
    }

    /// The domain a key identifies, for the forward proxy, which sees a key without a domain
    /// (6.2): a static key's entry's domain, or a derived key's *D* if its MAC verifies.
    pub fn domain_of_key(&self, key: &[u8]) -> Option<String> {
        let hash = sha256(key);
        if key.is_empty() || ct_contains(&self.revoked, &hash) {
            return None;
        }
        // Scan every domain so the time taken does not depend on where the key is found.
        let mut found = None;
        for (domain, hashes) in &self.static_keys {
            if ct_contains(hashes, &hash) {
                found = Some(domain.clone());
            }
        }
        found.or_else(|| {
            let (domain, tag) = decode_derived(key)?;
            let domain = String::from_utf8(domain).ok()?;
            // Only a domain key can have been issued: `derive_key` folds and the CLI validates.
            let valid =
                parse_domain(&domain).ok()? == domain && self.verify(domain.as_bytes(), &tag);
            valid.then_some(domain)
        })
    }

    /// Whether `tag` is the MAC of `domain` under some master secret (4.1.3).
    fn verify(&self, domain: &[u8], tag: &[u8]) -> bool {
        // Try every secret, without stopping early, so timing does not tell which one matched.
        let mut valid = false;
        for master in &self.masters {
            valid |= with_domain(master.clone(), domain)
                .verify_slice(tag)
                .is_ok();
        }
        valid
    }
}

/// Collects entries from all origins, rejecting a hash that two domains share (4.1.2).
#[derive(Default)]
struct Builder {
    static_keys: HashMap<String, Vec<Hash>>,
    /// Where each hash was first seen: its domain key and entry, for the error message.
    seen: HashMap<Hash, (String, String)>,
    revoked: Vec<Hash>,
}

impl Builder {
    fn add(
        &mut self,
        origin: Origin,
        keys: &[DeviceKey],
        revoked: &[String],
    ) -> Result<(), KeyError> {
        for (i, key) in keys.iter().enumerate() {
            let entry = format!("device_key #{} (domain {:?})", i + 1, key.domain);
            let problem = |problem: String| KeyError::Entry {
                origin: origin.clone(),
                entry: entry.clone(),
                problem,
            };
            let domain = parse_domain(&key.domain).map_err(|e| problem(format!("{e}")))?;
            let hash = parse_hash(&key.sha256).map_err(|p| problem(format!("sha256 {p}")))?;
            match self.seen.entry(hash) {
                Entry::Occupied(first) if first.get().0 != domain => {
                    return Err(KeyError::SameKeyTwoDomains {
                        fingerprint: hex(&hash[..4]),
                        first: first.get().1.clone(),
                        second: format!("{origin}, {entry}"),
                    });
                }
                // The same entry twice is harmless.
                Entry::Occupied(_) => {}
                Entry::Vacant(slot) => {
                    slot.insert((domain.clone(), format!("{origin}, {entry}")));
                    self.static_keys.entry(domain).or_default().push(hash);
                }
            }
        }
        for (i, value) in revoked.iter().enumerate() {
            let hash = value
                .strip_prefix(REVOKED_PREFIX)
                .ok_or_else(|| "must be \"sha256:<64 lower-case hex digits>\"".to_owned())
                .and_then(parse_hash)
                .map_err(|problem| KeyError::Entry {
                    origin: origin.clone(),
                    entry: format!("revoked_keys #{}", i + 1),
                    problem,
                })?;
            self.revoked.push(hash);
        }
        Ok(())
    }
}

/// A TOML error without the excerpt of the file and without quoted values that `toml` and
/// `serde` put in their messages: a key pasted into the wrong place must not reach the log.
fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let mut quoted = String::new();
    for (i, part) in error.message().trim_end().split('"').enumerate() {
        // Odd parts are between quotes.
        quoted.push_str(if i % 2 == 1 { "\"…\"" } else { part });
    }
    // serde names unknown fields between backticks: a key pasted as a bare TOML key would be
    // echoed there, so only names too short to be a key (256-bit keys have 43 characters) are
    // kept, which is enough to show a misspelt field.
    let mut message = String::new();
    for (i, part) in quoted.split('`').enumerate() {
        let known = part.len() <= 20;
        match (i % 2 == 1, known) {
            (true, true) => message.push_str(&format!("`{part}`")),
            (true, false) => message.push_str("`…`"),
            (false, _) => message.push_str(part),
        }
    }
    match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Reads a master secret file: the secret is the file's bytes without one trailing `\n` or
/// `\r\n`, so that files written by editors and `echo` work. A secret that
/// [`check_master_secret`] refuses is an error naming the file and how to make a good one.
pub fn read_master_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut secret = std::fs::read(path).map_err(|error| KeyError::Read {
        what: "master secret file",
        path: path.to_path_buf(),
        error,
    })?;
    if secret.ends_with(b"\r\n") {
        secret.truncate(secret.len() - 2);
    } else if secret.ends_with(b"\n") {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(KeyError::EmptySecret {
            path: path.to_path_buf(),
        });
    }
    check_master_secret(&secret).map_err(|weakness| KeyError::WeakSecret {
        path: path.to_path_buf(),
        weakness,
    })?;
    Ok(secret)
}

/// The value of an `Authorization` field (leading SP/HT already skipped) as 4.1.1 reads it:
/// `Bearer` in any case, one or more SP, then the key, which ends at SP, HT, CR or LF.
pub fn bearer_token(value: &[u8]) -> Result<&[u8], AuthFailure> {
    const SCHEME: &[u8] = b"Bearer";
    let rest = match value.split_at_checked(SCHEME.len()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(SCHEME) => rest,
        _ => return Err(AuthFailure::NotBearer),
    };
    match rest.first() {
        None => return Err(AuthFailure::NoToken),
        Some(b' ') => {}
        // `Bearerx` or `Bearer<HT>`: not the Bearer scheme as 4.1.1 spells it.
        Some(_) => return Err(AuthFailure::NotBearer),
    }
    let token = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
    let end = token
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(token.len());
    match end {
        0 => Err(AuthFailure::NoToken),
        _ => Ok(&token[..end]),
    }
}

/// The derived key of `domain` under `secret` (4.1.3). The domain is folded to its domain
/// key first, since the relay compares *D* with the handshake's domain key.
pub fn derive_key(secret: &[u8], domain: &str) -> String {
    let domain = domain.to_ascii_lowercase();
    let tag = with_domain(keyed_mac(secret), domain.as_bytes()).finalize();
    format!(
        "lmk1.{}.{}",
        URL_SAFE_NO_PAD.encode(domain),
        URL_SAFE_NO_PAD.encode(tag.into_bytes())
    )
}

/// A new static key: 256 random bits from the operating system, base64url without padding.
pub fn new_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of a key in lower-case hex, as `[[device_key]]` and `revoked_keys` hold it.
pub fn sha256_hex(key: impl AsRef<[u8]>) -> String {
    hex(&sha256(key.as_ref()))
}

/// What logs show instead of a key: the first 8 hex digits of its SHA-256 (4.1.4).
pub fn fingerprint(key: impl AsRef<[u8]>) -> String {
    hex(&sha256(key.as_ref())[..4])
}

fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `list` holds `hash`, comparing with every element in constant time (4.1.4).
fn ct_contains(list: &[Hash], hash: &Hash) -> bool {
    list.iter()
        .fold(Choice::from(0), |found, h| found | h.ct_eq(hash))
        .into()
}

fn keyed_mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104), so this cannot fail.
    HmacSha256::new_from_slice(secret).expect("HMAC accepts a key of any length")
}

/// The MAC input of 4.1.3: `limmat-device-key/1` ‖ 0x00 ‖ domain key.
fn with_domain(mut mac: HmacSha256, domain: &[u8]) -> HmacSha256 {
    mac.update(DERIVED_LABEL);
    mac.update(&[0]);
    mac.update(domain);
    mac
}

/// The decoded *D* and *M* of `lmk1.<D>.<M>`, or `None` if the key lacks that shape. Base64url
/// without padding is decoded strictly (no padding, no stray bits), so each key has one spelling.
fn decode_derived(key: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if key.len() > MAX_DERIVED_LEN {
        return None;
    }
    let rest = key.strip_prefix(DERIVED_PREFIX)?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let domain = URL_SAFE_NO_PAD.decode(&rest[..dot]).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(&rest[dot + 1..]).ok()?;
    Some((domain, tag))
}

/// Parses 64 lower-case hex digits; the error says what is wrong without repeating the value,
/// in case a key was pasted where its hash belongs.
fn parse_hash(s: &str) -> Result<Hash, String> {
    const EXPECTED: &str = "must be 64 lower-case hex digits (the SHA-256 of the key)";
    if s.len() != 64 {
        let hint = if s.starts_with("lmk1.") || s.len() == 43 {
            "; this looks like a key: only its SHA-256 belongs in the configuration"
        } else {
            ""
        };
        return Err(format!("{EXPECTED}, not {} characters{hint}", s.len()));
    }
    if let Some(pos) = s
        .bytes()
        .position(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        let what = if s.as_bytes()[pos].is_ascii_hexdigit() {
            "an upper-case hex digit"
        } else {
            "a character that is not a hex digit"
        };
        return Err(format!("{EXPECTED}; it has {what} at position {}", pos + 1));
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Ok(hash)
}

/// The value of a hex digit already checked to be `0-9a-f`.
fn nibble(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        _ => b - b'a' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRET: &[u8] = b"limmat-test-master-secret";
    const DOMAIN: &str = "gsiot-ffmq-ttd5";
    const VECTOR: &str = "lmk1.Z3Npb3QtZmZtcS10dGQ1.62FuudxH3sP__U8QW7GzPMr_Mk3kPmaB6dw5vfHPcGQ";

    /// A file in the temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &[u8]) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "limmat-auth-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A master secret that [`check_master_secret`] accepts: 32 random bytes in base64.
    const STRONG: &[u8] = b"q9Jc0m7tq5yGQw3S9pB0m1XlZrC8k2yTQ6m8yV0dX1E=";

    /// An authenticator with these master secrets, each as a file would give it (one line end
    /// removed). Built in memory because the spec's test-vector secret is too short to pass
    /// [`read_master_secret`]'s strength check, by design.
    fn with_secrets(secrets: &[&[u8]]) -> (Authenticator, Vec<TempFile>) {
        let mut auth = Authenticator::load(&KeySources::default()).unwrap();
        auth.masters = secrets
            .iter()
            .map(|s| keyed_mac(s.strip_suffix(b"\n").unwrap_or(s)))
            .collect();
        (auth, Vec::new())
    }

    fn with_static(entries: &[(&str, &str)], revoked: &[&str]) -> Authenticator {
        Authenticator::load(&KeySources {
            device_keys: entries
                .iter()
                .map(|(domain, key)| DeviceKey {
                    domain: domain.to_string(),
                    sha256: sha256_hex(key),
                })
                .collect(),
            revoked_keys: revoked
                .iter()
                .map(|key| format!("sha256:{}", sha256_hex(key)))
                .collect(),
            ..KeySources::default()
        })
        .unwrap()
    }

    fn bearer(key: &str) -> String {
        format!("Bearer {key}")
    }

    fn check(auth: &Authenticator, domain: &str, value: &str) -> Result<KeyId, AuthFailure> {
        auth.check(domain, Authorization::One(value.as_bytes()))
    }

    fn load_err(sources: &KeySources) -> String {
        Authenticator::load(sources).unwrap_err().to_string()
    }

    fn keys_file(text: &str) -> (TempFile, KeySources) {
        let file = TempFile::new(text.as_bytes());
        let sources = KeySources {
            keys_files: vec![file.0.clone()],
            ..KeySources::default()
        };
        (file, sources)
    }

    const HASH_A: &str = "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3";

    #[test]
    fn derive_key_gives_the_test_vector() {
        assert_eq!(derive_key(SECRET, DOMAIN), VECTOR);
        assert_eq!(derive_key(SECRET, "GSIOT-ffmq-ttd5"), VECTOR);
    }

    #[test]
    fn test_vector_verifies_for_its_domain_only() {
        let (auth, _files) = with_secrets(&[SECRET]);
        let id = check(&auth, DOMAIN, &bearer(VECTOR)).unwrap();
        assert_eq!(id.kind, KeyKind::Derived);
        assert_eq!(id.fingerprint, fingerprint(VECTOR));
        assert_eq!(
            check(&auth, "other-domain", &bearer(VECTOR)),
            Err(AuthFailure::Invalid {
                fingerprint: fingerprint(VECTOR)
            })
        );
        assert_eq!(
            auth.domain_of_key(VECTOR.as_bytes()).as_deref(),
            Some(DOMAIN)
        );
    }

    #[test]
    fn derived_key_of_another_secret_fails() {
        let (auth, _files) = with_secrets(&[b"another secret"]);
        assert!(check(&auth, DOMAIN, &bearer(VECTOR)).is_err());
        assert_eq!(auth.domain_of_key(VECTOR.as_bytes()), None);
    }

    #[test]
    fn derived_keys_need_a_master_secret() {
        let auth = with_static(&[("dom", "k")], &[]);
        assert!(check(&auth, DOMAIN, &bearer(VECTOR)).is_err());
    }

    #[test]
    fn rotation_accepts_keys_of_either_secret() {
        let (auth, _files) = with_secrets(&[b"new secret\n", SECRET]);
        assert!(check(&auth, DOMAIN, &bearer(VECTOR)).is_ok());
        let new = derive_key(b"new secret", DOMAIN);
        assert_ne!(new, VECTOR);
        assert!(check(&auth, DOMAIN, &bearer(&new)).is_ok());
        assert!(check(&auth, DOMAIN, &bearer(&derive_key(b"third", DOMAIN))).is_err());
    }

    #[test]
    fn revoked_keys_fail_even_if_valid() {
        let sources = KeySources {
            device_keys: vec![DeviceKey {
                domain: "dom".into(),
                sha256: sha256_hex("static"),
            }],
            revoked_keys: vec![
                format!("sha256:{}", sha256_hex(VECTOR)),
                format!("sha256:{}", sha256_hex("static")),
            ],
            ..KeySources::default()
        };
        let mut auth = Authenticator::load(&sources).unwrap();
        auth.masters = vec![keyed_mac(SECRET)];
        assert_eq!(
            check(&auth, DOMAIN, &bearer(VECTOR)),
            Err(AuthFailure::Revoked {
                fingerprint: fingerprint(VECTOR)
            })
        );
        assert!(matches!(
            check(&auth, "dom", "Bearer static"),
            Err(AuthFailure::Revoked { .. })
        ));
        assert_eq!(auth.domain_of_key(VECTOR.as_bytes()), None);
        assert_eq!(auth.domain_of_key(b"static"), None);
        // Another domain's derived key is still fine.
        assert!(check(&auth, "dom", &bearer(&derive_key(SECRET, "dom"))).is_ok());
    }

    #[test]
    fn static_keys() {
        let auth = with_static(&[("dom", "k1"), ("dom", "k2"), ("other", "k3")], &[]);
        for key in ["k1", "k2"] {
            let id = check(&auth, "dom", &bearer(key)).unwrap();
            assert_eq!(id.kind, KeyKind::Static);
            assert_eq!(id.to_string(), format!("static key {}", fingerprint(key)));
        }
        assert!(matches!(
            check(&auth, "dom", "Bearer wrong"),
            Err(AuthFailure::Invalid { .. })
        ));
        assert!(check(&auth, "dom", "Bearer k3").is_err());
        assert!(check(&auth, "other", "Bearer k1").is_err());
        assert!(check(&auth, "unknown", "Bearer k1").is_err());
        assert_eq!(auth.domain_of_key(b"k3").as_deref(), Some("other"));
        assert_eq!(auth.domain_of_key(b"wrong"), None);
        assert_eq!(auth.domain_of_key(b""), None);
    }

    #[test]
    fn static_entry_domains_are_folded() {
        let auth = with_static(&[("DoM", "k")], &[]);
        assert!(check(&auth, "dom", "Bearer k").is_ok());
    }

    #[test]
    fn authorization_lines() {
        let auth = with_static(&[("dom", "abc")], &[]);
        assert_eq!(
            auth.check("dom", Authorization::None),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            auth.check("dom", Authorization::Several),
            Err(AuthFailure::Several)
        );
        assert!(check(&auth, "dom", "bearer abc").is_ok());
        assert!(check(&auth, "dom", "BEARER   abc").is_ok());
        // The token ends at SP or HT: what follows is not part of the key.
        assert!(check(&auth, "dom", "Bearer abc  ").is_ok());
        assert!(check(&auth, "dom", "Bearer abc\tjunk").is_ok());
        assert!(check(&auth, "dom", "Bearer abc def").is_ok());
        assert_eq!(
            check(&auth, "dom", "Basic YWJjOmRlZg=="),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            check(&auth, "dom", "Bearerabc"),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            check(&auth, "dom", "Bearer\tabc"),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(check(&auth, "dom", "Bear"), Err(AuthFailure::NotBearer));
        assert_eq!(check(&auth, "dom", ""), Err(AuthFailure::NotBearer));
        assert_eq!(check(&auth, "dom", "Bearer"), Err(AuthFailure::NoToken));
        assert_eq!(check(&auth, "dom", "Bearer   "), Err(AuthFailure::NoToken));
        assert_eq!(
            check(&auth, "dom", "Bearer \tabc"),
            Err(AuthFailure::NoToken)
        );
        assert_eq!(auth.check_key("dom", b""), Err(AuthFailure::NoToken));
    }

    #[test]
    fn malformed_derived_keys_fail() {
        let (auth, _files) = with_secrets(&[SECRET]);
        let (d, m) = VECTOR["lmk1.".len()..].split_once('.').unwrap();
        let overlong_d = URL_SAFE_NO_PAD.encode([b'a'; 300]);
        let cases = [
            format!("lmk2.{d}.{m}"),
            format!("LMK1.{d}.{m}"),
            format!("lmk1{d}.{m}"),
            format!("lmk1.{d}{m}"),
            format!("lmk1.{d}."),
            format!("lmk1..{m}"),
            format!("lmk1.{d}"),
            "lmk1.".to_owned(),
            "lmk1..".to_owned(),
            format!("lmk1.{d}.{m}="),
            format!("lmk1.{d}=.{m}"),
            format!("lmk1.{d}.{m}.x"),
            format!("lmk1.{d}.{m}A"),
            format!("lmk1.{d}.{}", &m[..42]),
            format!("lmk1.{d}.{}", URL_SAFE_NO_PAD.encode([0u8; 32])),
            format!("lmk1.{}.{m}", d.replace('Z', "+")),
            format!("lmk1.{overlong_d}.{m}"),
            format!("lmk1.{}.{m}", "A".repeat(100_000)),
        ];
        for key in &cases {
            assert!(check(&auth, DOMAIN, &bearer(key)).is_err(), "{key}");
            assert_eq!(auth.domain_of_key(key.as_bytes()), None, "{key}");
        }
        // Every one-character change of the vector fails: strict base64 has one spelling.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        for i in 0..VECTOR.len() {
            for &c in alphabet {
                let mut key = VECTOR.as_bytes().to_vec();
                if key[i] == c {
                    continue;
                }
                key[i] = c;
                assert!(auth.check_key(DOMAIN, &key).is_err(), "{i} {c}");
            }
        }
    }

    #[test]
    fn derived_key_for_the_longest_domain() {
        let (auth, _files) = with_secrets(&[SECRET]);
        let domain = "d".repeat(MAX_DOMAIN_LEN);
        let key = derive_key(SECRET, &domain);
        assert_eq!(key.len(), MAX_DERIVED_LEN);
        assert!(auth.check_key(&domain, key.as_bytes()).is_ok());
        assert_eq!(auth.domain_of_key(key.as_bytes()), Some(domain));
    }

    #[test]
    fn domain_of_key_refuses_a_derived_key_for_a_non_domain() {
        // A MAC over a name that is not a domain key cannot have been issued by the CLI.
        let (auth, _files) = with_secrets(&[SECRET]);
        let tag = with_domain(keyed_mac(SECRET), b"relay_domain").finalize();
        let key = format!(
            "lmk1.{}.{}",
            URL_SAFE_NO_PAD.encode("relay_domain"),
            URL_SAFE_NO_PAD.encode(tag.into_bytes())
        );
        assert_eq!(auth.domain_of_key(key.as_bytes()), None);
    }

    #[test]
    fn arbitrary_authorization_values_never_panic() {
        let (mut auth, _files) = with_secrets(&[SECRET]);
        auth = Authenticator {
            static_keys: with_static(&[("dom", "k")], &[]).static_keys,
            ..auth
        };
        let pieces: [&[u8]; 12] = [
            b"Bearer", b"bearer", b" ", b"\t", b"lmk1.", b".", b"Z3Npb3Q", b"=", b"k", b"\xff",
            b"\r", b"_-",
        ];
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let mut value = Vec::new();
            for _ in 0..rng.random_range(0..12) {
                if rng.random_bool(0.5) {
                    value.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
                } else {
                    value.push(rng.random());
                }
            }
            let _ = auth.check(DOMAIN, Authorization::One(&value));
            let _ = auth.check("dom", Authorization::One(&value));
            let _ = auth.domain_of_key(&value);
        }
    }

    #[test]
    fn keys_file_entries_and_revocations() {
        let (_file, sources) = keys_file(&format!(
            "revoked_keys = [\"sha256:{}\"]\n\n[[device_key]]\ndomain = \"dom\"\nsha256 = \"{}\"\n\n\
             [[device_key]]\ndomain = \"dom\"\nsha256 = \"{}\"\n",
            sha256_hex("old"),
            sha256_hex("new"),
            sha256_hex("old"),
        ));
        let auth = Authenticator::load(&sources).unwrap();
        assert!(auth.has_sources());
        assert!(check(&auth, "dom", "Bearer new").is_ok());
        assert!(matches!(
            check(&auth, "dom", "Bearer old"),
            Err(AuthFailure::Revoked { .. })
        ));
    }

    #[test]
    fn an_empty_keys_file_is_a_source_that_accepts_nothing() {
        let (_file, sources) = keys_file("");
        let auth = Authenticator::load(&sources).unwrap();
        assert!(auth.has_sources());
        assert!(check(&auth, "dom", "Bearer k").is_err());
        assert!(!Authenticator::default().has_sources());
    }

    #[test]
    fn keys_file_errors_name_the_file_and_entry() {
        let entry = |sha: &str| format!("[[device_key]]\ndomain = \"dom\"\nsha256 = \"{sha}\"\n");
        let cases = [
            (
                entry(&HASH_A.replace('a', "g")),
                "a character that is not a hex digit at position 1",
            ),
            (entry(&HASH_A.to_uppercase()), "an upper-case hex digit"),
            (entry(&HASH_A[..63]), "not 63 characters"),
            (entry(&new_key().unwrap()), "this looks like a key"),
            (
                format!("[[device_key]]\ndomain = \"dom\"\nsha256 = \"{HASH_A}\"\nkey = \"x\"\n"),
                "unknown field `key`",
            ),
            (
                "[[device_key]]\ndomain = \"dom\"\n".to_owned(),
                "missing field `sha256`",
            ),
            (
                "device_keys = []\n".to_owned(),
                "unknown field `device_keys`",
            ),
            (
                "revoked_keys = [\"x\"]\n".to_owned(),
                "revoked_keys #1: must be \"sha256:",
            ),
            (
                format!("revoked_keys = [\"sha256:{}\"]\n", &HASH_A[1..]),
                "revoked_keys #1",
            ),
            (
                format!("[[device_key]]\ndomain = \"relay_domain\"\nsha256 = \"{HASH_A}\"\n"),
                "device_key #1 (domain \"relay_domain\"): `relay_domain` is reserved",
            ),
            (
                format!("[[device_key]]\ndomain = \"a/b\"\nsha256 = \"{HASH_A}\"\n"),
                "the domain contains '/'",
            ),
        ];
        for (text, needle) in cases {
            let (file, sources) = keys_file(&text);
            let err = load_err(&sources);
            assert!(err.contains(&file.0.display().to_string()), "{err}");
            assert!(err.contains(needle), "{needle:?} in {err}");
        }
    }

    #[test]
    fn a_key_pasted_as_a_bare_toml_key_is_not_repeated() {
        let key = new_key().unwrap();
        let (_file, sources) = keys_file(&format!("[[device_key]]\n{key} = 1\n"));
        let err = load_err(&sources);
        assert!(!err.contains(&key), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn a_key_pasted_as_its_hash_is_not_repeated() {
        let key = new_key().unwrap();
        let err = load_err(&KeySources {
            device_keys: vec![DeviceKey {
                domain: "dom".into(),
                sha256: key.clone(),
            }],
            ..KeySources::default()
        });
        assert!(err.starts_with("the configuration: device_key #1"), "{err}");
        assert!(!err.contains(&key), "{err}");
    }

    #[test]
    fn syntax_errors_give_the_place_but_no_value() {
        let key = new_key().unwrap();
        for (text, needle) in [
            (
                format!("[[device_key]]\ndomain = \"d\"\nsha256 = {key}\n"),
                "line 3, column ",
            ),
            (format!("device_key = \"{key}\"\n"), "line 1, column 14: "),
            (format!("revoked_keys = \"{key}\"\n"), "line 1, column 16: "),
        ] {
            let (file, sources) = keys_file(&text);
            let err = load_err(&sources);
            assert!(
                err.starts_with(&format!(
                    "keys file {} is not valid: {needle}",
                    file.0.display()
                )),
                "{err}"
            );
            assert!(!err.contains(&key), "{err}");
        }
    }

    #[test]
    fn the_same_key_for_two_domains_is_an_error() {
        let (file, mut sources) = keys_file(&format!(
            "[[device_key]]\ndomain = \"Other\"\nsha256 = \"{HASH_A}\"\n"
        ));
        sources.device_keys = vec![
            DeviceKey {
                domain: "dom".into(),
                sha256: HASH_A.into(),
            },
            // The same entry twice is harmless.
            DeviceKey {
                domain: "DOM".into(),
                sha256: HASH_A.into(),
            },
        ];
        let err = load_err(&sources);
        assert!(err.contains(&HASH_A[..8]), "{err}");
        assert!(
            err.contains("in the configuration, device_key #1 (domain \"dom\") and in keys file"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "{}, device_key #1 (domain \"Other\")",
                file.0.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn master_secret_files() {
        for end in [&b"\n"[..], b"\r\n", b""] {
            let file = TempFile::new(&[STRONG, end].concat());
            assert_eq!(read_master_secret(&file.0).unwrap(), STRONG);
        }
        // Only one line end is removed: the rest is the secret.
        let file = TempFile::new(&[STRONG, b"\n\n"].concat());
        assert_eq!(
            read_master_secret(&file.0).unwrap(),
            [STRONG, b"\n"].concat()
        );
        for contents in [&b""[..], b"\n", b"\r\n"] {
            let file = TempFile::new(contents);
            let err = read_master_secret(&file.0).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("master secret file {} is empty", file.0.display())
            );
        }
        let missing = std::env::temp_dir().join("limmat-auth-no-such-file");
        let err = load_err(&KeySources {
            master_secret_files: vec![missing.clone()],
            ..KeySources::default()
        });
        assert!(
            err.starts_with(&format!(
                "cannot read master secret file {}",
                missing.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn weak_master_secrets_are_refused() {
        use SecretWeakness::*;
        let random = |n: usize| -> Vec<u8> { (0..n).map(|_| rand::rng().random()).collect() };
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let hex64 = hex(&random(32));
        for good in [
            STRONG.to_vec(),
            b64(&random(32)).into_bytes(),
            URL_SAFE_NO_PAD.encode(random(48)).into_bytes(),
            hex64.clone().into_bytes(),
            // Raw bytes; 40 so that white space trimmed from either end leaves 32.
            random(40),
            b"a long passphrase of words, more than thirty-two bytes".to_vec(),
        ] {
            assert_eq!(check_master_secret(&good), Ok(()), "{good:?}");
        }
        for (bad, weakness) in [
            (&b"short"[..], TooShort(5)),
            (SECRET, TooShort(25)),
            (
                b"REPLACE: head -c 32 /dev/urandom | base64",
                Placeholder("replace"),
            ),
            (
                b"changeme-changeme-changeme-changeme",
                Placeholder("changeme"),
            ),
            // 31 random bytes in base64 are 44 characters but only 31 bytes of material.
            (
                b"7qJvHjyOXu4dYFv5BmVQ3ZpWZ4hRv4bXq2wqHUq1Zg==",
                TooShort(31),
            ),
            // 32 hex digits are 16 bytes, whatever their length as text.
            (b"00112233445566778899aabbccddeeff", TooShort(16)),
            (&[b'a'; 64][..], Repetitive),
        ] {
            assert_eq!(check_master_secret(bad), Err(weakness), "{bad:?}");
        }
        // The error names the file and says how to make a good secret.
        let file = TempFile::new(b"REPLACE: head -c 32 /dev/urandom | base64\n");
        let err = read_master_secret(&file.0).unwrap_err().to_string();
        assert!(err.contains(&file.0.display().to_string()), "{err}");
        assert!(err.contains("placeholder"), "{err}");
        assert!(err.contains("head -c 32 /dev/urandom | base64 >"), "{err}");
    }

    #[test]
    fn new_keys_are_random_and_256_bits() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn hashes_and_fingerprints() {
        assert_eq!(sha256_hex("123"), HASH_A);
        assert_eq!(fingerprint(b"123"), &HASH_A[..8]);
    }

    #[test]
    fn modes() {
        use AuthMode::*;
        assert_eq!(resolve_mode(None, true, false), Ok(Keys));
        assert_eq!(resolve_mode(None, false, true), Ok(Open));
        assert_eq!(
            resolve_mode(None, false, false),
            Err(ModeError::OpenOnPublicListener)
        );
        assert_eq!(resolve_mode(Some(Open), false, false), Ok(Open));
        assert_eq!(resolve_mode(Some(Open), true, false), Ok(Open));
        assert_eq!(
            resolve_mode(Some(Keys), false, true),
            Err(ModeError::KeysWithoutSource)
        );
        assert_eq!("keys".parse(), Ok(Keys));
        assert!("derived".parse::<AuthMode>().is_err());
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let (auth, _files) = with_secrets(&[SECRET]);
        let debug = format!("{auth:?}");
        assert!(!debug.contains("limmat-test"), "{debug}");
        assert!(debug.contains("master_secrets: 1"), "{debug}");
    }
}
