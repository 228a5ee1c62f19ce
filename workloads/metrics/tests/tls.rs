//! The HTTPS listener the aggregation layer calls: a self-signed certificate
//! and one from PEM files, asked as the API server would.

use std::sync::Arc;

use voice_agent_metrics::{Config, State, router, tls};

async fn serve_tls(config: Arc<rustls::ServerConfig>) -> String {
    let state = Arc::new(
        State::new(Config {
            external_metrics: true,
            ..Config::default()
        })
        .expect("state"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(tls::serve(
        listener,
        router(state),
        config,
        std::future::pending(),
    ));
    format!("https://localhost:{}", addr.port())
}

fn client(root: Option<&[u8]>) -> reqwest::Client {
    let mut builder = voice_agent_http::client_builder();
    builder = match root {
        Some(pem) => builder.tls_certs_only([reqwest::Certificate::from_pem(pem).expect("pem")]),
        None => builder.danger_accept_invalid_certs(true),
    };
    builder.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_https_serves_the_external_metrics_api() {
    let config = tls::server_config(None, None, &["localhost".into()]).expect("config");
    let base = serve_tls(config).await;
    let resp = client(None)
        .get(format!("{base}/apis/external.metrics.k8s.io/v1beta1"))
        .send()
        .await
        .expect("https request");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["kind"], "APIResourceList");
    // Plain HTTP on the TLS port is refused.
    let plain = base.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_certificate_is_served_and_verifies() {
    let dir = std::env::temp_dir().join(format!("vam-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.join("tls.crt"), &cert_pem).expect("write cert");
    std::fs::write(dir.join("tls.key"), certified.signing_key.serialize_pem()).expect("write key");
    let config = tls::server_config(Some(&dir.join("tls.crt")), Some(&dir.join("tls.key")), &[])
        .expect("config from files");
    let base = serve_tls(config).await;
    // Verified against the mounted certificate as the CA (caBundle).
    let resp = client(Some(cert_pem.as_bytes()))
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("verified https request");
    assert_eq!(resp.status(), 200);
    // Half a pair or a broken file is refused with the file's name.
    assert!(tls::server_config(Some(&dir.join("tls.crt")), None, &[]).is_err());
    std::fs::write(dir.join("bad.key"), "not a key").expect("write");
    let err = tls::server_config(Some(&dir.join("tls.crt")), Some(&dir.join("bad.key")), &[])
        .expect_err("bad key");
    assert!(err.to_string().contains("bad.key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
