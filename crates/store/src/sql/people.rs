//! Users and their memberships of workspaces.

use super::Conn;
use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{Member, Millis, Role, User};

use super::Backend;
use crate::errors::{self, DbResult, OnUnique};
use crate::rows::{MemberRow, MembershipRow, UserRow, UserWithHashRow, columns, convert, parse_role};
use crate::{PasswordChange, rules};

pub(super) async fn count_users(s: &Backend) -> DbResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&s.read).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn insert_user(conn: &mut Conn, user: &User, password_hash: &str) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(password_hash)
    .bind(user.created_at)
    .bind(user.updated_at)
    .execute(&mut *conn)
    .await
    .on_unique(|| errors::user_exists(&user.email))?;
    Ok(())
}

/// Creates the first admin: an admin of every workspace, holding the bootstrap token (if any)
/// as a personal access token.
pub(super) async fn setup_first_admin(
    s: &Backend,
    user: &User,
    password_hash: &str,
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&mut *tx).await?;
    if users > 0 {
        return Err(errors::setup_done().into());
    }
    insert_user(&mut tx, user, password_hash).await?;
    sqlx::query(
        "INSERT INTO memberships (user_id, workspace_id, role, created_at) SELECT $1, id, 'admin', $2 FROM workspaces",
    )
    .bind(&user.id)
    .bind(user.created_at)
    .execute(&mut *tx)
    .await?;
    // The bootstrap token becomes the first admin's personal access token.
    let bootstrap: Vec<(String, Vec<u8>, Millis)> =
        sqlx::query_as("SELECT id, token_hash, created_at FROM admin_tokens WHERE revoked_at IS NULL")
            .fetch_all(&mut *tx)
            .await?;
    for (id, token_hash, created_at) in bootstrap {
        sqlx::query(
            "INSERT INTO personal_tokens (id, user_id, name, prefix, token_hash, created_at) \
             VALUES ($1, $2, 'bootstrap token', 'bootstrap', $3, $4)",
        )
        .bind(rules::bootstrap_token_id(&id))
        .bind(&user.id)
        .bind(token_hash)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM admin_tokens").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM one_time_codes WHERE purpose = 'setup'").execute(&mut *tx).await?;
    tx.commit(audit).await
}

pub(super) async fn create_user(
    s: &Backend,
    user: &User,
    password_hash: &str,
    memberships: &[(String, Role)],
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    insert_user(&mut tx, user, password_hash).await?;
    for (ws, role) in memberships {
        insert_membership(&mut tx, &user.id, ws, *role, user.created_at).await?;
    }
    tx.commit(audit).await
}

