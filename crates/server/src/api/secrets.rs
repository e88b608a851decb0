use agentvault_core::SecretValue;
use axum::extract::State;
use axum::http::StatusCode;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::doc::AgentId;
use super::{List, SecretOut, SecretType, SecretValueSchema, VersionOut};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, JsonBody, body, query};
use crate::service::secrets;
use crate::{AppState, Json};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// 1–64 characters of `a-z`, `0-9` and `_`, starting with a letter; immutable.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    pub description: String,
    /// A string (single value) or an object of strings (key/value pairs).
    #[schema(value_type = SecretValueSchema)]
    pub value: SecretValue,
    /// The agents allowed to read it.
    #[serde(default)]
    #[schema(inline, value_type = Vec<AgentId>)]
    pub agents: Vec<String>,
    /// Environments' own values (each single or key/value, at version 1): an environment
    /// without one reads `value`.
    #[serde(default)]
    pub values: EnvValuesIn,
    /// Hand its value only to function versions an admin deployed (pre-release, live); code in
    /// sandbox gets only its own sandbox value.
    #[serde(default)]
    pub protected: bool,
}

/// Environments' own values.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvValuesIn {
    #[schema(value_type = Option<SecretValueSchema>)]
    pub sandbox: Option<SecretValue>,
    #[serde(rename = "pre-release")]
    #[schema(value_type = Option<SecretValueSchema>)]
    pub pre_release: Option<SecretValue>,
    #[schema(value_type = Option<SecretValueSchema>)]
    pub live: Option<SecretValue>,
}

/// Changes to environments' own values: a value is stored as a new version of that
/// environment's value; `null` removes it (the environment reads the default again).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvValuesChange {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<SecretValueSchema>)]
    pub sandbox: Option<Option<SecretValue>>,
    #[serde(rename = "pre-release", default, deserialize_with = "present")]
    #[schema(value_type = Option<SecretValueSchema>)]
    pub pre_release: Option<Option<SecretValue>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<SecretValueSchema>)]
    pub live: Option<Option<SecretValue>>,
}

/// A field that is present: `Some(None)` for `null`, absent stays `None` (by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<SecretValue>>, D::Error> {
    Option::<SecretValue>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    pub description: Option<String>,
    /// A new value: stored as a new version.
    #[schema(value_type = Option<SecretValueSchema>)]
    pub value: Option<SecretValue>,
    /// Key/value secrets: keys whose current values carry over unchanged into the new version,
    /// next to the pairs in `value` (so changing one pair needs no other value retyped).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Environments' own values: a new version of each given, `null` removes one.
    pub values: Option<EnvValuesChange>,
    /// Switches the protected flag.
    pub protected: Option<bool>,
    /// Not allowed: names are immutable.
    #[schema(ignore)]
    pub name: Option<IgnoredAny>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAccess {
    /// The complete new list of agents allowed to read the secret.
    #[schema(value_type = Vec<AgentId>)]
    pub agents: Vec<String>,
}

/// A revealed value.
#[derive(Serialize, ToSchema)]
pub struct RevealOut {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SecretType,
    pub version: u32,
    /// The whole value, or with `?key=` that key's value (a string).
    #[schema(value_type = SecretValueSchema)]
    pub value: SecretValue,
    /// The key revealed, with `?key=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The environment whose own value was revealed, with `?env=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::doc::Env>)]
    pub env: Option<String>,
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
    Ok(Json(secrets::list(&st, &p, &ws).await?.into()))
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
    b: JsonBody<CreateSecret>,
) -> ApiResult<(StatusCode, Json<SecretOut>)> {
    Ok((StatusCode::CREATED, Json(secrets::create(&st, &p, &ws, body(b)).await?)))
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
    Ok(Json(secrets::get(&st, &p, &ws, &name).await?))
}

/// Changes the description and/or the value (a new value becomes a new version).
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/secrets/{name}", tag = "secrets", request_body = UpdateSecret,
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn update_secret(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    b: JsonBody<UpdateSecret>,
) -> ApiResult<Json<SecretOut>> {
    Ok(Json(secrets::update(&st, &p, &ws, &name, body(b)).await?))
}

