//! Reading a component's settings from prefixed environment variables
//! (`VOICE_AGENT_METRICS_LISTEN`, `VOICE_AGENT_TTS_CACHE_BYTES`, ...), with
//! one error shape that names the variable and its value. The lookup is a
//! function so configs are testable without touching the process
//! environment.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

/// A secret string (an API key, an auth token): its `Debug` form never shows
/// the value, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<unset>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{var}={value:?}: {reason}")]
pub struct EnvError {
    /// The environment variable.
    pub var: String,
    /// Its value (empty for a missing required variable; never a secret).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The variables of one component: `prefix` + key, read through `lookup`.
pub struct EnvVars<F> {
    prefix: &'static str,
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> EnvVars<F> {
    /// Variables named `{prefix}{key}`, read with `lookup`.
    pub fn new(prefix: &'static str, lookup: F) -> Self {
        Self { prefix, lookup }
    }

    /// The full name of `key`.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// `(variable, value)` of `key`, when set.
    pub fn get(&self, key: &str) -> Option<(String, String)> {
        let var = self.name(key);
        (self.lookup)(&var).map(|value| (var, value))
    }

    /// `key` as a listen address, or `default`.
    pub fn listen(&self, key: &str, default: SocketAddr) -> Result<SocketAddr, EnvError> {
        let Some((var, value)) = self.get(key) else {
            return Ok(default);
        };
        value.trim().parse().map_err(|_| EnvError {
            var,
            value,
            reason: "must be an address like 0.0.0.0:8080",
        })
    }

    /// `key` as a whole number of at least `min` (0 or 1), or `default`.
    pub fn number(&self, key: &str, default: u64, min: u64) -> Result<u64, EnvError> {
        let Some((var, value)) = self.get(key) else {
            return Ok(default);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(EnvError {
                var,
                value,
                reason: if min == 0 {
                    "must be a whole number >= 0"
                } else {
                    "must be a whole number > 0"
                },
            }),
        }
    }

    /// `key` as a whole number > 0, or `default`.
    pub fn positive(&self, key: &str, default: u64) -> Result<u64, EnvError> {
        self.number(key, default, 1)
    }

    /// `key` as a count (> 0 when `min` is 1), or `default`.
    pub fn count(&self, key: &str, default: usize, min: u64) -> Result<usize, EnvError> {
        let n = self.number(key, u64::try_from(default).unwrap_or(u64::MAX), min)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// `key` as milliseconds (at least `min` of them), or `default`.
    pub fn millis(&self, key: &str, default: Duration, min: u64) -> Result<Duration, EnvError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.number(key, default_ms, min).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> EnvVars<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("T_{k}"), (*v).to_owned()))
            .collect();
        EnvVars::new("T_", move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_values_and_errors_name_the_variable() {
        let v = vars(&[("A", " 7 "), ("Z", "0"), ("BAD", "x"), ("L", "127.0.0.1:1")]);
        assert_eq!(v.positive("A", 1), Ok(7));
        assert_eq!(v.positive("MISSING", 3), Ok(3));
        assert_eq!(v.number("Z", 5, 0), Ok(0));
        let err = v.positive("Z", 5).expect_err("zero");
        assert_eq!(
            (err.var.as_str(), err.reason),
            ("T_Z", "must be a whole number > 0")
        );
        assert_eq!(err.to_string(), "T_Z=\"0\": must be a whole number > 0");
        assert!(v.number("BAD", 1, 0).is_err());
        assert_eq!(
            v.millis("A", Duration::ZERO, 1),
            Ok(Duration::from_millis(7))
        );
        assert_eq!(v.count("MISSING", 9, 1), Ok(9));
        assert_eq!(
            v.listen("L", "0.0.0.0:2".parse().expect("addr")),
            Ok("127.0.0.1:1".parse().expect("addr"))
        );
        assert!(v.listen("BAD", "0.0.0.0:2".parse().expect("addr")).is_err());
    }
}
