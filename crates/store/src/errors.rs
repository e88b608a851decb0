//! The errors of every backend: one [`DbError`] that `?` builds from a database error or from
//! a refusal, and the refusals themselves, each with its API code and a sentence a person can
//! act on.

use agentvault_core::Error;

/// What a backend's internal functions fail with; it becomes the crate's [`Error`] at the
/// [`crate::Store`] boundary.
#[derive(Debug)]
pub(crate) enum DbError {
    /// A unique constraint refused a row. [`OnUnique::on_unique`] names the conflict; one that
    /// no caller expected is a bug, reported as an internal error.
    Unique(sqlx::Error),
    /// Anything else the database reported.
    Database(sqlx::Error),
    /// A refusal (a rule, a missing row) or a failed conversion, already in its API form.
    Api(Error),
}

pub(crate) type DbResult<T> = std::result::Result<T, DbError>;

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
            DbError::Unique(e)
        } else {
            DbError::Database(e)
        }
    }
}

impl From<Error> for DbError {
    fn from(e: Error) -> Self {
        DbError::Api(e)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Api(e) => e,
            DbError::Unique(e) | DbError::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                    Error::unavailable("the database is busy or closed; try again shortly")
                }
                e => Error::internal(format!("database: {e}")),
            },
        }
    }
}

/// Names the conflict a unique constraint stands for.
pub(crate) trait OnUnique<T> {
    /// A unique violation becomes `conflict()`; other errors pass through.
    fn on_unique(self, conflict: impl FnOnce() -> Error) -> DbResult<T>;
}

impl<T, E: Into<DbError>> OnUnique<T> for std::result::Result<T, E> {
    fn on_unique(self, conflict: impl FnOnce() -> Error) -> DbResult<T> {
        match self.map_err(Into::into) {
            Err(DbError::Unique(_)) => Err(DbError::Api(conflict())),
            other => other,
        }
    }
}

/// Fails with `missing()` when a statement changed no row (its target is gone or not in the
/// caller's reach).
pub(crate) fn changed(rows: u64, missing: impl FnOnce() -> Error) -> DbResult<()> {
    if rows == 0 { Err(DbError::Api(missing())) } else { Ok(()) }
}

// --- the refusals, shared by every backend ----------------------------------------------------

pub(crate) fn workspace_exists(name: &str) -> Error {
    Error::conflict("workspace_exists", format!("a workspace named '{name}' already exists")).with_field("name")
}

pub(crate) fn agent_exists(name: &str) -> Error {
    Error::conflict("agent_exists", format!("an agent named '{name}' already exists in this workspace"))
        .with_field("name")
}

pub(crate) fn agent_gone() -> Error {
    Error::not_found("agent_not_found", "the agent no longer exists")
}

pub(crate) fn secret_exists(name: &str) -> Error {
    Error::conflict("secret_exists", format!("a secret named '{name}' already exists in this workspace"))
        .with_field("name")
}

pub(crate) fn secret_gone() -> Error {
    Error::not_found("secret_not_found", "the secret no longer exists")
}

pub(crate) fn api_key_not_found(key_id: &str) -> Error {
    Error::not_found("api_key_not_found", format!("no API key {key_id} exists in this workspace"))
}

pub(crate) fn setup_done() -> Error {
    Error::conflict("setup_done", "the first admin already exists; sign in instead")
}

pub(crate) fn user_exists(email: &str) -> Error {
    Error::conflict("user_exists", format!("a user with the email {email} already exists")).with_field("email")
}

pub(crate) fn user_gone() -> Error {
    Error::not_found("user_not_found", "the user no longer exists")
}

pub(crate) fn already_member() -> Error {
    Error::conflict("already_member", "that user is already a member of this workspace").with_field("email")
}

pub(crate) fn invitee_already_member(email: &str) -> Error {
    Error::conflict("already_member", format!("{email} is already a member of this workspace")).with_field("email")
}

pub(crate) fn accepting_member() -> Error {
    Error::conflict("already_member", "you are already a member of this workspace; sign in to use it")
}

pub(crate) fn member_not_found() -> Error {
    Error::not_found("member_not_found", "that user is not a member of this workspace")
}

pub(crate) fn session_not_found() -> Error {
    Error::not_found("session_not_found", "no such session of yours")
}

pub(crate) fn token_not_found() -> Error {
    Error::not_found("token_not_found", "no such personal access token of yours")
}

pub(crate) fn invitation_not_found() -> Error {
    Error::not_found(
        "invitation_not_found",
        "no pending invitation with that id in this workspace (it may have been accepted, revoked or expired)",
    )
}

pub(crate) fn function_exists(name: &str) -> Error {
    Error::conflict("function_exists", format!("this agent already has a function named '{name}'")).with_field("name")
}

pub(crate) fn function_not_found(name: &str) -> Error {
    Error::not_found("function_not_found", format!("this agent has no function named '{name}'"))
}

pub(crate) fn function_version_not_found(name: &str, version: u32, latest: u32) -> Error {
    Error::not_found(
        "version_not_found",
        format!("the function '{name}' has no version {version}; the latest is {latest}, and GET .../functions/{name}/versions lists those saved"),
    )
    .with_field("version")
}

pub(crate) fn env_value_moved_on(env: agentvault_core::model::Env) -> Error {
    Error::conflict(
        "version_conflict",
        format!("the secret's {env} value was changed meanwhile; reload it and try again"),
    )
}

pub(crate) fn function_moved_on() -> Error {
    Error::conflict("version_conflict", "the function was changed or deleted meanwhile; reload it and try again")
}

pub(crate) fn rotation_moved_on(secret_id: &str, version: u32) -> Error {
    Error::conflict(
        "version_conflict",
        format!("secret {secret_id} version {version} changed during the rotation; nothing was changed, run it again"),
    )
}

/// A value in the database that this agentvault cannot read (a bug or a hand-edited row).
pub(crate) fn bad_column(what: &str, value: impl std::fmt::Debug) -> Error {
    Error::internal(format!("unknown {what} {value:?} in the database"))
}

#[cfg(test)]
mod tests {
    use agentvault_core::ErrorKind;

    use super::*;

    #[test]
    fn pool_errors_are_unavailable_and_others_internal() {
        assert_eq!(Error::from(DbError::from(sqlx::Error::PoolTimedOut)).kind, ErrorKind::Unavailable);
        let e = Error::from(DbError::from(sqlx::Error::RowNotFound));
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.internal_context().is_some_and(|c| c.contains("database")));
    }

    #[test]
    fn on_unique_passes_other_errors_through() {
        let r: Result<(), sqlx::Error> = Err(sqlx::Error::RowNotFound);
        let e = Error::from(r.on_unique(|| agent_exists("x")).unwrap_err());
        assert_eq!(e.kind, ErrorKind::Internal);
        let r: Result<(), DbError> = Err(DbError::Api(agent_gone()));
        assert_eq!(Error::from(r.on_unique(|| agent_exists("x")).unwrap_err()).code, "agent_not_found");
    }
}
