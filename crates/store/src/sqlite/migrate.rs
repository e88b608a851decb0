//! The SQLite schema: sqlx's migrator (versions, checksums, the `_sqlx_migrations` table) over
//! the files of `migrations/sqlite/` (see [`crate::migrations`]). A new migration is a new file
//! and a new line below.
//!
//! Databases made before agentvault used sqlx's migrator recorded their versions in a table of
//! their own, `schema_migrations`; on first open those versions are recorded in sqlx's table
//! (as applied, without running them again) and the old table is dropped.

use std::sync::LazyLock;

use agentvault_core::{Error, Result};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{SqliteConnection, SqlitePool};

use crate::errors::{DbError, DbResult};
use crate::migrations::{self, Migrations};

/// `(version, description, SQL)`, as sqlx reads them from `<version>_<description>.sql`.
const MIGRATIONS: &Migrations = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "people", include_str!("../../migrations/sqlite/0002_people.sql")),
    (3, "functions", include_str!("../../migrations/sqlite/0003_functions.sql")),
    (4, "invitations", include_str!("../../migrations/sqlite/0004_invitations.sql")),
    (5, "email index", include_str!("../../migrations/sqlite/0005_email_index.sql")),
    (6, "settings", include_str!("../../migrations/sqlite/0006_settings.sql")),
    (7, "changes", include_str!("../../migrations/sqlite/0007_changes.sql")),
    (8, "egress", include_str!("../../migrations/sqlite/0008_egress.sql")),
    (9, "function secret refs", include_str!("../../migrations/sqlite/0009_function_secret_refs.sql")),
    (10, "access requests", include_str!("../../migrations/sqlite/0010_access_requests.sql")),
    (11, "environments", include_str!("../../migrations/sqlite/0011_environments.sql")),
    (12, "secret last reads", include_str!("../../migrations/sqlite/0012_secret_last_reads.sql")),
    (13, "audit segments", include_str!("../../migrations/sqlite/0013_audit_segments.sql")),
];

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrations::migrator(MIGRATIONS));

/// Applies the pending migrations; refuses a database made by a newer agentvault.
///
/// Everything happens in one `BEGIN IMMEDIATE` transaction (sqlx's per-migration transactions
/// become savepoints in it): an upgrade is applied whole or not at all, and a second process
/// opening the database meanwhile waits for it instead of applying the same migrations again.
pub(super) async fn run(pool: &SqlitePool) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(DbError::from)?;
    adopt_schema_migrations(&mut tx).await?;
    MIGRATOR.run(&mut *tx).await.map_err(migrate_err)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

fn migrate_err(e: MigrateError) -> Error {
    migrations::migrate_err(&MIGRATOR, e)
}

