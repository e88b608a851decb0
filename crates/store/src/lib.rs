//! Storage for agentvault: the [`Store`] trait, shaped by what the server does, and its
//! backends. Callers never see SQL.
//!
//! What every backend shares lives beside the trait: the rows and their conversions
//! (`rows`), the errors with their API codes (`errors`) and the domain rules (`rules`). A
//! backend (today [`SqliteStore`], in `sqlite/`) holds only its SQL, its connections and its
//! migrations; the conformance suite (`conformance`, public with the `conformance` feature)
//! checks that it behaves as the trait says.

use agentvault_core::audit::{AuditEvent, AuditEventRef, AuditFilter, AuditRecord};
use agentvault_core::model::{
    AccessRequest, AdminToken, Agent, ApiKeyMeta, DeployedFunction, Deployment, EgressPolicy, Env, Function,
    FunctionVersion, Invitation, Member, Millis, PersonalToken, Role, Sealed, SecretMeta, SecretUse, SecretVersionMeta,
    Session, User, Workspace,
};
use agentvault_core::{Result, SecretKind};
use async_trait::async_trait;

/// Compiles the SQL every backend shares (`sql/`) into the calling backend's module, against the
/// `Backend`, `Conn` and `Db` types that module names (the same files, once per backend).
macro_rules! shared_sql {
    () => {
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/access.rs"]
        mod access;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/agents.rs"]
        mod agents;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/audit.rs"]
        mod audit;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/changes.rs"]
        mod changes;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/credentials.rs"]
        mod credentials;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/functions.rs"]
        mod functions;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/invitations.rs"]
        mod invitations;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/keys.rs"]
        mod keys;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/people.rs"]
        mod people;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/secrets.rs"]
        mod secrets;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/store.rs"]
        mod store;
        #[allow(clippy::duplicate_mod)]
        #[path = "../sql/workspaces.rs"]
        mod workspaces;
    };
}
pub(crate) use shared_sql;

pub mod audit_segment;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod errors;
mod migrations;
mod postgres;
mod rows;
mod rules;
mod sqlite;
#[cfg(any(test, feature = "conformance"))]
pub mod testing;
pub mod transfer;
mod write_tx;

pub use postgres::{DatabaseUrl, PostgresStore};
pub use sqlite::SqliteStore;

/// A secret's metadata with the sealed bytes of its current version: what the in-memory read
/// model holds.
/// Where the audit export stream stands: the last segment it read (by first sequence number) and
/// the last row of `audit_log`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportPosition {
    pub segments: i64,
    pub rows: i64,
}

/// A batch of the audit export stream.
#[derive(Debug, Default)]
pub struct ExportBatch {
    /// Rows of `audit_log` after the position, in sequence order.
    pub rows: Vec<AuditRecord>,
    /// Whole segments after the position, in order: each one's first sequence number and records.
    pub segments: Vec<(i64, Vec<AuditRecord>)>,
}

#[derive(Clone, Debug)]
pub struct SecretRecord {
    pub meta: SecretMeta,
    pub sealed: Sealed,
    /// The sealed current version of each environment's own value (`meta.envs` describes them),
    /// in the same order.
    pub envs: Vec<(Env, Sealed)>,
}

/// A change to one environment's own value: a new version of it, or (None) no own value any more
/// (the environment reads the default value again; the versions stay).
#[derive(Clone, Debug)]
pub struct EnvChange<'a> {
    pub env: Env,
    /// The number of the new version (the caller sealed the value for it): one more than the
    /// newest of this environment's versions, also a removed value's, or the store refuses with
    /// a conflict. Unused for a removal.
    pub version: u32,
    pub value: Option<NewVersion<'a>>,
}

/// A new version of a secret's value, sealed by the caller.
#[derive(Clone, Debug)]
pub struct NewVersion<'a> {
    pub kind: SecretKind,
    pub keys: Option<&'a [String]>,
    pub sealed: &'a Sealed,
}