/// Replaces the list of agents allowed to read the secret; effective on the next read.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/secrets/{name}/access", tag = "secrets", request_body = SetAccess,
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_access(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    b: JsonBody<SetAccess>,
) -> ApiResult<Json<SecretOut>> {
    Ok(Json(secrets::set_access(&st, &p, &ws, &name, body(b)).await?))
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
    secrets::delete(&st, &p, &ws, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The versions of a secret, newest first (metadata only).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// List the versions of this environment's own value (also of a removed one) instead of the
    /// default value's.
    #[param(value_type = Option<super::doc::Env>)]
    pub env: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/secrets/{name}/versions", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path), VersionsQuery),
    responses((status = 200, body = List<VersionOut>), (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    q: Result<ApiQuery<VersionsQuery>, ApiError>,
) -> ApiResult<Json<List<VersionOut>>> {
    let env = query(q)?.env;
    Ok(Json(secrets::versions_in(&st, &p, &ws, &name, env.as_deref()).await?.into()))
}

/// Several new secrets, created together.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSecrets {
    /// 1–100 secrets, each as for creating one (default values only); names unique among them
    /// and in the workspace.
    #[schema(min_items = 1, max_items = 100)]
    pub secrets: Vec<ImportSecret>,
}

/// A secret to import: created with its default value (environment values and the protected
/// flag are set afterwards with PATCH).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSecret {
    /// 1–64 characters of `a-z`, `0-9` and `_`, starting with a letter; immutable.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    pub description: String,
    /// A string (single value) or an object of strings (key/value pairs).
    #[schema(value_type = SecretValueSchema)]
    pub value: SecretValue,
    /// The agents allowed to read it.
    #[serde(default)]
    #[schema(inline, value_type = Vec<AgentId>)]
    pub agents: Vec<String>,
}

/// Creates several secrets at once (e.g. from a `.env` file): every one is checked first, and
/// either all are created or none.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/secret-imports", tag = "secrets", request_body = ImportSecrets,
    params(("ws" = String, Path)),
    responses((status = 201, body = List<SecretOut>), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn import_secrets(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    b: JsonBody<ImportSecrets>,
) -> ApiResult<(StatusCode, Json<List<SecretOut>>)> {
    Ok((StatusCode::CREATED, Json(secrets::import(&st, &p, &ws, body(b)).await?.into())))
}

/// Restores an earlier version: its value becomes a new version, the current one (the history is
/// kept). The value is never returned.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/secrets/{name}/versions/{version}/restore", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path), ("version" = u32, Path, minimum = 1)),
    responses((status = 200, body = SecretOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn restore_version(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name, version)): ApiPath<(String, String, u32)>,
) -> ApiResult<Json<SecretOut>> {
    Ok(Json(secrets::restore(&st, &p, &ws, &name, version).await?))
}

/// A function whose code names a secret.
#[derive(Serialize, ToSchema)]
pub struct FunctionUseOut {
    pub agent_id: String,
    pub agent_name: String,
    pub function: String,
    /// The line of the `get_secret` call (1-based).
    pub line: u32,
    /// Whether the function's agent may read the secret now.
    pub can_read: bool,
}

/// An agent that can read a secret or whose functions name it.
#[derive(Serialize, ToSchema)]
pub struct AgentUseOut {
    pub agent_id: String,
    pub agent_name: String,
    /// On the secret's access list.
    pub has_access: bool,
    /// The agent's last successful read of the secret (from the audit log), if any.
    pub last_read_at: Option<String>,
}

/// Who uses a secret: what would break if it were revoked or deleted.
#[derive(Serialize, ToSchema)]
pub struct SecretUsageOut {
    /// The functions whose code names the secret (`get_secret('<name>')`, found when each was
    /// saved), by agent, function and line.
    pub functions: Vec<FunctionUseOut>,
    /// The agents that can read it or whose functions name it, by name.
    pub agents: Vec<AgentUseOut>,
}

/// Who uses a secret: the functions that name it and, for each agent that can read it or whose
/// functions name it, its last successful read.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/secrets/{name}/usage", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SecretUsageOut), (status = 404, body = ErrorBody)))]
pub async fn secret_usage(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<SecretUsageOut>> {
    Ok(Json(secrets::usage(&st, &p, &ws, &name).await?))
}

/// What to reveal.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevealQuery {
    /// For a key/value secret: reveal only this key's value (the audit record names the key).
    #[param(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    pub key: Option<String>,
    /// Reveal this environment's own value (404 `env_value_not_found` if it has none) instead of
    /// the default value.
    #[param(value_type = Option<super::doc::Env>)]
    pub env: Option<String>,
}

/// Reveals the current value to an admin, or one key's value with `?key=`. Audited before the
/// value is returned.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/secrets/{name}/reveal", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path), RevealQuery),
    responses((status = 200, body = RevealOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reveal_secret(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    q: Result<ApiQuery<RevealQuery>, ApiError>,
) -> ApiResult<Json<RevealOut>> {
    Ok(Json(secrets::reveal(&st, &p, &ws, &name, query(q)).await?))
}
