//! The Agents pages: the list, one agent, and the Function Editor.

use agentvault_core::model::Perm;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::names::{Named, Names};
use super::{Chrome, OrRefuse, PageResult, Viewer, render};
use crate::AppState;
use crate::api::AgentOut;
use crate::api::agents::{AgentSecretOut, EgressOut};
use crate::api::functions::{FunctionOut, FunctionVersionOut, ParamBody};
use crate::service::{access, agents, functions};

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    chrome: Option<Chrome>,
    ws: String,
    agents: Vec<AgentOut>,
}

pub(super) async fn agents_page(State(st): State<AppState>, Path(ws): Path<String>, v: Viewer) -> PageResult {
    let chrome = v.open(&ws, "agents", Perm::ViewAgents)?;
    let agents = agents::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
    Ok(render(StatusCode::OK, &AgentsPage { ws: chrome.ws_id.clone(), chrome: Some(chrome), agents }))
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    chrome: Option<Chrome>,
    ws: String,
    agent: AgentOut,
    functions: Vec<FunctionOut>,
    secrets: Vec<AgentSecretRow>,
    /// Whether the viewer sees when the agent last read each secret (admins: it comes from the
    /// audit log).
    show_last_read: bool,
    egress: EgressOut,
}

/// A secret the agent can read, with the agent's functions that name it and its last read.
pub struct AgentSecretRow {
    pub s: AgentSecretOut,
    pub functions: Vec<String>,
    /// When this agent last read it successfully (RFC 3339), if ever.
    pub last_read: Option<String>,
}

/// The names of the functions whose code names `secret`.
fn functions_naming(functions: &[FunctionOut], secret: &str) -> Vec<String> {
    functions.iter().filter(|f| f.secret_refs.iter().any(|r| r.secret == secret)).map(|f| f.name.clone()).collect()
}

pub(super) async fn agent_page(
    State(st): State<AppState>,
    Path((ws, agent_id)): Path<(String, String)>,
    v: Viewer,
) -> PageResult {
    let chrome = v.open(&ws, "agents", Perm::ViewAgents)?;
    let p = &v.principal;
    let agent = agents::get(&st, p, &ws, &agent_id).await.or_refuse(&chrome)?;
    let functions = functions::list(&st, p, &ws, &agent_id).await.or_refuse(&chrome)?;
    let secrets = agents::secrets(&st, p, &ws, &agent_id).await.or_refuse(&chrome)?;
    let egress = agents::egress(&st, p, &ws, &agent_id).await.or_refuse(&chrome)?;
    let show_last_read = p.require(&chrome.ws_id, Perm::ReadAudit).is_ok();
    let mut last_reads = if show_last_read {
        let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
        crate::service::secrets::last_reads(&st, p, &ws, Some(&agent.id), &names).await.or_refuse(&chrome)?
    } else {
        Default::default()
    };
    let secrets = secrets
        .into_iter()
        .map(|s| AgentSecretRow {
            functions: functions_naming(&functions, &s.name),
            last_read: last_reads.remove(&s.name),
            s,
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &AgentPage {
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            agent,
            functions,
            secrets,
            show_last_read,
            egress,
        },
    ))
}

#[derive(Template)]
#[template(path = "function.html")]
struct FunctionPage {
    chrome: Option<Chrome>,
    ws: String,
    agent: AgentOut,
    /// None for a new function.
    function: Option<FunctionOut>,
    name: String,
    description: String,
    parameters: Vec<ParamBody>,
    code: String,
    timeout_ms: String,
    secrets: Vec<AgentSecretOut>,
    /// The saved code's `get_secret('<name>')` calls, each with whether the agent can read it.
    marks: Vec<SecretMark>,
    /// `[{line, title}]` of the calls the agent cannot read, for the code editor's line marks.
    marks_json: String,
    /// The Test panel's first arguments: every declared parameter with a value of its type.
    test_args: String,
    /// The saved versions, newest first, with who saved each.
    versions: Vec<VersionRow>,
    /// `[{version, code}]` of the saved versions, for the diff view.
    versions_json: String,
    /// Which version each environment runs.
    deployments: Vec<DeploymentRow>,
    /// The viewer may deploy to live.
    can_deploy_live: bool,
}

/// A saved version of a function with who saved it.
pub struct VersionRow {
    pub v: FunctionVersionOut,
    pub by: Named,
}

/// Which version an environment runs.
pub struct DeploymentRow {
    pub env: &'static str,
    /// None: nothing deployed there.
    pub version: Option<u32>,
    pub by: Option<Named>,
    pub at: Option<String>,
}

