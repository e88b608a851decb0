//! Rows as every backend reads them, and their conversions into the core types. Columns have
//! the same names and meaning in every backend's schema; integers are read as `i64` (the one
//! integer type every database has) and checked on the way in.
//!
//! [`columns!`] gives the column list of each row type, for `SELECT`s built with `concat!`.

use std::collections::BTreeSet;

use agentvault_core::audit::{Action, AuditEvent, AuditRecord, Outcome};
use agentvault_core::model::{
    AccessRequest, Actor, AdminToken, Agent, ApiKeyMeta, DeployedFunction, Deployment, Env, EnvValueMeta, Function,
    FunctionParam, FunctionVersion, Invitation, KeyScope, Member, Millis, ParamType, PersonalToken, Role, Sealed,
    SecretMeta, SecretRef, SecretUse, SecretVersionMeta, Session, User, Workspace,
};
use agentvault_core::{Error, Result, SecretKind};

use crate::SealedVersion;
use crate::errors::bad_column;

/// The column list of a row type, as a literal (for `concat!`).
macro_rules! columns {
    (workspace) => {
        "id, name, created_at"
    };
    (agent) => {
        "id, workspace_id, name, description, created_at, updated_at"
    };
    // Secrets `s` joined with their current version `v`.
    (secret) => {
        "s.id, s.workspace_id, s.name, s.description, s.current_version, s.created_at, s.updated_at, s.protected, \
         v.kind, v.keys, v.root_key_id, v.wrapped_dek, v.ciphertext"
    };
    (admin_token) => {
        "id, name, token_hash, created_at, revoked_at"
    };
    (api_key) => {
        "id, workspace_id, name, prefix, token_hash, all_agents, created_at, expires_at, revoked_at, last_used_at, \
         created_by, env"
    };
    // An environment's own value `e` (of `secret_envs`) joined with its current version `v`.
    (env_value) => {
        "e.secret_id, e.env, e.current_version, e.updated_at, v.kind, v.keys, v.root_key_id, v.wrapped_dek, v.ciphertext"
    };
    (function_version) => {
        "version, description, parameters, code, timeout_ms, created_at, created_by"
    };
    (deployment) => {
        "function_id, env, version, deployed_by, deployed_at, by_admin"
    };
    (audit) => {
        "seq, at, workspace_id, actor_type, actor_id, action, outcome, secret_name, agent_id, target_id, detail"
    };
    (user) => {
        "id, email, name, created_at, updated_at"
    };
    (session) => {
        "id, user_id, created_at, expires_at, revoked_at, client, user_agent"
    };
    (personal_token) => {
        "id, user_id, name, prefix, created_at, expires_at, revoked_at, last_used_at"
    };
    (invitation) => {
        "id, workspace_id, email, role, invited_by, created_at, expires_at, revoked_at, accepted_at"
    };
    (function) => {
        "id, workspace_id, agent_id, name, description, parameters, code, timeout_ms, version, created_at, updated_at"
    };
}
pub(crate) use columns;

fn version(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad_column("version", v))
}

fn kind(kind: &str) -> Result<SecretKind> {
    SecretKind::parse(kind).ok_or_else(|| bad_column("secret kind", kind))
}

pub(crate) fn env(env: &str) -> Result<Env> {
    Env::parse(env).ok_or_else(|| bad_column("environment", env))
}

fn role(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| bad_column("role", role))
}

/// A key/value value's key names, as stored (a JSON array).
pub(crate) fn keys_json(keys: Option<&[String]>) -> Option<String> {
    keys.map(|k| serde_json::Value::from(k.to_vec()).to_string())
}

fn keys(keys: Option<String>) -> Result<Option<Vec<String>>> {
    keys.map(|k| serde_json::from_str(&k).map_err(|e| Error::internal(format!("bad key list: {e}")))).transpose()
}

