use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Binding, Perm, SECRET_PREFIX, SecretMeta};
use agentvault_core::{Error, Result, SecretValue, validate};
use agentvault_store::{NewVersion, SecretChange};
use axum::extract::State;
use axum::http::StatusCode;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{List, SecretOut, SecretType, SecretValueSchema, VersionOut, agent_list, secret_name_param};
use crate::auth::{Auth, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::{AppState, Json, now_millis};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// 1–64 characters of `a-z`, `0-9` and `_`, starting with a letter; immutable.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A string (single value) or an object of strings (key/value pairs).
    #[schema(value_type = SecretValueSchema)]
    pub value: SecretValue,
    /// The agents allowed to read it.
    #[serde(default)]
    pub agents: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    pub description: Option<String>,
    /// A new value: stored as a new version.
    #[schema(value_type = Option<SecretValueSchema>)]
    pub value: Option<SecretValue>,
    /// Key/value secrets: keys whose current values carry over unchanged into the new version,
    /// next to the pairs in `value` (so changing one pair needs no other value retyped).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Not allowed: names are immutable.
    #[schema(ignore)]
    pub name: Option<IgnoredAny>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAccess {
    /// The complete new list of agents allowed to read the secret.
    pub agents: Vec<String>,
}

/// A revealed value.
#[derive(Serialize, ToSchema)]
pub struct RevealOut {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SecretType,
    pub version: u32,
    #[schema(value_type = SecretValueSchema)]
    pub value: SecretValue,
}

impl AppState {
    /// The metadata of a secret of the workspace, or 404.
    pub async fn secret_of(&self, ws: &str, name: &str) -> Result<SecretMeta> {
        secret_name_param(name)?;
        self.store.get_secret(ws, name).await?.ok_or_else(|| Error::secret_not_found(name))
    }
}

fn agents_detail(agents: &[String]) -> String {
    if agents.is_empty() { "agents=none".into() } else { format!("agents={}", agents.join(",")) }
}

/// The secrets of a workspace: metadata only, never values.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/secrets", tag = "secrets",
    params(("ws" = String, Path)),
    responses((status = 200, body = List<SecretOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_secrets(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
) -> ApiResult<Json<List<SecretOut>>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    let secrets = st.store.list_secrets(&ws.id).await?;
    Ok(Json(secrets.into_iter().map(SecretOut::from).collect::<Vec<_>>().into()))
}

/// Creates a secret (version 1) with its access list. Nothing is stored if any part is invalid.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/secrets", tag = "secrets", request_body = CreateSecret,
    params(("ws" = String, Path)),
    responses((status = 201, body = SecretOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_secret(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    body: Result<ApiJson<CreateSecret>, ApiError>,
) -> ApiResult<(StatusCode, Json<SecretOut>)> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    let ApiJson(body) = body?;
    validate::secret_name(&body.name)?;
    validate::description(&body.description)?;
    let encoded = body.value.validate_and_encode()?;
    let agents = agent_list("agents", body.agents)?;
    let _w = st.write_lock.lock().await;
    let now = now_millis();
    let meta = SecretMeta {
        id: new_id(SECRET_PREFIX)?,
        workspace_id: ws.id.clone(),
        name: body.name,
        description: body.description,
        kind: body.value.kind(),
        keys: body.value.keys(),
        version: 1,
        agents,
        created_at: now,
        updated_at: now,
    };
    let sealed = st.seal(&meta, 1, &encoded)?;
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::SecretCreate, Outcome::Success)
        .secret(&meta.name)
        .target(&meta.id)
        .detail(format!("version=1 type={} {}", meta.kind.as_str(), agents_detail(&meta.agents)));
    st.store.create_secret(&meta, &sealed, &audit).await?;
    st.model.put_secret(&meta, sealed);
    st.refresh_gauges();
    Ok((StatusCode::CREATED, Json(meta.into())))
}

/// A secret's metadata: type, key names, access list, current version. Never the value.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/secrets/{name}", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_secret(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<SecretOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    Ok(Json(st.secret_of(&ws.id, &name).await?.into()))
}

/// Changes the description and/or the value (a new value becomes a new version).
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/secrets/{name}", tag = "secrets", request_body = UpdateSecret,
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn update_secret(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    body: Result<ApiJson<UpdateSecret>, ApiError>,
) -> ApiResult<Json<SecretOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    let ApiJson(body) = body?;
    secret_name_param(&name)?;
    if body.name.is_some() {
        return Err(Error::invalid(
            "name",
            "secret names are immutable because functions reference them; create a new secret and delete this one instead",
        )
        .into());
    }
    if body.description.is_none() && body.value.is_none() {
        return Err(Error::invalid("body", "nothing to change: give a new description or value").into());
    }
    if let Some(d) = &body.description {
        validate::description(d)?;
    }
    let _w = st.write_lock.lock().await;
    let current = st.secret_of(&ws.id, &name).await?;
    let value = with_kept_pairs(&st, &ws.id, &name, body.value, body.keep)?;
    let body = UpdateSecret { value, keep: Vec::new(), ..body };
    let encoded = body.value.as_ref().map(SecretValue::validate_and_encode).transpose()?;
    let now = now_millis();
    let next = current.version + 1;
    let sealed = encoded.as_ref().map(|e| st.seal(&current, next, e)).transpose()?;
    let keys = body.value.as_ref().and_then(SecretValue::keys);
    let actor = p.actor();
    let change = SecretChange {
        secret_id: &current.id,
        expected_version: current.version,
        description: body.description.as_deref(),
        value: match (&body.value, &sealed) {
            (Some(v), Some(s)) => Some(NewVersion { kind: v.kind(), keys: keys.as_deref(), sealed: s }),
            _ => None,
        },
        now,
        actor_id: actor.id(),
    };
    let mut detail = Vec::new();
    if sealed.is_some() {
        detail.push(format!("version={next}"));
    }
    if body.description.is_some() {
        detail.push("description".to_owned());
    }
    let audit = AuditEvent::new(now, &ws.id, actor.clone(), Action::SecretUpdate, Outcome::Success)
        .secret(&name)
        .target(&current.id)
        .detail(detail.join(" "));
    let meta = st.store.update_secret(&ws.id, &change, &audit).await?;
    st.model.update_secret(&meta, sealed);
    Ok(Json(meta.into()))
}

