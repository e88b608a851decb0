//! Console sessions, personal access tokens and one-time codes. Only hashes are stored.

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{Millis, PersonalToken, Session};

use super::Backend;
use crate::errors::{self, DbResult};
use crate::rows::{PersonalTokenRow, SessionRow, columns};

pub(super) async fn create_session(
    s: &Backend,
    session: &Session,
    token_hash: &[u8],
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at, revoked_at, client, user_agent) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)",
    )
    .bind(&session.id)
    .bind(&session.user_id)
    .bind(token_hash)
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(&session.client)
    .bind(&session.user_agent)
    .execute(&mut *tx)
    .await?;
    // Expired sessions of this user are of no use to anyone.
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at < $2")
        .bind(&session.user_id)
        .bind(session.created_at)
        .execute(&mut *tx)
        .await?;
    tx.commit(audit).await
}

pub(super) async fn session_by_hash(s: &Backend, token_hash: &[u8]) -> DbResult<Option<Session>> {
    let row: Option<SessionRow> =
        sqlx::query_as(concat!("SELECT ", columns!(session), " FROM sessions WHERE token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&s.read)
            .await?;
    Ok(row.map(Into::into))
}

pub(super) async fn list_sessions(s: &Backend, user_id: &str) -> DbResult<Vec<Session>> {
    let rows: Vec<SessionRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(session),
        " FROM sessions WHERE user_id = $1 ORDER BY created_at DESC"
    ))
    .bind(user_id)
    .fetch_all(&s.read)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn revoke_session(
    s: &Backend,
    user_id: &str,
    session_id: &str,
    now: Millis,
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3")
        .bind(now)
        .bind(session_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    errors::changed(done.rows_affected(), errors::session_not_found)?;
    tx.commit(audit).await
}

pub(super) async fn create_personal_token(
    s: &Backend,
    token: &PersonalToken,
    token_hash: &[u8],
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO personal_tokens (id, user_id, name, prefix, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&token.id)
    .bind(&token.user_id)
    .bind(&token.name)
    .bind(&token.prefix)
    .bind(token_hash)
    .bind(token.created_at)
    .bind(token.expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit(audit).await
}

pub(super) async fn personal_token_by_hash(s: &Backend, token_hash: &[u8]) -> DbResult<Option<PersonalToken>> {
    let row: Option<PersonalTokenRow> =
        sqlx::query_as(concat!("SELECT ", columns!(personal_token), " FROM personal_tokens WHERE token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&s.read)
            .await?;
    Ok(row.map(Into::into))
}

pub(super) async fn list_personal_tokens(s: &Backend, user_id: &str) -> DbResult<Vec<PersonalToken>> {
    let rows: Vec<PersonalTokenRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(personal_token),
        " FROM personal_tokens WHERE user_id = $1 ORDER BY created_at DESC"
    ))
    .bind(user_id)
    .fetch_all(&s.read)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn revoke_personal_token(
    s: &Backend,
    user_id: &str,
    token_id: &str,
    now: Millis,
    audit: &[AuditEvent],
) -> DbResult<PersonalToken> {
    let mut tx = s.begin().await?;
    let done =
        sqlx::query("UPDATE personal_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3")
            .bind(now)
            .bind(token_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
    errors::changed(done.rows_affected(), errors::token_not_found)?;
    let row: PersonalTokenRow =
        sqlx::query_as(concat!("SELECT ", columns!(personal_token), " FROM personal_tokens WHERE id = $1"))
            .bind(token_id)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit(audit).await?;
    Ok(row.into())
}

/// Records when a token was last used (never moving the time back).
pub(super) async fn record_personal_token_use(s: &Backend, token_id: &str, at: Millis) -> DbResult<()> {
    sqlx::query(
        "UPDATE personal_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
    )
    .bind(at)
    .bind(token_id)
    .execute(&s.write)
    .await?;
    Ok(())
}

/// Stores the hash of a one-time code for `purpose`, replacing any earlier one.
pub(super) async fn set_one_time_code(s: &Backend, purpose: &str, code_hash: &[u8], now: Millis) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO one_time_codes (purpose, code_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (purpose) DO UPDATE SET code_hash = excluded.code_hash, created_at = excluded.created_at",
    )
    .bind(purpose)
    .bind(code_hash)
    .bind(now)
    .execute(&s.write)
    .await?;
    Ok(())
}

pub(super) async fn one_time_code(s: &Backend, purpose: &str) -> DbResult<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar("SELECT code_hash FROM one_time_codes WHERE purpose = $1")
        .bind(purpose)
        .fetch_optional(&s.read)
        .await?)
}
