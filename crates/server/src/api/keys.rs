use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AgentsScope, ApiKeyOut, List};
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::keys;
use crate::{AppState, Json};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// `"all"` or a list of agent ids.
    pub agents: AgentsScope,
    /// RFC 3339 time after which the key stops working, e.g. `2027-01-31T00:00:00Z`.
    pub expires_at: Option<String>,
    /// The environment it reads values for (`sandbox`, `pre-release`, `live`), or `all` (the
    /// default): a read then chooses with `?env=`.
    #[schema(pattern = "^(all|sandbox|pre-release|live)$")]
    pub env: Option<String>,
}

/// A new key; the token is shown here once and never again.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key: ApiKeyOut,
    pub token: String,
}

/// The API keys of a workspace (never their tokens).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/api-keys", tag = "api-keys",
    params(("ws" = String, Path)),
    responses((status = 200, body = List<ApiKeyOut>), (status = 403, body = ErrorBody)))]
pub async fn list_keys(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
) -> ApiResult<Json<List<ApiKeyOut>>> {
    Ok(Json(keys::list(&st, &p, &ws).await?.into()))
}

/// Creates an API key scoped to all agents or to chosen agents.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/api-keys", tag = "api-keys", request_body = CreateApiKey,
    params(("ws" = String, Path)),
    responses((status = 201, body = ApiKeyCreated), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_key(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    b: JsonBody<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    Ok((StatusCode::CREATED, Json(keys::create(&st, &p, &ws, body(b)).await?)))
}

/// Revokes an API key: it stops working on the next request. The record stays listed.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/api-keys/{key_id}", tag = "api-keys",
    params(("ws" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyOut), (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, key_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ApiKeyOut>> {
    Ok(Json(keys::revoke(&st, &p, &ws, &key_id).await?))
}

/// One API key.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/api-keys/{key_id}", tag = "api-keys",
    params(("ws" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyOut), (status = 404, body = ErrorBody)))]
pub async fn get_key(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, key_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ApiKeyOut>> {
    Ok(Json(keys::get(&st, &p, &ws, &key_id).await?))
}
