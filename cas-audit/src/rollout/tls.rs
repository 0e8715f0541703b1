//! `check --tls`: a TLS handshake with the destination's server name,
//! verified with rustls against the system's roots (rustls-native-certs,
//! plus `--ca-file`s). A middlebox that completes the handshake with a
//! certificate of its own (TLS inspection, a captive proxy) passes a TCP
//! check; here it is `intercepted`, with the issuer it signed with.
//!
//! The verifier lets every handshake complete and keeps what webpki said
//! of the chain, so that an intercepting device is told from one that
//! breaks the handshake (`tls-failed`). A destination given by address only
//! (a listed range) has no name: its chain is verified, its name is not.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;

use crate::error::Error;

/// What the handshake showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsOutcome {
    /// Completed with a certificate valid for the name, from a trusted root.
    Verified,
    /// Completed with a certificate that is not: `why`, and its issuer.
    Intercepted {
        /// What webpki said (unknown issuer, not valid for the name, expired...).
        why: String,
        /// The certificate's issuer (RFC 4514 text).
        issuer: String,
    },
    /// Did not complete: an alert, a reset, a timeout.
    Failed(String),
}

/// The trust anchors and the client configuration of a check.
pub struct Tls {
    config: Arc<ClientConfig>,
    verdicts: Arc<Verdicts>,
}

/// An end-entity certificate (DER) and what webpki said of it.
type Verdict = (Vec<u8>, Result<(), rustls::Error>);

/// What the verifier saw, per end-entity certificate.
#[derive(Debug, Default)]
struct Verdicts(Mutex<Vec<Verdict>>);

#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Verdicts>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut r = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map(|_| ());
        // An address stands for a listed range: only the chain counts.
        if matches!(server_name, ServerName::IpAddress(_))
            && matches!(
                r,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ))
            )
        {
            r = Ok(());
        }
        self.seen
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((end_entity.to_vec(), r));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl Tls {
    /// The system's roots and those in `ca_files` (PEM).
    ///
    /// # Errors
    /// [`Error::Usage`] for a CA file that cannot be read, or no root at all.
    pub fn new(ca_files: &[PathBuf]) -> Result<Tls, Error> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        for f in ca_files {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| Error::Usage(format!("--ca-file {}: {e}", f.display())))?;
            if certs.is_empty() {
                return Err(Error::Usage(format!(
                    "--ca-file {}: no PEM certificate in it",
                    f.display()
                )));
            }
            roots.add_parsable_certificates(certs);
        }
        if roots.is_empty() {
            return Err(Error::Usage(
                "--tls: no trusted root certificate (the system store is empty; give --ca-file)"
                    .into(),
            ));
        }
        log::info!(
            "TLS: {} roots ({added} from the system store, {} files)",
            roots.len(),
            ca_files.len()
        );
        let provider = Arc::new(ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::Usage(format!("--tls: {e}")))?;
        let verdicts = Arc::new(Verdicts::default());
        let verifier = Arc::new(Recording {
            inner,
            seen: verdicts.clone(),
        });
        let config = ClientConfig::builder_with_provider(provider as Arc<CryptoProvider>)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Usage(format!("--tls: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls {
            config: Arc::new(config),
            verdicts,
        })
    }

    /// Completes a handshake on `stream` as `name` (or the address) within
    /// `timeout`, then closes it.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        name: Option<&str>,
        addr: std::net::IpAddr,
        timeout: Duration,
    ) -> TlsOutcome {
        let server: ServerName<'static> = match name {
            Some(n) => match ServerName::try_from(n.to_string()) {
                Ok(s) => s,
                Err(e) => return TlsOutcome::Failed(format!("server name {n}: {e}")),
            },
            None => ServerName::IpAddress(addr.into()),
        };
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = match tokio::time::timeout(timeout, connector.connect(server, stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return TlsOutcome::Failed(format!("handshake failed: {e}")),
            Err(_) => {
                return TlsOutcome::Failed(format!(
                    "no handshake within {} s",
                    timeout.as_secs_f64()
                ))
            }
        };
        let (_, conn) = tls.get_ref();
        let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
            return TlsOutcome::Failed("no certificate".into());
        };
        let verdict = self
            .verdicts
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|(der, _)| der.as_slice() == leaf.as_ref())
            .map(|(_, r)| r.clone());
        match verdict {
            Some(Ok(())) => TlsOutcome::Verified,
            Some(Err(e)) => TlsOutcome::Intercepted {
                why: e.to_string(),
                issuer: issuer(leaf),
            },
            None => TlsOutcome::Failed("the certificate was not verified".into()),
        }
    }
}

/// The issuer of a DER certificate (RFC 4514 text), or why it is unknown.
pub fn issuer(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => c.issuer().to_string(),
        Err(e) => format!("unreadable certificate ({e})"),
    }
}
