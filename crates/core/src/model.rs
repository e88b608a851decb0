//! Domain records and the permission rules that apply to them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::{Error, Result};
use crate::value::SecretKind;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

// Prefixes of ids: public, they name records in URLs, lists and the audit log.
pub const WORKSPACE_PREFIX: &str = "ws_";
pub const AGENT_PREFIX: &str = "agt_";
pub const SECRET_PREFIX: &str = "sec_";
pub const ACCESS_REQUEST_PREFIX: &str = "req_";
pub const API_KEY_PREFIX: &str = "key_";
pub const ADMIN_TOKEN_ID_PREFIX: &str = "adm_";
pub const USER_PREFIX: &str = "usr_";
pub const SESSION_PREFIX: &str = "ses_";
pub const PERSONAL_TOKEN_ID_PREFIX: &str = "pat_";
pub const INVITATION_PREFIX: &str = "ivt_";
pub const INVOCATION_PREFIX: &str = "inv_";
/// Conversations that an invocation names none for.
pub const CONVERSATION_PREFIX: &str = "conv_";

// Prefixes of the credentials themselves: shown once, stored only as hashes; the prefix tells a
// person (and a secret scanner) what kind of credential leaked.
/// The bootstrap admin token (only while no user exists).
pub const ADMIN_TOKEN_PREFIX: &str = "ava_";
/// API keys.
pub const API_KEY_TOKEN_PREFIX: &str = "avk_";
/// Console sessions (the cookie).
pub const SESSION_TOKEN_PREFIX: &str = "avs_";
/// Personal access tokens.
pub const PERSONAL_TOKEN_PREFIX: &str = "avp_";
/// Invitation codes.
pub const INVITATION_CODE_PREFIX: &str = "avi_";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Where an agent's functions may connect, through agentvault's egress proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressMode {
    /// The public internet on ports 80 and 443 (and what the operator opened).
    Default,
    /// Only the listed hosts.
    Allowlist,
    /// No network at all.
    None,
}

impl EgressMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::Default => "default",
            EgressMode::Allowlist => "allowlist",
            EgressMode::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<EgressMode> {
        [EgressMode::Default, EgressMode::Allowlist, EgressMode::None].into_iter().find(|m| m.as_str() == s)
    }
}

/// An agent's egress policy: the mode, and for an allowlist its host patterns (`api.stripe.com`,
/// `*.googleapis.com`, optionally with `:port`), already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressPolicy {
    pub mode: EgressMode,
    pub hosts: Vec<String>,
    pub updated_at: Millis,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy { mode: EgressMode::Default, hosts: Vec::new(), updated_at: 0 }
    }
}

/// An environment an agent runs in. A conversation (and an API key) belongs to one; a secret may
/// have its own value in each, and a function runs the version deployed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Env {
    /// Building and testing: runs the latest saved version of each function.
    Sandbox,
    /// Runs the version deployed to it (by a member or an admin).
    PreRelease,
    /// Runs the version deployed to it (by an admin).
    Live,
}