/// A row type and its `sqlx::FromRow`, reading each field from the column of its name (`#[flatten]`
/// reads a nested row from the same columns). Written out instead of sqlx's derive, which brings in
/// sqlx's proc-macro crate and with it a second build of sqlx, tokio and SQLite for the host (about
/// 80 s of every cold build on two cores). Each backend's row type gets an impl.
macro_rules! row {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$flat:ident])? $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        $vis struct $name {
            $($field: $ty),*
        }

        row!(@impl $name, sqlx::sqlite::SqliteRow, $($field $(, $flat)?);*);
        row!(@impl $name, sqlx::postgres::PgRow, $($field $(, $flat)?);*);
    };
    (@impl $name:ident, $row_type:ty, $($field:ident $(, $flat:ident)?);*) => {
        impl<'r> sqlx::FromRow<'r, $row_type> for $name {
            fn from_row(row: &'r $row_type) -> std::result::Result<Self, sqlx::Error> {
                Ok($name { $($field: row!(@get row, $field $(, $flat)?)),* })
            }
        }
    };
    (@get $row:ident, $field:ident) => {
        sqlx::Row::try_get($row, stringify!($field))?
    };
    (@get $row:ident, $field:ident, flatten) => {
        sqlx::FromRow::from_row($row)?
    };
}

row! {
    pub(crate) struct WorkspaceRow {
        id: String,
        name: String,
        created_at: Millis,
    }
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Workspace { id: r.id, name: r.name, created_at: r.created_at }
    }
}

