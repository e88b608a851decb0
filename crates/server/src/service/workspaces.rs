//! Workspaces.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Principal, WORKSPACE_PREFIX, Workspace};
use agentvault_core::{Error, Result, validate};

use super::Body;
use crate::api::WorkspaceOut;
use crate::api::workspaces::CreateWorkspace;
use crate::auth::new_id;
use crate::{AppState, now_millis};

/// The workspaces the credential can see.
pub async fn list(st: &AppState, p: &Principal) -> Result<Vec<WorkspaceOut>> {
    let all = st.store.list_workspaces().await?;
    Ok(all.into_iter().filter(|w| p.sees_workspace(&w.id)).map(WorkspaceOut::from).collect())
}

/// Creates a workspace (admin of some workspace); its creator becomes its admin.
pub async fn create(st: &AppState, p: &Principal, body: Body<CreateWorkspace>) -> Result<WorkspaceOut> {
    if !p.may_create_workspace() {
        return Err(Error::forbidden("creating a workspace needs the admin role in some workspace"));
    }
    let body = body?;
    let name = validate::display_name("name", &body.name)?;
    let _w = st.write_lock.lock().await;
    let now = now_millis();
    let ws = Workspace { id: new_id(WORKSPACE_PREFIX)?, name, created_at: now };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::WorkspaceCreate, Outcome::Success).target(&ws.id);
    let owner = match p {
        Principal::User { user_id, .. } => Some(user_id.as_str()),
        _ => None,
    };
    st.store.create_workspace(&ws, owner, &audit).await?;
    st.model.put_workspace(ws.clone());
    Ok(ws.into())
}
