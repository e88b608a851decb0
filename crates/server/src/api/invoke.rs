//! Running an agent's function: `POST .../functions/{name}/invoke`. The function runs in one of
//! the agent's workers; its `conv.utils.get_secret` calls are answered by the agent-read policy,
//! for that agent only, and each is audited as a read by the agent.

use axum::extract::State;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::functions;
use crate::{AppState, Json};

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ConversationIn {
    /// The conversation's id (`conv.id`), 1–128 printable characters; one is made up when absent.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,128}$")]
    pub id: Option<String>,
    /// `sandbox` (default), `pre-release` or `live` (`conv.env`).
    #[schema(value_type = Option<super::doc::Env>)]
    pub env: Option<String>,
    /// `conv.state` at the start; the changed state comes back in the answer.
    #[serde(default, deserialize_with = "super::unique_keys::optional_map")]
    #[schema(value_type = Option<Object>)]
    pub state: Option<Map<String, Value>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// The LLM parameters, by name; checked against their declared types.
    #[serde(default, deserialize_with = "super::unique_keys::map")]
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
    #[serde(default, deserialize_with = "conversation_object")]
    pub conversation: ConversationIn,
}

/// The conversation as a JSON object only (serde would also take its fields as an array).
fn conversation_object<'de, D: Deserializer<'de>>(d: D) -> Result<ConversationIn, D::Error> {
    struct ObjectOnly;
    impl<'de> Visitor<'de> for ObjectOnly {
        type Value = ConversationIn;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object with id, env and state")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ConversationIn, A::Error> {
            ConversationIn::deserialize(MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(ObjectOnly)
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
    #[schema(value_type = super::doc::InvokeResultSchema)]
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
    b: JsonBody<InvokeBody>,
) -> ApiResult<Json<InvokeOut>> {
    Ok(Json(functions::invoke(&st, &p, &ws, &agent_id, &name, body(b)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftRunBody {
    /// The definition to run, as for creating a function: checked the same way, never stored.
    pub function: super::functions::CreateFunction,
    /// The LLM parameters, by name; checked against the draft's declared types.
    #[serde(default, deserialize_with = "super::unique_keys::map")]
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
    #[serde(default, deserialize_with = "conversation_object")]
    pub conversation: ConversationIn,
}

#[derive(Serialize, ToSchema)]
pub struct DraftRunOut {
    /// SHA-256 (hex) of the code that ran, as its audit record names it.
    pub code_sha256: String,
    /// The run, as an invocation of a saved function answers it.
    pub run: InvokeOut,
}

/// Runs an unsaved draft of a function (what the Function Editor holds): checked as saving it
/// would be, run in a worker of its own with the same sandbox, limits and redaction, never
/// stored; audited as `function.invoke` with `draft` and the code's SHA-256. For those who may
/// save the agent's functions (members and admins; not API keys).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/agents/{agent_id}/draft-runs", tag = "functions",
    request_body = DraftRunBody,
    params(("ws" = String, Path), ("agent_id" = String, Path)),
    responses(
        (status = 200, description = "It ran; a failure of the function itself is in `run.error`", body = DraftRunOut),
        (status = 400, description = "invalid_input: the definition would not be saved (its field is `function.<field>`), or the arguments or conversation are wrong", body = ErrorBody),
        (status = 403, description = "an API key: running drafts needs a user who may save functions", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, description = "code_too_large: the code is over 64 KiB, or payload_too_large: the body is", body = ErrorBody),
        (status = 422, description = "invalid_code: the Python error and its line (field `function.code`)", body = ErrorBody),
        (status = 429, description = "too_many_invocations", body = ErrorBody),
        (status = 503, description = "functions cannot run on this server (no Python), or too many are running", body = ErrorBody)))]
pub async fn run_draft(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, agent_id)): ApiPath<(String, String)>,
    b: JsonBody<DraftRunBody>,
) -> ApiResult<Json<DraftRunOut>> {
    Ok(Json(functions::run_draft(&st, &p, &ws, &agent_id, body(b)).await?))
}
