use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{AGENT_PREFIX, Agent, Perm};
use agentvault_core::{Error, Result, validate};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AgentOut, List, SecretType};
use crate::auth::{Auth, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::{AppState, Json, now_millis};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Display name, unique in the workspace.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    pub name: Option<String>,
    pub description: Option<String>,
}

fn not_found(agent_id: &str) -> Error {
    Error::not_found("agent_not_found", format!("no agent {} exists in this workspace", agent_id.escape_default()))
}

impl AppState {
    /// An agent of the workspace, or 404.
    pub async fn agent_of(&self, ws: &str, agent_id: &str) -> Result<Agent> {
        validate::id_with_prefix("agent_id", AGENT_PREFIX, agent_id).map_err(|_| not_found(agent_id))?;
        self.store.get_agent(ws, agent_id).await?.ok_or_else(|| not_found(agent_id))
    }
}

/// The agents of a workspace.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/agents", tag = "agents",
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 200, body = List<AgentOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_agents(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
) -> ApiResult<Json<List<AgentOut>>> {
    let ws = st.workspace_for(&p, &ws, Perm::ViewAgents)?;
    let agents = st.store.list_agents(&ws.id).await?;
    Ok(Json(agents.into_iter().map(AgentOut::from).collect::<Vec<_>>().into()))
}

/// Creates an agent.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents", tag = "agents", request_body = CreateAgent,
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 201, body = AgentOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_agent(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    body: Result<ApiJson<CreateAgent>, ApiError>,
) -> ApiResult<(StatusCode, Json<AgentOut>)> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageAgents)?;
    let ApiJson(body) = body?;
    let name = validate::display_name("name", &body.name)?;
    validate::description(&body.description)?;
    let _w = st.write_lock.lock().await;
    let now = now_millis();
    let agent = Agent {
        id: new_id(AGENT_PREFIX)?,
        workspace_id: ws.id.clone(),
        name,
        description: body.description,
        created_at: now,
        updated_at: now,
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::AgentCreate, Outcome::Success)
        .agent(&agent.id)
        .target(&agent.id);
    st.store.create_agent(&agent, &audit).await?;
    st.model.put_agent(&agent.id, &ws.id);
    st.refresh_gauges();
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// One agent.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/agents/{agent_id}", tag = "agents",
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 200, body = AgentOut), (status = 404, body = ErrorBody)))]
pub async fn get_agent(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<AgentOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ViewAgents)?;
    Ok(Json(st.agent_of(&ws.id, &agent_id).await?.into()))
}

/// Renames an agent or changes its description.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/agents/{agent_id}", tag = "agents", request_body = UpdateAgent,
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 200, body = AgentOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_agent(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
    body: Result<ApiJson<UpdateAgent>, ApiError>,
) -> ApiResult<Json<AgentOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageAgents)?;
    let ApiJson(body) = body?;
    if body.name.is_none() && body.description.is_none() {
        return Err(Error::invalid("body", "nothing to change: give a new name or description").into());
    }
    let name = body.name.as_deref().map(|n| validate::display_name("name", n)).transpose()?;
    if let Some(d) = &body.description {
        validate::description(d)?;
    }
    let _w = st.write_lock.lock().await;
    let mut agent = st.agent_of(&ws.id, &agent_id).await?;
    if let Some(n) = name {
        agent.name = n;
    }
    if let Some(d) = body.description {
        agent.description = d;
    }
    agent.updated_at = now_millis();
    let audit = AuditEvent::new(agent.updated_at, &ws.id, p.actor(), Action::AgentUpdate, Outcome::Success)
        .agent(&agent.id)
        .target(&agent.id);
    st.store.update_agent(&agent, &audit).await?;
    Ok(Json(agent.into()))
}

/// Deletes an agent; its grants and its place in API key scopes go with it.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/agents/{agent_id}", tag = "agents",
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_agent(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageAgents)?;
    let _w = st.write_lock.lock().await;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::AgentDelete, Outcome::Success)
        .agent(&agent.id)
        .target(&agent.id);
    st.store.delete_agent(&ws.id, &agent.id, &audit).await?;
    st.model.remove_agent(&ws.id, &agent.id);
    st.runtime.forget_agent(&agent.id);
    st.refresh_gauges();
    Ok(StatusCode::NO_CONTENT)
}

/// What an agent's function may know about a secret it can read: never the value.
#[derive(Serialize, ToSchema)]
pub struct AgentSecretOut {
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: SecretType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// The line that reads it in a function.
    pub snippet: String,
}

/// The secrets an agent can read (metadata only): what the Function Editor's Secrets box shows.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/secrets", tag = "agents",
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 200, body = List<AgentSecretOut>), (status = 404, body = ErrorBody)))]
pub async fn agent_secrets(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<List<AgentSecretOut>>> {
    let ws = st.workspace_for(&p, &ws, Perm::ViewAgentSecrets)?;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    let secrets = st.store.list_secrets(&ws.id).await?;
    let items = secrets
        .into_iter()
        .filter(|s| s.agents.contains(&agent.id))
        .map(|s| AgentSecretOut {
            snippet: format!("conv.utils.get_secret('{}')", s.name),
            name: s.name,
            description: s.description,
            kind: s.kind.into(),
            keys: s.keys,
        })
        .collect::<Vec<_>>();
    Ok(Json(items.into()))
}
