//! Running an agent's function: `POST .../functions/{name}/invoke`. The function runs in one of
//! the agent's workers; its `conv.utils.get_secret` calls are answered here, from the read
//! model, for that agent only, and each is audited as a read by the agent.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Actor, Function, ParamType, Perm, Principal};
use agentvault_core::{Error, Result, validate};
use agentvault_runtime::{Invocation, SecretAnswer, SecretSource};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::auth::{Auth, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::{AppState, Json, now_millis};

/// Prefix of invocation ids.
pub const INVOCATION_PREFIX: &str = "inv_";
/// Prefix of conversation ids made up for invocations that name none.
pub const CONVERSATION_PREFIX: &str = "conv_";
const ENVS: [&str; 3] = ["sandbox", "pre-release", "live"];
const CONVERSATION_ID_MAX: usize = 128;

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ConversationIn {
    /// The conversation's id (`conv.id`); one is made up when absent.
    pub id: Option<String>,
    /// `sandbox` (default), `pre-release` or `live` (`conv.env`).
    pub env: Option<String>,
    /// `conv.state` at the start; the changed state comes back in the answer.
    #[schema(value_type = Object)]
    pub state: Option<Map<String, Value>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// The LLM parameters, by name; checked against their declared types.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
    #[serde(default)]
    pub conversation: ConversationIn,
}

#[derive(Serialize, ToSchema)]
pub struct LogOut {
    /// `info`, `warning`, `error`, or `stdout` / `stderr` for printed lines.
    pub level: String,
    pub content: String,
    pub is_pii: bool,
}

#[derive(Serialize, ToSchema)]
pub struct InvokeErrorOut {
    /// The exception's class (`SecretNotFound`, `MissingAccess`, `InvalidInput`, `ValueError`,
    /// ...), or `Timeout`, `WorkerCrashed`, `OutputTooLarge`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
}

#[derive(Serialize, ToSchema)]
pub struct InvokeOut {
    pub invocation_id: String,
    pub conversation_id: String,
    /// What the function returned: a string, an object, or null. Secret values it read are
    /// replaced by `[redacted:<name>]` here and everywhere else in the answer.
    #[schema(value_type = Object)]
    pub result: Value,
    #[schema(value_type = Object)]
    pub state: Value,
    pub utterances: Vec<String>,
    pub logs: Vec<LogOut>,
    pub error: Option<InvokeErrorOut>,
    /// Logs or utterances were cut at the output limit.
    pub truncated: bool,
    pub duration_ms: f64,
    /// A new worker was started for this invocation.
    pub cold: bool,
    /// Whether the worker ran in the bubblewrap sandbox.
    pub sandboxed: bool,
}

/// Runs a function with arguments and a conversation.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}/invoke", tag = "functions",
    request_body = InvokeBody,
    params(("ws" = String, Path), ("agent_id" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "It ran; a failure of the function itself is in `error`", body = InvokeOut),
        (status = 400, description = "invalid_input: arguments of the wrong type, unknown arguments, a bad conversation", body = ErrorBody),
        (status = 403, description = "an API key not scoped to this agent", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 429, description = "too_many_invocations: the agent or the workspace already runs as many invocations as its limit allows", body = ErrorBody),
        (status = 503, description = "functions cannot run on this server (no Python), or too many are running", body = ErrorBody)))]
pub async fn invoke_function(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id, name)): ApiPath<(String, String, String)>,
    body: std::result::Result<ApiJson<InvokeBody>, ApiError>,
) -> ApiResult<Json<InvokeOut>> {
    let ws = match &p {
        Principal::ApiKey { scope, .. } => {
            let ws = st.visible_workspace(&p, &ws)?;
            if !scope.covers(&agent_id) {
                return Err(Error::forbidden(format!(
                    "this API key is not scoped to agent {}; use a key for that agent",
                    agent_id.escape_default()
                ))
                .into());
            }
            ws
        }
        _ => st.workspace_for(&p, &ws, Perm::InvokeFunctions)?,
    };
    let ApiJson(body) = body?;
    let agent = st.agent_of(&ws.id, &agent_id).await?;
    let generation = st.runtime.generation();
    let function = st.store.get_function(&ws.id, &agent.id, &name).await?.ok_or_else(|| {
        Error::not_found("function_not_found", format!("this agent has no function named '{}'", name.escape_default()))
    })?;
    check_args(&function, &body.args)?;
    let conversation = conversation(body.conversation)?;
    let invocation_id = new_id(INVOCATION_PREFIX)?;
    let conversation_id = conversation["id"].as_str().unwrap_or_default().to_owned();

    let source = AgentSecrets {
        st: st.clone(),
        workspace_id: ws.id.clone(),
        agent_id: agent.id.clone(),
        context: format!("function={} function_version={} invocation={invocation_id}", function.name, function.version),
        invocation_id: invocation_id.clone(),
    };
    let inv = Invocation {
        id: &invocation_id,
        workspace_id: &ws.id,
        agent_id: &agent.id,
        function: &function.name,
        version: function.version,
        code: &function.code,
        args: body.args,
        conversation,
        timeout: function.timeout_ms.map(|ms| std::time::Duration::from_millis(u64::from(ms))),
        generation,
    };
    let outcome = st.runtime.invoke(inv, &source).await?;
    let duration_ms = outcome.duration.as_secs_f64() * 1000.0;
    let mut detail = format!("function={} version={} duration_ms={duration_ms:.1}", function.name, function.version);
    if let Some(e) = &outcome.error {
        detail.push_str(&format!(" error={}", audit_name(&e.kind)));
    }
    let audit_outcome = if outcome.error.is_some() { Outcome::Failed } else { Outcome::Success };
    st.audit.append_nowait(
        AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::FunctionInvoke, audit_outcome)
            .agent(&agent.id)
            .target(&invocation_id)
            .detail(detail),
    );
    Ok(Json(InvokeOut {
        invocation_id,
        conversation_id,
        result: outcome.result,
        state: outcome.state,
        utterances: outcome.utterances,
        logs: outcome
            .logs
            .into_iter()
            .map(|l| LogOut { level: l.level, content: l.content, is_pii: l.is_pii })
            .collect(),
        error: outcome.error.map(|e| InvokeErrorOut { kind: e.kind, message: e.message, traceback: e.traceback }),
        truncated: outcome.truncated,
        duration_ms,
        cold: outcome.cold,
        sandboxed: st.runtime.sandboxed().unwrap_or(false),
    }))
}

