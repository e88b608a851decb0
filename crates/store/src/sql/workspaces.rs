//! Workspaces and the bootstrap (admin) tokens.

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{AdminToken, Workspace};

use super::Backend;
use crate::errors::{self, DbResult, OnUnique};
use crate::rows::{AdminTokenRow, WorkspaceRow, columns};

pub(super) async fn list(s: &Backend) -> DbResult<Vec<Workspace>> {
    let rows: Vec<WorkspaceRow> =
        sqlx::query_as(concat!("SELECT ", columns!(workspace), " FROM workspaces ORDER BY created_at, id"))
            .fetch_all(&s.read)
            .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn get(s: &Backend, id: &str) -> DbResult<Option<Workspace>> {
    let row: Option<WorkspaceRow> =
        sqlx::query_as(concat!("SELECT ", columns!(workspace), " FROM workspaces WHERE id = $1"))
            .bind(id)
            .fetch_optional(&s.read)
            .await?;
    Ok(row.map(Into::into))
}

pub(super) async fn create(s: &Backend, ws: &Workspace, owner: Option<&str>, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(ws.created_at)
        .execute(&mut *tx)
        .await
        .on_unique(|| errors::workspace_exists(&ws.name))?;
    if let Some(user_id) = owner {
        sqlx::query("INSERT INTO memberships (user_id, workspace_id, role, created_at) VALUES ($1, $2, 'admin', $3)")
            .bind(user_id)
            .bind(&ws.id)
            .bind(ws.created_at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit_one(audit).await
}

pub(super) async fn has_admin_tokens(s: &Backend) -> DbResult<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens").fetch_one(&s.read).await?;
    Ok(n > 0)
}

pub(super) async fn create_admin_token(s: &Backend, token: &AdminToken, token_hash: &[u8]) -> DbResult<()> {
    sqlx::query("INSERT INTO admin_tokens (id, name, token_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&token.id)
        .bind(&token.name)
        .bind(token_hash)
        .bind(token.created_at)
        .bind(token.revoked_at)
        .execute(&s.write)
        .await?;
    Ok(())
}

pub(super) async fn delete_admin_tokens(s: &Backend) -> DbResult<u64> {
    Ok(sqlx::query("DELETE FROM admin_tokens").execute(&s.write).await?.rows_affected())
}

pub(super) async fn load_admin_tokens(s: &Backend) -> DbResult<Vec<(AdminToken, Vec<u8>)>> {
    let rows: Vec<AdminTokenRow> =
        sqlx::query_as(concat!("SELECT ", columns!(admin_token), " FROM admin_tokens")).fetch_all(&s.read).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
