//! Audit records: who did what to which target, with what outcome. Never a value.

use crate::model::{Actor, Millis};

/// What happened. The string forms are stable: they are stored and filtered on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    WorkspaceCreate,
    AgentCreate,
    AgentUpdate,
    AgentDelete,
    SecretCreate,
    SecretUpdate,
    SecretDelete,
    SecretAccessSet,
    SecretReveal,
    SecretRead,
    ApiKeyCreate,
    ApiKeyRevoke,
    RootKeyRotate,
    SignIn,
    SignOut,
    SessionRevoke,
    UserCreate,
    MemberAdd,
    MemberRoleChange,
    MemberRemove,
    PasswordChange,
    TokenCreate,
    TokenRevoke,
    FunctionCreate,
    FunctionUpdate,
    FunctionDelete,
    FunctionDeploy,
    FunctionInvoke,
    InvitationCreate,
    InvitationRevoke,
    InvitationAccept,
    AgentEgressSet,
    EgressConnect,
    EgressInject,
    SecretInjectionSet,
    AccessRequest,
    AccessApprove,
    AccessDecline,
}

impl Action {
    pub const ALL: [Action; 38] = [
        Action::WorkspaceCreate,
        Action::AgentCreate,
        Action::AgentUpdate,
        Action::AgentDelete,
        Action::SecretCreate,
        Action::SecretUpdate,
        Action::SecretDelete,
        Action::SecretAccessSet,
        Action::SecretReveal,
        Action::SecretRead,
        Action::ApiKeyCreate,
        Action::ApiKeyRevoke,
        Action::RootKeyRotate,
        Action::SignIn,
        Action::SignOut,
        Action::SessionRevoke,
        Action::UserCreate,
        Action::MemberAdd,
        Action::MemberRoleChange,
        Action::MemberRemove,
        Action::PasswordChange,
        Action::TokenCreate,
        Action::TokenRevoke,
        Action::FunctionCreate,
        Action::FunctionUpdate,
        Action::FunctionDelete,
        Action::FunctionDeploy,
        Action::FunctionInvoke,
        Action::InvitationCreate,
        Action::InvitationRevoke,
        Action::InvitationAccept,
        Action::AgentEgressSet,
        Action::EgressConnect,
        Action::EgressInject,
        Action::SecretInjectionSet,
        Action::AccessRequest,
        Action::AccessApprove,
        Action::AccessDecline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::WorkspaceCreate => "workspace.create",
            Action::AgentCreate => "agent.create",
            Action::AgentUpdate => "agent.update",
            Action::AgentDelete => "agent.delete",
            Action::SecretCreate => "secret.create",
            Action::SecretUpdate => "secret.update",
            Action::SecretDelete => "secret.delete",
            Action::SecretAccessSet => "secret.access.set",
            Action::SecretReveal => "secret.reveal",
            Action::SecretRead => "secret.read",
            Action::ApiKeyCreate => "api_key.create",
            Action::ApiKeyRevoke => "api_key.revoke",
            Action::RootKeyRotate => "root_key.rotate",
            Action::SignIn => "auth.sign_in",
            Action::SignOut => "auth.sign_out",
            Action::SessionRevoke => "auth.session_revoke",
            Action::UserCreate => "user.create",
            Action::MemberAdd => "member.add",
            Action::MemberRoleChange => "member.role_change",
            Action::MemberRemove => "member.remove",
            Action::PasswordChange => "user.password_change",
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
            Action::FunctionCreate => "function.create",
            Action::FunctionUpdate => "function.update",
            Action::FunctionDelete => "function.delete",
            Action::FunctionDeploy => "function.deploy",
            Action::FunctionInvoke => "function.invoke",
            Action::InvitationCreate => "invitation.create",
            Action::InvitationRevoke => "invitation.revoke",
            Action::InvitationAccept => "invitation.accept",
            Action::AgentEgressSet => "agent.egress_set",
            Action::EgressConnect => "egress.connect",
            Action::EgressInject => "egress.inject",
            Action::SecretInjectionSet => "secret.injection_set",
            Action::AccessRequest => "access.request",
            Action::AccessApprove => "access.approve",
            Action::AccessDecline => "access.decline",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// The caller was not allowed (e.g. `missing_access`).
    Denied,
    /// The target did not exist (e.g. `secret_not_found`).
    NotFound,
    /// The request was malformed (e.g. a bad secret name).
    Invalid,
    /// It ran and failed (e.g. a function raised an exception or ran out of time).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::NotFound => "not_found",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Success, Outcome::Denied, Outcome::NotFound, Outcome::Invalid, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One audit record as written. `detail` is a short machine-readable note (an error code, a
/// version number, a list of agent ids) and is never derived from a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Millis,
    pub workspace_id: String,
    pub actor: Actor,
    pub action: Action,
    pub outcome: Outcome,
    pub secret_name: Option<String>,
    pub agent_id: Option<String>,
    pub target_id: Option<String>,
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(at: Millis, workspace_id: &str, actor: Actor, action: Action, outcome: Outcome) -> Self {
        AuditEvent {
            at,
            workspace_id: workspace_id.to_owned(),
            actor,
            action,
            outcome,
            secret_name: None,
            agent_id: None,
            target_id: None,
            detail: None,
        }
    }

    pub fn secret(mut self, name: &str) -> Self {
        self.secret_name = Some(name.to_owned());
        self
    }

    pub fn agent(mut self, agent_id: &str) -> Self {
        self.agent_id = Some(agent_id.to_owned());
        self
    }

    pub fn target(mut self, id: &str) -> Self {
        self.target_id = Some(id.to_owned());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// An audit record's fields, borrowed: what is encoded into the log, without owning a string.
/// [`AuditEvent::view`] gives one; the journal's mover reads them straight out of encoded blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditEventRef<'a> {
    pub at: Millis,
    pub workspace_id: &'a str,
    /// [`Actor::kind`] and [`Actor::id`].
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub action: Action,
    pub outcome: Outcome,
    pub secret_name: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl AuditEvent {
    pub fn view(&self) -> AuditEventRef<'_> {
        AuditEventRef {
            at: self.at,
            workspace_id: &self.workspace_id,
            actor_kind: self.actor.kind(),
            actor_id: self.actor.id(),
            action: self.action,
            outcome: self.outcome,
            secret_name: self.secret_name.as_deref(),
            agent_id: self.agent_id.as_deref(),
            target_id: self.target_id.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}

impl AuditEventRef<'_> {
    pub fn to_event(&self) -> AuditEvent {
        AuditEvent {
            at: self.at,
            workspace_id: self.workspace_id.to_owned(),
            actor: Actor::from_parts(self.actor_kind, self.actor_id.to_owned()),
            action: self.action,
            outcome: self.outcome,
            secret_name: self.secret_name.map(str::to_owned),
            agent_id: self.agent_id.map(str::to_owned),
            target_id: self.target_id.map(str::to_owned),
            detail: self.detail.map(str::to_owned),
        }
    }
}

/// A stored audit record, with its position in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub event: AuditEvent,
}

/// Filters of an audit query; all optional, combined with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<Action>,
    pub secret_name: Option<String>,
    /// `secret_name` is a prefix: records of every secret whose name starts with it.
    pub secret_prefix: bool,
    pub agent_id: Option<String>,
    /// The id of the actor (a user, API key, admin token or agent).
    pub actor_id: Option<String>,
    pub outcome: Option<Outcome>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Only records older than this position (the cursor of a newest-first listing).
    pub before_seq: Option<i64>,
    /// Only records newer than this position (the cursor of an oldest-first listing).
    pub after_seq: Option<i64>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("secret.steal"), None);
        assert_eq!(Outcome::parse("denied"), Some(Outcome::Denied));
    }
}
