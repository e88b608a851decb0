//! An agent's Python functions: definitions over the API. The code is checked by the host's
//! Python before it is stored (it compiles, and it defines `def <name>(conv, <params>...)`).

use agentvault_core::model::{Deployment, Env, Function, FunctionVersion};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::List;
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::functions;
use crate::{AppState, Json, rfc3339};

#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct ParamBody {
    /// A Python identifier.
    #[schema(pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    pub description: String,
    #[serde(rename = "type")]
    #[schema(value_type = super::doc::ParamType)]
    pub kind: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFunction {
    /// Letters, digits and underscores; the Python function's name.
    #[schema(pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    pub name: String,
    /// Tells the LLM when to call the function (not blank).
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub description: String,
    #[serde(default)]
    pub parameters: Vec<ParamBody>,
    /// Python defining `def <name>(conv: Conversation, <params>...)`.
    pub code: String,
    /// Wall-clock limit of one invocation (100–60,000 ms).
    #[schema(minimum = 100, maximum = 60_000)]
    pub timeout_ms: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceFunction {
    /// Tells the LLM when to call the function (not blank).
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub description: String,
    #[serde(default)]
    pub parameters: Vec<ParamBody>,
    pub code: String,
    /// Wall-clock limit of one invocation (100–60,000 ms).
    #[schema(minimum = 100, maximum = 60_000)]
    pub timeout_ms: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct FunctionOut {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    pub description: String,
    pub parameters: Vec<ParamBody>,
    pub code: String,
    pub timeout_ms: Option<u32>,
    pub version: u32,
    pub created_at: String,
    pub updated_at: String,
    /// The secrets the code names (`get_secret('<literal>')` calls), with their lines, in line
    /// order; found by the code check when the function was saved.
    pub secret_refs: Vec<SecretRefOut>,
    /// The parameters the definition gives no default: an invocation must pass them (400
    /// otherwise, before the code runs).
    pub required: Vec<String>,
    /// Which version each environment runs: sandbox the latest saved one (`version`),
    /// pre-release and live the one deployed there (absent: none is; a conversation there gets
    /// 409 `not_deployed`).
    pub environments: EnvironmentsOut,
}

/// Which version each environment runs.
#[derive(Serialize, ToSchema)]
pub struct EnvironmentsOut {
    pub sandbox: SandboxOut,
    #[serde(rename = "pre-release", skip_serializing_if = "Option::is_none")]
    pub pre_release: Option<DeploymentOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<DeploymentOut>,
}

/// Sandbox runs the latest saved version.
#[derive(Serialize, ToSchema)]
pub struct SandboxOut {
    pub version: u32,
}

/// A version deployed to an environment.
#[derive(Serialize, ToSchema)]
pub struct DeploymentOut {
    pub version: u32,
    /// Who deployed it (a user id; `system` for the deployments made when agentvault was
    /// upgraded to environments).
    pub deployed_by: String,
    pub deployed_at: String,
    /// Deployed by an admin (or the system): this version may read protected secrets.
    pub by_admin: bool,
}

impl From<&Deployment> for DeploymentOut {
    fn from(d: &Deployment) -> Self {
        DeploymentOut {
            version: d.version,
            deployed_by: d.deployed_by.clone(),
            deployed_at: rfc3339(d.deployed_at),
            by_admin: d.by_admin,
        }
    }
}

/// A deployment: which saved version an environment runs.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// `pre-release` (members and admins) or `live` (admins only).
    #[schema(value_type = super::doc::Env)]
    pub env: String,
    /// A saved version (an older one rolls back).
    #[schema(minimum = 1)]
    pub version: u32,
}

/// One saved version of a function: immutable.
#[derive(Serialize, ToSchema)]
pub struct FunctionVersionOut {
    pub version: u32,
    pub description: String,
    pub parameters: Vec<ParamBody>,
    pub code: String,
    pub timeout_ms: Option<u32>,
    pub created_at: String,
    /// Who saved it (a user id; `system` for the version kept when agentvault was upgraded to
    /// environments).
    pub created_by: String,
}

impl From<FunctionVersion> for FunctionVersionOut {
    fn from(v: FunctionVersion) -> Self {
        FunctionVersionOut {
            version: v.version,
            description: v.description,
            parameters: v
                .parameters
                .into_iter()
                .map(|p| ParamBody { name: p.name, description: p.description, kind: p.kind.as_str().to_owned() })
                .collect(),
            code: v.code,
            timeout_ms: v.timeout_ms,
            created_at: rfc3339(v.created_at),
            created_by: v.created_by,
        }
    }
}

/// A `get_secret('<name>')` call in a function's code.
#[derive(Serialize, ToSchema, Clone)]
pub struct SecretRefOut {
    pub secret: String,
    /// 1-based.
    pub line: u32,
}

impl From<Function> for FunctionOut {
    fn from(f: Function) -> Self {
        let deployed = |env: Env| f.deployments.iter().find(|d| d.env == env).map(DeploymentOut::from);
        let environments = EnvironmentsOut {
            sandbox: SandboxOut { version: f.version },
            pre_release: deployed(Env::PreRelease),
            live: deployed(Env::Live),
        };
        FunctionOut {
            environments,
            required: f.parameters.iter().filter(|p| p.required).map(|p| p.name.clone()).collect(),
            parameters: f
                .parameters
                .into_iter()
                .map(|p| ParamBody { name: p.name, description: p.description, kind: p.kind.as_str().to_owned() })
                .collect(),
            id: f.id,
            agent_id: f.agent_id,
            name: f.name,
            description: f.description,
            code: f.code,
            timeout_ms: f.timeout_ms,
            version: f.version,
            created_at: rfc3339(f.created_at),
            updated_at: rfc3339(f.updated_at),
            secret_refs: f.secret_refs.into_iter().map(|r| SecretRefOut { secret: r.secret, line: r.line }).collect(),
        }
    }
}

/// An agent's functions.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions", tag = "functions",
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 200, body = List<FunctionOut>), (status = 404, body = ErrorBody)))]
pub async fn list_functions(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<List<FunctionOut>>> {
    Ok(Json(functions::list(&st, &p, &ws, &agent_id).await?.into()))
}

/// Creates a function; the code must compile and define the named function.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions", tag = "functions",
    request_body = CreateFunction, params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 201, body = FunctionOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, description = "code_too_large: the code is over 64 KiB, or payload_too_large: the body is", body = ErrorBody),
        (status = 422, description = "invalid_code: the Python error and its line", body = ErrorBody)))]
