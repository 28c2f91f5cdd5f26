//! TLS for receivers: the system's roots by default, a CA file, or (dangerous) none.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ForwardError;

/// How a receiver's certificate is checked.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Trust only the certificate authorities in this PEM file (default: the
    /// system's trust store).
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry (default: the host of the address).
    pub server_name: Option<String>,
    /// DANGEROUS: accept any certificate. The handshake's signatures are still
    /// checked, but anyone between the gateway and the receiver can read and change
    /// every record.
    pub dangerously_accept_invalid_certs: bool,
}

/// The client configuration `options` describe.
pub(crate) fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, ForwardError> {
    crate::upstream::ensure_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ForwardError::Setup(format!("TLS: {e}")))?;
    let config = if options.dangerously_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else if let Some(file) = &options.ca_file {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| ForwardError::Setup(format!("cannot read the CA file {}: {e}", file.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                ForwardError::Setup(format!("the CA file {} is not PEM: {e}", file.display()))
            })?;
            roots.add(cert).map_err(|e| {
                ForwardError::Setup(format!("a certificate in {} is unusable: {e}", file.display()))
            })?;
        }
        if roots.is_empty() {
            return Err(ForwardError::Setup(format!(
                "the CA file {} holds no certificate",
                file.display()
            )));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| ForwardError::Setup(format!("the system's trust store: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to check the certificate against.
pub(crate) fn server_name(options: &TlsOptions, host: &str) -> Result<ServerName<'static>, ForwardError> {
    let name = options.server_name.as_deref().unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned())
        .map_err(|_| ForwardError::Setup(format!("{name:?} is not a valid TLS server name")))
}

/// Accepts every certificate (`dangerously_accept_invalid_certs`); the handshake's
/// signatures are still verified against the presented key.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
