//! Members' requests that an agent may read a secret.

use agentvault_core::Error;
use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{AccessRequest, Millis};

use super::{Backend, agents, secrets};
use crate::errors::DbResult;
use crate::rows::AccessRequestRow;

/// The columns of a request, as [`AccessRequestRow`] reads them.
macro_rules! columns {
    () => {
        "id, workspace_id, agent_id, secret_name, requested_by, requested_at, status, decided_by, decided_at"
    };
}

pub(super) async fn create(s: &Backend, r: &AccessRequest, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    agents::check_known(&mut tx, &r.workspace_id, std::slice::from_ref(&r.agent_id)).await?;
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM access_requests WHERE workspace_id = $1 AND agent_id = $2 AND secret_name = $3 \
         AND status = 'pending'",
    )
    .bind(&r.workspace_id)
    .bind(&r.agent_id)
    .bind(&r.secret_name)
    .fetch_one(&mut *tx)
    .await?;
    if pending > 0 {
        return Err(Error::conflict(
            "access_request_pending",
            format!("access to {} for this agent is already requested; an admin has yet to answer", r.secret_name),
        )
        .into());
    }
    sqlx::query(
        "INSERT INTO access_requests (id, workspace_id, agent_id, secret_name, requested_by, requested_at, status) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
    )
    .bind(&r.id)
    .bind(&r.workspace_id)
    .bind(&r.agent_id)
    .bind(&r.secret_name)
    .bind(&r.requested_by)
    .bind(r.requested_at)
    .execute(&mut *tx)
    .await?;
    tx.commit_one(audit).await
}

pub(super) async fn list(s: &Backend, workspace_id: &str) -> DbResult<Vec<AccessRequest>> {
    let rows: Vec<AccessRequestRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM access_requests WHERE workspace_id = $1 ORDER BY requested_at DESC, id LIMIT 500"
    ))
    .bind(workspace_id)
    .fetch_all(&s.read)
    .await?;
    Ok(rows.into_iter().map(AccessRequest::from).collect())
}

/// Decides a pending request; with `grant`, replaces the secret's access list in the same
/// transaction.
#[allow(clippy::too_many_arguments)]
pub(super) async fn decide(
    s: &Backend,
    workspace_id: &str,
    request_id: &str,
    status: &str,
    decided_by: &str,
    at: Millis,
    grant: Option<(&str, &[String])>,
    audit: &[AuditEvent],
) -> DbResult<AccessRequest> {
    let mut tx = s.begin().await?;
    let done = sqlx::query(
        "UPDATE access_requests SET status = $1, decided_by = $2, decided_at = $3 \
         WHERE id = $4 AND workspace_id = $5 AND status = 'pending'",
    )
    .bind(status)
    .bind(decided_by)
    .bind(at)
    .bind(request_id)
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::not_found(
            "access_request_not_found",
            "no pending access request with this id; it may have been answered already",
        )
        .into());
    }
    if let Some((secret_id, agents_list)) = grant {
        agents::check_known(&mut tx, workspace_id, agents_list).await?;
        secrets::replace_access(&mut tx, secret_id, agents_list, at).await?;
        sqlx::query("UPDATE secrets SET updated_at = $1 WHERE id = $2 AND workspace_id = $3")
            .bind(at)
            .bind(secret_id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
    }
    let row: AccessRequestRow = sqlx::query_as(concat!("SELECT ", columns!(), " FROM access_requests WHERE id = $1"))
        .bind(request_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit(audit).await?;
    Ok(row.into())
}
