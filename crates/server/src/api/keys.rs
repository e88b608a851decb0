use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{API_KEY_PREFIX, ApiKeyMeta, KeyScope, Perm};
use agentvault_core::{Error, Result, validate};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AgentsScope, ApiKeyOut, List, agent_list};
use crate::auth::{API_KEY_TOKEN_PREFIX, Auth, SHOWN_PREFIX_LEN, generate_token, hash_token, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::{AppState, Json, now_millis, parse_rfc3339};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// `"all"` or a list of agent ids.
    pub agents: AgentsScope,
    /// RFC 3339 time after which the key stops working, e.g. `2027-01-31T00:00:00Z`.
    pub expires_at: Option<String>,
}

/// A new key; the token is shown here once and never again.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key: ApiKeyOut,
    pub token: String,
}

fn scope_of(agents: AgentsScope) -> Result<KeyScope> {
    match agents {
        AgentsScope::All(s) if s == "all" => Ok(KeyScope::All),
        AgentsScope::All(_) => Err(Error::invalid("agents", "agents must be \"all\" or a list of agent ids")),
        AgentsScope::Agents(list) if list.is_empty() => {
            Err(Error::invalid("agents", "choose at least one agent, or \"all\""))
        }
        AgentsScope::Agents(list) => Ok(KeyScope::Agents(agent_list("agents", list)?.into_iter().collect())),
    }
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
    let ws = st.workspace_for(&p, &ws, Perm::ViewPeople)?;
    let now = now_millis();
    let keys = st.store.list_api_keys(&ws.id).await?;
    Ok(Json(keys.into_iter().map(|k| ApiKeyOut::new(st.with_last_use(k), now)).collect::<Vec<_>>().into()))
}

/// Creates an API key scoped to all agents or to chosen agents.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/api-keys", tag = "api-keys", request_body = CreateApiKey,
    params(("ws" = String, Path)),
    responses((status = 201, body = ApiKeyCreated), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_key(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    body: Result<ApiJson<CreateApiKey>, ApiError>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageApiKeys)?;
    let ApiJson(body) = body?;
    let name = validate::display_name("name", &body.name)?;
    let scope = scope_of(body.agents)?;
    let now = now_millis();
    let expires_at = body.expires_at.as_deref().map(|t| parse_rfc3339("expires_at", t)).transpose()?;
    if expires_at.is_some_and(|t| t <= now) {
        return Err(Error::invalid("expires_at", "expires_at is in the past; give a time in the future").into());
    }
    let token = generate_token(API_KEY_TOKEN_PREFIX)?;
    let key = ApiKeyMeta {
        id: new_id(API_KEY_PREFIX)?,
        workspace_id: ws.id.clone(),
        name,
        prefix: token[..SHOWN_PREFIX_LEN].to_owned(),
        scope,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        created_by: p.actor().id().to_owned(),
    };
    let scope_detail = match &key.scope {
        KeyScope::All => "agents=all".to_owned(),
        KeyScope::Agents(s) => format!("agents={}", s.iter().cloned().collect::<Vec<_>>().join(",")),
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::ApiKeyCreate, Outcome::Success)
        .target(&key.id)
        .detail(scope_detail);
    let hash = hash_token(&token);
    let _w = st.write_lock.lock().await;
    st.store.create_api_key(&key, &hash, &audit).await?;
    st.model.put_api_key(hash, key.clone());
    Ok((StatusCode::CREATED, Json(ApiKeyCreated { key: ApiKeyOut::new(key, now), token })))
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
    let ws = st.workspace_for(&p, &ws, Perm::ManageApiKeys)?;
    validate::id_with_prefix("key_id", API_KEY_PREFIX, &key_id)?;
    let now = now_millis();
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::ApiKeyRevoke, Outcome::Success).target(&key_id);
    let _w = st.write_lock.lock().await;
    let key = st.store.revoke_api_key(&ws.id, &key_id, now, &audit).await?;
    st.model.revoke_api_key(&key.id, key.revoked_at.unwrap_or(now));
    Ok(Json(ApiKeyOut::new(st.with_last_use(key), now)))
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
    let ws = st.workspace_for(&p, &ws, Perm::ViewPeople)?;
    let key = st.store.list_api_keys(&ws.id).await?.into_iter().find(|k| k.id == key_id).ok_or_else(|| {
        Error::not_found(
            "api_key_not_found",
            format!("no API key {} exists in this workspace", key_id.escape_default()),
        )
    })?;
    Ok(Json(ApiKeyOut::new(st.with_last_use(key), now_millis())))
}

impl AppState {
    /// The key with its last use as known in memory (newer than the database between flushes).
    fn with_last_use(&self, mut key: ApiKeyMeta) -> ApiKeyMeta {
        if let Some(entry) = self.model.api_keys().into_iter().find(|e| e.meta.id == key.id) {
            key.last_used_at = entry.last_used_at().max(key.last_used_at);
        }
        key
    }
}
