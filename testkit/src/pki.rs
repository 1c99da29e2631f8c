//! Throw-away certificates for TLS tests.

use std::sync::Arc;

#[cfg(feature = "pki")]
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// A certificate authority made at test time, with one server certificate
/// (for `localhost` and `127.0.0.1`) and one client certificate (common name
/// [`Pki::CLIENT_NAME`]), all signed by it. Keys are ECDSA P-256.
///
/// [`Mosquitto`](crate::Mosquitto) makes one when TLS is enabled; make another
/// with [`Pki::generate`] to get a CA that the server does not trust.
///
/// ```
/// let pki = shopfloor_testkit::Pki::generate()?;
/// assert!(pki.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// let _config = pki.client_config()?; // trusts this CA, no client certificate
/// # Ok::<(), shopfloor_testkit::Error>(())
/// ```
#[derive(Clone)]
pub struct Pki {
    ca_cert: CertificateDer<'static>,
    ca_cert_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert: CertificateDer<'static>,
    client_cert_pem: String,
    client_key: Vec<u8>,
    client_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// The common name of the client certificate (what Mosquitto's
    /// `use_identity_as_username` would take as the user name).
    pub const CLIENT_NAME: &'static str = "testkit-client";

    /// Without the feature `pki` (rcgen), there is nothing to generate
    /// certificates with: an [`Error::Usage`].
    #[cfg(not(feature = "pki"))]
    pub fn generate() -> Result<Self, Error> {
        Err(Error::Usage("test certificates need shopfloor-testkit's feature `pki`"))
    }

    /// Generates a new CA, server certificate and client certificate.
    #[cfg(feature = "pki")]
    pub fn generate() -> Result<Self, Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "shopfloor testkit CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server_params.distinguished_name.push(DnType::CommonName, "localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;

        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params.distinguished_name.push(DnType::CommonName, Self::CLIENT_NAME);
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &ca)?;

        Ok(Self {
            ca_cert: ca.der().clone(),
            ca_cert_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert: client_cert.der().clone(),
            client_cert_pem: client_cert.pem(),
            client_key: client_key.serialize_der(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// The server certificate (SANs `localhost` and `127.0.0.1`), PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The server's private key, PKCS#8 PEM.
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// The client certificate, PEM.
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }

    /// The client's private key, PKCS#8 PEM.
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }

    /// A rustls client configuration (ring provider, TLS 1.2 and 1.3) that
    /// trusts only this CA and presents no client certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        Ok(Arc::new(self.client_config_builder()?.with_no_client_auth()))
    }

    /// Like [`Pki::client_config`], and presents the client certificate.
    pub fn client_config_with_cert(&self) -> Result<Arc<ClientConfig>, Error> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.client_key.clone()));
        let config = self
            .client_config_builder()?
            .with_client_auth_cert(vec![self.client_cert.clone()], key)?;
        Ok(Arc::new(config))
    }

    fn client_config_builder(
        &self,
    ) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots))
    }
}

#[cfg(feature = "pki")]
impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Self::Certificate(Box::new(e))
    }
}
