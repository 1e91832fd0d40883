//! Verifying the relay's certificate as a person expects from `curl --cacert`, and saying what
//! to do when it fails.
//!
//! - [`PinningVerifier`]: webpki's verification against the system roots and `--ca-file`, plus
//!   one case webpki refuses: a server certificate byte-identical to one of the `--ca-file`
//!   is accepted once its name and validity are checked, even when it is marked as a CA
//!   (`openssl req -x509` makes `CA:TRUE` certificates by default; issue 12). The user named
//!   that very certificate as trusted, which is what curl honours too.
//! - [`explain`]: every certificate error rustls reports, as a sentence that says what to do.
//!
//! No cryptography here: signatures are webpki's, through rustls.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

/// webpki's verifier, plus the certificates of `--ca-file` accepted as themselves.
#[derive(Debug)]
pub(crate) struct PinningVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl PinningVerifier {
    /// `inner` verifies as usual; `pinned` are the `--ca-file` certificates.
    pub(crate) fn new(
        inner: Arc<WebPkiServerVerifier>,
        pinned: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self { inner, pinned }
    }
}

/// Whether `e` is webpki's refusal of a CA certificate used as a server certificate. webpki
/// checks the validity period before the basic constraints, so the certificate's dates were
/// found good when this is the error.
fn is_ca_used_as_end_entity(e: &Error) -> bool {
    match e {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            format!("{inner:?}").contains("CaUsedAsEndEntity")
        }
        _ => false,
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(e)
                if is_ca_used_as_end_entity(&e)
                    && self
                        .pinned
                        .iter()
                        .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                // The user's own certificate: its dates passed webpki already; check the name.
                let parsed = ParsedCertificate::try_from(end_entity)?;
                verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate error from the TLS handshake with `host`, as a sentence that says what to
/// do; any other error unchanged.
pub(crate) fn explain(e: io::Error, host: &str) -> io::Error {
    let Some(Error::InvalidCertificate(cert)) =
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
    else {
        return e;
    };
    let what = match cert {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "the certificate of {host} has expired: renew it on the server (or check this \
             device's clock)"
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
            "the certificate of {host} is not valid yet: check this device's clock (or the \
             server's certificate dates)"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the certificate of {host} does not name {host}: connect with a name the \
                 certificate lists, or issue one whose subjectAltName has {host}"
            )
        }
        CertificateError::UnknownIssuer => format!(
            "the certificate of {host} is from an issuer this device does not trust: give \
             its CA certificate (or the self-signed certificate itself) with --ca-file"
        ),
        CertificateError::Revoked => {
            format!("the certificate of {host} is revoked: the server needs a new one")
        }
        CertificateError::BadSignature => format!(
            "the certificate of {host} is not signed by the trusted certificate of the same \
             issuer name (a replaced CA or server certificate?): give the server's current CA \
             or certificate with --ca-file"
        ),
        CertificateError::BadEncoding => {
            format!("the certificate of {host} is damaged: the server needs a new one")
        }
        other if format!("{other:?}").contains("CaUsedAsEndEntity") => format!(
            "the certificate of {host} is a CA certificate (basicConstraints CA:TRUE) not given \
             with --ca-file: give it with --ca-file, or make the server's certificate with \
             -addext basicConstraints=critical,CA:FALSE"
        ),
        other => format!(
            "the certificate of {host} does not verify ({other:?}): give its CA with \
             --ca-file, or check the server's certificate"
        ),
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}
