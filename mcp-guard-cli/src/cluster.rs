//! Cluster mode from the command line: `mcp-guard migrate`, the shared token store
//! `mcp-guard tokens` uses when `[cluster]` is set, and `check --connect`'s look at
//! the database.

use std::path::Path;

use anyhow::Context as _;
use mcp_guard_core::cluster::postgres::{self, PgCluster, SCHEMA_VERSION};
use mcp_guard_core::config::ClusterSection;

fn section(config: &Path) -> anyhow::Result<Option<ClusterSection>> {
    Ok(mcp_guard_tower::server::load_config(config)?.config.cluster)
}

/// The shared token store when the configuration has `[cluster]` (connected as
/// `<replica_id>-cli`; the schema is created or upgraded like a replica does).
pub(crate) async fn shared(config: &Path) -> anyhow::Result<Option<PgCluster>> {
    let Some(c) = section(config)? else {
        return Ok(None);
    };
    let url = c.database_url_from_env().map_err(anyhow::Error::msg)?;
    let store = PgCluster::connect(url, &format!("{}-cli", c.replica_id), c.staleness())
        .await
        .context("cluster: opening the shared state")?;
    Ok(Some(store))
}

/// `mcp-guard migrate`: creates or upgrades the cluster schema.
pub(crate) async fn migrate(config: &Path) -> anyhow::Result<()> {
    let c = section(config)?.context("migrate: the configuration has no [cluster] section (a single gateway's SQLite store upgrades itself)")?;
    let url = c.database_url_from_env().map_err(anyhow::Error::msg)?;
    let before = postgres::migrate(&url)
        .await
        .context("cluster: migrating the schema")?;
    if before == SCHEMA_VERSION {
        outln!("cluster schema: version {SCHEMA_VERSION}, already current");
    } else {
        outln!("cluster schema: version {before} -> {SCHEMA_VERSION}");
    }
    Ok(())
}

/// `check --connect`: the database answers and holds a schema this binary can use
/// (changing nothing).
pub(crate) async fn check(config: &Path) -> anyhow::Result<()> {
    let Some(c) = section(config)? else {
        return Ok(());
    };
    let url = c.database_url_from_env().map_err(anyhow::Error::msg)?;
    let found = postgres::inspect(&url)
        .await
        .with_context(|| format!("cluster replica {}: PostgreSQL", c.replica_id))?;
    match found {
        Some(v) if v > SCHEMA_VERSION => anyhow::bail!(
            "cluster: {}",
            mcp_guard_core::cluster::ClusterError::SchemaTooNew {
                found: v,
                supported: SCHEMA_VERSION
            }
        ),
        Some(v) if v == SCHEMA_VERSION => {
            outln!(
                "cluster replica {}: postgres reachable, schema version {v}",
                c.replica_id
            );
        }
        Some(v) => outln!(
            "cluster replica {}: postgres reachable, schema version {v} (the gateway upgrades it to {SCHEMA_VERSION} at start, or run `mcp-guard migrate`)",
            c.replica_id
        ),
        None => outln!(
            "cluster replica {}: postgres reachable, no schema yet (the gateway creates it at start, or run `mcp-guard migrate`)",
            c.replica_id
        ),
    }
    Ok(())
}
