//! Requests for access: a member asks that an agent may read a secret (e.g. from the Function
//! Editor, where a `get_secret` call is marked unreadable); an admin approves (the agent joins
//! the secret's access list) or declines. Every step is audited; only admins list requests.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{ACCESS_REQUEST_PREFIX, AccessRequest, Perm, Principal};
use agentvault_core::{Error, Result, validate};

use super::Body;
use crate::api::access::{AccessRequestOut, RequestAccess};
use crate::auth::new_id;
use crate::{AppState, now_millis};

/// Asks that `agent_id` may read a secret. The answer does not say whether the secret exists
/// (members do not see secrets); an admin can create it when approving is not possible.
pub async fn request(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    body: Body<RequestAccess>,
) -> Result<AccessRequestOut> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    let body = body?;
    validate::secret_name(&body.secret).map_err(|e| e.with_field("secret"))?;
    let user_id = AppState::user_id_of(p)?.to_owned();
    let agent = st.agent_of(&ws.id, agent_id).await?;
    if st.model.secret(&ws.id, &body.secret).is_some_and(|s| s.access.contains(&agent.id)) {
        return Err(Error::conflict(
            "access_already_granted",
            format!("{} can read {} already", agent.name, body.secret),
        ));
    }
    let now = now_millis();
    let request = AccessRequest {
        id: new_id(ACCESS_REQUEST_PREFIX)?,
        workspace_id: ws.id.clone(),
        agent_id: agent.id.clone(),
        secret_name: body.secret,
        requested_by: user_id,
        requested_at: now,
        status: "pending".into(),
        decided_by: None,
        decided_at: None,
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::AccessRequest, Outcome::Success)
        .secret(&request.secret_name)
        .agent(&agent.id)
        .target(&request.id);
    st.store.create_access_request(&request, &audit).await?;
    Ok(request.into())
}

/// The workspace's requests, newest first (admins only).
pub async fn list(st: &AppState, p: &Principal, ws: &str) -> Result<Vec<AccessRequestOut>> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    Ok(st.store.list_access_requests(&ws.id).await?.into_iter().map(AccessRequestOut::from).collect())
}

/// The requests one user made for one agent (what the Function Editor shows them).
pub async fn mine(st: &AppState, p: &Principal, ws: &str, agent_id: &str) -> Result<Vec<AccessRequestOut>> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    let user_id = AppState::user_id_of(p)?;
    Ok(st
        .store
        .list_access_requests(&ws.id)
        .await?
        .into_iter()
        .filter(|r| r.agent_id == agent_id && r.requested_by == user_id)
        .map(AccessRequestOut::from)
        .collect())
}

/// Approves (the agent is added to the secret's access list, in the same transaction) or
/// declines a pending request.
pub async fn decide(
    st: &AppState,
    p: &Principal,
    ws: &str,
    request_id: &str,
    approve: bool,
) -> Result<AccessRequestOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let not_found = || {
        Error::not_found(
            "access_request_not_found",
            "no pending access request with this id; it may have been answered already",
        )
    };
    validate::id_with_prefix("request_id", ACCESS_REQUEST_PREFIX, request_id).map_err(|_| not_found())?;
    let decider = AppState::user_id_of(p)?.to_owned();
    let _w = st.write_lock.lock().await;
    let request = st
        .store
        .list_access_requests(&ws.id)
        .await?
        .into_iter()
        .find(|r| r.id == request_id && r.status == "pending")
        .ok_or_else(not_found)?;
    let now = now_millis();
    let actor = p.actor();
    let decided = if approve {
        let secret = st.secret_of(&ws.id, &request.secret_name).await.map_err(|e| {
            if e.code == "secret_not_found" {
                Error::not_found(
                    "secret_not_found",
                    format!("no secret named {} exists: create it (granted to the agent) instead", request.secret_name),
                )
            } else {
                e
            }
        })?;
        let mut agents = secret.agents.clone();
        if !agents.contains(&request.agent_id) {
            agents.push(request.agent_id.clone());
            agents.sort();
        }
        let audit = [
            AuditEvent::new(now, &ws.id, actor.clone(), Action::AccessApprove, Outcome::Success)
                .secret(&secret.name)
                .agent(&request.agent_id)
                .target(&request.id),
            AuditEvent::new(now, &ws.id, actor, Action::SecretAccessSet, Outcome::Success)
                .secret(&secret.name)
                .target(&secret.id)
                .detail(format!("agents={} request={}", agents.join(","), request.id)),
        ];
        let decided = st
            .store
            .decide_access_request(&ws.id, &request.id, "approved", &decider, now, Some((&secret.id, &agents)), &audit)
            .await?;
        let meta = st.secret_of(&ws.id, &secret.name).await?;
        st.model.update_secret(&meta, None);
        decided
    } else {
        let audit = [AuditEvent::new(now, &ws.id, actor, Action::AccessDecline, Outcome::Success)
            .secret(&request.secret_name)
            .agent(&request.agent_id)
            .target(&request.id)];
        st.store.decide_access_request(&ws.id, &request.id, "declined", &decider, now, None, &audit).await?
    };
    Ok(decided.into())
}