/// Moves the versions recorded in a `schema_migrations` table (made before agentvault used
/// sqlx's migrator) into sqlx's table, then drops it. Safe to repeat if interrupted.
async fn adopt_schema_migrations(conn: &mut SqliteConnection) -> DbResult<()> {
    let old: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
            .fetch_one(&mut *conn)
            .await?;
    if old == 0 {
        return Ok(());
    }
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations").fetch_one(&mut *conn).await?;
    if let Some(newest) = applied {
        if newest > migrations::newest_known(&MIGRATOR) {
            return Err(migrations::newer_database(newest).into());
        }
        // Marks 1..=newest applied (they were: the old migrator applied them in order) with
        // the checksums of the files, without running them.
        MIGRATOR.skip(&mut *conn, Some(newest)).await.map_err(migrate_err)?;
    }
    sqlx::query("DROP TABLE schema_migrations").execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use agentvault_core::ErrorKind;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use super::*;
    use crate::{SqliteStore, Store};

    #[test]
    fn every_migration_file_is_embedded() {
        migrations::assert_all_embedded("sqlite", MIGRATIONS);
    }

    /// A database as the migrator before sqlx's left it, at `versions`.
    async fn old_database(path: &Path, versions: &[i64]) -> SqliteConnection {
        let mut conn = SqliteConnectOptions::new().filename(path).create_if_missing(true).connect().await.unwrap();
        sqlx::raw_sql("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        for v in versions {
            if let Some((_, _, sql)) = MIGRATIONS.iter().find(|(version, _, _)| version == v) {
                sqlx::raw_sql(*sql).execute(&mut conn).await.unwrap();
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
                .bind(v)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn
    }

    async fn sqlx_versions(path: &Path) -> Vec<i64> {
        let mut conn = SqliteConnectOptions::new().filename(path).connect().await.unwrap();
        let v = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let old: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(old, 0, "the old table is dropped");
        conn.close().await.unwrap();
        v
    }

    #[tokio::test]
    async fn a_database_of_the_old_migrator_is_adopted_and_upgraded() {
        // One made by the last release of the old migrator, and one by an earlier release.
        for old in [&[1, 2, 3, 4][..], &[1, 2]] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            let mut conn = old_database(&path, old).await;
            sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_old', 'kept', 1)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();

            let store = SqliteStore::open(&path).await.unwrap();
            let names: Vec<String> = store.list_workspaces().await.unwrap().into_iter().map(|w| w.name).collect();
            assert_eq!(names, ["kept"], "the data survives");
            assert!(store.list_invitations("ws_old", 0).await.unwrap().is_empty(), "migration 4 ran");
            store.close().await;
            drop(store);
            let all: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
            assert_eq!(sqlx_versions(&path).await, all, "old versions recorded, the new ones applied");

            // And it opens again as an ordinary sqlx-migrated database.
            let store = SqliteStore::open(&path).await.unwrap();
            store.close().await;
        }
    }

    /// Data of a database at version 10 behaves as before once environments arrive: functions run
    /// their saved version in pre-release and live (deployed by the system), secrets have no
    /// environment values and are not protected, API keys read for every environment.
    #[tokio::test]
    async fn existing_data_keeps_working_after_the_environments_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v10.db");
        let mut conn = old_database(&path, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).await;
        sqlx::raw_sql(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_old', 'kept', 1);
             INSERT INTO agents (id, workspace_id, name, created_at, updated_at) VALUES ('agt_old', 'ws_old', 'a', 1, 1);
             INSERT INTO functions (id, workspace_id, agent_id, name, description, parameters, code, timeout_ms, version,
                 created_at, updated_at)
                 VALUES ('fn_old', 'ws_old', 'agt_old', 'pay', 'pays', '[]', 'def pay(conv):\n    return 3\n', NULL, 3, 1, 7);
             INSERT INTO secrets (id, workspace_id, name, description, current_version, created_at, updated_at)
                 VALUES ('sec_old', 'ws_old', 'stripe', '', 1, 1, 1);
             INSERT INTO secret_versions (secret_id, version, kind, keys, root_key_id, wrapped_dek, ciphertext,
                 created_at, created_by) VALUES ('sec_old', 1, 'single', NULL, 'r', X'01', X'02', 1, 'adm_x');
             INSERT INTO api_keys (id, workspace_id, name, prefix, token_hash, all_agents, created_at, created_by)
                 VALUES ('key_old', 'ws_old', 'k', 'avk_x', X'0303', 1, 1, 'adm_x');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let store = SqliteStore::open(&path).await.unwrap();
        let f = store.get_function("ws_old", "agt_old", "pay").await.unwrap().unwrap();
        let deployed: Vec<(&str, u32, &str, bool)> =
            f.deployments.iter().map(|d| (d.env.as_str(), d.version, d.deployed_by.as_str(), d.by_admin)).collect();
        assert_eq!(deployed, [("pre-release", 3, "system", true), ("live", 3, "system", true)]);
        let versions = store.list_function_versions("ws_old", "agt_old", "pay").await.unwrap();
        assert_eq!(versions.iter().map(|v| (v.version, v.code.as_str())).collect::<Vec<_>>(), [(3, f.code.as_str())]);
        let live = store.load_deployed_functions(Some("ws_old")).await.unwrap();
        assert_eq!(live.len(), 2);
        assert!(live.iter().all(|d| d.function.code == f.code && d.function.version == 3));
        let secret = store.get_secret("ws_old", "stripe").await.unwrap().unwrap();
        assert!(!secret.protected && secret.envs.is_empty());
        let records = store.load_current_secrets(Some("ws_old")).await.unwrap();
        assert!(records[0].envs.is_empty());
        let keys = store.list_api_keys("ws_old").await.unwrap();
        assert_eq!(keys[0].env, None, "an existing key reads for every environment");
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn processes_opening_a_new_database_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("race.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut pools = Vec::new();
        for _ in 0..4 {
            pools.push(
                sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await.unwrap(),
            );
        }
        let (a, b, c, d) = tokio::join!(run(&pools[0]), run(&pools[1]), run(&pools[2]), run(&pools[3]));
        for result in [a, b, c, d] {
            result.unwrap();
        }
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&pools[0]).await.unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn a_database_of_a_newer_agentvault_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Made by the old migrator, with a version this agentvault does not know.
        let old = dir.path().join("old.db");
        old_database(&old, &[1, 2, 3, 4, 99]).await.close().await.unwrap();
        let e = SqliteStore::open(&old).await.err().unwrap();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("schema version 99"), "{}", e.message);

        // Migrated by sqlx, with an applied migration this agentvault does not have.
        let new = dir.path().join("new.db");
        SqliteStore::open(&new).await.unwrap().close().await;
        let mut conn = SqliteConnectOptions::new().filename(&new).connect().await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (1000, 'from the future', TRUE, X'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let e = SqliteStore::open(&new).await.err().unwrap();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("schema version 1000"), "{}", e.message);
    }
}
