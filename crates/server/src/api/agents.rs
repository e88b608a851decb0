use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AgentOut, List, SecretType};
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::agents;
use crate::{AppState, Json};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Display name, unique in the workspace.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    pub description: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    pub description: Option<String>,
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
    Ok(Json(agents::list(&st, &p, &ws).await?.into()))
}

/// Creates an agent.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents", tag = "agents", request_body = CreateAgent,
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 201, body = AgentOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_agent(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    b: JsonBody<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentOut>)> {
    Ok((StatusCode::CREATED, Json(agents::create(&st, &p, &ws, body(b)).await?)))
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
    Ok(Json(agents::get(&st, &p, &ws, &agent_id).await?))
}

/// Renames an agent or changes its description.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/agents/{agent_id}", tag = "agents", request_body = UpdateAgent,
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 200, body = AgentOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_agent(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
    b: JsonBody<UpdateAgent>,
) -> ApiResult<Json<AgentOut>> {
    Ok(Json(agents::update(&st, &p, &ws, &agent_id, body(b)).await?))
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
    agents::delete(&st, &p, &ws, &agent_id).await?;
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
    /// Functions get a placeholder, never the value: agentvault's egress proxy swaps it for the
    /// value in request headers to `hosts` only.
    pub injected_only: bool,
    /// The hosts an injected-only secret's value may be sent to.
    pub hosts: Vec<String>,
    /// The environments with a value of their own (the others read the default).
    #[schema(value_type = Vec<super::doc::Env>)]
    pub environments: Vec<&'static str>,
    /// Protected: only versions an admin deployed read it; sandbox code only its sandbox value.
    pub protected: bool,
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
    Ok(Json(agents::secrets(&st, &p, &ws, &agent_id).await?.into()))
}

/// Where an agent's functions may connect, through agentvault's egress proxy.
#[derive(Serialize, ToSchema)]
pub struct EgressOut {
    /// `default`: the public internet on ports 80 and 443 (and what the operator opened with
    /// `--egress-allow`); `allowlist`: only `hosts`; `none`: no network.
    #[schema(example = "allowlist")]
    pub mode: String,
    /// Host patterns of an allowlist: `api.stripe.com`, `*.googleapis.com`, optionally `:port`.
    pub hosts: Vec<String>,
    /// False when the server runs functions without the sandbox (`--sandbox off`): then a
    /// function can go around the proxy and the policy is not enforced.
    pub enforced: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEgress {
    #[schema(pattern = "^(default|allowlist|none)$")]
    pub mode: String,
    /// Only with mode `allowlist` (1 to 100 hosts).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub hosts: Vec<String>,
}

/// Where an agent's functions may connect.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/egress", tag = "agents",
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 200, body = EgressOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_egress(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<EgressOut>> {
    Ok(Json(agents::egress(&st, &p, &ws, &agent_id).await?))
}

/// Sets where an agent's functions may connect (admins): the default policy, an allowlist of
/// hosts, or no network. Applies to connections opened from then on.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/egress", tag = "agents", request_body = SetEgress,
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 200, body = EgressOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_egress(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
    b: JsonBody<SetEgress>,
) -> ApiResult<Json<EgressOut>> {
    Ok(Json(agents::set_egress(&st, &p, &ws, &agent_id, body(b)).await?))
}
