//! API keys: the credentials agents read with.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{API_KEY_PREFIX, ApiKeyMeta, Env, KeyScope, Perm, Principal};
use agentvault_core::{Error, Result, validate};

use super::{Body, agent_list};
use crate::api::keys::{ApiKeyCreated, CreateApiKey};
use crate::api::{AgentsScope, ApiKeyOut};
use crate::auth::{SHOWN_PREFIX_LEN, generate_token, hash_token, new_id};
use crate::{AppState, now_millis, parse_rfc3339};
use agentvault_core::model::API_KEY_TOKEN_PREFIX;

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
pub async fn list(st: &AppState, p: &Principal, ws: &str) -> Result<Vec<ApiKeyOut>> {
    let ws = st.workspace_for(p, ws, Perm::ViewPeople)?;
    let now = now_millis();
    let keys = st.store.list_api_keys(&ws.id).await?;
    Ok(keys.into_iter().map(|k| ApiKeyOut::new(st.with_last_use(k), now)).collect())
}

/// Creates an API key scoped to all agents or to chosen agents.
pub async fn create(st: &AppState, p: &Principal, ws: &str, body: Body<CreateApiKey>) -> Result<ApiKeyCreated> {
    let ws = st.workspace_for(p, ws, Perm::ManageApiKeys)?;
    let body = body?;
    let name = validate::display_name("name", &body.name)?;
    let scope = scope_of(body.agents)?;
    let env = match body.env.as_deref() {
        None | Some("all") => None,
        Some(e) => Some(Env::parse(e).ok_or_else(|| {
            Error::invalid(
                "env",
                format!("env is '{}'; it must be all, sandbox, pre-release or live", e.escape_default()),
            )
        })?),
    };
    let now = now_millis();
    let expires_at = body.expires_at.as_deref().map(|t| parse_rfc3339("expires_at", t)).transpose()?;
    if expires_at.is_some_and(|t| t <= now) {
        return Err(Error::invalid("expires_at", "expires_at is in the past; give a time in the future"));
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
        env,
    };
    let scope_detail = match &key.scope {
        KeyScope::All => "agents=all".to_owned(),
        KeyScope::Agents(s) => format!("agents={}", s.iter().cloned().collect::<Vec<_>>().join(",")),
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::ApiKeyCreate, Outcome::Success)
        .target(&key.id)
        .detail(format!("{scope_detail} env={}", key.env.map_or("all", |e| e.as_str())));
    let hash = hash_token(&token);
    let _w = st.write_lock.lock().await;
    st.store.create_api_key(&key, &hash, &audit).await?;
    st.model.put_api_key(hash, key.clone());
    Ok(ApiKeyCreated { key: ApiKeyOut::new(key, now), token })
}

/// Revokes an API key: it stops working on the next request. The record stays listed.
pub async fn revoke(st: &AppState, p: &Principal, ws: &str, key_id: &str) -> Result<ApiKeyOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageApiKeys)?;
    validate::id_with_prefix("key_id", API_KEY_PREFIX, key_id)?;
    let now = now_millis();
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::ApiKeyRevoke, Outcome::Success).target(key_id);
    let _w = st.write_lock.lock().await;
    let key = st.store.revoke_api_key(&ws.id, key_id, now, &audit).await?;
    st.model.revoke_api_key(&key.id, key.revoked_at.unwrap_or(now));
    Ok(ApiKeyOut::new(st.with_last_use(key), now))
}

/// One API key.
pub async fn get(st: &AppState, p: &Principal, ws: &str, key_id: &str) -> Result<ApiKeyOut> {
    let ws = st.workspace_for(p, ws, Perm::ViewPeople)?;
    let key = st.store.list_api_keys(&ws.id).await?.into_iter().find(|k| k.id == key_id).ok_or_else(|| {
        Error::not_found(
            "api_key_not_found",
            format!("no API key {} exists in this workspace", key_id.escape_default()),
        )
    })?;
    Ok(ApiKeyOut::new(st.with_last_use(key), now_millis()))
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
