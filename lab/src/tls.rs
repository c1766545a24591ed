//! A private CA per simulated site, the way private clouds run their own:
//! clients must be given the CA (a site's `ca_pem`) to connect at all.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A site's TLS identity: the CA clients trust, the server's certificate
/// and key (PEM, for a server of another process), and the server's config.
pub struct SiteTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the lab's certificates failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("building the lab's TLS config failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A fresh CA and a server certificate for `127.0.0.1` and `localhost`.
pub fn site_tls() -> Result<SiteTls, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Rebound lab CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&leaf_key, &ca)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)?;
    Ok(SiteTls {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        server: Arc::new(server),
    })
}

/// Serve the router over TLS until shutdown (the data mover agent's
/// accept loop, which serves the appliances' agents too).
pub(crate) async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    rebound_datamover::agent::serve_router_tls(listener, app, config, async {
        let _ = shutdown.await;
    })
    .await;
}