/// A change to a secret: any of a new description and a new value.
#[derive(Clone, Debug)]
pub struct SecretChange<'a> {
    pub secret_id: &'a str,
    /// The version the caller based its change on; if the secret has moved on, the store
    /// refuses with a conflict instead of losing an update.
    pub expected_version: u32,
    pub description: Option<&'a str>,
    pub value: Option<NewVersion<'a>>,
    /// Changes to environments' own values (each at most once).
    pub envs: &'a [EnvChange<'a>],
    /// A new value of the protected flag.
    pub protected: Option<bool>,
    pub now: Millis,
    pub actor_id: &'a str,
}

/// One committed mutating transaction, from the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its number: every mutating transaction takes the next one, visible in commit order.
    pub seq: i64,
    /// The workspace it changed; `None` when it spans workspaces (apply it by reloading all).
    pub workspace_id: Option<String>,
    /// The agent it concerns, when one.
    pub agent_id: Option<String>,
    /// Its audit actions (`secret.update`, …).
    pub actions: Vec<String>,
    /// Made by this process (through this store), which applied it to its read model already.
    pub mine: bool,
}

/// A name for this process among the servers sharing a database, for the change feed.
fn new_origin() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

/// One sealed version, for root key rotation.
#[derive(Clone, Debug)]
pub struct SealedVersion {
    pub workspace_id: String,
    pub secret_id: String,
    /// The environment whose own value it is; `None` for the default value.
    pub env: Option<Env>,
    pub version: u32,
    pub sealed: Sealed,
}

/// A password change: the new hash, and which credentials of the user end with it.
#[derive(Clone, Debug)]
pub struct PasswordChange<'a> {
    pub user_id: &'a str,
    pub password_hash: &'a str,
    pub now: Millis,
    /// The session that made the change stays; every other live session of the user ends.
    pub keep_session: Option<&'a str>,
    /// Also revoke the user's personal access tokens (except `keep_token`).
    pub revoke_tokens: bool,
    pub keep_token: Option<&'a str>,
}

/// An account created by accepting an invitation.
#[derive(Clone, Copy, Debug)]
pub struct NewAccount<'a> {
    pub user: &'a User,
    pub password_hash: &'a str,
}