/// Inserts a membership; a unique violation means the user is already a member.
pub(super) async fn insert_membership(
    conn: &mut Conn,
    user_id: &str,
    workspace_id: &str,
    role: Role,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO memberships (user_id, workspace_id, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(user_id)
        .bind(workspace_id)
        .bind(role.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// By email, case-insensitively (the index `users_by_lower_email` answers it).
pub(super) async fn by_email(s: &Backend, email: &str) -> DbResult<Option<(User, String)>> {
    let row: Option<UserWithHashRow> =
        sqlx::query_as(concat!("SELECT ", columns!(user), ", password_hash FROM users WHERE LOWER(email) = LOWER($1)"))
            .bind(email)
            .fetch_optional(&s.read)
            .await?;
    Ok(row.map(Into::into))
}

pub(super) async fn get(s: &Backend, user_id: &str) -> DbResult<Option<User>> {
    let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", columns!(user), " FROM users WHERE id = $1"))
        .bind(user_id)
        .fetch_optional(&s.read)
        .await?;
    Ok(row.map(Into::into))
}

/// Stores the new hash and ends the other sessions (and, if asked, tokens) of the user.
pub(super) async fn set_password(
    s: &Backend,
    change: &PasswordChange<'_>,
    audit: &[AuditEvent],
) -> DbResult<(u64, u64)> {
    let mut tx = s.begin().await?;
    let done = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(change.password_hash)
        .bind(change.now)
        .bind(change.user_id)
        .execute(&mut *tx)
        .await?;
    errors::changed(done.rows_affected(), errors::user_gone)?;
    let sessions = sqlx::query(
        "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 \
         AND id <> $3",
    )
    .bind(change.now)
    .bind(change.user_id)
    .bind(change.keep_session.unwrap_or(""))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let tokens = if change.revoke_tokens {
        sqlx::query(
            "UPDATE personal_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $1) AND id <> $3",
        )
        .bind(change.now)
        .bind(change.user_id)
        .bind(change.keep_token.unwrap_or(""))
        .execute(&mut *tx)
        .await?
        .rows_affected()
    } else {
        0
    };
    tx.commit(audit).await?;
    Ok((sessions, tokens))
}

pub(super) async fn memberships_of(s: &Backend, user_id: &str) -> DbResult<Vec<(String, Role)>> {
    let rows: Vec<MembershipRow> = sqlx::query_as("SELECT workspace_id, role FROM memberships WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(&s.read)
        .await?;
    Ok(convert(rows)?)
}

/// Ordered by email, ignoring case.
pub(super) async fn list_members(s: &Backend, workspace_id: &str) -> DbResult<Vec<Member>> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT u.id, u.email, u.name, u.created_at, u.updated_at, m.role, m.created_at AS joined_at \
         FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = $1 ORDER BY LOWER(u.email)",
    )
    .bind(workspace_id)
    .fetch_all(&s.read)
    .await?;
    Ok(convert(rows)?)
}

pub(super) async fn add_member(
    s: &Backend,
    workspace_id: &str,
    user_id: &str,
    role: Role,
    now: Millis,
    audit: &AuditEvent,
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    insert_membership(&mut tx, user_id, workspace_id, role, now).await.on_unique(errors::already_member)?;
    tx.commit_one(audit).await
}

/// The member's role and the number of admins of the workspace (for the last-admin rule).
async fn role_and_admins(conn: &mut Conn, workspace_id: &str, user_id: &str) -> DbResult<(Role, i64)> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace_id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let role = parse_role(&role.ok_or_else(errors::member_not_found)?)?;
    let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE workspace_id = $1 AND role = 'admin'")
        .bind(workspace_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((role, admins))
}

/// Revokes the pending invitations a person made in a workspace, when they stop being its admin:
/// an invitation must not carry an admin's power past their removal or demotion.
async fn revoke_invitations_by(conn: &mut Conn, workspace_id: &str, user_id: &str, now: Millis) -> DbResult<()> {
    sqlx::query(
        "UPDATE invitations SET revoked_at = $1 \
         WHERE workspace_id = $2 AND invited_by = $3 AND revoked_at IS NULL AND accepted_at IS NULL",
    )
    .bind(now)
    .bind(workspace_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn set_role(
    s: &Backend,
    workspace_id: &str,
    user_id: &str,
    role: Role,
    audit: &AuditEvent,
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let (current, admins) = role_and_admins(&mut tx, workspace_id, user_id).await?;
    rules::keeps_an_admin(current, Some(role), admins)?;
    sqlx::query("UPDATE memberships SET role = $1 WHERE workspace_id = $2 AND user_id = $3")
        .bind(role.as_str())
        .bind(workspace_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if role != Role::Admin {
        revoke_invitations_by(&mut tx, workspace_id, user_id, audit.at).await?;
    }
    tx.commit_one(audit).await
}

pub(super) async fn remove_member(s: &Backend, workspace_id: &str, user_id: &str, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let (current, admins) = role_and_admins(&mut tx, workspace_id, user_id).await?;
    rules::keeps_an_admin(current, None, admins)?;
    sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2")
        .bind(workspace_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    revoke_invitations_by(&mut tx, workspace_id, user_id, audit.at).await?;
    tx.commit_one(audit).await
}
