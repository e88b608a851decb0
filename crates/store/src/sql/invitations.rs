//! Invitations to join a workspace. Only the code's hash is stored.

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{Invitation, Millis};

use super::{Backend, people};
use crate::NewAccount;
use crate::errors::{self, DbResult, OnUnique};
use crate::rows::{InvitationRow, columns, convert};

/// `SELECT <the columns of an invitation> FROM invitations <rest>`, as one static string.
macro_rules! select_invitations {
    ($rest:literal) => {
        concat!("SELECT ", columns!(invitation), " FROM invitations ", $rest)
    };
}

pub(super) async fn create(
    s: &Backend,
    invitation: &Invitation,
    code_hash: &[u8],
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let members: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.workspace_id = $1 AND LOWER(u.email) = LOWER($2)",
    )
    .bind(&invitation.workspace_id)
    .bind(&invitation.email)
    .fetch_one(&mut *tx)
    .await?;
    if members > 0 {
        return Err(errors::invitee_already_member(&invitation.email).into());
    }
    // A new invitation replaces the pending one for the same person and workspace.
    sqlx::query(
        "UPDATE invitations SET revoked_at = $1 WHERE workspace_id = $2 AND LOWER(email) = LOWER($3) \
         AND revoked_at IS NULL AND accepted_at IS NULL",
    )
    .bind(invitation.created_at)
    .bind(&invitation.workspace_id)
    .bind(&invitation.email)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO invitations (id, workspace_id, email, role, code_hash, invited_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&invitation.id)
    .bind(&invitation.workspace_id)
    .bind(&invitation.email)
    .bind(invitation.role.as_str())
    .bind(code_hash)
    .bind(&invitation.invited_by)
    .bind(invitation.created_at)
    .bind(invitation.expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit(audit).await
}

/// The pending invitations of a workspace, newest first.
pub(super) async fn list(s: &Backend, workspace_id: &str, now: Millis) -> DbResult<Vec<Invitation>> {
    let rows: Vec<InvitationRow> = sqlx::query_as(select_invitations!(
        "WHERE workspace_id = $1 AND revoked_at IS NULL AND accepted_at IS NULL AND expires_at > $2 \
         ORDER BY created_at DESC"
    ))
    .bind(workspace_id)
    .bind(now)
    .fetch_all(&s.read)
    .await?;
    Ok(convert(rows)?)
}

pub(super) async fn by_hash(s: &Backend, code_hash: &[u8]) -> DbResult<Option<Invitation>> {
    let row: Option<InvitationRow> =
        sqlx::query_as(select_invitations!("WHERE code_hash = $1")).bind(code_hash).fetch_optional(&s.read).await?;
    Ok(row.map(Invitation::try_from).transpose()?)
}

pub(super) async fn revoke(
    s: &Backend,
    workspace_id: &str,
    invitation_id: &str,
    now: Millis,
    audit: &[AuditEvent],
) -> DbResult<Invitation> {
    let mut tx = s.begin().await?;
    let done = sqlx::query(
        "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND workspace_id = $3 AND revoked_at IS NULL \
         AND accepted_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(invitation_id)
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    errors::changed(done.rows_affected(), errors::invitation_not_found)?;
    let row: InvitationRow =
        sqlx::query_as(select_invitations!("WHERE id = $1")).bind(invitation_id).fetch_one(&mut *tx).await?;
    tx.commit(audit).await?;
    Ok(row.try_into()?)
}

/// Marks a pending invitation used and adds the membership (creating the account first when
/// asked), all in one transaction.
pub(super) async fn accept(
    s: &Backend,
    invitation: &Invitation,
    user_id: &str,
    new_account: Option<NewAccount<'_>>,
    now: Millis,
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    // Single use: only a pending invitation is marked used, inside the transaction that
    // adds the membership.
    let done = sqlx::query(
        "UPDATE invitations SET accepted_at = $1, accepted_by = $2 WHERE id = $3 AND revoked_at IS NULL \
         AND accepted_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(user_id)
    .bind(&invitation.id)
    .execute(&mut *tx)
    .await?;
    errors::changed(done.rows_affected(), Invitation::unusable)?;
    if let Some(account) = new_account {
        people::insert_user(&mut tx, account.user, account.password_hash).await?;
    }
    people::insert_membership(&mut tx, user_id, &invitation.workspace_id, invitation.role, now)
        .await
        .on_unique(errors::accepting_member)?;
    tx.commit(audit).await
}