/// The storage of agentvault. Every mutation takes the audit record describing it and writes
/// both in one transaction: a change is never stored without its audit record, nor the reverse.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;
    // --- the change feed --------------------------------------------------------------------

    /// The number of the newest committed change (0 before any).
    async fn latest_change(&self) -> Result<i64>;
    /// The changes after `after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>>;
    /// Forgets the changes numbered below `before`; returns how many.
    async fn prune_changes(&self, before: i64) -> Result<u64>;
    /// The newest change this process committed (0 before any).
    fn committed_change(&self) -> i64;
    /// Waits until a change may have been committed (by this or, on PostgreSQL, another server),
    /// at most `timeout`. Returns true when notifications may have been missed meanwhile (a lost
    /// connection): the caller should then read everything again.
    async fn wait_for_changes(&self, timeout: std::time::Duration) -> bool;

    /// Closes the connections (SQLite: after moving the audit journal into the table and
    /// checkpointing the WAL).
    async fn close(&self);

    // --- workspaces and the bootstrap -------------------------------------------------------

    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;
    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>>;
    /// Creates a workspace, with `owner` (a user id) as its admin; 409 `workspace_exists` if the
    /// name is taken.
    async fn create_workspace(&self, ws: &Workspace, owner: Option<&str>, audit: &AuditEvent) -> Result<()>;
    async fn has_admin_tokens(&self) -> Result<bool>;
    async fn create_admin_token(&self, token: &AdminToken, token_hash: &[u8]) -> Result<()>;
    /// Removes every admin token; returns how many there were. Once a user exists, no admin
    /// token may remain.
    async fn delete_admin_tokens(&self) -> Result<u64>;
    /// All admin tokens with their hashes (the read model holds them).
    async fn load_admin_tokens(&self) -> Result<Vec<(AdminToken, Vec<u8>)>>;

    // --- agents -----------------------------------------------------------------------------

    async fn list_agents(&self, workspace_id: &str) -> Result<Vec<Agent>>;
    async fn load_all_agents(&self) -> Result<Vec<Agent>>;
    async fn get_agent(&self, workspace_id: &str, agent_id: &str) -> Result<Option<Agent>>;
    /// 409 `agent_exists` if the workspace has an agent of that name.
    async fn create_agent(&self, agent: &Agent, audit: &AuditEvent) -> Result<()>;
    /// Stores the new name/description; 404 if gone, 409 on a duplicate name.
    async fn update_agent(&self, agent: &Agent, audit: &AuditEvent) -> Result<()>;
    /// Deletes the agent and its grants and API key scopes; 404 if gone.
    async fn delete_agent(&self, workspace_id: &str, agent_id: &str, audit: &AuditEvent) -> Result<()>;
    /// The agent's egress policy; None when it has the default one.
    async fn get_egress_policy(&self, workspace_id: &str, agent_id: &str) -> Result<Option<EgressPolicy>>;
    /// Stores the agent's egress policy; 404 `agent_not_found` if the agent is gone.
    async fn set_egress_policy(
        &self,
        workspace_id: &str,
        agent_id: &str,
        policy: &EgressPolicy,
        audit: &AuditEvent,
    ) -> Result<()>;

    // --- secrets ----------------------------------------------------------------------------

    /// Secrets that are injected only: `(workspace_id, secret_id, hosts)` of each.
    async fn load_injections(&self) -> Result<Vec<(String, String, Vec<String>)>>;
    /// Marks a secret injected only, with the hosts its value may be sent to, or (None) readable
    /// by functions again; 404 `secret_not_found` if the secret is gone.
    async fn set_injection(
        &self,
        workspace_id: &str,
        secret_id: &str,
        hosts: Option<&[String]>,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<()>;
    /// agentvault's egress CA: its certificate (PEM) and its sealed private key.
    async fn get_egress_ca(&self) -> Result<Option<(String, Sealed)>>;
    /// Stores the egress CA unless one exists (several replicas may start at once); returns the
    /// one stored.
    async fn create_egress_ca(&self, cert_pem: &str, sealed: &Sealed, now: Millis) -> Result<(String, Sealed)>;
    /// Replaces the egress CA key's wrapping (root key rotation).
    async fn rewrap_egress_ca(&self, sealed: &Sealed) -> Result<()>;

    async fn list_secrets(&self, workspace_id: &str) -> Result<Vec<SecretMeta>>;
    async fn get_secret(&self, workspace_id: &str, name: &str) -> Result<Option<SecretMeta>>;
    /// Creates a secret at version 1 with its access list. 409 `secret_exists` on a duplicate
    /// name; 422 `unknown_agent` if an agent is not in the workspace (nothing is stored).
    async fn create_secret(&self, meta: &SecretMeta, sealed: &Sealed, audit: &AuditEvent) -> Result<()>;
    /// As `create_secret`, with environments' own values (each at version 1; `meta.envs`
    /// describes them, `envs` holds their sealed values) and `meta.protected`, in one transaction.
    async fn create_secret_with_envs(
        &self,
        meta: &SecretMeta,
        sealed: &Sealed,
        envs: &[(Env, Sealed)],
        audit: &AuditEvent,
    ) -> Result<()>;
    /// Creates several secrets (each at version 1) in one transaction, with their audit records:
    /// all of them or, on any refusal (as for `create_secret`), none.
    async fn create_secrets(&self, secrets: &[(SecretMeta, Sealed)], audit: &[AuditEvent]) -> Result<()>;
    /// Applies a change; returns the new metadata.
    async fn update_secret(
        &self,
        workspace_id: &str,
        change: &SecretChange<'_>,
        audit: &AuditEvent,
    ) -> Result<SecretMeta>;
    /// Replaces the access list; 422 `unknown_agent` as for create. Returns the new metadata.
    async fn set_secret_access(
        &self,
        workspace_id: &str,
        secret_id: &str,
        agents: &[String],
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<SecretMeta>;
    /// Deletes the secret, its versions (and so their key material) and grants.
    async fn delete_secret(&self, workspace_id: &str, secret_id: &str, audit: &AuditEvent) -> Result<()>;
    async fn list_versions(&self, workspace_id: &str, secret_id: &str) -> Result<Vec<SecretVersionMeta>>;
    /// The versions of one environment's own value, newest first (also those of a removed one).
    async fn list_env_versions(&self, workspace_id: &str, secret_id: &str, env: Env) -> Result<Vec<SecretVersionMeta>>;
    /// One version's sealed value (to restore it as a new version); `None` if the secret of the
    /// workspace has no such version.
    async fn sealed_version(&self, workspace_id: &str, secret_id: &str, version: u32) -> Result<Option<SealedVersion>>;
    /// Every secret (of one workspace, or all) with its current sealed version, for the read model.
    async fn load_current_secrets(&self, workspace_id: Option<&str>) -> Result<Vec<SecretRecord>>;

    // --- API keys ---------------------------------------------------------------------------

    async fn create_api_key(&self, key: &ApiKeyMeta, token_hash: &[u8], audit: &AuditEvent) -> Result<()>;
    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKeyMeta>>;
    /// Marks the key revoked; returns it. 404 if unknown; revoking twice is a no-op.
    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        key_id: &str,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<ApiKeyMeta>;
    /// The API keys (of one workspace, or all) with their hashes, for the read model.
    async fn load_api_keys(&self, workspace_id: Option<&str>) -> Result<Vec<(ApiKeyMeta, Vec<u8>)>>;
    /// Records when keys were last used (flushed in batches, off the request path).
    async fn record_api_key_use(&self, uses: &[(String, Millis)]) -> Result<()>;

    // --- audit ------------------------------------------------------------------------------

    /// Appends records in one transaction (the group commit of the audit writer).
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()>;
    /// Whether `append_audit` is a local write costing about as much as handing a record to
    /// another task (SQLite's journal): the audit writer then appends each record from its own
    /// request instead of group-committing.
    fn appends_audit_locally(&self) -> bool;
    /// Appends records with that local write, on the calling thread and from borrowed fields (a
    /// read's own record costs no allocation). A store without a local write refuses.
    fn append_audit_now(&self, events: &[AuditEventRef<'_>]) -> Result<()>;
    /// Newest first (oldest first with `filter.oldest_first`).
    async fn list_audit(&self, workspace_id: &str, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// Merges small audit segments of a workspace into larger ones (at most `max_merges`
    /// merges); only segments at or before `through_seq` when given. Returns how many segments
    /// were merged away.
    async fn compact_audit(&self, through_seq: Option<i64>, max_merges: usize) -> Result<u64>;
    /// Drops audit records older than `before` (whole segments whose newest record is older);
    /// with the export stream's positions, only what it has read. Returns how many were dropped.
    async fn drop_audit_before(&self, before: Millis, exported: Option<ExportPosition>) -> Result<u64>;
    /// The next records for the audit export stream, after `from`.
    async fn audit_export_batch(&self, from: ExportPosition, limit: u32) -> Result<ExportBatch>;
    /// Where the export stream stands and when it last said so (none before its first batch).
    async fn audit_export_position(&self) -> Result<Option<(ExportPosition, Millis)>>;
    /// Records where the export stream stands, at `now`.
    async fn set_audit_export_position(&self, position: ExportPosition, now: Millis) -> Result<()>;
    /// When each of `secret_names` was last read successfully by an agent (a `secret.read`
    /// record with outcome `success`): by `agent_id` when given, else by any agent. Names never
    /// read are left out. A few index probes per name, however long the log is.
    async fn last_reads(
        &self,
        workspace_id: &str,
        agent_id: Option<&str>,
        secret_names: &[String],
    ) -> Result<Vec<(String, Millis)>>;

    // --- people -----------------------------------------------------------------------------

    async fn count_users(&self) -> Result<u64>;
    /// Creates the first admin: the user, an admin membership in every workspace, and the
    /// bootstrap token (if any) turned into that user's personal access token. Refused with 409
    /// `setup_done` once any user exists.
    async fn setup_first_admin(&self, user: &User, password_hash: &str, audit: &[AuditEvent]) -> Result<()>;
    /// Creates a user with memberships. 409 `user_exists` if the email is taken.
    async fn create_user(
        &self,
        user: &User,
        password_hash: &str,
        memberships: &[(String, Role)],
        audit: &[AuditEvent],
    ) -> Result<()>;
    /// A user and their password hash, by email (case-insensitive).
    async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>>;
    async fn get_user(&self, user_id: &str) -> Result<Option<User>>;
    /// Stores a new password hash and ends the user's other sessions (and, if asked, their
    /// personal access tokens) in the same transaction. Returns how many sessions and tokens
    /// ended.
    async fn set_password(&self, change: &PasswordChange<'_>, audit: &[AuditEvent]) -> Result<(u64, u64)>;
    /// The workspaces of a user with the role in each.
    async fn memberships_of(&self, user_id: &str) -> Result<Vec<(String, Role)>>;
    async fn list_members(&self, workspace_id: &str) -> Result<Vec<Member>>;
    /// 409 `already_member` if the user is in the workspace.
    async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<()>;
    /// 404 `member_not_found`; 409 `last_admin` when it would leave the workspace without admin.
    async fn set_role(&self, workspace_id: &str, user_id: &str, role: Role, audit: &AuditEvent) -> Result<()>;
    /// 404 `member_not_found`; 409 `last_admin` for the only admin.
    async fn remove_member(&self, workspace_id: &str, user_id: &str, audit: &AuditEvent) -> Result<()>;

    // --- sessions and personal access tokens ----------------------------------------------

    async fn create_session(&self, session: &Session, token_hash: &[u8], audit: &[AuditEvent]) -> Result<()>;
    async fn session_by_hash(&self, token_hash: &[u8]) -> Result<Option<Session>>;
    async fn list_sessions(&self, user_id: &str) -> Result<Vec<Session>>;
    /// 404 `session_not_found` unless the session is the user's.
    async fn revoke_session(&self, user_id: &str, session_id: &str, now: Millis, audit: &[AuditEvent]) -> Result<()>;
    async fn create_personal_token(&self, token: &PersonalToken, token_hash: &[u8], audit: &[AuditEvent])
    -> Result<()>;
    async fn personal_token_by_hash(&self, token_hash: &[u8]) -> Result<Option<PersonalToken>>;
    async fn list_personal_tokens(&self, user_id: &str) -> Result<Vec<PersonalToken>>;
    /// 404 `token_not_found` unless the token is the user's.
    async fn revoke_personal_token(
        &self,
        user_id: &str,
        token_id: &str,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<PersonalToken>;
    async fn record_personal_token_use(&self, token_id: &str, at: Millis) -> Result<()>;
    /// Stores the hash of a one-time code for `purpose`, replacing any earlier one.
    async fn set_one_time_code(&self, purpose: &str, code_hash: &[u8], now: Millis) -> Result<()>;
    async fn one_time_code(&self, purpose: &str) -> Result<Option<Vec<u8>>>;

    // --- invitations ------------------------------------------------------------------------

    /// Stores a new invitation and revokes any pending one for the same email and workspace.
    /// 409 `already_member` if a user with that email is in the workspace.
    async fn create_invitation(&self, invitation: &Invitation, code_hash: &[u8], audit: &[AuditEvent]) -> Result<()>;
    /// The pending (not used, revoked or expired) invitations of a workspace, newest first.
    async fn list_invitations(&self, workspace_id: &str, now: Millis) -> Result<Vec<Invitation>>;
    async fn invitation_by_hash(&self, code_hash: &[u8]) -> Result<Option<Invitation>>;
    /// 404 `invitation_not_found` unless the invitation is pending in that workspace.
    async fn revoke_invitation(
        &self,
        workspace_id: &str,
        invitation_id: &str,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<Invitation>;
    /// Marks a pending invitation used and makes `user_id` a member with its role, creating the
    /// account first when `new_account` is given — all in one transaction. 404
    /// `invitation_invalid` when it is no longer pending; 409 `already_member`; 409 `user_exists`.
    async fn accept_invitation(
        &self,
        invitation: &Invitation,
        user_id: &str,
        new_account: Option<NewAccount<'_>>,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<()>;

    // --- access requests ----------------------------------------------------------------------

    /// Stores a pending request; 409 `access_request_pending` if one for the same agent and
    /// secret is still pending, 422 `unknown_agent` if the agent is not in the workspace.
    async fn create_access_request(&self, request: &AccessRequest, audit: &AuditEvent) -> Result<()>;
    /// The workspace's requests, newest first (at most 500).
    async fn list_access_requests(&self, workspace_id: &str) -> Result<Vec<AccessRequest>>;
    /// Marks a pending request `approved` or `declined`; with `grant` (`secret_id`, the new
    /// access list) the secret's access list is replaced in the same transaction. 404
    /// `access_request_not_found` unless the request is pending. Returns the decided request.
    #[allow(clippy::too_many_arguments)]
    async fn decide_access_request(
        &self,
        workspace_id: &str,
        request_id: &str,
        status: &str,
        decided_by: &str,
        at: Millis,
        grant: Option<(&str, &[String])>,
        audit: &[AuditEvent],
    ) -> Result<AccessRequest>;

    // --- functions ----------------------------------------------------------------------------

    async fn list_functions(&self, workspace_id: &str, agent_id: &str) -> Result<Vec<Function>>;
    /// Every function (of one workspace, or all), for the read model.
    async fn load_functions(&self, workspace_id: Option<&str>) -> Result<Vec<Function>>;
    async fn get_function(&self, workspace_id: &str, agent_id: &str, name: &str) -> Result<Option<Function>>;
    /// 409 `function_exists` if the agent has a function of that name.
    async fn create_function(&self, function: &Function, audit: &AuditEvent) -> Result<()>;
    /// Stores the new definition as `function.version`, if the stored one is still
    /// `function.version - 1` (409 `version_conflict` otherwise).
    async fn update_function(&self, function: &Function, audit: &AuditEvent) -> Result<()>;
    /// 404 `function_not_found` if there is none.
    async fn delete_function(&self, workspace_id: &str, agent_id: &str, name: &str, audit: &AuditEvent) -> Result<()>;
    /// Records what the code check found in a stored function (its parameters' `required` flags
    /// and its `secret_refs`) without changing its definition or version, if `function.version`
    /// is still the stored one (else nothing happens: a newer version was checked when saved).
    /// Derived data for functions saved before agentvault recorded it; no audit record.
    async fn record_function_check(&self, function: &Function) -> Result<()>;
    /// The functions of a workspace whose code names `secret_name` (`Function::secret_refs`, stored
    /// with each create and update), ordered by agent id, function name and line.
    async fn secret_uses(&self, workspace_id: &str, secret_name: &str) -> Result<Vec<SecretUse>>;
    /// Every saved version of a function, newest first; 404 `function_not_found` if there is none.
    async fn list_function_versions(
        &self,
        workspace_id: &str,
        agent_id: &str,
        name: &str,
    ) -> Result<Vec<FunctionVersion>>;
    /// Makes `deployment.version` the version `deployment.env` (pre-release or live) runs; 404
    /// `function_not_found`, 404 `version_not_found` if the function has no such version.
    /// Returns the function with its deployments.
    async fn deploy_function(
        &self,
        workspace_id: &str,
        agent_id: &str,
        name: &str,
        deployment: &Deployment,
        audit: &AuditEvent,
    ) -> Result<Function>;
    /// Every deployed function version (of one workspace, or all), for the read model.
    async fn load_deployed_functions(&self, workspace_id: Option<&str>) -> Result<Vec<DeployedFunction>>;

    // --- root key rotation ------------------------------------------------------------------

    async fn all_sealed_versions(&self) -> Result<Vec<SealedVersion>>;
    /// Stores re-wrapped data keys (the value ciphertexts are unchanged) and records
    /// `active_key_id` as the root key the data is sealed under, in one transaction.
    async fn replace_wrapped_keys(
        &self,
        rewrapped: &[SealedVersion],
        active_key_id: &str,
        audit: &[AuditEvent],
    ) -> Result<()>;
    /// Records `key_id` as the root key the data is sealed under unless one is recorded already
    /// (a new installation); returns the recorded one.
    async fn claim_root_key(&self, key_id: &str) -> Result<String>;
}
