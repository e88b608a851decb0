//! The JSON API (README "A walk through the API"; layers in docs/architecture.md): request and
//! response shapes, and the handlers.

pub mod access;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod doc;
pub mod functions;
pub mod injection;
pub mod invoke;
pub mod keys;
pub mod me;
pub mod members;
pub mod ops;
pub mod read;
pub mod secrets;
mod unique_keys;
pub mod workspaces;

use agentvault_core::model::{Agent, ApiKeyMeta, KeyScope, Millis, SecretMeta, SecretVersionMeta, Workspace};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use self::doc::SecretValueSchema;
use crate::rfc3339;

/// A list response.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
}

impl<T> From<Vec<T>> for List<T> {
    fn from(items: Vec<T>) -> Self {
        List { items }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceOut {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<Workspace> for WorkspaceOut {
    fn from(w: Workspace) -> Self {
        WorkspaceOut { id: w.id, name: w.name, created_at: rfc3339(w.created_at) }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AgentOut {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Agent> for AgentOut {
    fn from(a: Agent) -> Self {
        AgentOut {
            id: a.id,
            workspace_id: a.workspace_id,
            name: a.name,
            description: a.description,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

/// `single` or `kv`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretType {
    Single,
    Kv,
}

impl From<agentvault_core::SecretKind> for SecretType {
    fn from(k: agentvault_core::SecretKind) -> Self {
        match k {
            agentvault_core::SecretKind::Single => SecretType::Single,
            agentvault_core::SecretKind::Kv => SecretType::Kv,
        }
    }
}

/// A secret's metadata. Never its value.
#[derive(Serialize, ToSchema)]
pub struct SecretOut {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: SecretType,
    /// Key names of a key/value secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Agents allowed to read it.
    pub agents: Vec<String>,
    /// The current version.
    pub version: u32,
    pub created_at: String,
    pub updated_at: String,
    /// Its value reaches only function versions an admin deployed; code in sandbox gets only
    /// its own sandbox value.
    pub protected: bool,
    /// The environments with their own value (the others read the default value).
    pub environments: Vec<EnvValueOut>,
}

/// An environment's own value (metadata).
#[derive(Serialize, ToSchema)]
pub struct EnvValueOut {
    #[schema(value_type = doc::Env)]
    pub env: &'static str,
    #[serde(rename = "type")]
    pub kind: SecretType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Its current version (numbered apart from the default value's).
    pub version: u32,
    pub updated_at: String,
}

impl From<SecretMeta> for SecretOut {
    fn from(m: SecretMeta) -> Self {
        SecretOut {
            protected: m.protected,
            environments: m
                .envs
                .into_iter()
                .map(|e| EnvValueOut {
                    env: e.env.as_str(),
                    kind: e.kind.into(),
                    keys: e.keys,
                    version: e.version,
                    updated_at: rfc3339(e.updated_at),
                })
                .collect(),
            id: m.id,
            name: m.name,
            description: m.description,
            kind: m.kind.into(),
            keys: m.keys,
            agents: m.agents,
            version: m.version,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VersionOut {
    pub version: u32,
    #[serde(rename = "type")]
    pub kind: SecretType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    pub created_at: String,
    /// The id of the credential that wrote it.
    pub created_by: String,
}

impl From<SecretVersionMeta> for VersionOut {
    fn from(v: SecretVersionMeta) -> Self {
        VersionOut {
            version: v.version,
            kind: v.kind.into(),
            keys: v.keys,
            created_at: rfc3339(v.created_at),
            created_by: v.created_by,
        }
    }
}

/// Which agents an API key acts for: `"all"` or a list of agent ids.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
#[serde(untagged)]
pub enum AgentsScope {
    /// The string `"all"`.
    All(String),
    Agents(Vec<String>),
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    pub agents: AgentsScope,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_by: String,
    /// The environment it reads values for, or `all` (a read chooses with `?env=`).
    #[schema(pattern = "^(all|sandbox|pre-release|live)$")]
    pub env: &'static str,
}

/// The state of a credential (API key, personal token, session) as shown in lists.
pub fn credential_status(revoked: bool, usable: bool) -> &'static str {
    match (revoked, usable) {
        (true, _) => "revoked",
        (false, true) => "active",
        (false, false) => "expired",
    }
}

impl ApiKeyOut {
    pub fn new(k: ApiKeyMeta, now: Millis) -> ApiKeyOut {
        let status = credential_status(k.revoked_at.is_some(), k.is_usable(now));
        ApiKeyOut {
            agents: match k.scope {
                KeyScope::All => AgentsScope::All("all".into()),
                KeyScope::Agents(set) => AgentsScope::Agents(set.into_iter().collect()),
            },
            status,
            env: k.env.map_or("all", |e| e.as_str()),
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
            created_by: k.created_by,
        }
    }
}