/// A key/value value with the current values of the `keep` keys added.
fn with_kept_pairs(
    st: &AppState,
    ws: &str,
    name: &str,
    value: Option<SecretValue>,
    keep: Vec<String>,
) -> Result<Option<SecretValue>> {
    if keep.is_empty() {
        return Ok(value);
    }
    let Some(SecretValue::Kv(given)) = &value else {
        return Err(Error::invalid(
            "keep",
            "keep goes with a key/value value: the pairs to change, and the keys to keep",
        ));
    };
    let mut pairs = given.clone();
    let entry = st.model.secret(ws, name).ok_or_else(|| Error::secret_not_found(name))?;
    let current = st.open(&entry)?;
    let SecretValue::Kv(old) = &current else {
        return Err(Error::invalid("keep", "the current value is a single value; there are no pairs to keep"));
    };
    for key in keep {
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(Error::invalid(
                "keep",
                format!("key '{}' is both given a new value and kept", key.escape_default()),
            ));
        }
        let (k, v) = old.iter().find(|(k, _)| *k == key).ok_or_else(|| {
            Error::invalid("keep", format!("the current value has no key '{}' to keep", key.escape_default()))
        })?;
        pairs.push((k.clone(), v.clone()));
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(SecretValue::Kv(pairs)))
}

/// Replaces the list of agents allowed to read the secret; effective on the next read.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/secrets/{name}/access", tag = "secrets", request_body = SetAccess,
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_access(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    body: Result<ApiJson<SetAccess>, ApiError>,
) -> ApiResult<Json<SecretOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    let ApiJson(body) = body?;
    secret_name_param(&name)?;
    let agents = agent_list("agents", body.agents)?;
    let _w = st.write_lock.lock().await;
    let current = st.secret_of(&ws.id, &name).await?;
    let now = now_millis();
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::SecretAccessSet, Outcome::Success)
        .secret(&name)
        .target(&current.id)
        .detail(agents_detail(&agents));
    let meta = st.store.set_secret_access(&ws.id, &current.id, &agents, now, &audit).await?;
    st.model.update_secret(&meta, None);
    Ok(Json(meta.into()))
}

/// Deletes a secret with every version and its key material.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/secrets/{name}", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_secret(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    let _w = st.write_lock.lock().await;
    let current = st.secret_of(&ws.id, &name).await?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::SecretDelete, Outcome::Success)
        .secret(&name)
        .target(&current.id)
        .detail(format!("versions={}", current.version));
    st.store.delete_secret(&ws.id, &current.id, &audit).await?;
    st.model.remove_secret(&ws.id, &name);
    st.refresh_gauges();
    Ok(StatusCode::NO_CONTENT)
}

/// The versions of a secret, newest first (metadata only).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/secrets/{name}/versions", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = List<VersionOut>), (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<List<VersionOut>>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    let current = st.secret_of(&ws.id, &name).await?;
    let versions = st.store.list_versions(&ws.id, &current.id).await?;
    Ok(Json(versions.into_iter().map(VersionOut::from).collect::<Vec<_>>().into()))
}

/// Reveals the current value to an admin. Audited before the value is returned.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/secrets/{name}/reveal", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = RevealOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reveal_secret(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<RevealOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageSecrets)?;
    secret_name_param(&name)?;
    let entry = st.model.secret(&ws.id, &name).ok_or_else(|| Error::secret_not_found(&name))?;
    let value = st.open(&entry)?;
    st.audit
        .append(
            AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::SecretReveal, Outcome::Success)
                .secret(&name)
                .target(&entry.id)
                .detail(format!("version={}", entry.version)),
        )
        .await?;
    Ok(Json(RevealOut { name: entry.name.clone(), kind: entry.kind.into(), version: entry.version, value }))
}

impl AppState {
    /// Seals an encoded value as `version` of the secret.
    pub fn seal(&self, meta: &SecretMeta, version: u32, encoded: &[u8]) -> Result<agentvault_core::model::Sealed> {
        let binding = Binding { workspace_id: &meta.workspace_id, secret_id: &meta.id, version };
        self.keyring.seal(binding, encoded).map_err(|e| Error::internal(format!("sealing failed: {e}")))
    }
}
