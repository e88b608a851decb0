//! The agent read path: what `conv.utils.get_secret` uses outside the built-in runtime. Served
//! from the read model; the only database work is the (group-committed) audit append.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{AGENT_PREFIX, Actor};
use agentvault_core::{Error, SecretValue, validate};
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::{SecretType, SecretValueSchema};
use crate::auth::Authorization;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiPath;
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
    let ws = key.meta.workspace_id.as_str();
    let agent_ok = validate::id_with_prefix("agent_id", AGENT_PREFIX, &agent_id).is_ok();
    let name_ok = validate::secret_name(&name).is_ok();
    // Only well-formed names and ids go into the log.
    let event = |outcome: Outcome, detail: String| {
        let mut e =
            AuditEvent::new(now, ws, Actor::ApiKey(key.meta.id.clone()), Action::SecretRead, outcome).detail(detail);
        if name_ok {
            e = e.secret(&name);
        }
        if agent_ok {
            e = e.agent(&agent_id);
        }
        e
    };
    let deny = async |outcome: Outcome, err: Error, metric: &'static str| {
        st.metrics.read(metric);
        st.audit.append_nowait(event(outcome, err.code.to_string()));
        err
    };

    if let Err(e) = validate::secret_name(&name) {
        return Err(deny(Outcome::Invalid, e, "invalid").await.into());
    }
    if !key.meta.scope.covers(&agent_id) || !st.model.agent_in(ws, &agent_id) {
        return Err(deny(Outcome::Denied, Error::missing_access(&agent_id, &name), "denied").await.into());
    }
    let Some(entry) = st.model.secret(ws, &name) else {
        return Err(deny(Outcome::NotFound, Error::secret_not_found(&name), "not_found").await.into());
    };
    if !entry.access.contains(&agent_id) {
        return Err(deny(Outcome::Denied, Error::missing_access(&agent_id, &name), "denied").await.into());
    }
    let value = st.open(&entry)?;
    st.audit.append(event(Outcome::Success, format!("version={}", entry.version))).await?;
    st.metrics.read("allowed");
    Ok(Json(AgentReadOut { name, kind: entry.kind.into(), value }))
}
