//! Agents, and what an agent's functions may know about the secrets it can read.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{AGENT_PREFIX, Agent, EgressPolicy, Perm, Principal};
use agentvault_core::{Error, Result, validate};

use super::Body;
use crate::api::AgentOut;
use crate::api::agents::{AgentSecretOut, CreateAgent, EgressOut, SetEgress, UpdateAgent};
use crate::auth::new_id;
use crate::{AppState, now_millis};

pub(super) fn not_found(agent_id: &str) -> Error {
    Error::not_found("agent_not_found", format!("no agent {} exists in this workspace", agent_id.escape_default()))
}

impl AppState {
    /// An agent of the workspace, or 404.
    pub async fn agent_of(&self, ws: &str, agent_id: &str) -> Result<Agent> {
        validate::id_with_prefix("agent_id", AGENT_PREFIX, agent_id).map_err(|_| not_found(agent_id))?;
        self.store.get_agent(ws, agent_id).await?.ok_or_else(|| not_found(agent_id))
    }
}

/// The agents of a workspace.
pub async fn list(st: &AppState, p: &Principal, ws: &str) -> Result<Vec<AgentOut>> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    let agents = st.store.list_agents(&ws.id).await?;
    Ok(agents.into_iter().map(AgentOut::from).collect())
}

/// Creates an agent.
pub async fn create(st: &AppState, p: &Principal, ws: &str, body: Body<CreateAgent>) -> Result<AgentOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let body = body?;
    let name = validate::display_name("name", &body.name)?;
    validate::description(&body.description)?;
    let _w = st.write_lock.lock().await;
    let now = now_millis();
    let agent = Agent {
        id: new_id(AGENT_PREFIX)?,
        workspace_id: ws.id.clone(),
        name,
        description: body.description,
        created_at: now,
        updated_at: now,
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::AgentCreate, Outcome::Success)
        .agent(&agent.id)
        .target(&agent.id);
    st.store.create_agent(&agent, &audit).await?;
    st.model.put_agent(&agent.id, &ws.id);
    st.refresh_gauges();
    Ok(agent.into())
}

/// One agent.
pub async fn get(st: &AppState, p: &Principal, ws: &str, agent_id: &str) -> Result<AgentOut> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    Ok(st.agent_of(&ws.id, agent_id).await?.into())
}

/// Renames an agent or changes its description.
pub async fn update(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    body: Body<UpdateAgent>,
) -> Result<AgentOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let body = body?;
    if body.name.is_none() && body.description.is_none() {
        return Err(Error::invalid("body", "nothing to change: give a new name or description"));
    }
    let name = body.name.as_deref().map(|n| validate::display_name("name", n)).transpose()?;
    if let Some(d) = &body.description {
        validate::description(d)?;
    }
    let _w = st.write_lock.lock().await;
    let mut agent = st.agent_of(&ws.id, agent_id).await?;
    if let Some(n) = name {
        agent.name = n;
    }
    if let Some(d) = body.description {
        agent.description = d;
    }
    agent.updated_at = now_millis();
    let audit = AuditEvent::new(agent.updated_at, &ws.id, p.actor(), Action::AgentUpdate, Outcome::Success)
        .agent(&agent.id)
        .target(&agent.id);
    st.store.update_agent(&agent, &audit).await?;
    Ok(agent.into())
}

/// Deletes an agent; its grants and its place in API key scopes go with it, and so do its
/// warm workers.
pub async fn delete(st: &AppState, p: &Principal, ws: &str, agent_id: &str) -> Result<()> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let _w = st.write_lock.lock().await;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::AgentDelete, Outcome::Success)
        .agent(&agent.id)
        .target(&agent.id);
    st.store.delete_agent(&ws.id, &agent.id, &audit).await?;
    st.model.remove_agent(&ws.id, &agent.id);
    st.runtime.forget_agent(&agent.id);
    st.refresh_gauges();
    Ok(())
}

/// The secrets an agent can read (metadata only): what the Function Editor's Secrets box shows.
pub async fn secrets(st: &AppState, p: &Principal, ws: &str, agent_id: &str) -> Result<Vec<AgentSecretOut>> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgentSecrets)?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let secrets = st.store.list_secrets(&ws.id).await?;
    Ok(secrets
        .into_iter()
        .filter(|s| s.agents.contains(&agent.id))
        .map(|s| {
            let hosts = st.egress.injection(&ws.id, &s.id).map(|h| h.to_vec());
            let snippet = match &hosts {
                Some(h) => format!(
                    "requests.post(\"https://{}/\", headers={{\"Authorization\": f\"Bearer {{conv.utils.get_secret('{}')}}\"}})",
                    h.first().map_or("api.example.com", |h| h.trim_start_matches("*.")),
                    s.name
                ),
                None => format!("conv.utils.get_secret('{}')", s.name),
            };
            AgentSecretOut {
                environments: s.envs.iter().map(|e| e.env.as_str()).collect(),
                protected: s.protected,
                snippet,
                name: s.name,
                description: s.description,
                kind: s.kind.into(),
                keys: s.keys,
                injected_only: hosts.is_some(),
                hosts: hosts.unwrap_or_default(),
            }
        })
        .collect())
}

fn egress_out(st: &AppState, policy: EgressPolicy) -> EgressOut {
    EgressOut {
        mode: policy.mode.as_str().to_owned(),
        hosts: policy.hosts,
        enforced: st.runtime.sandboxed().unwrap_or(false),
    }
}

/// Where an agent's functions may connect.
pub async fn egress(st: &AppState, p: &Principal, ws: &str, agent_id: &str) -> Result<EgressOut> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let policy = st.store.get_egress_policy(&ws.id, &agent.id).await?.unwrap_or_default();
    Ok(egress_out(st, policy))
}

/// Sets an agent's egress policy (admins). The proxy reads it for every new connection.
pub async fn set_egress(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    body: Body<SetEgress>,
) -> Result<EgressOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageEgress)?;
    let body = body?;
    let policy = crate::egress::policy::checked_policy(&body.mode, &body.hosts, now_millis())?;
    let _w = st.write_lock.lock().await;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let mut detail = format!("mode={}", policy.mode.as_str());
    if !policy.hosts.is_empty() {
        detail.push_str(&format!(" hosts={}", policy.hosts.join(",")));
    }
    let audit = AuditEvent::new(policy.updated_at, &ws.id, p.actor(), Action::AgentEgressSet, Outcome::Success)
        .agent(&agent.id)
        .target(&agent.id)
        .detail(detail);
    st.store.set_egress_policy(&ws.id, &agent.id, &policy, &audit).await?;
    Ok(egress_out(st, policy))
}
