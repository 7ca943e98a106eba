//! TLS (rustls): the acceptor built from the configured certificate and key.
//!
//! A TLS client's first byte is 0x16 (a handshake record). A binary-protocol frame starts with
//! its length prefix, whose first byte would make it larger than any accepted frame, so one
//! port tells the two apart from the first byte alone.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;

/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// Builds the acceptor from PEM files; errors name the setting.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ConfigError(format!("tls_cert: {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "tls_cert: {} holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConfigError(format!("tls_key: {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError(format!("tls_cert/tls_key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
