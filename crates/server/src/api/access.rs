//! Members ask for an agent's access to a secret; admins approve or decline.

use agentvault_core::model::AccessRequest;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::List;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::access;
use crate::{AppState, Json, rfc3339};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestAccess {
    /// The secret the agent's functions need.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub secret: String,
}

/// A request that an agent may read a secret.
#[derive(Serialize, ToSchema, Clone)]
pub struct AccessRequestOut {
    pub id: String,
    pub agent_id: String,
    pub secret: String,
    /// The user who asked.
    pub requested_by: String,
    pub requested_at: String,
    /// `pending`, `approved` or `declined`
    pub status: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
}

impl From<AccessRequest> for AccessRequestOut {
    fn from(r: AccessRequest) -> Self {
        AccessRequestOut {
            id: r.id,
            agent_id: r.agent_id,
            secret: r.secret_name,
            requested_by: r.requested_by,
            requested_at: rfc3339(r.requested_at),
            status: r.status,
            decided_by: r.decided_by,
            decided_at: r.decided_at.map(rfc3339),
        }
    }
}

/// Asks that an agent may read a secret (members and admins). An admin of the workspace
/// approves or declines it; the answer is audited.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/access-requests", tag = "secrets",
    request_body = RequestAccess, params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 201, body = AccessRequestOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn request_access(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
    b: JsonBody<RequestAccess>,
) -> ApiResult<(StatusCode, Json<AccessRequestOut>)> {
    Ok((StatusCode::CREATED, Json(access::request(&st, &p, &ws, &agent_id, body(b)).await?)))
}

/// The workspace's requests for access, newest first (admins).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/access-requests", tag = "secrets",
    params(("ws" = String, Path)),
    responses((status = 200, body = List<AccessRequestOut>), (status = 403, body = ErrorBody)))]
pub async fn list_access_requests(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
) -> ApiResult<Json<List<AccessRequestOut>>> {
    Ok(Json(access::list(&st, &p, &ws).await?.into()))
}

/// Approves a pending request: the agent is added to the secret's access list (effective on the
/// next read).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/access-requests/{request_id}/approve", tag = "secrets",
    params(("ws" = String, Path), ("request_id" = String, Path)),
    responses((status = 200, body = AccessRequestOut), (status = 404, body = ErrorBody)))]
pub async fn approve_access_request(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, request_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<AccessRequestOut>> {
    Ok(Json(access::decide(&st, &p, &ws, &request_id, true).await?))
}

/// Declines a pending request.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/access-requests/{request_id}/decline", tag = "secrets",
    params(("ws" = String, Path), ("request_id" = String, Path)),
    responses((status = 200, body = AccessRequestOut), (status = 404, body = ErrorBody)))]
pub async fn decline_access_request(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, request_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<AccessRequestOut>> {
    Ok(Json(access::decide(&st, &p, &ws, &request_id, false).await?))
}
