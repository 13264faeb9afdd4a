//! The values an Instance's environment takes from `ConfigMap`s and Secrets
//! (`env[].valueFrom`), read from the cluster's API each time the workload starts,
//! as kubelet reads them.
//!
//! [`resolve`] reads each `ConfigMap` and Secret the workload names once and hands the
//! rest to the pure [`fill`]. A value is never logged nor put in an error: errors name
//! the object and the key only, since their messages become the Instance's status
//! and Events.

use std::collections::HashMap;

use base64::Engine as _;
use client::Client;
use crds::{ConfigMap, ConfigSource, Secret, Workload};

/// The status reason of an Instance whose environment cannot be made (Kubernetes'
/// `CreateContainerConfigError`).
pub const CONFIG_ERROR: &str = "CreateContainerConfigError";

/// Why a workload's environment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `ConfigMap` or Secret does not exist (in the cluster: the root has none, or
    /// its copy has not arrived yet).
    #[error("{} {name:?} not found (env {var})", .kind.kind())]
    Missing {
        /// `ConfigMap` or Secret.
        kind: ConfigSource,
        /// Its name.
        name: String,
        /// The variable that takes from it.
        var: String,
    },
    /// It exists without the key.
    #[error("couldn't find key {key:?} in {} {namespace}/{name} (env {var})", .kind.kind())]
    MissingKey {
        /// `ConfigMap` or Secret.
        kind: ConfigSource,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The key.
        key: String,
        /// The variable that takes it.
        var: String,
    },
    /// The value is not text an environment can carry (not UTF-8, or NUL).
    #[error("key {key:?} of {} {namespace}/{name} is not text an environment variable can hold (env {var})", .kind.kind())]
    NotText {
        /// `ConfigMap` or Secret.
        kind: ConfigSource,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The key.
        key: String,
        /// The variable that takes it.
        var: String,
    },
    /// The cluster's API did not answer.
    #[error("reading {} {name:?}: {source}", .kind.kind())]
    Read {
        /// `ConfigMap` or Secret.
        kind: ConfigSource,
        /// Its name.
        name: String,
        /// The API's answer.
        #[source]
        source: client::ClientError,
    },
}

/// The keys of one `ConfigMap` or Secret, as raw bytes (a Secret's decoded); `None`
/// when it does not exist.
pub type Found = HashMap<(ConfigSource, String), Option<HashMap<String, Vec<u8>>>>;

/// `workload` with every `valueFrom` replaced by its value, read from the API of
/// `client` in `namespace`.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    workload: &Workload,
) -> Result<Workload, ConfigError> {
    let sources = workload.config_sources();
    if sources.is_empty() {
        return Ok(workload.clone());
    }
    let mut found = Found::new();
    for (kind, name) in sources {
        let read = |source| ConfigError::Read {
            kind,
            name: name.to_string(),
            source,
        };
        let keys = match kind {
            ConfigSource::ConfigMap => client
                .api::<ConfigMap>(Some(namespace))
                .get_opt(name)
                .await
                .map_err(read)?
                .map(|c| {
                    c.data
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect()
                }),
            ConfigSource::Secret => client
                .api::<Secret>(Some(namespace))
                .get_opt(name)
                .await
                .map_err(read)?
                .map(|s| {
                    s.data
                        .into_iter()
                        .filter_map(|(k, v)| {
                            let bytes = base64::engine::general_purpose::STANDARD.decode(v);
                            Some((k, bytes.ok()?))
                        })
                        .collect()
                }),
        };
        found.insert((kind, name.to_string()), keys);
    }
    fill(workload, namespace, &found)
}

