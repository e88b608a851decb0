//! What both backends' migrators share: sqlx's [`Migrator`] over SQL files embedded with
//! `include_str!` (rather than `sqlx::migrate!`, whose `macros` feature builds a second copy of
//! sqlx and its drivers for the compiler), and the refusal of a database that a newer agentvault
//! has migrated. Each backend has its own folder, `migrations/<backend>/`, with the same versions.

use agentvault_core::Error;
use sqlx::SqlStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};

/// `(version, description, SQL)`, as sqlx reads them from `<version>_<description>.sql`.
pub(crate) type Migrations = [(i64, &'static str, &'static str)];

pub(crate) fn migrator(list: &'static Migrations) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, (*description).into(), MigrationType::Simple, SqlStr::from_static(sql), false)
            })
            .collect(),
    )
}

/// The newest schema version `migrator` knows.
pub(crate) fn newest_known(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

pub(crate) fn newer_database(version: i64) -> Error {
    Error::unavailable(format!(
        "the database has schema version {version}, newer than this agentvault knows; run a newer agentvault"
    ))
}

/// The error a failed migration run gives the operator.
pub(crate) fn migrate_err(migrator: &Migrator, e: MigrateError) -> Error {
    match e {
        MigrateError::VersionMissing(v) if v > newest_known(migrator) => newer_database(v),
        e => Error::unavailable(format!("the database schema could not be brought up to date: {e}")),
    }
}

/// Checks that every file of `migrations/<backend>/` is embedded, in order (a test helper).
#[cfg(test)]
pub(crate) fn assert_all_embedded(backend: &str, list: &Migrations) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let mut files: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let embedded: Vec<String> = list.iter().map(|(v, d, _)| format!("{v:04}_{}.sql", d.replace(' ', "_"))).collect();
    assert_eq!(files, embedded);
}
