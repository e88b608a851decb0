use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{WORKSPACE_PREFIX, Workspace};
use agentvault_core::{Error, validate};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{List, WorkspaceOut};
use crate::auth::{Auth, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use crate::{AppState, Json, now_millis};

/// The workspaces the credential can see.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = List<WorkspaceOut>), (status = 401, body = ErrorBody)))]
pub async fn list_workspaces(State(st): State<AppState>, Auth(p): Auth) -> ApiResult<Json<List<WorkspaceOut>>> {
    let all = st.store.list_workspaces().await?;
    Ok(Json(all.into_iter().filter(|w| p.sees_workspace(&w.id)).map(WorkspaceOut::from).collect::<Vec<_>>().into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
}

/// Creates a workspace (admin).
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = WorkspaceOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_workspace(
    State(st): State<AppState>,
    Auth(p): Auth,
    body: Result<ApiJson<CreateWorkspace>, ApiError>,
) -> ApiResult<(StatusCode, Json<WorkspaceOut>)> {
    if !p.may_create_workspace() {
        return Err(Error::forbidden("creating a workspace needs the admin role in some workspace").into());
    }
    let ApiJson(body) = body?;
    let name = validate::display_name("name", &body.name)?;
    let _w = st.write_lock.lock().await;
    let now = now_millis();
    let ws = Workspace { id: new_id(WORKSPACE_PREFIX)?, name, created_at: now };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::WorkspaceCreate, Outcome::Success).target(&ws.id);
    let owner = match &p {
        agentvault_core::model::Principal::User { user_id, .. } => Some(user_id.as_str()),
        _ => None,
    };
    st.store.create_workspace(&ws, owner, &audit).await?;
    st.model.put_workspace(ws.clone());
    Ok((StatusCode::CREATED, Json(ws.into())))
}
