//! The members of a workspace and their roles.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Perm, Principal, Role};
use agentvault_core::{Error, Result};

use super::Body;
use crate::api::members::{ChangeRole, MemberOut};
use crate::{AppState, now_millis};

pub(crate) fn role_param(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| Error::invalid("role", "role must be admin or member"))
}

/// The members of a workspace with their roles.
pub async fn list(st: &AppState, p: &Principal, ws: &str) -> Result<Vec<MemberOut>> {
    let ws = st.workspace_for(p, ws, Perm::ViewPeople)?;
    let members = st.store.list_members(&ws.id).await?;
    Ok(members.into_iter().map(MemberOut::from).collect())
}

/// Changes a member's role. The last admin cannot be demoted.
pub async fn change_role(
    st: &AppState,
    p: &Principal,
    ws: &str,
    user_id: &str,
    body: Body<ChangeRole>,
) -> Result<MemberOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageMembers)?;
    let body = body?;
    let role = role_param(&body.role)?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::MemberRoleChange, Outcome::Success)
        .target(user_id)
        .detail(format!("role={}", role.as_str()));
    let _w = st.write_lock.lock().await;
    st.store.set_role(&ws.id, user_id, role, &audit).await?;
    let member = st
        .store
        .list_members(&ws.id)
        .await?
        .into_iter()
        .find(|m| m.user.id == user_id)
        .ok_or_else(|| Error::not_found("member_not_found", "that user is not a member of this workspace"))?;
    Ok(member.into())
}

/// Removes a member from the workspace. The last admin cannot be removed.
pub async fn remove(st: &AppState, p: &Principal, ws: &str, user_id: &str) -> Result<()> {
    let ws = st.workspace_for(p, ws, Perm::ManageMembers)?;
    let audit =
        AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::MemberRemove, Outcome::Success).target(user_id);
    let _w = st.write_lock.lock().await;
    st.store.remove_member(&ws.id, user_id, &audit).await?;
    Ok(())
}
