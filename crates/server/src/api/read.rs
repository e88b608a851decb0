//! The agent read path: what `conv.utils.get_secret` uses outside the built-in runtime. The
//! policy is [`crate::service::read`]'s, shared with functions run by the built-in runtime.

use agentvault_core::SecretValue;
use axum::extract::State;
use axum::http::HeaderValue;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{SecretType, SecretValueSchema};
use crate::auth::Authorization;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, query};
use crate::service::read;
use crate::{AppState, Json, now_millis};

#[derive(Serialize, ToSchema)]
pub struct AgentReadOut {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SecretType,
    #[schema(value_type = SecretValueSchema)]
    pub value: SecretValue,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// The environment to read the value for, with a key of every environment (its own value,
    /// else the default; without it, the default). A key of one environment reads that one's.
    #[param(value_type = Option<super::doc::Env>)]
    pub env: Option<String>,
}

/// Reads a secret as an agent, with an API key whose scope covers the agent: the value for the
/// key's environment (its own value, else the default).
#[utoipa::path(get, path = "/api/v1/agents/{agent_id}/secrets/{name}", tag = "agent read",
    params(("agent_id" = String, Path), ("name" = String, Path), ReadQuery),
    responses(
        (status = 200, body = AgentReadOut),
        (status = 400, description = "invalid_input: malformed secret name", body = ErrorBody),
        (status = 401, description = "unauthenticated: missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "missing_access: the agent may not read it, the key is not scoped to the agent, or the secret is protected and a sandbox read finds no sandbox value; wrong_environment: `?env=` names another environment than the key's", body = ErrorBody),
        (status = 404, description = "secret_not_found", body = ErrorBody)))]
pub async fn read_secret(
    State(st): State<AppState>,
    Authorization(auth): Authorization,
    ApiPath((agent_id, name)): ApiPath<(String, String)>,
    q: Result<ApiQuery<ReadQuery>, ApiError>,
) -> ApiResult<Json<AgentReadOut>> {
    answer(&st, auth.as_ref(), agent_id, name, query(q)).await
}

/// The route of agent reads, as the OpenAPI document and the request metrics name it.
pub const ROUTE: &str = "/api/v1/agents/{agent_id}/secrets/{name}";

/// The agent id and secret name of a path of [`ROUTE`] in which neither has a percent-encoded
/// character (those the router decodes), else `None`.
pub fn plain_path(path: &str) -> Option<(&str, &str)> {
    // An agent id has no '/': the first one ends it (a search by byte, where "/secrets/" as a
    // pattern would build a substring searcher on every read).
    let (agent_id, rest) = path.strip_prefix("/api/v1/agents/")?.split_once('/')?;
    let name = rest.strip_prefix("secrets/")?;
    // Byte by byte: a pattern of chars would decode each character first.
    let plain = |s: &str| !s.is_empty() && !s.bytes().any(|b| b == b'/' || b == b'%');
    (plain(agent_id) && plain(name)).then_some((agent_id, name))
}

/// Answers an agent read: [`read_secret`]'s work, also done by [`crate::front`] for plain paths
/// without the router. The credential is checked before the query, so an unauthenticated caller
/// learns nothing about its request.
pub async fn answer(
    st: &AppState,
    authorization: Option<&HeaderValue>,
    agent_id: String,
    name: String,
    q: agentvault_core::Result<ReadQuery>,
) -> ApiResult<Json<AgentReadOut>> {
    let now = now_millis();
    let key = match st.authenticate_api_key(authorization, now) {
        Ok(key) => key,
        Err(e) => return Err(st.refuse_personal_token(authorization, e, now).await.into()),
    };
    let env = q?.env;
    Ok(Json(read::read_with_key(st, &key, agent_id, name, env.as_deref(), now).await?))
}

/// [`answer`] for a request without a query string, done at once where nothing in it waits (see
/// [`read::agent_read_now`]) and the credential needs no lookup in the database. `None`: use
/// [`answer`].
pub fn answer_now(
    st: &AppState,
    authorization: Option<&HeaderValue>,
    agent_id: &str,
    name: &str,
) -> Option<ApiResult<Json<AgentReadOut>>> {
    if !st.audit.appends_here() {
        return None;
    }
    let now = now_millis();
    let key = match st.authenticate_api_key(authorization, now) {
        Ok(key) => key,
        Err(e) if crate::auth::personal_token_to_check(authorization, &e).is_some() => return None,
        Err(e) => return Some(Err(e.into())),
    };
    let read = read::read_with_key_now(st, &key, agent_id, name, None, now)?;
    Some(read.map(Json).map_err(Into::into))
}