/// `workload` with every `valueFrom` replaced by its value from `found`; an optional
/// reference to a missing object or key leaves its variable out.
pub fn fill(workload: &Workload, namespace: &str, found: &Found) -> Result<Workload, ConfigError> {
    let mut out = workload.clone();
    out.env.clear();
    for var in &workload.env {
        let Some((kind, selector)) = var.source() else {
            out.env.push(var.clone());
            continue;
        };
        let optional = selector.optional.unwrap_or(false);
        let keys = found
            .get(&(kind, selector.name.clone()))
            .and_then(Option::as_ref);
        let Some(keys) = keys else {
            if optional {
                continue;
            }
            return Err(ConfigError::Missing {
                kind,
                name: selector.name.clone(),
                var: var.name.clone(),
            });
        };
        let Some(bytes) = keys.get(&selector.key) else {
            if optional {
                continue;
            }
            return Err(ConfigError::MissingKey {
                kind,
                namespace: namespace.to_string(),
                name: selector.name.clone(),
                key: selector.key.clone(),
                var: var.name.clone(),
            });
        };
        let text = String::from_utf8(bytes.clone())
            .ok()
            .filter(|t| !t.contains('\0'))
            .ok_or_else(|| ConfigError::NotText {
                kind,
                namespace: namespace.to_string(),
                name: selector.name.clone(),
                key: selector.key.clone(),
                var: var.name.clone(),
            })?;
        out.env.push(crds::EnvVar {
            name: var.name.clone(),
            value: text,
            value_from: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{EnvVar, EnvVarSource, KeySelector};

    fn from(kind: ConfigSource, name: &str, key: &str, optional: bool) -> EnvVar {
        let selector = KeySelector {
            name: name.into(),
            key: key.into(),
            optional: optional.then_some(true),
        };
        let source = match kind {
            ConfigSource::ConfigMap => EnvVarSource {
                config_map_key_ref: Some(selector),
                ..Default::default()
            },
            ConfigSource::Secret => EnvVarSource {
                secret_key_ref: Some(selector),
                ..Default::default()
            },
        };
        EnvVar {
            name: format!("{name}_{key}").to_uppercase(),
            value: String::new(),
            value_from: Some(source),
        }
    }

    fn plain(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
            value_from: None,
        }
    }

    fn found() -> Found {
        let keys = |pairs: &[(&str, &[u8])]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect(),
            )
        };
        Found::from([
            (
                (ConfigSource::ConfigMap, "conf".into()),
                keys(&[("mode", b"fast")]),
            ),
            (
                (ConfigSource::Secret, "db".into()),
                keys(&[("password", b"s3cret"), ("raw", b"\xff\xfe")]),
            ),
            ((ConfigSource::Secret, "gone".into()), None),
        ])
    }

    fn env(w: &Workload) -> Vec<(String, String)> {
        w.env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }

    #[test]
    fn values_come_from_configmaps_and_secrets_in_order() {
        use ConfigSource::*;
        let w = Workload {
            env: vec![
                plain("A", "1"),
                from(ConfigMap, "conf", "mode", false),
                from(Secret, "db", "password", false),
                from(Secret, "gone", "x", true),
                from(Secret, "db", "absent", true),
            ],
            ..Default::default()
        };
        let filled = fill(&w, "default", &found()).unwrap();
        assert_eq!(
            env(&filled),
            [("A", "1"), ("CONF_MODE", "fast"), ("DB_PASSWORD", "s3cret")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(filled.env.iter().all(|e| e.value_from.is_none()));
    }

    #[test]
    fn a_missing_object_or_key_names_them_and_never_a_value() {
        use ConfigSource::*;
        for (var, want) in [
            (
                from(Secret, "gone", "x", false),
                r#"Secret "gone" not found (env GONE_X)"#,
            ),
            (
                from(ConfigMap, "other", "x", false),
                r#"ConfigMap "other" not found (env OTHER_X)"#,
            ),
            (
                from(Secret, "db", "user", false),
                r#"couldn't find key "user" in Secret default/db (env DB_USER)"#,
            ),
            (
                from(Secret, "db", "raw", false),
                r#"key "raw" of Secret default/db is not text an environment variable can hold (env DB_RAW)"#,
            ),
        ] {
            let w = Workload {
                env: vec![from(Secret, "db", "password", false), var],
                ..Default::default()
            };
            let error = fill(&w, "default", &found()).unwrap_err().to_string();
            assert_eq!(error, want);
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
