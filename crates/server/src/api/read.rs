//! The agent read path: what `conv.utils.get_secret` uses outside the built-in runtime. The
//! policy is [`crate::service::read`]'s, shared with functions run by the built-in runtime.

use agentvault_core::SecretValue;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::{SecretType, SecretValueSchema};
use crate::auth::Authorization;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiPath;
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

/// Reads a secret as an agent, with an API key whose scope covers the agent.
#[utoipa::path(get, path = "/api/v1/agents/{agent_id}/secrets/{name}", tag = "agent read",
    params(("agent_id" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, body = AgentReadOut),
        (status = 400, description = "invalid_input: malformed secret name", body = ErrorBody),
        (status = 401, description = "unauthenticated: missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "missing_access: the agent may not read it, or the key is not scoped to the agent", body = ErrorBody),
        (status = 404, description = "secret_not_found", body = ErrorBody)))]
pub async fn read_secret(
    State(st): State<AppState>,
    Authorization(auth): Authorization,
    ApiPath((agent_id, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<AgentReadOut>> {
    let now = now_millis();
    let key = match st.authenticate_api_key(auth.as_ref(), now) {
        Ok(key) => key,
        Err(e) => return Err(st.refuse_personal_token(auth.as_ref(), e, now).await.into()),
    };
    Ok(Json(read::read_with_key(&st, &key, agent_id, name).await?))
}