impl Env {
    pub const ALL: [Env; 3] = [Env::Sandbox, Env::PreRelease, Env::Live];

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Sandbox => "sandbox",
            Env::PreRelease => "pre-release",
            Env::Live => "live",
        }
    }

    pub fn parse(s: &str) -> Option<Env> {
        Env::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Its place in [`Env::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The secret id an environment's own value is sealed for (its versions are numbered apart
    /// from the default value's, so the binding names the environment too).
    pub fn binding_id(self, secret_id: &str) -> String {
        format!("{secret_id}@{}", self.as_str())
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret's own value for one environment (its metadata): it replaces the default value there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvValueMeta {
    pub env: Env,
    pub kind: SecretKind,
    pub keys: Option<Vec<String>>,
    /// The current version of this environment's value (numbered from 1, apart from the default's).
    pub version: u32,
    pub updated_at: Millis,
}

/// Everything about a secret except its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMeta {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: String,
    pub kind: SecretKind,
    /// Key names of a key/value secret's current version.
    pub keys: Option<Vec<String>>,
    pub version: u32,
    /// Agents allowed to read it, sorted.
    pub agents: Vec<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Its value reaches only function versions an admin deployed (to pre-release or live), and
    /// code in sandbox only through the secret's own sandbox value.
    pub protected: bool,
    /// The environments with their own value, in [`Env::ALL`] order.
    pub envs: Vec<EnvValueMeta>,
}

impl SecretMeta {
    /// The environment's own value, if it has one.
    pub fn env_value(&self, env: Env) -> Option<&EnvValueMeta> {
        self.envs.iter().find(|e| e.env == env)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersionMeta {
    pub version: u32,
    pub kind: SecretKind,
    pub keys: Option<Vec<String>>,
    pub created_at: Millis,
    pub created_by: String,
}

/// A sealed secret version as stored: the value encrypted under a data key, and the data key
/// wrapped by a root key. Both byte strings are `nonce || ciphertext || tag`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub root_key_id: String,
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("root_key_id", &self.root_key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The binding that a sealed value is tied to; moving a ciphertext elsewhere fails to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    pub workspace_id: &'a str,
    pub secret_id: &'a str,
    pub version: u32,
}

/// Which agents an API key may act for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyScope {
    All,
    Agents(BTreeSet<String>),
}

impl KeyScope {
    pub fn covers(&self, agent_id: &str) -> bool {
        match self {
            KeyScope::All => true,
            KeyScope::Agents(set) => set.contains(agent_id),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyMeta {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// The first characters of the token, to recognise it in a list.
    pub prefix: String,
    pub scope: KeyScope,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    pub created_by: String,
    /// The environment it reads values for; `None`: every environment (the read chooses with
    /// `?env=`, and reads the default value without it).
    pub env: Option<Env>,
}

impl ApiKeyMeta {
    pub fn is_usable(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// An admin token (the bootstrap token). Stored only as a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

pub const FUNCTION_PREFIX: &str = "fn_";

/// The type of a function parameter, as the LLM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    String,
    Number,
    Integer,
    Boolean,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
        }
    }

    pub fn parse(s: &str) -> Option<ParamType> {
        [ParamType::String, ParamType::Number, ParamType::Integer, ParamType::Boolean]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// A parameter the LLM fills in when it calls a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionParam {
    pub name: String,
    pub description: String,
    pub kind: ParamType,
    /// The definition gives it no default: an invocation must pass it (found by the code check;
    /// false for functions saved before agentvault recorded it).
    pub required: bool,
}

/// An agent's Python function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub id: String,
    pub workspace_id: String,
    pub agent_id: String,
    pub name: String,
    /// Tells the LLM when to call it.
    pub description: String,
    pub parameters: Vec<FunctionParam>,
    /// `def <name>(conv: Conversation, <params>...)` and whatever else the module needs.
    pub code: String,
    /// Wall-clock limit of one invocation; the server default when absent.
    pub timeout_ms: Option<u32>,
    pub version: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The secrets the code names (`get_secret('<literal>')`), found when it was saved.
    pub secret_refs: Vec<SecretRef>,
    /// Which version pre-release and live run (sandbox runs `version`), in [`Env::ALL`] order.
    pub deployments: Vec<Deployment>,
}

/// A function version deployed to an environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub env: Env,
    pub version: u32,
    /// The actor id of who deployed it (`system` for the deployments made on upgrade).
    pub deployed_by: String,
    pub deployed_at: Millis,
    /// Deployed by an admin (or by agentvault on upgrade): such a version may read protected
    /// secrets.
    pub by_admin: bool,
}

/// One saved version of a function: immutable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionVersion {
    pub version: u32,
    pub description: String,
    pub parameters: Vec<FunctionParam>,
    pub code: String,
    pub timeout_ms: Option<u32>,
    pub created_at: Millis,
    /// The actor id of who saved it.
    pub created_by: String,
}

/// A function as deployed to an environment: its definition at the deployed version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployedFunction {
    pub deployment: Deployment,
    /// `version`, `description`, `parameters`, `code` and `timeout_ms` are the deployed
    /// version's; `secret_refs` and `deployments` are empty.
    pub function: Function,
}

/// A `get_secret('<name>')` call with a literal name in a function's code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub secret: String,
    /// 1-based.
    pub line: u32,
}

/// A member's request that an agent may read a secret, for an admin to approve or decline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRequest {
    pub id: String,
    pub workspace_id: String,
    pub agent_id: String,
    pub secret_name: String,
    /// The user who asked.
    pub requested_by: String,
    pub requested_at: Millis,
    /// `pending`, `approved` or `declined`.
    pub status: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<Millis>,
}

/// A function that names a secret: where a change to the secret shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    pub agent_id: String,
    pub function_name: String,
    pub line: u32,
}

/// A person who signs in to the console or uses a personal access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A console session. The cookie holds a random token; only its hash is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
    /// The client address it was created from.
    pub client: String,
    pub user_agent: String,
}

impl Session {
    pub fn is_usable(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// A personal access token: acts as its user on the API. Only its hash is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonalToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

impl PersonalToken {
    pub fn is_usable(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// An invitation to join a workspace with a role. The invitee chooses their own password (or
/// proves they hold the existing account); the code is shown once and only its hash is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub workspace_id: String,
    pub email: String,
    pub role: Role,
    /// The id of the admin (user or bootstrap token) who sent it.
    pub invited_by: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
    pub accepted_at: Option<Millis>,
}

impl Invitation {
    /// Not used, revoked or expired.
    pub fn is_pending(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.accepted_at.is_none() && now < self.expires_at
    }

    /// The one answer for a code that is unknown, used, revoked or expired.
    pub fn unusable() -> Error {
        Error::not_found(
            "invitation_invalid",
            "this invitation link is not valid (it is unknown, was already used or revoked, or has expired); \
             ask your workspace admin for a new invitation",
        )
    }
}

/// A member of a workspace, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: User,
    pub role: Role,
    pub joined_at: Millis,
}

/// A role in a workspace. Admins manage everything; members build agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Member,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Something a request does inside a workspace; each needs a minimum role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// List and read agents.
    ViewAgents,
    /// Create, rename and delete agents (and, later, their functions).
    ManageAgents,
    /// Names, descriptions, types and key names of the secrets one agent can read.
    ViewAgentSecrets,
    /// List the workspace's users and API keys (never tokens).
    ViewPeople,
    /// Everything about secrets: list, create, change, grant, reveal, delete.
    ManageSecrets,
    /// Create and revoke API keys.
    ManageApiKeys,
    /// Add, change and remove users.
    ManageMembers,
    /// Read the audit log.
    ReadAudit,
    /// Run an agent's functions (also open to API keys scoped to the agent).
    InvokeFunctions,
    /// Set where an agent's functions may connect.
    ManageEgress,
}

impl Perm {
    pub fn min_role(self) -> Role {
        match self {
            Perm::ViewAgents
            | Perm::ManageAgents
            | Perm::ViewAgentSecrets
            | Perm::ViewPeople
            | Perm::InvokeFunctions => Role::Member,
            Perm::ManageSecrets | Perm::ManageApiKeys | Perm::ManageMembers | Perm::ReadAudit | Perm::ManageEgress => {
                Role::Admin
            }
        }
    }
}

/// Who is making a request, once the credential has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap token before any user exists: admin of every workspace. Once the first
    /// admin user is created it becomes that user's personal access token.
    Setup { token_id: String },
    /// A person, by session or personal access token, with a role in each of their workspaces.
    User { user_id: String, roles: BTreeMap<String, Role> },
    /// An API key: reads secrets for the agents in its scope, within its workspace.
    ApiKey { key_id: String, workspace_id: String, scope: KeyScope },
}

impl Principal {
    /// The actor recorded in the audit log.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Setup { token_id } => Actor::AdminToken(token_id.clone()),
            Principal::User { user_id, .. } => Actor::User(user_id.clone()),
            Principal::ApiKey { key_id, .. } => Actor::ApiKey(key_id.clone()),
        }
    }

    /// Whether this principal may see that a workspace exists.
    pub fn sees_workspace(&self, workspace_id: &str) -> bool {
        match self {
            Principal::Setup { .. } => true,
            Principal::User { roles, .. } => roles.contains_key(workspace_id),
            Principal::ApiKey { workspace_id: ws, .. } => ws == workspace_id,
        }
    }

    /// The caller's role in a workspace it can see.
    pub fn role_in(&self, workspace_id: &str) -> Option<Role> {
        match self {
            Principal::Setup { .. } => Some(Role::Admin),
            Principal::User { roles, .. } => roles.get(workspace_id).copied(),
            Principal::ApiKey { .. } => None,
        }
    }

    /// Checks that the caller may do `perm` in a workspace it can see.
    pub fn require(&self, workspace_id: &str, perm: Perm) -> Result<()> {
        match (self, self.role_in(workspace_id)) {
            (Principal::ApiKey { .. }, _) => Err(Error::forbidden(
                "API keys can only read secrets for the agents in their scope; managing a workspace needs a user's credential",
            )),
            (_, Some(role)) if role >= perm.min_role() => Ok(()),
            _ => Err(Error::forbidden("this needs the admin role in this workspace; ask one of its admins")),
        }
    }

    /// Creating a workspace needs the bootstrap token or a user who is an admin somewhere.
    pub fn may_create_workspace(&self) -> bool {
        match self {
            Principal::Setup { .. } => true,
            Principal::User { roles, .. } => roles.values().any(|r| *r == Role::Admin),
            Principal::ApiKey { .. } => false,
        }
    }
}

/// The actor of an audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    AdminToken(String),
    User(String),
    ApiKey(String),
    /// An agent's function, reading a secret through `conv.utils.get_secret`.
    Agent(String),
    System,
}

impl Actor {
    /// The kinds as audit records store them ([`Actor::kind`]).
    pub const ADMIN_TOKEN: &'static str = "admin_token";
    pub const USER: &'static str = "user";
    pub const API_KEY: &'static str = "api_key";
    pub const AGENT: &'static str = "agent";
    pub const SYSTEM: &'static str = "system";

    pub fn kind(&self) -> &'static str {
        match self {
            Actor::AdminToken(_) => Actor::ADMIN_TOKEN,
            Actor::User(_) => Actor::USER,
            Actor::ApiKey(_) => Actor::API_KEY,
            Actor::Agent(_) => Actor::AGENT,
            Actor::System => Actor::SYSTEM,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Actor::AdminToken(id) | Actor::User(id) | Actor::ApiKey(id) | Actor::Agent(id) => id,
            Actor::System => "system",
        }
    }

    pub fn from_parts(kind: &str, id: String) -> Actor {
        match kind {
            Actor::ADMIN_TOKEN => Actor::AdminToken(id),
            Actor::USER => Actor::User(id),
            Actor::API_KEY => Actor::ApiKey(id),
            Actor::AGENT => Actor::Agent(id),
            _ => Actor::System,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_scope_and_expiry() {
        let scope = KeyScope::Agents(["agt_a".to_string()].into());
        assert!(scope.covers("agt_a"));
        assert!(!scope.covers("agt_b"));
        assert!(KeyScope::All.covers("agt_b"));
        let mut key = ApiKeyMeta {
            id: "key_1".into(),
            workspace_id: "ws_1".into(),
            name: "ci".into(),
            prefix: "avk_x".into(),
            scope,
            created_at: 0,
            expires_at: Some(100),
            revoked_at: None,
            last_used_at: None,
            created_by: "adm_1".into(),
            env: None,
        };
        assert!(key.is_usable(99));
        assert!(!key.is_usable(100));
        key.expires_at = None;
        assert!(key.is_usable(i64::MAX));
        key.revoked_at = Some(5);
        assert!(!key.is_usable(6));
    }

    #[test]
    fn api_keys_cannot_manage() {
        let p = Principal::ApiKey { key_id: "key_1".into(), workspace_id: "ws_1".into(), scope: KeyScope::All };
        assert_eq!(p.require("ws_1", Perm::ViewAgents).unwrap_err().code, "forbidden");
        assert!(p.sees_workspace("ws_1"));
        assert!(!p.sees_workspace("ws_2"));
        assert!(!p.may_create_workspace());
        let setup = Principal::Setup { token_id: "adm_1".into() };
        assert!(setup.require("ws_any", Perm::ManageSecrets).is_ok());
    }

    #[test]
    fn roles_grant_what_they_should() {
        let roles = [("ws_a".to_string(), Role::Admin), ("ws_m".to_string(), Role::Member)].into();
        let p = Principal::User { user_id: "usr_1".into(), roles };
        for perm in [Perm::ViewAgents, Perm::ManageAgents, Perm::ViewAgentSecrets, Perm::ViewPeople] {
            assert!(p.require("ws_m", perm).is_ok(), "{perm:?}");
        }
        for perm in [Perm::ManageSecrets, Perm::ManageApiKeys, Perm::ManageMembers, Perm::ReadAudit, Perm::ManageEgress]
        {
            assert!(p.require("ws_m", perm).is_err(), "a member may not {perm:?}");
            assert!(p.require("ws_a", perm).is_ok(), "an admin may {perm:?}");
            assert!(p.require("ws_other", perm).is_err());
        }
        assert!(p.sees_workspace("ws_m") && !p.sees_workspace("ws_other"));
        assert!(p.may_create_workspace());
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("owner"), None);
    }
}