/// An error type as the audit log gets it: a name of `[A-Za-z0-9_.]{1,64}`, or `Error` (the
/// function chose its exception's name, which may carry anything).
fn audit_name(kind: &str) -> &str {
    let plain =
        (1..=64).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if plain { kind } else { "Error" }
}

/// Every argument is a declared parameter of the declared type.
fn check_args(function: &Function, args: &Map<String, Value>) -> Result<()> {
    for (name, value) in args {
        let field = format!("args.{name}");
        let Some(param) = function.parameters.iter().find(|p| &p.name == name) else {
            let declared: Vec<&str> = function.parameters.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::invalid(
                field,
                format!(
                    "{} has no parameter '{}'; its parameters are: {}",
                    function.name,
                    name.escape_default(),
                    if declared.is_empty() { "none".to_owned() } else { declared.join(", ") }
                ),
            ));
        };
        let ok = match param.kind {
            ParamType::String => value.is_string(),
            ParamType::Number => value.is_number(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Boolean => value.is_boolean(),
        };
        if !ok {
            return Err(Error::invalid(
                field,
                format!("{name} must be {} ({}), not {}", article(param.kind), param.kind.as_str(), json_type(value)),
            ));
        }
    }
    Ok(())
}

fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Number => "a number",
        ParamType::Integer => "a whole number",
        ParamType::Boolean => "true or false",
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The conversation as the worker gets it: `{id, env, state}`.
fn conversation(c: ConversationIn) -> Result<Value> {
    let id = match c.id {
        Some(id) => {
            if id.is_empty() || id.len() > CONVERSATION_ID_MAX || id.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "conversation.id",
                    format!("a conversation id is 1 to {CONVERSATION_ID_MAX} printable characters"),
                ));
            }
            id
        }
        None => new_id(CONVERSATION_PREFIX)?,
    };
    let env = c.env.unwrap_or_else(|| "sandbox".to_owned());
    if !ENVS.contains(&env.as_str()) {
        return Err(Error::invalid(
            "conversation.env",
            format!("env is '{}'; it must be sandbox, pre-release or live", env.escape_default()),
        ));
    }
    Ok(json!({"id": id, "env": env, "state": c.state.unwrap_or_default()}))
}

/// Answers one invocation's `get_secret` calls for its agent.
struct AgentSecrets {
    st: AppState,
    workspace_id: String,
    agent_id: String,
    invocation_id: String,
    context: String,
}

#[async_trait::async_trait]
impl SecretSource for AgentSecrets {
    async fn get_secret(&self, name: Option<&str>) -> SecretAnswer {
        let st = &self.st;
        let event = |outcome: Outcome, name: Option<&str>, detail: &str| {
            let mut e = AuditEvent::new(
                now_millis(),
                &self.workspace_id,
                Actor::Agent(self.agent_id.clone()),
                Action::SecretRead,
                outcome,
            )
            .agent(&self.agent_id)
            .target(&self.invocation_id)
            .detail(format!("{detail} {}", self.context));
            // Only well-formed names go into the log.
            if let Some(n) = name.filter(|n| validate::secret_name(n).is_ok()) {
                e = e.secret(n);
            }
            e
        };
        let refuse = |outcome: Outcome, code: &str, metric: &'static str| {
            st.metrics.read(metric);
            st.audit.append_nowait(event(outcome, name, code));
        };
        let Some(name) = name else {
            refuse(Outcome::Invalid, "invalid_input", "invalid");
            return SecretAnswer::Invalid("a secret name is a str".into());
        };
        if let Err(e) = validate::secret_name(name) {
            refuse(Outcome::Invalid, "invalid_input", "invalid");
            return SecretAnswer::Invalid(e.message.into_owned());
        }
        // The agent may have been deleted while the function runs.
        if !st.model.agent_in(&self.workspace_id, &self.agent_id) {
            refuse(Outcome::Denied, "missing_access", "denied");
            return SecretAnswer::MissingAccess;
        }
        let Some(entry) = st.model.secret(&self.workspace_id, name) else {
            refuse(Outcome::NotFound, "secret_not_found", "not_found");
            return SecretAnswer::NotFound;
        };
        if !entry.access.contains(&self.agent_id) {
            refuse(Outcome::Denied, "missing_access", "denied");
            return SecretAnswer::MissingAccess;
        }
        let value = match st.open(&entry) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e.message, "opening a secret for a function failed");
                return SecretAnswer::Invalid("the secret cannot be read right now".into());
            }
        };
        // Durable before the value is handed over, as on the HTTP read path.
        if let Err(e) =
            st.audit.append(event(Outcome::Success, Some(name), &format!("secret_version={}", entry.version))).await
        {
            tracing::error!(error = %e.message, "auditing a function's secret read failed");
            return SecretAnswer::Invalid("the read cannot be audited right now, so it is refused".into());
        }
        st.metrics.read("allowed");
        SecretAnswer::Value(value)
    }
}