pub async fn create_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
    b: JsonBody<CreateFunction>,
) -> ApiResult<(StatusCode, Json<FunctionOut>)> {
    Ok((StatusCode::CREATED, Json(functions::create(&st, &p, &ws, &agent_id, body(b)).await?)))
}

/// One function.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}", tag = "functions",
    params(("ws" = String, Path), ("agent_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = FunctionOut), (status = 404, body = ErrorBody)))]
pub async fn get_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id, name)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<FunctionOut>> {
    Ok(Json(functions::get(&st, &p, &ws, &agent_id, &name).await?))
}

/// Replaces a function's definition (a new version).
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}", tag = "functions",
    request_body = ReplaceFunction,
    params(("ws" = String, Path), ("agent_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = FunctionOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, description = "code_too_large: the code is over 64 KiB, or payload_too_large: the body is", body = ErrorBody),
        (status = 422, description = "invalid_code: the Python error and its line", body = ErrorBody)))]
pub async fn replace_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id, name)): ApiPath<(String, String, String)>,
    b: JsonBody<ReplaceFunction>,
) -> ApiResult<Json<FunctionOut>> {
    Ok(Json(functions::replace(&st, &p, &ws, &agent_id, &name, body(b)).await?))
}

/// Deletes a function.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}", tag = "functions",
    params(("ws" = String, Path), ("agent_id" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id, name)): ApiPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    functions::delete(&st, &p, &ws, &agent_id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The saved versions of a function, newest first, with who saved each and when.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}/versions", tag = "functions",
    params(("ws" = String, Path), ("agent_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = List<FunctionVersionOut>), (status = 404, body = ErrorBody)))]
pub async fn function_versions(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id, name)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<List<FunctionVersionOut>>> {
    Ok(Json(functions::versions(&st, &p, &ws, &agent_id, &name).await?.into()))
}

/// Deploys a saved version to pre-release (members and admins) or live (admins only); deploying
/// an older version rolls back. Conversations in that environment run it from the next
/// invocation.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}/deploy", tag = "functions",
    request_body = DeployBody,
    params(("ws" = String, Path), ("agent_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = FunctionOut), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden: deploying to live needs the admin role", body = ErrorBody),
        (status = 404, description = "function_not_found, or version_not_found: no such saved version", body = ErrorBody)))]
pub async fn deploy_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id, name)): ApiPath<(String, String, String)>,
    b: JsonBody<DeployBody>,
) -> ApiResult<Json<FunctionOut>> {
    Ok(Json(functions::deploy(&st, &p, &ws, &agent_id, &name, body(b)).await?))
}
