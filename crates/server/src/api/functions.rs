//! An agent's Python functions: definitions over the API. The code is checked by the host's
//! Python before it is stored (it compiles, and it defines `def <name>(conv, <params>...)`).

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{FUNCTION_PREFIX, Function, FunctionParam, ParamType, Perm};
use agentvault_core::{Error, Result, validate};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::List;
use crate::auth::{Auth, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::{AppState, Json, now_millis, rfc3339};

/// The wall-clock limits a function may ask for, in milliseconds.
const TIMEOUT_MS: std::ops::RangeInclusive<u32> = 100..=60_000;

#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct ParamBody {
    /// A Python identifier.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `string`, `number`, `integer` or `boolean`
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFunction {
    /// Letters, digits and underscores; the Python function's name.
    pub name: String,
    /// Tells the LLM when to call the function.
    pub description: String,
    #[serde(default)]
    pub parameters: Vec<ParamBody>,
    /// Python defining `def <name>(conv: Conversation, <params>...)`.
    pub code: String,
    /// Wall-clock limit of one invocation (100–60,000 ms).
    pub timeout_ms: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceFunction {
    pub description: String,
    #[serde(default)]
    pub parameters: Vec<ParamBody>,
    pub code: String,
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
}

impl From<Function> for FunctionOut {
    fn from(f: Function) -> Self {
        FunctionOut {
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
        }
    }
}

/// Checks everything but the code's meaning; returns the parameters.
fn check_definition(
    description: &str,
    params: Vec<ParamBody>,
    code: &str,
    timeout_ms: Option<u32>,
) -> Result<Vec<FunctionParam>> {
    if description.trim().is_empty() {
        return Err(Error::invalid("description", "describe when the LLM should call this function"));
    }
    validate::description(description)?;
    if params.len() > validate::FUNCTION_PARAMS_MAX {
        return Err(Error::invalid(
            "parameters",
            format!("{} parameters given; the limit is {}", params.len(), validate::FUNCTION_PARAMS_MAX),
        ));
    }
    let mut out: Vec<FunctionParam> = Vec::with_capacity(params.len());
    for p in params {
        validate::python_name("parameters", "parameter name", &p.name)?;
        if p.name == "conv" {
            return Err(Error::invalid(
                "parameters",
                "conv is the conversation, always the first argument; it is not an LLM parameter",
            ));
        }
        if out.iter().any(|q| q.name == p.name) {
            return Err(Error::invalid("parameters", format!("the parameter {} is declared twice", p.name)));
        }
        validate::description(&p.description).map_err(|e| e.with_field("parameters"))?;
        let kind = ParamType::parse(&p.kind).ok_or_else(|| {
            Error::invalid("parameters", format!("the type of {} must be string, number, integer or boolean", p.name))
        })?;
        out.push(FunctionParam { name: p.name, description: p.description, kind });
    }
    if code.trim().is_empty() {
        return Err(Error::invalid("code", "the function definition is empty"));
    }
    if code.len() > validate::FUNCTION_CODE_MAX_BYTES {
        return Err(Error::too_large(
            "code_too_large",
            format!("the code is {} bytes; the limit is {}", code.len(), validate::FUNCTION_CODE_MAX_BYTES),
        )
        .with_field("code"));
    }
    if let Some(t) = timeout_ms.filter(|t| !TIMEOUT_MS.contains(t)) {
        return Err(Error::invalid("timeout_ms", format!("timeout_ms is {t}; it must be between 100 and 60000")));
    }
    Ok(out)
}

async fn check_code(code: &str, name: &str, params: &[FunctionParam]) -> Result<()> {
    let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
    agentvault_runtime::check_function(code, name, &names).await
}

fn function_not_found(name: &str) -> Error {
    Error::not_found("function_not_found", format!("this agent has no function named '{}'", name.escape_default()))
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
    let ws = st.workspace_for(&p, &ws, Perm::ViewAgents)?;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    let functions = st.store.list_functions(&ws.id, &agent.id).await?;
    Ok(Json(functions.into_iter().map(FunctionOut::from).collect::<Vec<_>>().into()))
}

/// Creates a function; the code must compile and define the named function.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions", tag = "functions",
    request_body = CreateFunction, params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses((status = 201, body = FunctionOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "invalid_code: the Python error and its line", body = ErrorBody)))]
pub async fn create_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
    body: Result<ApiJson<CreateFunction>, ApiError>,
) -> ApiResult<(StatusCode, Json<FunctionOut>)> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageAgents)?;
    let ApiJson(body) = body?;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    validate::python_name("name", "function name", &body.name)?;
    let params = check_definition(&body.description, body.parameters, &body.code, body.timeout_ms)?;
    check_code(&body.code, &body.name, &params).await?;
    let now = now_millis();
    let function = Function {
        id: new_id(FUNCTION_PREFIX)?,
        workspace_id: ws.id.clone(),
        agent_id: agent.id.clone(),
        name: body.name,
        description: body.description,
        parameters: params,
        code: body.code,
        timeout_ms: body.timeout_ms,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::FunctionCreate, Outcome::Success)
        .agent(&agent.id)
        .target(&function.id)
        .detail(format!("name={} version=1", function.name));
    st.store.create_function(&function, &audit).await?;
    // Nothing an earlier function left in the agent's workers outlives a change of its functions.
    st.runtime.forget_agent(&agent.id);
    Ok((StatusCode::CREATED, Json(function.into())))
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
    let ws = st.workspace_for(&p, &ws, Perm::ViewAgents)?;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    let function = st.store.get_function(&ws.id, &agent.id, &name).await?.ok_or_else(|| function_not_found(&name))?;
    Ok(Json(function.into()))
}

/// Replaces a function's definition (a new version).
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}", tag = "functions",
    request_body = ReplaceFunction,
    params(("ws" = String, Path), ("agent_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = FunctionOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn replace_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id, name)): ApiPath<(String, String, String)>,
    body: Result<ApiJson<ReplaceFunction>, ApiError>,
) -> ApiResult<Json<FunctionOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageAgents)?;
    let ApiJson(body) = body?;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    let current = st.store.get_function(&ws.id, &agent.id, &name).await?.ok_or_else(|| function_not_found(&name))?;
    let params = check_definition(&body.description, body.parameters, &body.code, body.timeout_ms)?;
    check_code(&body.code, &current.name, &params).await?;
    let now = now_millis();
    let function = Function {
        description: body.description,
        parameters: params,
        code: body.code,
        timeout_ms: body.timeout_ms,
        version: current.version + 1,
        updated_at: now,
        ..current
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::FunctionUpdate, Outcome::Success)
        .agent(&agent.id)
        .target(&function.id)
        .detail(format!("name={} version={}", function.name, function.version));
    st.store.update_function(&function, &audit).await?;
    st.runtime.forget_agent(&agent.id);
    Ok(Json(function.into()))
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
    let ws = st.workspace_for(&p, &ws, Perm::ManageAgents)?;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::FunctionDelete, Outcome::Success)
        .agent(&agent.id)
        .detail(format!("name={name}"));
    st.store.delete_function(&ws.id, &agent.id, &name, &audit).await?;
    st.runtime.forget_agent(&agent.id);
    Ok(StatusCode::NO_CONTENT)
}