/// `{"amount": 0, ...}`: each parameter with a placeholder of its type, to edit before a run.
fn example_args(params: &[ParamBody]) -> String {
    if params.is_empty() {
        return "{}".to_owned();
    }
    let map: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|p| {
            let v = match p.kind.as_str() {
                "integer" | "number" => serde_json::json!(0),
                "boolean" => serde_json::json!(false),
                _ => serde_json::json!(""),
            };
            (p.name.clone(), v)
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_else(|_| "{}".to_owned())
}

/// A `get_secret('<name>')` call of the saved code.
pub struct SecretMark {
    pub line: u32,
    pub secret: String,
    pub readable: bool,
    /// For admins: whether the secret exists (so access can be granted); members cannot tell
    /// a missing secret from one the agent may not read.
    pub exists: Option<bool>,
    /// The status of the viewer's latest request for this agent to read it ("" when none).
    pub request_status: String,
    /// When that request was answered.
    pub request_decided_at: Option<String>,
}

/// Marks each `get_secret` call of `function` with whether its agent can read that secret
/// (`readable`: the secrets the agent can read).
async fn secret_marks(
    st: &AppState,
    p: &agentvault_core::model::Principal,
    chrome: &Chrome,
    function: Option<&FunctionOut>,
    readable: &[AgentSecretOut],
) -> Result<Vec<SecretMark>, super::PageError> {
    let Some(f) = function else { return Ok(Vec::new()) };
    let existing: Option<Vec<String>> = if chrome.is_admin {
        Some(st.store.list_secrets(&chrome.ws_id).await.or_refuse(chrome)?.into_iter().map(|s| s.name).collect())
    } else {
        None
    };
    let requests = if chrome.is_admin {
        Vec::new()
    } else {
        access::mine(st, p, &chrome.ws_id, &f.agent_id).await.or_refuse(chrome)?
    };
    Ok(f.secret_refs
        .iter()
        .map(|r| SecretMark {
            line: r.line,
            secret: r.secret.clone(),
            readable: readable.iter().any(|s| s.name == r.secret),
            exists: existing.as_ref().map(|names| names.contains(&r.secret)),
            // Newest first: the first one for this secret is the latest.
            request_status: requests
                .iter()
                .find(|q| q.secret == r.secret)
                .map(|q| q.status.clone())
                .unwrap_or_default(),
            request_decided_at: requests.iter().find(|q| q.secret == r.secret).and_then(|q| q.decided_at.clone()),
        })
        .collect())
}

const NEW_FUNCTION_CODE: &str =
    "def my_function(conv: Conversation):\n    # key = conv.utils.get_secret('stripe_api_key')\n    return \"Done\"\n";

async fn function_editor(st: AppState, v: Viewer, ws: String, agent_id: String, name: Option<String>) -> PageResult {
    let chrome = v.open(&ws, "agents", Perm::ViewAgents)?;
    let p = &v.principal;
    let agent = agents::get(&st, p, &ws, &agent_id).await.or_refuse(&chrome)?;
    let secrets = agents::secrets(&st, p, &ws, &agent_id).await.or_refuse(&chrome)?;
    let function = match name {
        Some(name) => Some(functions::get(&st, p, &ws, &agent_id, &name).await.or_refuse(&chrome)?),
        None => None,
    };
    let marks = secret_marks(&st, &v.principal, &chrome, function.as_ref(), &secrets).await?;
    let marks_json = serde_json::Value::from(
        marks
            .iter()
            .filter(|m| !m.readable)
            .map(|m| {
                let why = match m.exists {
                    Some(false) => format!("no secret named {} exists", m.secret),
                    _ => format!("{} cannot read {}", agent.name, m.secret),
                };
                serde_json::json!({"line": m.line, "title": why})
            })
            .collect::<Vec<_>>(),
    )
    .to_string();
    let test_args = function.as_ref().map(|f| example_args(&f.parameters)).unwrap_or_else(|| "{}".to_owned());
    let can_deploy_live = chrome.is_admin;
    let (versions, versions_json, deployments) = match &function {
        Some(f) => {
            let versions = functions::versions(&st, p, &ws, &agent_id, &f.name).await.or_refuse(&chrome)?;
            let mut names = Names::load(&st, &chrome.ws_id).await.or_refuse(&chrome)?;
            let mut ids: Vec<String> = versions.iter().map(|v| v.created_by.clone()).collect();
            let envs = &f.environments;
            ids.extend([&envs.pre_release, &envs.live].into_iter().flatten().map(|d| d.deployed_by.clone()));
            names.add_users(&st, ids).await;
            let json = serde_json::Value::from(
                versions.iter().map(|v| serde_json::json!({"version": v.version, "code": v.code})).collect::<Vec<_>>(),
            )
            .to_string();
            let deployed = |env: &'static str, d: &Option<crate::api::functions::DeploymentOut>| DeploymentRow {
                env,
                version: d.as_ref().map(|d| d.version),
                by: d.as_ref().map(|d| names.of(&d.deployed_by)),
                at: d.as_ref().map(|d| d.deployed_at.clone()),
            };
            let deployments = vec![
                DeploymentRow { env: "sandbox", version: Some(envs.sandbox.version), by: None, at: None },
                deployed("pre-release", &envs.pre_release),
                deployed("live", &envs.live),
            ];
            let versions = versions.into_iter().map(|v| VersionRow { by: names.of(&v.created_by), v }).collect();
            (versions, json, deployments)
        }
        None => (Vec::new(), "[]".to_owned(), Vec::new()),
    };
    let page = match &function {
        Some(f) => FunctionPage {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters: f.parameters.clone(),
            code: f.code.clone(),
            timeout_ms: f.timeout_ms.map(|t| t.to_string()).unwrap_or_default(),
            function,
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            agent,
            secrets,
            marks,
            marks_json,
            test_args,
            versions,
            versions_json,
            deployments,
            can_deploy_live,
        },
        None => FunctionPage {
            name: String::new(),
            description: String::new(),
            parameters: Vec::new(),
            code: NEW_FUNCTION_CODE.to_owned(),
            timeout_ms: String::new(),
            function: None,
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            agent,
            secrets,
            marks,
            marks_json,
            test_args: "{}".to_owned(),
            versions,
            versions_json,
            deployments,
            can_deploy_live,
        },
    };
    Ok(render(StatusCode::OK, &page))
}

pub(super) async fn new_function_page(
    State(st): State<AppState>,
    Path((ws, agent_id)): Path<(String, String)>,
    v: Viewer,
) -> PageResult {
    function_editor(st, v, ws, agent_id, None).await
}

pub(super) async fn function_page(
    State(st): State<AppState>,
    Path((ws, agent_id, name)): Path<(String, String, String)>,
    v: Viewer,
) -> PageResult {
    function_editor(st, v, ws, agent_id, Some(name)).await
}
