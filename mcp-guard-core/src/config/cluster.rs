//! `[cluster]`: several gateway replicas behind a load balancer, sharing state on
//! PostgreSQL (see `docs/cluster.md`).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::ConfigError;
use crate::upstream::Template;

/// `[cluster]`: this process is one replica of a cluster. API tokens and their
/// revocations live in PostgreSQL, so a token issued or revoked on any replica (or by
/// `mcp-guard tokens` from any shell) holds on every replica; a replica that cannot
/// confirm fresh state within `max_staleness` refuses requests (fail closed).
///
/// ```toml
/// [cluster]
/// replica_id = "gw-1"
/// database_url = "${MCP_GUARD_DATABASE_URL}"
/// max_staleness = "1s"
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterSection {
    /// This replica's name, unique in the cluster: 1 to 64 of `[A-Za-z0-9_.-]`. It
    /// names the replica in `/readyz`, the change feed and (later) its audit chain.
    pub replica_id: String,
    /// The PostgreSQL connection string (`postgresql://user:pass@host:port/db` or
    /// `host=… user=…`), as one `${NAME}` placeholder: it holds a password, so it comes
    /// from the environment, never the file.
    pub database_url: String,
    /// Redis for shared rate limits, as a `${NAME}` placeholder (reserved: not used
    /// yet; see `docs/cluster.md`).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Address of the replica-to-replica link (reserved: not used yet).
    #[serde(default)]
    pub internal_listen: Option<String>,
    /// Key authenticating the replica-to-replica link, as a `${NAME}` placeholder
    /// (reserved: not used yet).
    #[serde(default)]
    pub internal_key: Option<String>,
    /// How old the last confirmed read of the shared state may be before this replica
    /// refuses requests (503): the bound on how late a revocation can bite. Default
    /// `1s`; from `250ms` to `60s`.
    #[serde(default = "default_staleness")]
    pub max_staleness: String,
}

fn default_staleness() -> String {
    "1s".to_owned()
}

/// Parses `250ms`, `1s`, `2m`: the units `[cluster]` durations use.
fn parse_short_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Some(n) = s.strip_suffix("ms") {
        return n
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{s:?}: expected a number of ms, s or m, e.g. 1s"));
    }
    crate::access::parse_duration(s)
}

fn is_placeholder(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && Template::parse(s).is_ok_and(|t| t.has_placeholders())
}

impl ClusterSection {
    /// `max_staleness` as a duration (valid once [`super::GatewayConfig::validate`] passed;
    /// 1 s otherwise).
    pub fn staleness(&self) -> Duration {
        parse_short_duration(&self.max_staleness).unwrap_or(Duration::from_secs(1))
    }

    /// The database URL read from the environment.
    ///
    /// # Errors
    /// The placeholder does not parse or names a variable that is not set (the message
    /// names it, never a value).
    pub fn database_url_from_env(&self) -> Result<SecretString, String> {
        let tpl = Template::parse(&self.database_url).map_err(|e| format!("cluster.database_url: {e}"))?;
        let value = tpl
            .names()
            .map(|n| {
                std::env::var(n)
                    .map_err(|_| format!("cluster.database_url: environment variable {n} is not set"))
            })
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        if value.trim().is_empty() {
            return Err("cluster.database_url: the environment variable is empty".into());
        }
        Ok(SecretString::from(value))
    }

    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut err = |field: &str, message: String| {
            errors.push(ConfigError {
                entry: format!("cluster.{field}"),
                message,
            });
        };
        if !(1..=64).contains(&self.replica_id.len()) || !super::is_name_safe(&self.replica_id) {
            err(
                "replica_id",
                format!(
                    "{:?}: use 1 to 64 of A-Z a-z 0-9 _ . - (it names this replica in the shared state)",
                    self.replica_id
                ),
            );
        }
        for (field, value) in [
            ("database_url", Some(&self.database_url)),
            ("redis_url", self.redis_url.as_ref()),
            ("internal_key", self.internal_key.as_ref()),
        ] {
            if let Some(v) = value
                && !is_placeholder(v)
            {
                err(
                    field,
                    "must be a ${NAME} placeholder (it holds a secret: the value comes from the environment, never the file)".into(),
                );
            }
        }
        if let Some(a) = &self.internal_listen
            && a.parse::<std::net::SocketAddr>().is_err()
        {
            err(
                "internal_listen",
                format!("{a:?}: expected ip:port, e.g. 127.0.0.1:7801"),
            );
        }
        match parse_short_duration(&self.max_staleness) {
            Ok(d) if (Duration::from_millis(250)..=Duration::from_mins(1)).contains(&d) => {}
            Ok(_) => err(
                "max_staleness",
                format!("{:?}: must be from 250ms to 60s", self.max_staleness),
            ),
            Err(e) => err("max_staleness", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;

    fn errors(section: &serde_json::Value) -> Vec<String> {
        let c: GatewayConfig =
            serde_json::from_value(serde_json::json!({ "cluster": section.clone() })).unwrap();
        match c.validate() {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_cluster_section_passes_and_resolves_its_staleness() {
        let c: GatewayConfig = serde_json::from_value(serde_json::json!({"cluster": {
            "replica_id": "gw-1", "database_url": "${DB}", "max_staleness": "500ms"}}))
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.cluster.unwrap().staleness(), Duration::from_millis(500));
    }

    #[test]
    fn inline_secrets_bad_ids_and_bounds_are_refused_precisely() {
        let e = errors(&serde_json::json!({
            "replica_id": "gw 1", "database_url": "postgresql://u:pw@h/db", "redis_url": "redis://h",
            "internal_listen": "nowhere", "max_staleness": "10ms"}));
        assert_eq!(
            e,
            [
                "cluster.replica_id: \"gw 1\": use 1 to 64 of A-Z a-z 0-9 _ . - (it names this replica in the shared state)",
                "cluster.database_url: must be a ${NAME} placeholder (it holds a secret: the value comes from the environment, never the file)",
                "cluster.redis_url: must be a ${NAME} placeholder (it holds a secret: the value comes from the environment, never the file)",
                "cluster.internal_listen: \"nowhere\": expected ip:port, e.g. 127.0.0.1:7801",
                "cluster.max_staleness: \"10ms\": must be from 250ms to 60s",
            ]
        );
        assert_eq!(
            errors(&serde_json::json!({"replica_id": "a", "database_url": "${DB}", "max_staleness": "1y"})),
            ["cluster.max_staleness: \"1y\": unknown unit \"y\" (use s, m, h, d or w)"]
        );
    }

    #[test]
    fn the_database_url_comes_from_the_environment_and_a_missing_one_is_named() {
        let c = ClusterSection {
            replica_id: "a".into(),
            database_url: "${MCP_GUARD_CLUSTER_TEST_UNSET_VARIABLE}".into(),
            redis_url: None,
            internal_listen: None,
            internal_key: None,
            max_staleness: default_staleness(),
        };
        assert_eq!(
            c.database_url_from_env().unwrap_err(),
            "cluster.database_url: environment variable MCP_GUARD_CLUSTER_TEST_UNSET_VARIABLE is not set"
        );
    }
}
