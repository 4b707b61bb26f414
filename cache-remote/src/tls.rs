//! TLS client settings for the engines (`rediss://`, `memcacheds://`): rustls with the ring
//! provider, the system's and webpki's roots or a given CA, never OpenSSL.

use std::sync::Arc;

use crate::backend::TlsSettings;
use cache_core::{CacheError, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The client configuration for a server named `host` (a name or an IP address, IPv6 in
/// brackets or not): trusting the CA certificates in `root_pem` (PEM), or else the system's and
/// webpki's roots; or, with `insecure`, any certificate at all (for tests only).
///
/// # Errors
///
/// [`CacheError::InvalidConfig`] when `root_pem` holds no certificate or `host` is no valid
/// server name.
pub fn settings(host: &str, root_pem: Option<&[u8]>, insecure: bool) -> Result<TlsSettings> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| CacheError::invalid_config(format!("TLS: {e}")))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(root_pem)?)
            .with_no_client_auth()
    };
    let name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name = ServerName::try_from(name)
        .map_err(|e| CacheError::invalid_config(format!("TLS server name {host:?}: {e}")))?;
    Ok(TlsSettings {
        config: Arc::new(config),
        server_name,
    })
}

fn roots(root_pem: Option<&[u8]>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    CacheError::invalid_config(format!("tls_root_certificate is not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    CacheError::invalid_config(format!("tls_root_certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(CacheError::invalid_config(
                    "tls_root_certificate holds no certificate",
                ));
            }
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            // The system's roots too; one that cannot be parsed is skipped, not fatal.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// Accepts every certificate: `danger_accept_invalid_certs`, for tests only.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
