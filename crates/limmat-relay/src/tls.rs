//! TLS termination (spec 2.6): certificates from PEM files, chosen by SNI (an exact name, then
//! a wildcard such as `*.relay.example.com` for SNI-routed clients, then the first certificate),
//! and reloaded without a restart when their files change or on demand (SIGHUP). A new file that
//! does not load keeps the old certificate in service and says why in the log.
//!
//! Terminated legs offer ALPN `http/1.1` only, never `h2` (M7): the device receives the client's
//! bytes as they are, so it must be able to read them as HTTP/1.1.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The certificate file is unreadable or holds no certificate.
    #[error("cannot read certificate file {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file is unreadable or holds no private key.
    #[error("cannot read private key file {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not match the certificate, or rustls refuses the pair.
    #[error("{cert} and {key} do not form a usable certificate: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// A TLS listener without any certificate.
    #[error("TLS listeners need at least one --cert and --key")]
    NoCertificate,
}

struct Loaded {
    paths: CertPaths,
    key: Arc<CertifiedKey>,
    /// Modification times of the two files when they were read.
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn stamp(paths: &CertPaths) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&paths.cert), modified(&paths.key))
}

fn load(paths: &CertPaths, provider: &CryptoProvider) -> Result<Loaded, CertError> {
    let stamp = stamp(paths);
    let chain = CertificateDer::pem_file_iter(&paths.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| CertError::Cert {
            path: paths.cert.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Cert {
            path: paths.cert.clone(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| CertError::Key {
        path: paths.key.clone(),
        reason: e.to_string(),
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| CertError::Pair {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Loaded {
        paths: paths.clone(),
        key: Arc::new(key),
        stamp,
    })
}

/// Loads a certificate pair exactly as a TLS listener would, without keeping it: for
/// `--check-config`.
pub fn check(paths: &CertPaths) -> Result<(), CertError> {
    load(paths, &provider()).map(|_| ())
}

/// The relay's certificates; shared by every TLS listener and swapped as a whole on reload.
pub(crate) struct CertStore {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Vec<Loaded>>>,
}

impl CertStore {
    /// Loads every pair; any failure stops the relay from starting.
    pub(crate) fn load(paths: &[CertPaths]) -> Result<Arc<Self>, CertError> {
        if paths.is_empty() {
            return Err(CertError::NoCertificate);
        }
        let provider = provider();
        let loaded = paths
            .iter()
            .map(|p| load(p, &provider))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            provider,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    fn snapshot(&self) -> Arc<Vec<Loaded>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads again the pairs whose files changed (or all, with `force`). A pair that fails to
    /// load keeps its previous certificate. Returns how many pairs were replaced.
    pub(crate) fn reload(&self, force: bool) -> usize {
        let old = self.snapshot();
        let mut replaced = 0;
        let next: Vec<Loaded> = old
            .iter()
            .map(|l| {
                if !force && stamp(&l.paths) == l.stamp {
                    return Loaded {
                        paths: l.paths.clone(),
                        key: l.key.clone(),
                        stamp: l.stamp,
                    };
                }
                match load(&l.paths, &self.provider) {
                    Ok(new) => {
                        replaced += 1;
                        tracing::info!(cert = %l.paths.cert.display(), "certificate reloaded");
                        new
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "certificate not reloaded; the previous one stays in service");
                        // Remember the new stamp so a broken file is reported once, not every poll.
                        Loaded {
                            paths: l.paths.clone(),
                            key: l.key.clone(),
                            stamp: stamp(&l.paths),
                        }
                    }
                }
            })
            .collect();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        replaced
    }

    /// The certificate for a server name: exact, then wildcard, then the first one.
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.snapshot();
        let first = certs.first().map(|l| l.key.clone());
        let Some(name) = sni.and_then(|n| ServerName::try_from(n.to_owned()).ok()) else {
            return first;
        };
        // A name whose first label no real host uses: a certificate valid for it as well as
        // for `name` covers `name` through a wildcard, not exactly.
        let sibling = sni
            .and_then(|n| n.split_once('.'))
            .and_then(|(_, rest)| ServerName::try_from(format!("limmat-no-such-host.{rest}")).ok());
        let valid = |l: &Loaded, n: &ServerName<'_>| {
            l.key.end_entity_cert().is_ok_and(|der| {
                webpki::EndEntityCert::try_from(der)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(n).is_ok())
            })
        };
        let exact = certs
            .iter()
            .find(|l| valid(l, &name) && !sibling.as_ref().is_some_and(|s| valid(l, s)));
        let wildcard = || certs.iter().find(|l| valid(l, &name));
        exact.or_else(wildcard).map(|l| l.key.clone()).or(first)
    }

    /// A rustls configuration that resolves certificates from this store.
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.choose(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str, sans: &[&str]) -> CertPaths {
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        let paths = CertPaths {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&paths.cert, cert.cert.pem()).unwrap();
        std::fs::write(&paths.key, cert.key_pair.serialize_pem()).unwrap();
        paths
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("limmat-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn cert_of(key: &CertifiedKey) -> Vec<u8> {
        key.end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let dir = temp_dir("choose");
        // The wildcard comes first: an exact match must still win for its own name.
        let wildcard = write_pair(&dir, "wild", &["*.relay.example.com"]);
        let exact = write_pair(&dir, "exact", &["dom.relay.example.com"]);
        let main = write_pair(&dir, "main", &["relay.example.com"]);
        let store = CertStore::load(&[wildcard.clone(), exact.clone(), main.clone()]).unwrap();
        let pem = |p: &CertPaths| CertificateDer::from_pem_file(&p.cert).unwrap().to_vec();
        let pick = |sni| cert_of(&store.choose(sni).unwrap());
        assert_eq!(pick(Some("dom.relay.example.com")), pem(&exact));
        assert_eq!(pick(Some("other.relay.example.com")), pem(&wildcard));
        assert_eq!(pick(Some("relay.example.com")), pem(&main));
        assert_eq!(
            pick(Some("unrelated.org")),
            pem(&wildcard),
            "default is the first"
        );
        assert_eq!(pick(None), pem(&wildcard));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reload_replaces_changed_files_and_keeps_the_old_one_on_error() {
        let dir = temp_dir("reload");
        let paths = write_pair(&dir, "a", &["relay.example.com"]);
        let store = CertStore::load(std::slice::from_ref(&paths)).unwrap();
        let before = cert_of(&store.choose(None).unwrap());
        assert_eq!(store.reload(false), 0, "nothing changed");
        // A new certificate in the same files.
        let newer = write_pair(&dir, "a", &["relay.example.com"]);
        assert_eq!(newer, paths);
        assert_eq!(store.reload(true), 1);
        let after = cert_of(&store.choose(None).unwrap());
        assert_ne!(before, after);
        // A broken file: the previous certificate stays.
        std::fs::write(&paths.cert, "not a certificate").unwrap();
        assert_eq!(store.reload(true), 0);
        assert_eq!(cert_of(&store.choose(None).unwrap()), after);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = temp_dir("errors");
        let good = write_pair(&dir, "good", &["relay.example.com"]);
        let other = write_pair(&dir, "other", &["relay.example.com"]);
        let missing = CertPaths {
            cert: dir.join("missing.pem"),
            key: good.key.clone(),
        };
        let err = CertStore::load(&[missing]).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let mismatched = CertPaths {
            cert: good.cert.clone(),
            key: other.key.clone(),
        };
        let err = CertStore::load(&[mismatched]).unwrap_err().to_string();
        assert!(err.contains("do not form"), "{err}");
        assert!(matches!(
            CertStore::load(&[]),
            Err(CertError::NoCertificate)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
