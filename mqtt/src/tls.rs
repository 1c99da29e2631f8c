//! TLS client settings from PEM files, the way deployments keep them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS settings could not be made from files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match the
    /// certificate, say).
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: reason.to_string() }
}

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) that
/// trusts the CA certificates in the PEM file `ca` and, with `client`
/// (certificate chain PEM, private key PEM), presents that certificate: the
/// broker's `require_certificate` with `use_identity_as_username` makes its
/// CN the MQTT user name.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::path::Path;
/// use shopfloor_mqtt::{Broker, tls_client_config};
/// let mut broker = Broker::new("mqtt.plant.local", 8883);
/// broker.tls = Some(tls_client_config(
///     Path::new("/etc/shopfloor/pki/ca.crt"),
///     Some((Path::new("/etc/shopfloor/pki/modbus-gw.crt"), Path::new("/etc/shopfloor/pki/modbus-gw.key"))),
/// )?);
/// # Ok(())
/// # }
/// ```
pub fn tls_client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e))? {
        roots.add(cert.map_err(|e| file_error(ca, e))?)?;
    }
    if roots.is_empty() {
        return Err(file_error(ca, "no CERTIFICATE in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error(cert, e))?;
            if chain.is_empty() {
                return Err(file_error(cert, "no CERTIFICATE in it"));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let e = tls_client_config(&missing, None).unwrap_err();
        assert!(e.to_string().contains("nope.crt"), "{e}");
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = tls_client_config(&junk, None).unwrap_err();
        assert!(
            e.to_string().contains("junk.crt") && e.to_string().contains("no CERTIFICATE"),
            "{e}"
        );
    }
}
