//! The HTTPS listener for the Kubernetes aggregation layer.
//!
//! The API server reaches an APIService (here `v1beta1.external.metrics.k8s.io`)
//! only over HTTPS, so when [`Config::tls_listen`](crate::Config::tls_listen)
//! is set the service also serves its router over TLS: with the certificate
//! and key mounted at `tls_cert_file`/`tls_key_file` (PEM; e.g. from
//! cert-manager, then the APIService carries the CA in `caBundle`), or with a
//! self-signed certificate generated at start (then the APIService sets
//! `insecureSkipTLSVerify`, as metrics-server's default install does).
//! HTTP/1.1 only; the aggregator falls back to it without ALPN `h2`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A server config from PEM files, or a self-signed certificate for
/// `names` when no files are given.
pub fn server_config(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = match (cert_file, key_file) {
        (Some(cert), Some(key)) => (read_chain(cert)?, read_key(key)?),
        (None, None) => self_signed(names)?,
        _ => {
            return Err(TlsError::Config(
                "set both the certificate and the key file, or neither (self-signed)".into(),
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if chain.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn self_signed(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    Ok((vec![certified.cert.der().clone()], key.into()))
}

/// Serves `router` over TLS on `listener` until `shutdown` completes.
/// Handshake or connection errors end only that connection.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS listener accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
            }
        });
    }
}
