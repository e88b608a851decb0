//! [`Store`] for a backend: each method runs its area's function (the SQL every backend shares)
//! and turns a [`crate::errors::DbError`] into the API error. Written once, compiled into each
//! backend's module with its own `Backend` type.

use agentvault_core::Result;
use agentvault_core::audit::{AuditEvent, AuditEventRef, AuditFilter, AuditRecord};
use agentvault_core::model::{
    AccessRequest, AdminToken, Agent, ApiKeyMeta, DeployedFunction, Deployment, EgressPolicy, Env, Function,
    FunctionVersion, Invitation, Member, Millis, PersonalToken, Role, Sealed, SecretMeta, SecretUse,
    SecretVersionMeta, Session, User, Workspace,
};
use async_trait::async_trait;

use super::{
    Backend, access, agents, audit, changes, credentials, functions, invitations, keys, people, secrets, workspaces,
};
use crate::errors::DbError;
use crate::{Change, ExportBatch, ExportPosition, NewAccount, PasswordChange, SealedVersion, SecretChange, SecretRecord, Store};

#[async_trait]
impl Store for Backend {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await.map_err(DbError::from)?;
        Ok(())
    }

    async fn close(&self) {
        Backend::close(self).await
    }

    async fn latest_change(&self) -> Result<i64> {
        Ok(changes::latest(self).await?)
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        Ok(changes::since(self, after, limit).await?)
    }

    async fn prune_changes(&self, before: i64) -> Result<u64> {
        Ok(changes::prune(self, before).await?)
    }

    fn committed_change(&self) -> i64 {
        self.committed.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn wait_for_changes(&self, timeout: std::time::Duration) -> bool {
        Backend::wait_for_changes(self, timeout).await
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        Ok(workspaces::list(self).await?)
    }

    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>> {
        Ok(workspaces::get(self, id).await?)
    }

    async fn create_workspace(&self, ws: &Workspace, owner: Option<&str>, audit: &AuditEvent) -> Result<()> {
        Ok(workspaces::create(self, ws, owner, audit).await?)
    }

    async fn has_admin_tokens(&self) -> Result<bool> {
        Ok(workspaces::has_admin_tokens(self).await?)
    }

    async fn create_admin_token(&self, token: &AdminToken, token_hash: &[u8]) -> Result<()> {
        Ok(workspaces::create_admin_token(self, token, token_hash).await?)
    }

    async fn delete_admin_tokens(&self) -> Result<u64> {
        Ok(workspaces::delete_admin_tokens(self).await?)
    }

    async fn load_admin_tokens(&self) -> Result<Vec<(AdminToken, Vec<u8>)>> {
        Ok(workspaces::load_admin_tokens(self).await?)
    }

    async fn list_agents(&self, workspace_id: &str) -> Result<Vec<Agent>> {
        Ok(agents::list(self, workspace_id).await?)
    }

    async fn load_all_agents(&self) -> Result<Vec<Agent>> {
        Ok(agents::load_all(self).await?)
    }

    async fn get_agent(&self, workspace_id: &str, agent_id: &str) -> Result<Option<Agent>> {
        Ok(agents::get(self, workspace_id, agent_id).await?)
    }

    async fn create_agent(&self, agent: &Agent, audit: &AuditEvent) -> Result<()> {
        Ok(agents::create(self, agent, audit).await?)
    }

    async fn update_agent(&self, agent: &Agent, audit: &AuditEvent) -> Result<()> {
        Ok(agents::update(self, agent, audit).await?)
    }

    async fn delete_agent(&self, workspace_id: &str, agent_id: &str, audit: &AuditEvent) -> Result<()> {
        Ok(agents::delete(self, workspace_id, agent_id, audit).await?)
    }

    async fn get_egress_policy(&self, workspace_id: &str, agent_id: &str) -> Result<Option<EgressPolicy>> {
        Ok(agents::get_egress(self, workspace_id, agent_id).await?)
    }

    async fn set_egress_policy(
        &self,
        workspace_id: &str,
        agent_id: &str,
        policy: &EgressPolicy,
        audit: &AuditEvent,
    ) -> Result<()> {
        Ok(agents::set_egress(self, workspace_id, agent_id, policy, audit).await?)
    }

    async fn load_injections(&self) -> Result<Vec<(String, String, Vec<String>)>> {
        Ok(secrets::load_injections(self).await?)
    }

    async fn set_injection(
        &self,
        workspace_id: &str,
        secret_id: &str,
        hosts: Option<&[String]>,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<()> {
        Ok(secrets::set_injection(self, workspace_id, secret_id, hosts, now, audit).await?)
    }

    async fn get_egress_ca(&self) -> Result<Option<(String, Sealed)>> {
        Ok(secrets::get_egress_ca(self).await?)
    }

    async fn rewrap_egress_ca(&self, sealed: &Sealed) -> Result<()> {
        Ok(secrets::rewrap_egress_ca(self, sealed).await?)
    }

    async fn create_egress_ca(&self, cert_pem: &str, sealed: &Sealed, now: Millis) -> Result<(String, Sealed)> {
        secrets::create_egress_ca(self, cert_pem, sealed, now).await?;
        self.get_egress_ca()
            .await?
            .ok_or_else(|| agentvault_core::Error::internal("the egress CA was stored but cannot be read back"))
    }

    async fn list_secrets(&self, workspace_id: &str) -> Result<Vec<SecretMeta>> {
        Ok(secrets::list(self, workspace_id).await?)
    }

    async fn get_secret(&self, workspace_id: &str, name: &str) -> Result<Option<SecretMeta>> {
        Ok(secrets::get(self, workspace_id, name).await?)
    }

    async fn create_secret(&self, meta: &SecretMeta, sealed: &Sealed, audit: &AuditEvent) -> Result<()> {
        Ok(secrets::create(self, meta, sealed, &[], audit).await?)
    }

    async fn create_secret_with_envs(
        &self,
        meta: &SecretMeta,
        sealed: &Sealed,
        envs: &[(Env, Sealed)],
        audit: &AuditEvent,
    ) -> Result<()> {
        Ok(secrets::create(self, meta, sealed, envs, audit).await?)
    }

    async fn create_secrets(&self, secrets: &[(SecretMeta, Sealed)], audit: &[AuditEvent]) -> Result<()> {
        Ok(secrets::create_many(self, secrets, audit).await?)
    }

    async fn update_secret(
        &self,
        workspace_id: &str,
        change: &SecretChange<'_>,
        audit: &AuditEvent,
    ) -> Result<SecretMeta> {
        Ok(secrets::update(self, workspace_id, change, audit).await?)
    }

    async fn set_secret_access(
        &self,
        workspace_id: &str,
        secret_id: &str,
        agents: &[String],
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<SecretMeta> {
        Ok(secrets::set_access(self, workspace_id, secret_id, agents, now, audit).await?)
    }

    async fn delete_secret(&self, workspace_id: &str, secret_id: &str, audit: &AuditEvent) -> Result<()> {
        Ok(secrets::delete(self, workspace_id, secret_id, audit).await?)
    }

    async fn list_versions(&self, workspace_id: &str, secret_id: &str) -> Result<Vec<SecretVersionMeta>> {
        Ok(secrets::list_versions(self, workspace_id, secret_id).await?)
    }

    async fn list_env_versions(
        &self,
        workspace_id: &str,
        secret_id: &str,
        env: Env,
    ) -> Result<Vec<SecretVersionMeta>> {
        Ok(secrets::list_env_versions(self, workspace_id, secret_id, env).await?)
    }

    async fn load_current_secrets(&self, workspace_id: Option<&str>) -> Result<Vec<SecretRecord>> {
        Ok(secrets::load_current(self, workspace_id).await?)
    }

    async fn create_api_key(&self, key: &ApiKeyMeta, token_hash: &[u8], audit: &AuditEvent) -> Result<()> {
        Ok(keys::create(self, key, token_hash, audit).await?)
    }

    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKeyMeta>> {
        Ok(keys::list(self, workspace_id).await?)
    }

    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        key_id: &str,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<ApiKeyMeta> {
        Ok(keys::revoke(self, workspace_id, key_id, now, audit).await?)
    }

    async fn load_api_keys(&self, workspace_id: Option<&str>) -> Result<Vec<(ApiKeyMeta, Vec<u8>)>> {
        Ok(keys::load(self, workspace_id).await?)
    }

    async fn record_api_key_use(&self, uses: &[(String, Millis)]) -> Result<()> {
        Ok(keys::record_use(self, uses).await?)
    }

    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        Ok(self.append_audit_records(events).await?)
    }

    fn appends_audit_locally(&self) -> bool {
        Self::APPENDS_AUDIT_LOCALLY
    }

    fn append_audit_now(&self, events: &[AuditEventRef<'_>]) -> Result<()> {
        Ok(self.append_audit_records_now(events)?)
    }

    async fn list_audit(&self, workspace_id: &str, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        Ok(audit::list(self, workspace_id, filter).await?)
    }

    async fn compact_audit(&self, through_seq: Option<i64>, max_merges: usize) -> Result<u64> {
        Ok(audit::compact(self, through_seq, max_merges).await?)
    }

    async fn drop_audit_before(&self, before: Millis, exported: Option<ExportPosition>) -> Result<u64> {
        Ok(audit::drop_before(self, before, exported).await?)
    }

    async fn audit_export_batch(&self, from: ExportPosition, limit: u32) -> Result<ExportBatch> {
        Ok(audit::export_batch(self, from, limit).await?)
    }

    async fn audit_export_position(&self) -> Result<Option<(ExportPosition, Millis)>> {
        Ok(audit::export_position(self).await?)
    }

    async fn set_audit_export_position(&self, position: ExportPosition, now: Millis) -> Result<()> {
        Ok(audit::set_export_position(self, position, now).await?)
    }

    async fn last_reads(
        &self,
        workspace_id: &str,
        agent_id: Option<&str>,
        secret_names: &[String],
    ) -> Result<Vec<(String, Millis)>> {
        Ok(audit::last_reads(self, workspace_id, agent_id, secret_names).await?)
    }

    async fn count_users(&self) -> Result<u64> {
        Ok(people::count_users(self).await?)
    }

    async fn setup_first_admin(&self, user: &User, password_hash: &str, audit: &[AuditEvent]) -> Result<()> {
        Ok(people::setup_first_admin(self, user, password_hash, audit).await?)
    }

    async fn create_user(
        &self,
        user: &User,
        password_hash: &str,
        memberships: &[(String, Role)],
        audit: &[AuditEvent],
    ) -> Result<()> {
        Ok(people::create_user(self, user, password_hash, memberships, audit).await?)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>> {
        Ok(people::by_email(self, email).await?)
    }

    async fn get_user(&self, user_id: &str) -> Result<Option<User>> {
        Ok(people::get(self, user_id).await?)
    }

    async fn set_password(&self, change: &PasswordChange<'_>, audit: &[AuditEvent]) -> Result<(u64, u64)> {
        Ok(people::set_password(self, change, audit).await?)
    }

    async fn memberships_of(&self, user_id: &str) -> Result<Vec<(String, Role)>> {
        Ok(people::memberships_of(self, user_id).await?)
    }

    async fn list_members(&self, workspace_id: &str) -> Result<Vec<Member>> {
        Ok(people::list_members(self, workspace_id).await?)
    }

    async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<()> {
        Ok(people::add_member(self, workspace_id, user_id, role, now, audit).await?)
    }

    async fn set_role(&self, workspace_id: &str, user_id: &str, role: Role, audit: &AuditEvent) -> Result<()> {
        Ok(people::set_role(self, workspace_id, user_id, role, audit).await?)
    }

    async fn remove_member(&self, workspace_id: &str, user_id: &str, audit: &AuditEvent) -> Result<()> {
        Ok(people::remove_member(self, workspace_id, user_id, audit).await?)
    }

    async fn create_session(&self, session: &Session, token_hash: &[u8], audit: &[AuditEvent]) -> Result<()> {
        Ok(credentials::create_session(self, session, token_hash, audit).await?)
    }

    async fn session_by_hash(&self, token_hash: &[u8]) -> Result<Option<Session>> {
        Ok(credentials::session_by_hash(self, token_hash).await?)
    }

    async fn list_sessions(&self, user_id: &str) -> Result<Vec<Session>> {
        Ok(credentials::list_sessions(self, user_id).await?)
    }

    async fn revoke_session(&self, user_id: &str, session_id: &str, now: Millis, audit: &[AuditEvent]) -> Result<()> {
        Ok(credentials::revoke_session(self, user_id, session_id, now, audit).await?)
    }

    async fn create_personal_token(
        &self,
        token: &PersonalToken,
        token_hash: &[u8],
        audit: &[AuditEvent],
    ) -> Result<()> {
        Ok(credentials::create_personal_token(self, token, token_hash, audit).await?)
    }

    async fn personal_token_by_hash(&self, token_hash: &[u8]) -> Result<Option<PersonalToken>> {
        Ok(credentials::personal_token_by_hash(self, token_hash).await?)
    }

    async fn list_personal_tokens(&self, user_id: &str) -> Result<Vec<PersonalToken>> {
        Ok(credentials::list_personal_tokens(self, user_id).await?)
    }

    async fn revoke_personal_token(
        &self,
        user_id: &str,
        token_id: &str,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<PersonalToken> {
        Ok(credentials::revoke_personal_token(self, user_id, token_id, now, audit).await?)
    }

    async fn record_personal_token_use(&self, token_id: &str, at: Millis) -> Result<()> {
        Ok(credentials::record_personal_token_use(self, token_id, at).await?)
    }

    async fn set_one_time_code(&self, purpose: &str, code_hash: &[u8], now: Millis) -> Result<()> {
        Ok(credentials::set_one_time_code(self, purpose, code_hash, now).await?)
    }

    async fn one_time_code(&self, purpose: &str) -> Result<Option<Vec<u8>>> {
        Ok(credentials::one_time_code(self, purpose).await?)
    }

    async fn create_invitation(&self, invitation: &Invitation, code_hash: &[u8], audit: &[AuditEvent]) -> Result<()> {
        Ok(invitations::create(self, invitation, code_hash, audit).await?)
    }

    async fn list_invitations(&self, workspace_id: &str, now: Millis) -> Result<Vec<Invitation>> {
        Ok(invitations::list(self, workspace_id, now).await?)
    }

    async fn invitation_by_hash(&self, code_hash: &[u8]) -> Result<Option<Invitation>> {
        Ok(invitations::by_hash(self, code_hash).await?)
    }

    async fn revoke_invitation(
        &self,
        workspace_id: &str,
        invitation_id: &str,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<Invitation> {
        Ok(invitations::revoke(self, workspace_id, invitation_id, now, audit).await?)
    }

    async fn accept_invitation(
        &self,
        invitation: &Invitation,
        user_id: &str,
        new_account: Option<NewAccount<'_>>,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<()> {
        Ok(invitations::accept(self, invitation, user_id, new_account, now, audit).await?)
    }

    async fn list_functions(&self, workspace_id: &str, agent_id: &str) -> Result<Vec<Function>> {
        Ok(functions::list(self, workspace_id, agent_id).await?)
    }

    async fn load_functions(&self, workspace_id: Option<&str>) -> Result<Vec<Function>> {
        Ok(functions::load(self, workspace_id).await?)
    }

    async fn get_function(&self, workspace_id: &str, agent_id: &str, name: &str) -> Result<Option<Function>> {
        Ok(functions::get(self, workspace_id, agent_id, name).await?)
    }

    async fn create_function(&self, function: &Function, audit: &AuditEvent) -> Result<()> {
        Ok(functions::create(self, function, audit).await?)
    }

    async fn update_function(&self, function: &Function, audit: &AuditEvent) -> Result<()> {
        Ok(functions::update(self, function, audit).await?)
    }

    async fn delete_function(&self, workspace_id: &str, agent_id: &str, name: &str, audit: &AuditEvent) -> Result<()> {
        Ok(functions::delete(self, workspace_id, agent_id, name, audit).await?)
    }

    async fn create_access_request(&self, request: &AccessRequest, audit: &AuditEvent) -> Result<()> {
        Ok(access::create(self, request, audit).await?)
    }

    async fn list_access_requests(&self, workspace_id: &str) -> Result<Vec<AccessRequest>> {
        Ok(access::list(self, workspace_id).await?)
    }

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
    ) -> Result<AccessRequest> {
        Ok(access::decide(self, workspace_id, request_id, status, decided_by, at, grant, audit).await?)
    }

    async fn record_function_check(&self, function: &Function) -> Result<()> {
        Ok(functions::record_check(self, function).await?)
    }

    async fn secret_uses(&self, workspace_id: &str, secret_name: &str) -> Result<Vec<SecretUse>> {
        Ok(functions::uses_of_secret(self, workspace_id, secret_name).await?)
    }

    async fn list_function_versions(
        &self,
        workspace_id: &str,
        agent_id: &str,
        name: &str,
    ) -> Result<Vec<FunctionVersion>> {
        Ok(functions::list_versions(self, workspace_id, agent_id, name).await?)
    }

    async fn deploy_function(
        &self,
        workspace_id: &str,
        agent_id: &str,
        name: &str,
        deployment: &Deployment,
        audit: &AuditEvent,
    ) -> Result<Function> {
        Ok(functions::deploy(self, workspace_id, agent_id, name, deployment, audit).await?)
    }

    async fn load_deployed_functions(&self, workspace_id: Option<&str>) -> Result<Vec<DeployedFunction>> {
        Ok(functions::load_deployed(self, workspace_id).await?)
    }

    async fn sealed_version(&self, workspace_id: &str, secret_id: &str, version: u32) -> Result<Option<SealedVersion>> {
        Ok(keys::sealed_version(self, workspace_id, secret_id, version).await?)
    }

    async fn all_sealed_versions(&self) -> Result<Vec<SealedVersion>> {
        Ok(keys::all_sealed_versions(self).await?)
    }

    async fn replace_wrapped_keys(
        &self,
        rewrapped: &[SealedVersion],
        active_key_id: &str,
        audit: &[AuditEvent],
    ) -> Result<()> {
        Ok(keys::replace_wrapped_keys(self, rewrapped, active_key_id, audit).await?)
    }

    async fn claim_root_key(&self, key_id: &str) -> Result<String> {
        Ok(keys::claim_root_key(self, key_id).await?)
    }
}
