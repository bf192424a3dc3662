//! TLS for `wss://` and `https://`: waygate-http's rustls configuration (ring, platform roots),
//! or the same with certificate verification turned off for `--insecure`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::CheckError;

/// The client TLS configuration; `insecure` accepts any certificate (self-signed, wrong name,
/// expired) but still checks that the server holds the certificate's key.
pub fn tls_config(insecure: bool) -> Result<Arc<rustls::ClientConfig>, CheckError> {
    let base = waygate_http::client_config().map_err(|e| CheckError::Tls(e.to_string()))?;
    if !insecure {
        return Ok(base);
    }
    let mut config = (*base).clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    config.dangerous().set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
