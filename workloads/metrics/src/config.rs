//! Configuration of the metrics service, from `VOICE_AGENT_METRICS_*`
//! environment variables with defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use voice_agent_http::env::EnvVars;

/// Prefix of every environment variable the service reads.
pub const ENV_PREFIX: &str = "VOICE_AGENT_METRICS_";

/// Limits and addresses of the metrics service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen (`VOICE_AGENT_METRICS_LISTEN`, default `0.0.0.0:9090`).
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes
    /// (`VOICE_AGENT_METRICS_MAX_BODY_BYTES`, default 1 MiB).
    pub max_body_bytes: usize,
    /// Most samples in one batch (`VOICE_AGENT_METRICS_MAX_SAMPLES_PER_BATCH`,
    /// default 10,000).
    pub max_samples_per_batch: usize,
    /// How far a sample's `at` may be ahead of the server clock
    /// (`VOICE_AGENT_METRICS_MAX_FUTURE_SKEW_MS`, default 5 s).
    pub max_future_skew: Duration,
    /// How long a gauge counts after its `at`
    /// (`VOICE_AGENT_METRICS_GAUGE_STALENESS_MS`, default 15 s).
    pub gauge_staleness: Duration,
    /// Most latency plus gauge series held at once
    /// (`VOICE_AGENT_METRICS_MAX_SERIES`, default 10,000).
    pub max_series: usize,
    /// Deadline of one request, body included
    /// (`VOICE_AGENT_METRICS_REQUEST_TIMEOUT_MS`, default 10 s).
    pub request_timeout: Duration,
    /// Serve `external.metrics.k8s.io/v1beta1` for HorizontalPodAutoscalers
    /// (`VOICE_AGENT_METRICS_EXTERNAL_METRICS`, `true` or `false`, default
    /// false; see [`crate::external`]).
    pub external_metrics: bool,
    /// Also serve HTTPS here, for the Kubernetes aggregation layer
    /// (`VOICE_AGENT_METRICS_TLS_LISTEN`, e.g. `0.0.0.0:6443`; off when
    /// unset; see [`crate::tls`]).
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS (`VOICE_AGENT_METRICS_TLS_CERT_FILE`);
    /// with the key file unset too, a self-signed certificate is generated.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS (`VOICE_AGENT_METRICS_TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            max_body_bytes: 1024 * 1024,
            max_samples_per_batch: 10_000,
            max_future_skew: Duration::from_secs(5),
            gauge_staleness: Duration::from_secs(15),
            max_series: 10_000,
            request_timeout: Duration::from_secs(10),
            external_metrics: false,
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// A configuration value that cannot be used.
pub use voice_agent_http::env::EnvError as ConfigError;

impl Config {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Defaults overridden by `lookup(variable name)`; testable without
    /// touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let env = EnvVars::new(ENV_PREFIX, lookup);
        c.listen = env.listen("LISTEN", c.listen)?;
        c.max_body_bytes = env.count("MAX_BODY_BYTES", c.max_body_bytes, 1)?;
        c.max_samples_per_batch = env.count("MAX_SAMPLES_PER_BATCH", c.max_samples_per_batch, 1)?;
        c.max_series = env.count("MAX_SERIES", c.max_series, 1)?;
        c.max_future_skew = env.millis("MAX_FUTURE_SKEW_MS", c.max_future_skew, 1)?;
        c.gauge_staleness = env.millis("GAUGE_STALENESS_MS", c.gauge_staleness, 1)?;
        c.request_timeout = env.millis("REQUEST_TIMEOUT_MS", c.request_timeout, 1)?;
        if env.get("TLS_LISTEN").is_some() {
            c.tls_listen = Some(env.listen("TLS_LISTEN", SocketAddr::from(([0, 0, 0, 0], 6443)))?);
        }
        c.tls_cert_file = env.get("TLS_CERT_FILE").map(|(_, v)| PathBuf::from(v));
        c.tls_key_file = env.get("TLS_KEY_FILE").map(|(_, v)| PathBuf::from(v));
        if let Some((var, value)) = env.get("EXTERNAL_METRICS") {
            c.external_metrics = match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                _ => {
                    return Err(ConfigError {
                        var,
                        value,
                        reason: "expected true or false",
                    });
                }
            };
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = Config::from_lookup(env(&[])).expect("defaults");
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.max_samples_per_batch, 10_000);
        assert_eq!(c.max_future_skew, Duration::from_secs(5));
        assert_eq!(c.gauge_staleness, Duration::from_secs(15));
        assert_eq!(c.max_series, 10_000);
        assert!(!c.external_metrics, "off unless asked for");
    }

    #[test]
    fn overrides() {
        let c = Config::from_lookup(env(&[
            ("LISTEN", "127.0.0.1:19090"),
            ("MAX_BODY_BYTES", "2048"),
            ("MAX_SAMPLES_PER_BATCH", "10"),
            ("MAX_FUTURE_SKEW_MS", "250"),
            ("GAUGE_STALENESS_MS", "30000"),
            ("MAX_SERIES", " 7 "),
            ("REQUEST_TIMEOUT_MS", "1500"),
            ("EXTERNAL_METRICS", "true"),
        ]))
        .expect("valid");
        assert!(c.external_metrics);
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 19090)));
        assert_eq!(c.max_body_bytes, 2048);
        assert_eq!(c.max_samples_per_batch, 10);
        assert_eq!(c.max_future_skew, Duration::from_millis(250));
        assert_eq!(c.gauge_staleness, Duration::from_secs(30));
        assert_eq!(c.max_series, 7);
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("LISTEN", "localhost"),
            ("MAX_SERIES", "0"),
            ("MAX_BODY_BYTES", "-1"),
            ("GAUGE_STALENESS_MS", "15s"),
            ("EXTERNAL_METRICS", "yes please"),
        ] {
            let err = Config::from_lookup(env(&[(key, value)])).expect_err(key);
            assert_eq!(err.var, format!("{ENV_PREFIX}{key}"));
            assert!(err.to_string().starts_with(&err.var), "{err}");
        }
    }
}
