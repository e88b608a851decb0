//! The Secrets pages: the list, a new secret, one secret with its access list and versions.

use agentvault_core::model::Perm;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::names::{Named, Names};
use super::{Chrome, OrRefuse, PageResult, Viewer, render};
use crate::AppState;
use crate::api::access::AccessRequestOut;
use crate::api::secrets::SecretUsageOut;
use crate::api::{AgentOut, SecretOut, VersionOut};
use crate::service::{access, agents, secrets};

/// A row of the Secrets table.
pub struct SecretRow {
    pub s: SecretOut,
    pub kind: &'static str,
    /// The names of the agents that can read it.
    pub agents: Vec<String>,
    /// When an agent last read it (RFC 3339), if ever.
    pub last_read: Option<String>,
}

#[derive(Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    chrome: Option<Chrome>,
    ws: String,
    secrets: Vec<SecretRow>,
    /// For the "Readable by" filter.
    agents: Vec<AgentOut>,
}

fn kind_label(s: &SecretOut) -> &'static str {
    if s.keys.is_some() { "Key/value pairs" } else { "Single value" }
}

pub(super) async fn secrets_page(State(st): State<AppState>, Path(ws): Path<String>, v: Viewer) -> PageResult {
    let chrome = v.open(&ws, "secrets", Perm::ManageSecrets)?;
    let all_agents = agents::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
    let secrets = secrets::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
    let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
    let mut last_reads = secrets::last_reads(&st, &v.principal, &ws, None, &names).await.or_refuse(&chrome)?;
    let secrets = secrets
        .into_iter()
        .map(|s| {
            let mut agents: Vec<String> =
                all_agents.iter().filter(|a| s.agents.contains(&a.id)).map(|a| a.name.clone()).collect();
            agents.sort();
            SecretRow { kind: kind_label(&s), agents, last_read: last_reads.remove(&s.name), s }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &SecretsPage { ws: chrome.ws_id.clone(), chrome: Some(chrome), secrets, agents: all_agents },
    ))
}

#[derive(Template)]
#[template(path = "secret_new.html")]
struct NewSecretPage {
    chrome: Option<Chrome>,
    ws: String,
    agents: Vec<AgentOut>,
    /// Prefilled from `?name=` (e.g. from the Function Editor's "Create it").
    name: String,
    /// The agent checked from the start (`?agent=`).
    agent: String,
    /// The names already taken, to say so as the name is typed.
    existing: Vec<String>,
}

/// `?name=` and `?agent=` of the new-secret page.
#[derive(serde::Deserialize, Default)]
pub(super) struct Prefill {
    #[serde(default)]
    name: String,
    #[serde(default)]
    agent: String,
}

pub(super) async fn new_secret_page(
    State(st): State<AppState>,
    Path(ws): Path<String>,
    prefill: Result<Query<Prefill>, axum::extract::rejection::QueryRejection>,
    v: Viewer,
) -> PageResult {
    let chrome = v.open(&ws, "secrets", Perm::ManageSecrets)?;
    let agents = agents::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
    let Prefill { name, agent } = prefill.map(|Query(p)| p).unwrap_or_default();
    let name = if agentvault_core::validate::secret_name(&name).is_ok() { name } else { String::new() };
    let existing =
        secrets::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?.into_iter().map(|s| s.name).collect();
    Ok(render(
        StatusCode::OK,
        &NewSecretPage { ws: chrome.ws_id.clone(), chrome: Some(chrome), agents, name, agent, existing },
    ))
}

/// A request for access with names for its agent and the people involved.
pub struct RequestRow {
    pub r: AccessRequestOut,
    pub agent: Named,
    pub by: Named,
    pub decided_by: Option<Named>,
}

/// A version with the name of who wrote it.
pub struct VersionRow {
    pub v: VersionOut,
    pub by: Named,
}

/// One environment on the secret page: its own value's metadata, if it has one.
pub struct EnvRow {
    pub env: &'static str,
    pub own: Option<crate::api::EnvValueOut>,
}

/// An agent with whether it may read the secret shown.
pub struct AccessRow {
    pub agent: AgentOut,
    pub granted: bool,
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    chrome: Option<Chrome>,
    ws: String,
    secret: SecretOut,
    kind: &'static str,
    access: Vec<AccessRow>,
    injection: crate::api::injection::InjectionOut,
    versions: Vec<VersionRow>,
    usage: SecretUsageOut,
    /// Requests for access to this secret: pending first, then the latest answered ones.
    requests: Vec<RequestRow>,
    /// "function (agent, line N)" of each function naming the secret, for the delete confirmation.
    used_by_summary: String,
    /// Sandbox, pre-release and live, each with its own value or none.
    envs: Vec<EnvRow>,
}

pub(super) async fn secret_page(
    State(st): State<AppState>,
    Path((ws, name)): Path<(String, String)>,
    v: Viewer,
) -> PageResult {
    let chrome = v.open(&ws, "secrets", Perm::ManageSecrets)?;
    let p = &v.principal;
    let secret = secrets::get(&st, p, &ws, &name).await.or_refuse(&chrome)?;
    let agents = agents::list(&st, p, &ws).await.or_refuse(&chrome)?;
    let versions = secrets::versions(&st, p, &ws, &name).await.or_refuse(&chrome)?;
    let injection = crate::service::injection::get(&st, p, &ws, &name).await.or_refuse(&chrome)?;
    let mut names = Names::load(&st, &chrome.ws_id).await.or_refuse(&chrome)?;
    names.add_users(&st, versions.iter().map(|v| v.created_by.clone()).collect()).await;
    let versions = versions.into_iter().map(|v| VersionRow { by: names.of(&v.created_by), v }).collect();
    let mut requests: Vec<AccessRequestOut> =
        access::list(&st, p, &ws).await.or_refuse(&chrome)?.into_iter().filter(|r| r.secret == name).collect();
    requests.sort_by_key(|r| r.status != "pending");
    requests.truncate(20);
    names
        .add_users(
            &st,
            requests.iter().flat_map(|r| [Some(r.requested_by.clone()), r.decided_by.clone()]).flatten().collect(),
        )
        .await;
    let requests = requests
        .into_iter()
        .map(|r| RequestRow {
            agent: names.of(&r.agent_id),
            by: names.of(&r.requested_by),
            decided_by: r.decided_by.as_deref().map(|d| names.of(d)),
            r,
        })
        .collect();
    let usage = secrets::usage(&st, p, &ws, &name).await.or_refuse(&chrome)?;
    let used_by_summary = usage
        .functions
        .iter()
        .map(|f| format!("{} ({}, line {})", f.function, f.agent_name, f.line))
        .collect::<Vec<_>>()
        .join("\n");
    let access = agents.into_iter().map(|a| AccessRow { granted: secret.agents.contains(&a.id), agent: a }).collect();
    let mut own: Vec<crate::api::EnvValueOut> = Vec::new();
    let mut secret = secret;
    std::mem::swap(&mut own, &mut secret.environments);
    let envs = agentvault_core::model::Env::ALL
        .into_iter()
        .map(|e| EnvRow {
            env: e.as_str(),
            own: own.iter().position(|o| o.env == e.as_str()).map(|i| own.swap_remove(i)),
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &SecretPage {
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            kind: kind_label(&secret),
            secret,
            access,
            versions,
            injection,
            usage,
            requests,
            used_by_summary,
            envs,
        },
    ))
}