row! {
    pub(crate) struct AgentRow {
        id: String,
        workspace_id: String,
        name: String,
        description: String,
        created_at: Millis,
        updated_at: Millis,
    }
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Self {
        Agent {
            id: r.id,
            workspace_id: r.workspace_id,
            name: r.name,
            description: r.description,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

row! {
    /// A secret with its current version (`columns!(secret)`).
    pub(crate) struct SecretRow {
        id: String,
        workspace_id: String,
        name: String,
        description: String,
        current_version: i64,
        created_at: Millis,
        updated_at: Millis,
        protected: bool,
        kind: String,
        keys: Option<String>,
        root_key_id: String,
        wrapped_dek: Vec<u8>,
        ciphertext: Vec<u8>,
    }
}

impl SecretRow {
    /// The metadata, with the access list `agents`, and the sealed current version.
    pub(crate) fn into_record(self, agents: Vec<String>) -> Result<(SecretMeta, Sealed)> {
        let meta = SecretMeta {
            kind: kind(&self.kind)?,
            keys: keys(self.keys)?,
            version: version(self.current_version)?,
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            description: self.description,
            agents,
            created_at: self.created_at,
            updated_at: self.updated_at,
            protected: self.protected,
            envs: Vec::new(),
        };
        let sealed =
            Sealed { root_key_id: self.root_key_id, wrapped_dek: self.wrapped_dek, ciphertext: self.ciphertext };
        Ok((meta, sealed))
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

row! {
    /// An environment's own value with its current version (`columns!(env_value)`).
    pub(crate) struct EnvValueRow {
        secret_id: String,
        env: String,
        current_version: i64,
        updated_at: Millis,
        kind: String,
        keys: Option<String>,
        root_key_id: String,
        wrapped_dek: Vec<u8>,
        ciphertext: Vec<u8>,
    }
}

impl EnvValueRow {
    /// `(secret id, metadata, sealed current version)`.
    pub(crate) fn into_parts(self) -> Result<(String, EnvValueMeta, Sealed)> {
        let meta = EnvValueMeta {
            env: env(&self.env)?,
            kind: kind(&self.kind)?,
            keys: keys(self.keys)?,
            version: version(self.current_version)?,
            updated_at: self.updated_at,
        };
        let sealed =
            Sealed { root_key_id: self.root_key_id, wrapped_dek: self.wrapped_dek, ciphertext: self.ciphertext };
        Ok((self.secret_id, meta, sealed))
    }
}

row! {
    pub(crate) struct VersionRow {
        version: i64,
        kind: String,
        keys: Option<String>,
        created_at: Millis,
        created_by: String,
    }
}

impl TryFrom<VersionRow> for SecretVersionMeta {
    type Error = Error;
    fn try_from(r: VersionRow) -> Result<Self> {
        Ok(SecretVersionMeta {
            version: version(r.version)?,
            kind: kind(&r.kind)?,
            keys: keys(r.keys)?,
            created_at: r.created_at,
            created_by: r.created_by,
        })
    }
}

row! {
    pub(crate) struct SealedVersionRow {
        workspace_id: String,
        secret_id: String,
        env: Option<String>,
        version: i64,
        root_key_id: String,
        wrapped_dek: Vec<u8>,
        ciphertext: Vec<u8>,
    }
}

impl TryFrom<SealedVersionRow> for SealedVersion {
    type Error = Error;
    fn try_from(r: SealedVersionRow) -> Result<Self> {
        Ok(SealedVersion {
            version: version(r.version)?,
            workspace_id: r.workspace_id,
            secret_id: r.secret_id,
            env: r.env.as_deref().map(env).transpose()?,
            sealed: Sealed { root_key_id: r.root_key_id, wrapped_dek: r.wrapped_dek, ciphertext: r.ciphertext },
        })
    }
}

row! {
    pub(crate) struct AdminTokenRow {
        id: String,
        name: String,
        token_hash: Vec<u8>,
        created_at: Millis,
        revoked_at: Option<Millis>,
    }
}

impl From<AdminTokenRow> for (AdminToken, Vec<u8>) {
    fn from(r: AdminTokenRow) -> Self {
        (AdminToken { id: r.id, name: r.name, created_at: r.created_at, revoked_at: r.revoked_at }, r.token_hash)
    }
}

row! {
    pub(crate) struct ApiKeyRow {
        id: String,
        workspace_id: String,
        name: String,
        prefix: String,
        token_hash: Vec<u8>,
        all_agents: bool,
        created_at: Millis,
        expires_at: Option<Millis>,
        revoked_at: Option<Millis>,
        last_used_at: Option<Millis>,
        created_by: String,
        env: Option<String>,
    }
}

impl ApiKeyRow {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The key with its scope (`agents`: the agents of a limited key) and its token hash.
    pub(crate) fn into_key(self, agents: Option<BTreeSet<String>>) -> Result<(ApiKeyMeta, Vec<u8>)> {
        let scope = if self.all_agents { KeyScope::All } else { KeyScope::Agents(agents.unwrap_or_default()) };
        let key = ApiKeyMeta {
            env: self.env.as_deref().map(env).transpose()?,
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            prefix: self.prefix,
            scope,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
            created_by: self.created_by,
        };
        Ok((key, self.token_hash))
    }
}

row! {
    pub(crate) struct AuditRow {
        seq: i64,
        at: Millis,
        workspace_id: String,
        actor_type: String,
        actor_id: String,
        action: String,
        outcome: String,
        secret_name: Option<String>,
        agent_id: Option<String>,
        target_id: Option<String>,
        detail: Option<String>,
    }
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = Error;
    fn try_from(r: AuditRow) -> Result<Self> {
        Ok(AuditRecord {
            seq: r.seq,
            event: AuditEvent {
                at: r.at,
                workspace_id: r.workspace_id,
                actor: Actor::from_parts(&r.actor_type, r.actor_id),
                action: Action::parse(&r.action).ok_or_else(|| bad_column("audit action", &r.action))?,
                outcome: Outcome::parse(&r.outcome).ok_or_else(|| bad_column("audit outcome", &r.outcome))?,
                secret_name: r.secret_name,
                agent_id: r.agent_id,
                target_id: r.target_id,
                detail: r.detail,
            },
        })
    }
}

row! {
    pub(crate) struct UserRow {
        id: String,
        email: String,
        name: String,
        created_at: Millis,
        updated_at: Millis,
    }
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User { id: r.id, email: r.email, name: r.name, created_at: r.created_at, updated_at: r.updated_at }
    }
}

row! {
    /// A user with their password hash (`columns!(user), password_hash`).
    pub(crate) struct UserWithHashRow {
        #[flatten]
        user: UserRow,
        password_hash: String,
    }
}

impl From<UserWithHashRow> for (User, String) {
    fn from(r: UserWithHashRow) -> Self {
        (r.user.into(), r.password_hash)
    }
}

row! {
    /// A member: `columns!(user)` of the user, `role` and `joined_at`.
    pub(crate) struct MemberRow {
        #[flatten]
        user: UserRow,
        role: String,
        joined_at: Millis,
    }
}

impl TryFrom<MemberRow> for Member {
    type Error = Error;
    fn try_from(r: MemberRow) -> Result<Self> {
        Ok(Member { role: role(&r.role)?, user: r.user.into(), joined_at: r.joined_at })
    }
}

row! {
    pub(crate) struct MembershipRow {
        workspace_id: String,
        role: String,
    }
}

impl TryFrom<MembershipRow> for (String, Role) {
    type Error = Error;
    fn try_from(r: MembershipRow) -> Result<Self> {
        Ok((r.workspace_id, role(&r.role)?))
    }
}

/// A stored role, read.
pub(crate) fn parse_role(stored: &str) -> Result<Role> {
    role(stored)
}

row! {
    pub(crate) struct SessionRow {
        id: String,
        user_id: String,
        created_at: Millis,
        expires_at: Millis,
        revoked_at: Option<Millis>,
        client: String,
        user_agent: String,
    }
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: r.id,
            user_id: r.user_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            client: r.client,
            user_agent: r.user_agent,
        }
    }
}

row! {
    pub(crate) struct PersonalTokenRow {
        id: String,
        user_id: String,
        name: String,
        prefix: String,
        created_at: Millis,
        expires_at: Option<Millis>,
        revoked_at: Option<Millis>,
        last_used_at: Option<Millis>,
    }
}

impl From<PersonalTokenRow> for PersonalToken {
    fn from(r: PersonalTokenRow) -> Self {
        PersonalToken {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        }
    }
}

row! {
    pub(crate) struct InvitationRow {
        id: String,
        workspace_id: String,
        email: String,
        role: String,
        invited_by: String,
        created_at: Millis,
        expires_at: Millis,
        revoked_at: Option<Millis>,
        accepted_at: Option<Millis>,
    }
}

impl TryFrom<InvitationRow> for Invitation {
    type Error = Error;
    fn try_from(r: InvitationRow) -> Result<Self> {
        Ok(Invitation {
            role: role(&r.role)?,
            id: r.id,
            workspace_id: r.workspace_id,
            email: r.email,
            invited_by: r.invited_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            accepted_at: r.accepted_at,
        })
    }
}

row! {
    pub(crate) struct FunctionRow {
        id: String,
        workspace_id: String,
        agent_id: String,
        name: String,
        description: String,
        parameters: String,
        code: String,
        timeout_ms: Option<i64>,
        version: i64,
        created_at: Millis,
        updated_at: Millis,
    }
}

/// A function's parameters, as stored (a JSON array of `{name, description, type}`, with
/// `"required": true` for those a call must pass).
pub(crate) fn params_json(params: &[FunctionParam]) -> String {
    let list: Vec<serde_json::Value> = params
        .iter()
        .map(|p| {
            let mut v = serde_json::json!({"name": p.name, "description": p.description, "type": p.kind.as_str()});
            if p.required {
                v["required"] = serde_json::Value::Bool(true);
            }
            v
        })
        .collect();
    serde_json::Value::from(list).to_string()
}

/// A function's parameters from their stored form ([`params_json`]).
fn parse_params(text: &str) -> Result<Vec<FunctionParam>> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| Error::internal(format!("bad function parameters: {e}")))?;
    list.iter()
        .map(|p| {
            Ok(FunctionParam {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                description: p["description"].as_str().unwrap_or_default().to_owned(),
                kind: ParamType::parse(p["type"].as_str().unwrap_or_default())
                    .ok_or_else(|| Error::internal("bad function parameter type"))?,
                required: p["required"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

row! {
    pub(crate) struct FunctionVersionRow {
        version: i64,
        description: String,
        parameters: String,
        code: String,
        timeout_ms: Option<i64>,
        created_at: Millis,
        created_by: String,
    }
}

impl TryFrom<FunctionVersionRow> for FunctionVersion {
    type Error = Error;
    fn try_from(r: FunctionVersionRow) -> Result<Self> {
        Ok(FunctionVersion {
            version: version(r.version)?,
            parameters: parse_params(&r.parameters)?,
            timeout_ms: r.timeout_ms.and_then(|t| u32::try_from(t).ok()),
            description: r.description,
            code: r.code,
            created_at: r.created_at,
            created_by: r.created_by,
        })
    }
}

row! {
    pub(crate) struct DeploymentRow {
        function_id: String,
        env: String,
        version: i64,
        deployed_by: String,
        deployed_at: Millis,
        by_admin: bool,
    }
}

impl DeploymentRow {
    /// `(function id, deployment)`.
    pub(crate) fn into_parts(self) -> Result<(String, Deployment)> {
        let d = Deployment {
            env: env(&self.env)?,
            version: version(self.version)?,
            deployed_by: self.deployed_by,
            deployed_at: self.deployed_at,
            by_admin: self.by_admin,
        };
        Ok((self.function_id, d))
    }
}

row! {
    /// A deployed function version: its function at that version, and the deployment.
    pub(crate) struct DeployedRow {
        #[flatten]
        function: FunctionRow,
        env: String,
        deployed_by: String,
        deployed_at: Millis,
        by_admin: bool,
    }
}

impl TryFrom<DeployedRow> for DeployedFunction {
    type Error = Error;
    fn try_from(r: DeployedRow) -> Result<Self> {
        let function = Function::try_from(r.function)?;
        let deployment = Deployment {
            env: env(&r.env)?,
            version: function.version,
            deployed_by: r.deployed_by,
            deployed_at: r.deployed_at,
            by_admin: r.by_admin,
        };
        Ok(DeployedFunction { deployment, function })
    }
}

impl TryFrom<FunctionRow> for Function {
    type Error = Error;
    fn try_from(r: FunctionRow) -> Result<Self> {
        let parameters = parse_params(&r.parameters)?;
        Ok(Function {
            parameters,
            timeout_ms: r.timeout_ms.and_then(|t| u32::try_from(t).ok()),
            version: version(r.version)?,
            id: r.id,
            workspace_id: r.workspace_id,
            agent_id: r.agent_id,
            name: r.name,
            description: r.description,
            code: r.code,
            created_at: r.created_at,
            updated_at: r.updated_at,
            secret_refs: Vec::new(),
            deployments: Vec::new(),
        })
    }
}

row! {
    /// One `get_secret('<name>')` of a function.
    pub(crate) struct SecretRefRow {
        function_id: String,
        secret_name: String,
        line: i64,
    }
}

row! {
    /// A function that names a secret.
    pub(crate) struct SecretUseRow {
        agent_id: String,
        function_name: String,
        line: i64,
    }
}

row! {
    pub(crate) struct AccessRequestRow {
        id: String,
        workspace_id: String,
        agent_id: String,
        secret_name: String,
        requested_by: String,
        requested_at: Millis,
        status: String,
        decided_by: Option<String>,
        decided_at: Option<Millis>,
    }
}

impl From<AccessRequestRow> for AccessRequest {
    fn from(r: AccessRequestRow) -> Self {
        AccessRequest {
            id: r.id,
            workspace_id: r.workspace_id,
            agent_id: r.agent_id,
            secret_name: r.secret_name,
            requested_by: r.requested_by,
            requested_at: r.requested_at,
            status: r.status,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
        }
    }
}

impl SecretRefRow {
    /// The function's id and the reference.
    pub(crate) fn into_parts(self) -> (String, SecretRef) {
        (self.function_id, SecretRef { secret: self.secret_name, line: u32::try_from(self.line).unwrap_or(0) })
    }
}

impl From<SecretUseRow> for SecretUse {
    fn from(r: SecretUseRow) -> Self {
        SecretUse { agent_id: r.agent_id, function_name: r.function_name, line: u32::try_from(r.line).unwrap_or(0) }
    }
}

/// Converts each row (a shorthand for the many `rows.into_iter().map(TryInto::try_into)`).
pub(crate) fn convert<R, T: TryFrom<R, Error = Error>>(rows: Vec<R>) -> Result<Vec<T>> {
    rows.into_iter().map(T::try_from).collect()
}

row! {
    /// A row of the change feed.
    pub(crate) struct ChangeRow {
        seq: i64,
        workspace_id: Option<String>,
        agent_id: Option<String>,
        actions: String,
        origin: String,
    }
}

impl ChangeRow {
    /// The change, as seen by the process named `origin`.
    pub(crate) fn into_change(self, origin: &str) -> crate::Change {
        crate::Change {
            seq: self.seq,
            mine: self.origin == origin,
            workspace_id: self.workspace_id,
            agent_id: self.agent_id,
            actions: self.actions.split(' ').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
        }
    }
}
