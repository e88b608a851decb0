//! The store conformance suite: what every [`Store`] must do, checked through the trait alone.
//! A backend's tests open an empty database and call [`run_all`] (or single checks).
//!
//! Each check works in a workspace of its own, so they can share one database; only
//! [`first_admin_and_bootstrap_token`] needs a database without users and runs first.

// A test suite: a failed check panics, as an assertion does.
#![allow(clippy::panic)]

use std::collections::BTreeSet;

use agentvault_core::audit::{Action, AuditEvent, AuditFilter, AuditRecord, Outcome};
use agentvault_core::model::{
    AccessRequest, Actor, AdminToken, Agent, ApiKeyMeta, Deployment, Env, EnvValueMeta, Function, FunctionParam,
    Invitation, KeyScope, Millis, ParamType, PersonalToken, Role, Sealed, SecretMeta, SecretRef, Session, User,
    Workspace,
};
use agentvault_core::{Error, ErrorKind, Result, SecretKind};

use crate::{EnvChange, NewAccount, NewVersion, PasswordChange, SealedVersion, SecretChange, Store};

const NOW: Millis = 1_700_000_000_000;
const DAY: Millis = 86_400_000;

/// Runs every check, in an order that suits a fresh database.
pub async fn run_all(store: &dyn Store) {
    first_admin_and_bootstrap_token(store).await;
    duplicate_names_are_conflicts(store).await;
    refused_mutations_leave_nothing(store).await;
    the_last_admin_stays(store).await;
    stale_versions_are_conflicts(store).await;
    deleting_an_agent_cascades(store).await;
    secret_uses_follow_function_changes(store).await;
    secrets_are_created_all_or_none(store).await;
    access_requests_are_decided_once(store).await;
    deleting_a_secret_removes_its_versions(store).await;
    audit_filters_order_and_cursor(store).await;
    audit_rows_and_segments_page_together(store).await;
    audit_compaction_retention_and_export(store).await;
    last_reads_come_from_successful_agent_reads(store).await;
    api_key_scopes_round_trip(store).await;
    root_key_rewrap(store).await;
    invitations_are_single_use(store).await;
    sessions_and_tokens_are_revoked(store).await;
    egress_policies_round_trip(store).await;
    injections_and_the_egress_ca(store).await;
    changes_are_numbered_in_commit_order(store).await;
    environment_values_round_trip(store).await;
    functions_are_versioned_and_deployed(store).await;
}

// --- helpers ------------------------------------------------------------------------------------

fn ok<T>(r: Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e} ({:?})", e.internal_context()),
    }
}

fn some<T>(v: Option<T>, what: &str) -> T {
    match v {
        Some(v) => v,
        None => panic!("{what}: found nothing"),
    }
}

/// Asserts that `r` failed with `kind` and `code`.
fn refused<T: std::fmt::Debug>(r: Result<T>, kind: ErrorKind, code: &str, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected {code}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!((e.kind, e.code.as_ref()), (kind, code), "{what}: {e}");
            e
        }
    }
}

fn event(ws: &str, action: Action) -> AuditEvent {
    AuditEvent::new(NOW, ws, Actor::User("usr_conformance".into()), action, Outcome::Success)
}

async fn audit_of(store: &dyn Store, ws: &str) -> Vec<AuditRecord> {
    ok(store.list_audit(ws, &AuditFilter { limit: 1000, ..AuditFilter::default() }).await, "list_audit")
}

async fn workspace(store: &dyn Store, id: &str) {
    let ws = Workspace { id: id.into(), name: format!("{id} workspace"), created_at: NOW };
    ok(store.create_workspace(&ws, None, &event(id, Action::WorkspaceCreate)).await, "create_workspace");
}

async fn agent(store: &dyn Store, ws: &str, id: &str) -> Agent {
    let a = Agent {
        id: id.into(),
        workspace_id: ws.into(),
        name: format!("{id}-name"),
        description: String::new(),
        created_at: NOW,
        updated_at: NOW,
    };
    ok(store.create_agent(&a, &event(ws, Action::AgentCreate).agent(id)).await, "create_agent");
    a
}

fn sealed(tag: &str) -> Sealed {
    Sealed {
        root_key_id: "root-1".into(),
        wrapped_dek: format!("dek-{tag}").into(),
        ciphertext: format!("ct-{tag}").into(),
    }
}

fn secret_meta(ws: &str, id: &str, agents: &[&str]) -> SecretMeta {
    SecretMeta {
        id: id.into(),
        workspace_id: ws.into(),
        name: format!("{id}_name"),
        description: "d".into(),
        kind: SecretKind::Single,
        keys: None,
        version: 1,
        agents: agents.iter().map(|a| (*a).to_owned()).collect(),
        created_at: NOW,
        updated_at: NOW,
        protected: false,
        envs: Vec::new(),
    }
}

async fn secret(store: &dyn Store, ws: &str, id: &str, agents: &[&str]) -> SecretMeta {
    let meta = secret_meta(ws, id, agents);
    ok(store.create_secret(&meta, &sealed(id), &event(ws, Action::SecretCreate).secret(&meta.name)).await, "create");
    meta
}

fn user(id: &str, email: &str) -> User {
    User { id: id.into(), email: email.into(), name: id.into(), created_at: NOW, updated_at: NOW }
}

fn function(ws: &str, agent_id: &str, name: &str, version: u32) -> Function {
    Function {
        id: format!("fn_{agent_id}_{name}"),
        workspace_id: ws.into(),
        agent_id: agent_id.into(),
        name: name.into(),
        description: "does things".into(),
        parameters: vec![
            FunctionParam {
                name: "n".into(),
                description: "a number".into(),
                kind: ParamType::Integer,
                required: true,
            },
            FunctionParam { name: "m".into(), description: String::new(), kind: ParamType::String, required: false },
        ],
        code: "def f(conv, n):\n    return n\n".into(),
        timeout_ms: Some(1500),
        version,
        created_at: NOW,
        updated_at: NOW + i64::from(version),
        secret_refs: vec![SecretRef { secret: "stripe_api_key".into(), line: 2 }],
        deployments: Vec::new(),
    }
}

fn api_key(ws: &str, id: &str, scope: KeyScope) -> ApiKeyMeta {
    ApiKeyMeta {
        id: id.into(),
        workspace_id: ws.into(),
        name: format!("{id} key"),
        prefix: "av_k".into(),
        scope,
        created_at: NOW,
        expires_at: Some(NOW + DAY),
        revoked_at: None,
        last_used_at: None,
        created_by: "usr_conformance".into(),
        env: None,
    }
}

fn invitation(ws: &str, id: &str, email: &str) -> Invitation {
    Invitation {
        id: id.into(),
        workspace_id: ws.into(),
        email: email.into(),
        role: Role::Member,
        invited_by: "usr_conformance".into(),
        created_at: NOW,
        expires_at: NOW + DAY,
        revoked_at: None,
        accepted_at: None,
    }
}

// --- the checks ---------------------------------------------------------------------------------

/// The first admin is created once, becomes an admin of every workspace and inherits the
/// bootstrap token as a personal access token; the setup code goes.
pub async fn first_admin_and_bootstrap_token(store: &dyn Store) {
    assert_eq!(ok(store.count_users().await, "count_users"), 0, "run this check on an empty database");
    workspace(store, "ws_setup").await;
    let token = AdminToken { id: "adm_boot".into(), name: "bootstrap".into(), created_at: NOW, revoked_at: None };
    ok(store.create_admin_token(&token, b"boot-hash").await, "create_admin_token");
    assert!(ok(store.has_admin_tokens().await, "has_admin_tokens"));
    assert_eq!(ok(store.load_admin_tokens().await, "load_admin_tokens"), vec![(token, b"boot-hash".to_vec())]);
    ok(store.set_one_time_code("setup", b"code-1", NOW).await, "set_one_time_code");
    ok(store.set_one_time_code("setup", b"code-2", NOW + 1).await, "set_one_time_code replaces");
    assert_eq!(ok(store.one_time_code("setup").await, "one_time_code"), Some(b"code-2".to_vec()));

    let admin = user("usr_first", "First@Example.com");
    ok(store.setup_first_admin(&admin, "hash", &[event("ws_setup", Action::UserCreate)]).await, "setup");
    assert_eq!(ok(store.memberships_of("usr_first").await, "memberships_of"), vec![("ws_setup".into(), Role::Admin)]);
    assert!(!ok(store.has_admin_tokens().await, "has_admin_tokens"), "no admin token remains");
    assert_eq!(ok(store.one_time_code("setup").await, "one_time_code"), None, "the setup code is used up");
    let pat = ok(store.personal_token_by_hash(b"boot-hash").await, "personal_token_by_hash");
    let pat = pat.unwrap_or_else(|| panic!("the bootstrap token became a personal access token"));
    assert_eq!((pat.id.as_str(), pat.user_id.as_str()), ("pat_boot", "usr_first"));

    let again = store.setup_first_admin(&user("usr_second", "second@example.com"), "hash", &[]).await;
    refused(again, ErrorKind::Conflict, "setup_done", "a second first admin");
    assert_eq!(ok(store.count_users().await, "count_users"), 1);
}

/// Duplicate names are 409s with their own codes (emails ignoring case).
pub async fn duplicate_names_are_conflicts(store: &dyn Store) {
    workspace(store, "ws_dup").await;
    let again = Workspace { id: "ws_dup2".into(), name: "ws_dup workspace".into(), created_at: NOW };
    let r = store.create_workspace(&again, None, &event("ws_dup2", Action::WorkspaceCreate)).await;
    refused(r, ErrorKind::Conflict, "workspace_exists", "duplicate workspace");
    assert!(ok(store.get_workspace("ws_dup2").await, "get_workspace").is_none());

    let a = agent(store, "ws_dup", "agt_dup_a").await;
    let mut b = agent(store, "ws_dup", "agt_dup_b").await;
    let mut same = a.clone();
    same.id = "agt_dup_c".into();
    refused(
        store.create_agent(&same, &event("ws_dup", Action::AgentCreate)).await,
        ErrorKind::Conflict,
        "agent_exists",
        "agent",
    );
    b.name = a.name.clone();
    refused(
        store.update_agent(&b, &event("ws_dup", Action::AgentUpdate)).await,
        ErrorKind::Conflict,
        "agent_exists",
        "rename",
    );

    let s = secret(store, "ws_dup", "sec_dup", &[]).await;
    let mut twin = secret_meta("ws_dup", "sec_dup2", &[]);
    twin.name = s.name.clone();
    let r = store.create_secret(&twin, &sealed("twin"), &event("ws_dup", Action::SecretCreate)).await;
    refused(r, ErrorKind::Conflict, "secret_exists", "secret");

    ok(
        store.create_function(&function("ws_dup", "agt_dup_a", "f", 1), &event("ws_dup", Action::FunctionCreate)).await,
        "fn",
    );
    let mut f2 = function("ws_dup", "agt_dup_a", "f", 1);
    f2.id = "fn_other".into();
    refused(
        store.create_function(&f2, &event("ws_dup", Action::FunctionCreate)).await,
        ErrorKind::Conflict,
        "function_exists",
        "fn",
    );

    let u = user("usr_dup", "dup@example.com");
    ok(store.create_user(&u, "hash", &[("ws_dup".into(), Role::Member)], &[]).await, "create_user");
    let r = store.create_user(&user("usr_dup2", "DUP@example.COM"), "hash", &[], &[]).await;
    refused(r, ErrorKind::Conflict, "user_exists", "same email in another case");
    let found = ok(store.user_by_email("Dup@Example.com").await, "user_by_email").map(|(u, hash)| (u.id, hash));
    assert_eq!(found, Some(("usr_dup".into(), "hash".into())), "found ignoring case");
    let r = store.add_member("ws_dup", "usr_dup", Role::Admin, NOW, &event("ws_dup", Action::MemberAdd)).await;
    refused(r, ErrorKind::Conflict, "already_member", "member twice");
}

/// A refused mutation stores nothing, audit record included.
pub async fn refused_mutations_leave_nothing(store: &dyn Store) {
    let ws = "ws_refused";
    workspace(store, ws).await;
    agent(store, ws, "agt_ref").await;
    workspace(store, "ws_refused_other").await;
    agent(store, "ws_refused_other", "agt_elsewhere").await;
    let before = audit_of(store, ws).await.len();

    // An agent of another workspace is unknown here.
    let meta = secret_meta(ws, "sec_ref", &["agt_ref", "agt_elsewhere"]);
    let e = refused(
        store.create_secret(&meta, &sealed("ref"), &event(ws, Action::SecretCreate)).await,
        ErrorKind::Unprocessable,
        "unknown_agent",
        "secret for an unknown agent",
    );
    assert_eq!(e.field.as_deref(), Some("agents"));
    assert!(ok(store.get_secret(ws, &meta.name).await, "get_secret").is_none(), "no secret row");
    assert!(ok(store.list_versions(ws, "sec_ref").await, "list_versions").is_empty(), "no version row");

    let key = api_key(ws, "key_ref", KeyScope::Agents(BTreeSet::from(["agt_nobody".to_owned()])));
    let r = store.create_api_key(&key, b"key-ref-hash", &event(ws, Action::ApiKeyCreate)).await;
    refused(r, ErrorKind::Unprocessable, "unknown_agent", "key for an unknown agent");
    assert!(ok(store.list_api_keys(ws).await, "list_api_keys").is_empty(), "no key row");

    let s = secret(store, ws, "sec_ok", &["agt_ref"]).await;
    let r = store
        .set_secret_access(ws, "sec_ok", &["agt_elsewhere".into()], NOW + 1, &event(ws, Action::SecretAccessSet))
        .await;
    refused(r, ErrorKind::Unprocessable, "unknown_agent", "access for an unknown agent");
    let kept = ok(store.get_secret(ws, &s.name).await, "get_secret");
    assert_eq!(kept.map(|m| (m.agents, m.updated_at)), Some((vec!["agt_ref".into()], NOW)), "access list unchanged");

    let r = store.delete_agent(ws, "agt_missing", &event(ws, Action::AgentDelete)).await;
    refused(r, ErrorKind::NotFound, "agent_not_found", "deleting a missing agent");
    let r = store.delete_secret(ws, "sec_missing", &event(ws, Action::SecretDelete)).await;
    refused(r, ErrorKind::NotFound, "secret_not_found", "deleting a missing secret");
    let r = store.delete_function(ws, "agt_ref", "nothing", &event(ws, Action::FunctionDelete)).await;
    refused(r, ErrorKind::NotFound, "function_not_found", "deleting a missing function");
    let r = store.revoke_api_key(ws, "key_missing", NOW, &event(ws, Action::ApiKeyRevoke)).await;
    refused(r, ErrorKind::NotFound, "api_key_not_found", "revoking a missing key");

    let after = audit_of(store, ws).await;
    let actions: Vec<Action> = after.iter().map(|r| r.event.action).collect();
    assert_eq!(after.len(), before + 1, "only the secret that was created left a record: {actions:?}");
    assert_eq!(after[0].event.action, Action::SecretCreate);
}

/// A workspace keeps at least one admin.
pub async fn the_last_admin_stays(store: &dyn Store) {
    let ws = "ws_admins";
    workspace(store, ws).await;
    ok(store.create_user(&user("usr_adm_a", "adm-a@example.com"), "h", &[(ws.into(), Role::Admin)], &[]).await, "a");
    ok(store.create_user(&user("usr_adm_b", "adm-b@example.com"), "h", &[(ws.into(), Role::Member)], &[]).await, "b");
    let before = audit_of(store, ws).await.len();

    let r = store.set_role(ws, "usr_adm_a", Role::Member, &event(ws, Action::MemberRoleChange)).await;
    refused(r, ErrorKind::Conflict, "last_admin", "demoting the only admin");
    let r = store.remove_member(ws, "usr_adm_a", &event(ws, Action::MemberRemove)).await;
    refused(r, ErrorKind::Conflict, "last_admin", "removing the only admin");
    let r = store.set_role(ws, "usr_nobody", Role::Admin, &event(ws, Action::MemberRoleChange)).await;
    refused(r, ErrorKind::NotFound, "member_not_found", "a stranger's role");
    assert_eq!(audit_of(store, ws).await.len(), before, "refusals leave no record");
    ok(store.set_role(ws, "usr_adm_a", Role::Admin, &event(ws, Action::MemberRoleChange)).await, "admin stays admin");

    // Invitations of an admin end with their admin role.
    ok(store.create_invitation(&invitation(ws, "inv_by_a", "guest@example.com"), b"inv-by-a", &[]).await, "invite");
    let mut by_a = invitation(ws, "inv_by_a2", "guest2@example.com");
    by_a.invited_by = "usr_adm_a".into();
    ok(store.create_invitation(&by_a, b"inv-by-a2", &[]).await, "invite by a");

    ok(store.set_role(ws, "usr_adm_b", Role::Admin, &event(ws, Action::MemberRoleChange)).await, "promote b");
    ok(store.set_role(ws, "usr_adm_a", Role::Member, &event(ws, Action::MemberRoleChange)).await, "demote a");
    let pending: Vec<String> = ok(store.list_invitations(ws, NOW).await, "list").into_iter().map(|i| i.id).collect();
    assert_eq!(pending, ["inv_by_a"], "the demoted admin's invitation is revoked");
    ok(store.remove_member(ws, "usr_adm_a", &event(ws, Action::MemberRemove)).await, "remove a");
    let r = store.remove_member(ws, "usr_adm_b", &event(ws, Action::MemberRemove)).await;
    refused(r, ErrorKind::Conflict, "last_admin", "removing the admin left");
    let members: Vec<(String, Role)> =
        ok(store.list_members(ws).await, "list_members").into_iter().map(|m| (m.user.id, m.role)).collect();
    assert_eq!(members, [("usr_adm_b".into(), Role::Admin)]);
}

/// A change based on an old version is refused, and nothing of it is stored.
pub async fn stale_versions_are_conflicts(store: &dyn Store) {
    let ws = "ws_versions";
    workspace(store, ws).await;
    agent(store, ws, "agt_ver").await;
    let s = secret(store, ws, "sec_ver", &[]).await;
    let next = sealed("v2");
    let keys = vec!["user".to_owned(), "password".to_owned()];
    let change = SecretChange {
        secret_id: "sec_ver",
        expected_version: 1,
        description: Some("second"),
        value: Some(NewVersion { kind: SecretKind::Kv, keys: Some(&keys), sealed: &next }),
        envs: &[],
        protected: None,
        now: NOW + 5,
        actor_id: "usr_conformance",
    };
    let meta = ok(store.update_secret(ws, &change, &event(ws, Action::SecretUpdate)).await, "update_secret");
    assert_eq!((meta.version, meta.kind, meta.keys.as_ref()), (2, SecretKind::Kv, Some(&keys)));
    assert_eq!((meta.description.as_str(), meta.updated_at), ("second", NOW + 5));
    let before = audit_of(store, ws).await.len();
    let stale = store.update_secret(ws, &change, &event(ws, Action::SecretUpdate)).await;
    refused(stale, ErrorKind::Conflict, "version_conflict", "a change based on version 1");
    let versions: Vec<u32> =
        ok(store.list_versions(ws, "sec_ver").await, "list").into_iter().map(|v| v.version).collect();
    assert_eq!(versions, [2, 1], "newest first, no third version");
    assert_eq!(ok(store.get_secret(ws, &s.name).await, "get").map(|m| m.version), Some(2));
    let gone = SecretChange { secret_id: "sec_none", ..change };
    refused(
        store.update_secret(ws, &gone, &event(ws, Action::SecretUpdate)).await,
        ErrorKind::NotFound,
        "secret_not_found",
        "gone",
    );

    ok(store.create_function(&function(ws, "agt_ver", "calc", 1), &event(ws, Action::FunctionCreate)).await, "create");
    ok(store.update_function(&function(ws, "agt_ver", "calc", 2), &event(ws, Action::FunctionUpdate)).await, "update");
    let r = store.update_function(&function(ws, "agt_ver", "calc", 2), &event(ws, Action::FunctionUpdate)).await;
    refused(r, ErrorKind::Conflict, "version_conflict", "a function change based on version 1");
    assert_eq!(audit_of(store, ws).await.len(), before + 2, "only the two accepted changes left records");
    let stored = ok(store.get_function(ws, "agt_ver", "calc").await, "get_function");
    assert_eq!(stored, Some(function(ws, "agt_ver", "calc", 2)), "the function round-trips");
}

/// The functions naming a secret follow each create, update and delete of a function, and of its
/// agent.
pub async fn secret_uses_follow_function_changes(store: &dyn Store) {
    let ws = "ws_uses";
    workspace(store, ws).await;
    agent(store, ws, "agt_uses_a").await;
    agent(store, ws, "agt_uses_b").await;
    let uses = |name: &'static str| async move {
        ok(store.secret_uses(ws, name).await, "secret_uses")
            .into_iter()
            .map(|u| (u.agent_id, u.function_name, u.line))
            .collect::<Vec<_>>()
    };
    let mut pay = function(ws, "agt_uses_a", "pay", 1);
    pay.secret_refs = vec![
        SecretRef { secret: "stripe_api_key".into(), line: 2 },
        SecretRef { secret: "booking_oauth".into(), line: 3 },
        SecretRef { secret: "stripe_api_key".into(), line: 7 },
    ];
    ok(store.create_function(&pay, &event(ws, Action::FunctionCreate)).await, "create pay");
    ok(store.create_function(&function(ws, "agt_uses_b", "refund", 1), &event(ws, Action::FunctionCreate)).await, "b");
    let a = || "agt_uses_a".to_owned();
    let b = || "agt_uses_b".to_owned();
    assert_eq!(
        uses("stripe_api_key").await,
        [(a(), "pay".into(), 2), (a(), "pay".into(), 7), (b(), "refund".into(), 2)]
    );
    assert_eq!(uses("booking_oauth").await, [(a(), "pay".into(), 3)]);
    let listed = ok(store.list_functions(ws, "agt_uses_a").await, "list_functions");
    assert_eq!(listed[0].secret_refs, pay.secret_refs, "list_functions carries the references");

    // A new version replaces the references; a refused one leaves them.
    let mut v2 = function(ws, "agt_uses_a", "pay", 2);
    v2.secret_refs = vec![SecretRef { secret: "booking_oauth".into(), line: 4 }];
    ok(store.update_function(&v2, &event(ws, Action::FunctionUpdate)).await, "update");
    let mut stale = function(ws, "agt_uses_a", "pay", 2);
    stale.secret_refs = vec![SecretRef { secret: "other".into(), line: 1 }];
    assert!(store.update_function(&stale, &event(ws, Action::FunctionUpdate)).await.is_err());
    assert_eq!(uses("booking_oauth").await, [(a(), "pay".into(), 4)]);
    assert_eq!(uses("stripe_api_key").await, [(b(), "refund".into(), 2)]);
    assert!(uses("other").await.is_empty());

    // A check recorded later (for a function saved before references were kept) fills them in
    // for the stored version only, with no audit record.
    let audit_before = audit_of(store, ws).await.len();
    let mut old = function(ws, "agt_uses_a", "pay", 2);
    old.secret_refs = vec![SecretRef { secret: "later".into(), line: 9 }];
    ok(store.record_function_check(&old).await, "record_function_check");
    assert_eq!(uses("later").await, [(a(), "pay".into(), 9)]);
    assert_eq!(uses("booking_oauth").await, Vec::<(String, String, u32)>::new(), "replaced");
    old.parameters[1].required = true;
    ok(store.record_function_check(&old).await, "record_function_check, a parameter now required");
    let saved = ok(store.list_function_versions(ws, "agt_uses_a", "pay").await, "versions");
    assert_eq!(saved[0].parameters, old.parameters, "the saved version gets the findings too");
    let mut stale_check = function(ws, "agt_uses_a", "pay", 1);
    stale_check.secret_refs = vec![SecretRef { secret: "stale".into(), line: 1 }];
    ok(store.record_function_check(&stale_check).await, "a check of an older version");
    assert!(uses("stale").await.is_empty(), "an older version's check is dropped");
    assert_eq!(audit_of(store, ws).await.len(), audit_before);

    // Deleting the function, or its agent, takes its references.
    ok(store.delete_function(ws, "agt_uses_a", "pay", &event(ws, Action::FunctionDelete)).await, "delete");
    assert!(uses("later").await.is_empty());
    ok(store.delete_agent(ws, "agt_uses_b", &event(ws, Action::AgentDelete)).await, "delete_agent");
    assert!(uses("stripe_api_key").await.is_empty());
}

/// An access request is pending once per agent and secret; deciding it once, with its grant, in
/// one transaction.
pub async fn access_requests_are_decided_once(store: &dyn Store) {
    let ws = "ws_req";
    workspace(store, ws).await;
    agent(store, ws, "agt_req").await;
    let s = secret(store, ws, "sec_req", &[]).await;
    let request = AccessRequest {
        id: "req_1".into(),
        workspace_id: ws.into(),
        agent_id: "agt_req".into(),
        secret_name: s.name.clone(),
        requested_by: "usr_member".into(),
        requested_at: NOW,
        status: "pending".into(),
        decided_by: None,
        decided_at: None,
    };
    ok(store.create_access_request(&request, &event(ws, Action::AccessRequest)).await, "request");
    let again = AccessRequest { id: "req_2".into(), ..request.clone() };
    refused(
        store.create_access_request(&again, &event(ws, Action::AccessRequest)).await,
        ErrorKind::Conflict,
        "access_request_pending",
        "a second pending request",
    );
    assert_eq!(ok(store.list_access_requests(ws).await, "list"), std::slice::from_ref(&request));

    let grant = vec!["agt_req".to_owned()];
    let events = [event(ws, Action::AccessApprove), event(ws, Action::SecretAccessSet)];
    let decided = ok(
        store
            .decide_access_request(ws, "req_1", "approved", "usr_admin", NOW + 5, Some((&s.id, &grant)), &events)
            .await,
        "approve",
    );
    assert_eq!(
        (decided.status.as_str(), decided.decided_by.as_deref(), decided.decided_at),
        ("approved", Some("usr_admin"), Some(NOW + 5))
    );
    assert_eq!(ok(store.get_secret(ws, &s.name).await, "get").map(|m| m.agents), Some(grant.clone()));
    let r = store.decide_access_request(ws, "req_1", "declined", "usr_admin", NOW + 6, None, &[]).await;
    refused(r, ErrorKind::NotFound, "access_request_not_found", "a request decided twice");
    // Once decided, the same request may be made again.
    ok(store.create_access_request(&again, &event(ws, Action::AccessRequest)).await, "asked again");
}

/// Several secrets are created together or not at all.
pub async fn secrets_are_created_all_or_none(store: &dyn Store) {
    let ws = "ws_many";
    workspace(store, ws).await;
    agent(store, ws, "agt_many").await;
    secret(store, ws, "sec_taken", &[]).await;
    let before = audit_of(store, ws).await.len();
    let mut one = secret_meta(ws, "sec_one", &["agt_many"]);
    one.name = "one".into();
    let mut two = secret_meta(ws, "sec_two", &[]);
    two.name = "two".into();
    let taken = secret_meta(ws, "sec_taken_again", &[]);
    let mut clash = taken.clone();
    clash.name = secret_meta(ws, "sec_taken", &[]).name;
    let events = |n: usize| (0..n).map(|_| event(ws, Action::SecretCreate)).collect::<Vec<_>>();
    let r = store.create_secrets(&[(one.clone(), sealed("one")), (clash, sealed("clash"))], &events(2)).await;
    refused(r, ErrorKind::Conflict, "secret_exists", "a batch with a taken name");
    assert!(ok(store.get_secret(ws, "one").await, "get").is_none(), "nothing of the batch is stored");
    assert_eq!(audit_of(store, ws).await.len(), before, "and no audit record");
    let mut stranger = two.clone();
    stranger.agents = vec!["agt_elsewhere".into()];
    let r = store.create_secrets(&[(one.clone(), sealed("one")), (stranger, sealed("two"))], &events(2)).await;
    assert!(r.is_err(), "an unknown agent refuses the batch");
    assert!(ok(store.get_secret(ws, "one").await, "get").is_none());

    ok(store.create_secrets(&[(one.clone(), sealed("one")), (two, sealed("two"))], &events(2)).await, "batch");
    assert_eq!(ok(store.get_secret(ws, "one").await, "get").map(|m| m.agents), Some(vec!["agt_many".to_owned()]));
    assert!(ok(store.get_secret(ws, "two").await, "get").is_some());
    assert_eq!(audit_of(store, ws).await.len(), before + 2);
}

/// Deleting an agent takes its grants, API key scopes and functions with it.
pub async fn deleting_an_agent_cascades(store: &dyn Store) {
    let ws = "ws_cascade";
    workspace(store, ws).await;
    agent(store, ws, "agt_gone").await;
    agent(store, ws, "agt_stays").await;
    let s = secret(store, ws, "sec_cascade", &["agt_gone", "agt_stays"]).await;
    let scope = KeyScope::Agents(BTreeSet::from(["agt_gone".to_owned(), "agt_stays".to_owned()]));
    ok(
        store
            .create_api_key(&api_key(ws, "key_cascade", scope), b"key-cascade", &event(ws, Action::ApiKeyCreate))
            .await,
        "key",
    );
    ok(store.create_function(&function(ws, "agt_gone", "f", 1), &event(ws, Action::FunctionCreate)).await, "fn");

    ok(store.delete_agent(ws, "agt_gone", &event(ws, Action::AgentDelete)).await, "delete_agent");
    assert!(ok(store.get_agent(ws, "agt_gone").await, "get_agent").is_none());
    let meta = ok(store.get_secret(ws, &s.name).await, "get_secret");
    assert_eq!(meta.map(|m| m.agents), Some(vec!["agt_stays".into()]), "the grant went with the agent");
    let keys = ok(store.list_api_keys(ws).await, "list_api_keys");
    assert_eq!(keys[0].scope, KeyScope::Agents(BTreeSet::from(["agt_stays".to_owned()])), "so did the key scope");
    assert!(ok(store.list_functions(ws, "agt_gone").await, "list_functions").is_empty(), "and the functions");
    let agents: Vec<String> = ok(store.list_agents(ws).await, "list_agents").into_iter().map(|a| a.id).collect();
    assert_eq!(agents, ["agt_stays"]);
}

/// Deleting a secret removes every version (the key material) and its grants.
pub async fn deleting_a_secret_removes_its_versions(store: &dyn Store) {
    let ws = "ws_delete";
    workspace(store, ws).await;
    agent(store, ws, "agt_del").await;
    let s = secret(store, ws, "sec_del", &["agt_del"]).await;
    let next = sealed("del-2");
    let change = SecretChange {
        secret_id: "sec_del",
        expected_version: 1,
        description: None,
        value: Some(NewVersion { kind: SecretKind::Single, keys: None, sealed: &next }),
        envs: &[],
        protected: None,
        now: NOW + 1,
        actor_id: "usr_conformance",
    };
    ok(store.update_secret(ws, &change, &event(ws, Action::SecretUpdate)).await, "update");
    // Each version's sealed value can be read back, in its own workspace only.
    let v1 = ok(store.sealed_version(ws, "sec_del", 1).await, "sealed_version 1");
    assert_eq!(v1.map(|v| v.sealed), Some(sealed("sec_del")), "version 1 as created");
    let v2 = ok(store.sealed_version(ws, "sec_del", 2).await, "sealed_version 2");
    assert_eq!(v2.map(|v| (v.version, v.sealed)), Some((2, next.clone())));
    assert!(ok(store.sealed_version(ws, "sec_del", 3).await, "no version 3").is_none());
    assert!(ok(store.sealed_version("ws_elsewhere", "sec_del", 1).await, "another workspace").is_none());
    ok(store.delete_secret(ws, "sec_del", &event(ws, Action::SecretDelete)).await, "delete_secret");
    assert!(ok(store.sealed_version(ws, "sec_del", 1).await, "deleted").is_none());
    assert!(ok(store.get_secret(ws, &s.name).await, "get_secret").is_none());
    assert!(ok(store.list_versions(ws, "sec_del").await, "list_versions").is_empty());
    let sealed_left = ok(store.all_sealed_versions().await, "all_sealed_versions");
    assert!(sealed_left.iter().all(|v| v.secret_id != "sec_del"), "no wrapped data key is left");
    let current = ok(store.load_current_secrets(None).await, "load_current_secrets");
    assert!(current.iter().all(|r| r.meta.id != "sec_del"));
    // A secret of another workspace cannot be deleted from this one.
    workspace(store, "ws_delete_other").await;
    secret(store, "ws_delete_other", "sec_other", &[]).await;
    let r = store.delete_secret(ws, "sec_other", &event(ws, Action::SecretDelete)).await;
    refused(r, ErrorKind::NotFound, "secret_not_found", "another workspace's secret");
    assert_eq!(ok(store.list_versions("ws_delete_other", "sec_other").await, "versions").len(), 1, "untouched");
}

/// Audit records come newest first, filtered, and page with the `before_seq` cursor.
pub async fn audit_filters_order_and_cursor(store: &dyn Store) {
    let ws = "ws_audit";
    workspace(store, ws).await;
    let reads: Vec<AuditEvent> = (0..5)
        .map(|i| {
            let outcome = if i == 2 { Outcome::Denied } else { Outcome::Success };
            AuditEvent::new(NOW + 10 + i, ws, Actor::ApiKey("key_audit".into()), Action::SecretRead, outcome)
                .secret(if i % 2 == 0 { "even" } else { "odd" })
                .agent("agt_audit")
                .detail(format!("version={i}"))
        })
        .collect();
    ok(store.append_audit(reads.clone()).await, "append_audit");
    ok(store.append_audit(Vec::new()).await, "append nothing");
    workspace(store, "ws_audit_other").await;
    ok(store.append_audit(vec![event("ws_audit_other", Action::SecretRead)]).await, "another workspace");

    let all = audit_of(store, ws).await;
    assert_eq!(all.len(), 6, "the workspace's creation and five reads, nothing of the other workspace");
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert_eq!(all[0].event, reads[4], "records round-trip");
    assert_eq!(all[5].event.action, Action::WorkspaceCreate);

    let list = |filter: AuditFilter| async move {
        let records = ok(store.list_audit(ws, &AuditFilter { limit: 100, ..filter }).await, "list_audit");
        records.into_iter().map(|r| r.event.at - NOW).collect::<Vec<_>>()
    };
    assert_eq!(
        list(AuditFilter { action: Some(Action::SecretRead), ..Default::default() }).await,
        [14, 13, 12, 11, 10]
    );
    assert_eq!(list(AuditFilter { outcome: Some(Outcome::Denied), ..Default::default() }).await, [12]);
    assert_eq!(list(AuditFilter { secret_name: Some("odd".into()), ..Default::default() }).await, [13, 11]);
    assert!(list(AuditFilter { secret_name: Some("od".into()), ..Default::default() }).await.is_empty(), "exact");
    let prefix = |p: &str| AuditFilter { secret_name: Some(p.into()), secret_prefix: true, ..Default::default() };
    assert_eq!(list(prefix("od")).await, [13, 11]);
    assert_eq!(list(prefix("e")).await, [14, 12, 10]);
    assert!(list(prefix("_")).await.is_empty(), "an underscore is no wildcard");
    assert_eq!(list(AuditFilter { agent_id: Some("agt_audit".into()), ..Default::default() }).await.len(), 5);
    assert_eq!(list(AuditFilter { actor_id: Some("key_audit".into()), ..Default::default() }).await.len(), 5);
    assert_eq!(
        list(AuditFilter { since: Some(NOW + 11), until: Some(NOW + 13), ..Default::default() }).await,
        [12, 11]
    );

    // Pages of two, by the cursor.
    let mut seen = Vec::new();
    let mut before_seq = None;
    loop {
        let filter = AuditFilter { action: Some(Action::SecretRead), before_seq, limit: 2, ..Default::default() };
        let page = ok(store.list_audit(ws, &filter).await, "a page");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        before_seq = Some(last.seq);
        seen.extend(page.iter().map(|r| r.event.at - NOW));
    }
    assert_eq!(seen, [14, 13, 12, 11, 10], "every record once, in order");

    // Oldest first: the same records the other way round, paged by the `after_seq` cursor.
    let oldest = AuditFilter { action: Some(Action::SecretRead), oldest_first: true, ..Default::default() };
    assert_eq!(list(oldest.clone()).await, [10, 11, 12, 13, 14]);
    let mut seen = Vec::new();
    let mut after_seq = None;
    loop {
        let filter = AuditFilter { after_seq, limit: 2, ..oldest.clone() };
        let page = ok(store.list_audit(ws, &filter).await, "a page, oldest first");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        after_seq = Some(last.seq);
        seen.extend(page.iter().map(|r| r.event.at - NOW));
    }
    assert_eq!(seen, [10, 11, 12, 13, 14], "every record once, oldest first");
}

/// Records appended in many batches (several workspaces in a batch), between mutations that write
/// their own records in their transactions, come back as one log: every filter, both orders, any
/// page size, each record once.
pub async fn audit_rows_and_segments_page_together(store: &dyn Store) {
    let ws = "ws_audit_merge";
    workspace(store, ws).await;
    workspace(store, "ws_audit_merge_other").await;
    let mut appended = Vec::new();
    for b in 0..12i64 {
        let batch: Vec<AuditEvent> = (0..b % 4 + 1)
            .flat_map(|i| {
                let outcome = if (b + i) % 5 == 0 { Outcome::Denied } else { Outcome::Success };
                let read = AuditEvent::new(
                    NOW + 100 * b + i,
                    ws,
                    Actor::ApiKey(format!("key_{}", b % 3)),
                    Action::SecretRead,
                    outcome,
                )
                .secret(["alpha", "beta", "alphabet"][((b + i) % 3) as usize])
                .agent(["agt_merge1", "agt_merge2"][(b % 2) as usize])
                .detail(format!("version={i}"));
                let other = AuditEvent::new(
                    NOW + 100 * b,
                    "ws_audit_merge_other",
                    Actor::System,
                    Action::SecretRead,
                    Outcome::Success,
                )
                .secret("alpha");
                [read, other]
            })
            .collect();
        appended.extend(batch.iter().filter(|e| e.workspace_id == ws).cloned());
        ok(store.append_audit(batch.clone()).await, "append_audit");
        if b % 3 == 0 {
            agent(store, ws, &format!("agt_merge_made{b}")).await;
        }
    }
    let all = audit_of(store, ws).await;
    let reads: Vec<AuditEvent> =
        all.iter().rev().filter(|r| r.event.action == Action::SecretRead).map(|r| r.event.clone()).collect();
    assert_eq!(reads, appended, "every read once, in the order appended");
    assert_eq!(all.iter().filter(|r| r.event.action == Action::AgentCreate).count(), 4);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first, no repeats");

    type Keep = fn(&AuditEvent) -> bool;
    let filters: Vec<(AuditFilter, Keep)> = vec![
        (AuditFilter::default(), |_| true),
        (AuditFilter { agent_id: Some("agt_merge1".into()), ..Default::default() }, |e| {
            e.agent_id.as_deref() == Some("agt_merge1")
        }),
        (AuditFilter { secret_name: Some("alpha".into()), ..Default::default() }, |e| {
            e.secret_name.as_deref() == Some("alpha")
        }),
        (AuditFilter { secret_name: Some("alpha".into()), secret_prefix: true, ..Default::default() }, |e| {
            e.secret_name.as_deref().is_some_and(|s| s.starts_with("alpha"))
        }),
        (AuditFilter { outcome: Some(Outcome::Denied), ..Default::default() }, |e| e.outcome == Outcome::Denied),
        (AuditFilter { actor_id: Some("key_1".into()), ..Default::default() }, |e| e.actor.id() == "key_1"),
        (AuditFilter { action: Some(Action::AgentCreate), ..Default::default() }, |e| e.action == Action::AgentCreate),
        (
            AuditFilter {
                since: Some(NOW + 250),
                until: Some(NOW + 702),
                agent_id: Some("agt_merge2".into()),
                outcome: Some(Outcome::Success),
                ..Default::default()
            },
            |e| {
                e.at >= NOW + 250
                    && e.at < NOW + 702
                    && e.agent_id.as_deref() == Some("agt_merge2")
                    && e.outcome == Outcome::Success
            },
        ),
    ];
    for (filter, keep) in filters {
        let newest: Vec<i64> = all.iter().filter(|r| keep(&r.event)).map(|r| r.seq).collect();
        assert!(!newest.is_empty(), "{filter:?} matches something");
        for oldest_first in [false, true] {
            let expected: Vec<i64> = if oldest_first { newest.iter().rev().copied().collect() } else { newest.clone() };
            for limit in [1, 3, 7, 1000] {
                let mut seen = Vec::new();
                let mut cursor = None;
                loop {
                    let f = AuditFilter {
                        oldest_first,
                        limit,
                        before_seq: cursor.filter(|_| !oldest_first),
                        after_seq: cursor.filter(|_| oldest_first),
                        ..filter.clone()
                    };
                    let page = ok(store.list_audit(ws, &f).await, "a page");
                    assert!(page.len() <= limit as usize);
                    let Some(last) = page.last() else { break };
                    cursor = Some(last.seq);
                    seen.extend(page.iter().map(|r| r.seq));
                }
                assert_eq!(seen, expected, "{filter:?}, oldest first {oldest_first}, pages of {limit}");
            }
        }
    }
}

/// Small segments merge without changing what the log lists; the export stream reads every
/// record once from its positions; retention drops whole old segments and old rows, and only
/// what the stream has read.
pub async fn audit_compaction_retention_and_export(store: &dyn Store) {
    let ws = "ws_audit_upkeep";
    workspace(store, ws).await;
    // Records from 100 days ago on, a batch (a segment) every six hours, a mutation now and then.
    let old = NOW - 100 * DAY;
    for b in 0..40i64 {
        let batch: Vec<AuditEvent> = (0..3)
            .map(|i| {
                AuditEvent::new(
                    old + b * DAY / 4 + i,
                    ws,
                    Actor::ApiKey("key_upkeep".into()),
                    Action::SecretRead,
                    Outcome::Success,
                )
                .secret(if b % 2 == 0 { "even" } else { "odd" })
                .agent("agt_upkeep")
            })
            .collect();
        ok(store.append_audit(batch.clone()).await, "append_audit");
        // Listing moves what waits (SQLite's journal), so each batch is a segment of its own.
        audit_of(store, ws).await;
        if b % 10 == 0 {
            agent(store, ws, &format!("agt_upkeep{b}")).await;
        }
    }
    let before = audit_of(store, ws).await;
    assert_eq!(before.len(), 1 + 4 + 120);

    // The export stream, in batches of 50: every record of the workspace once.
    let mut position = ok(store.audit_export_position().await, "export position").unwrap_or_default().0;
    let start = position;
    let mut exported = Vec::new();
    loop {
        let batch = ok(store.audit_export_batch(position, 50).await, "audit_export_batch");
        if batch.rows.is_empty() && batch.segments.is_empty() {
            break;
        }
        for r in &batch.rows {
            assert!(r.seq > position.rows, "rows come after the position");
            position.rows = r.seq;
            exported.push((r.seq, r.event.clone()));
        }
        for (first, records) in &batch.segments {
            assert!(*first > position.segments, "segments come after the position");
            position.segments = *first;
            exported.extend(records.iter().map(|r| (r.seq, r.event.clone())));
        }
    }
    let mut mine: Vec<(i64, AuditEvent)> = exported.into_iter().filter(|(_, e)| e.workspace_id == ws).collect();
    mine.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let listed: Vec<(i64, AuditEvent)> = before.iter().map(|r| (r.seq, r.event.clone())).collect();
    assert_eq!(mine, listed, "the stream holds what the listing holds, each record once");
    ok(store.set_audit_export_position(position, NOW).await, "set_audit_export_position");
    assert_eq!(ok(store.audit_export_position().await, "export position"), Some((position, NOW)));

    // Retention, limited by where the stream stood before: nothing of this workspace goes.
    let cutoff = old + 5 * DAY;
    ok(store.drop_audit_before(cutoff, Some(start)).await, "retention before the export");
    assert_eq!(audit_of(store, ws).await.len(), before.len(), "nothing unexported is dropped");

    // Compaction changes nothing the log lists, and leaves nothing more to merge.
    let merged = ok(store.compact_audit(None, usize::MAX).await, "compact_audit");
    assert!(merged >= 39, "the workspace's 40 small segments are merged ({merged})");
    assert_eq!(audit_of(store, ws).await, before);
    let odd = AuditFilter { secret_name: Some("odd".into()), limit: 1000, ..AuditFilter::default() };
    assert_eq!(ok(store.list_audit(ws, &odd).await, "filtered").len(), 60);
    assert_eq!(ok(store.compact_audit(None, usize::MAX).await, "compact again"), 0);

    // A second workspace's segments stay apart; retention drops whole old segments and rows.
    let ws2 = "ws_audit_upkeep2";
    workspace(store, ws2).await;
    for b in 0..10i64 {
        let e = AuditEvent::new(old + b * DAY, ws2, Actor::System, Action::SecretRead, Outcome::Success).secret("s");
        ok(store.append_audit(vec![e.clone()]).await, "append_audit");
        audit_of(store, ws2).await;
    }
    let dropped = ok(store.drop_audit_before(cutoff, None).await, "retention");
    let left: Vec<Millis> = audit_of(store, ws2).await.iter().map(|r| r.event.at).collect();
    assert!(left.iter().all(|at| *at >= cutoff), "older records are gone");
    assert_eq!(left.iter().filter(|at| **at < NOW).count(), 5, "the newer five reads stay");
    assert!(dropped >= 5);
    assert_eq!(audit_of(store, ws).await, before, "the merged segment holds newer records: it stays whole");
}

/// The last successful read of each secret by an agent, from the audit log: by any agent, or
/// by one; denied reads, other actions and other workspaces do not count.
pub async fn last_reads_come_from_successful_agent_reads(store: &dyn Store) {
    let ws = "ws_last_read";
    workspace(store, ws).await;
    workspace(store, "ws_last_read_other").await;
    let read = |ws: &str, at: Millis, secret: &str, agent: &str, outcome: Outcome| {
        AuditEvent::new(NOW + at, ws, Actor::ApiKey("key_lr".into()), Action::SecretRead, outcome)
            .secret(secret)
            .agent(agent)
    };
    let events = [
        read(ws, 10, "stripe", "agt_a", Outcome::Success),
        read(ws, 30, "stripe", "agt_b", Outcome::Success),
        read(ws, 20, "stripe", "agt_a", Outcome::Success),
        read(ws, 40, "stripe", "agt_a", Outcome::Denied),
        read(ws, 50, "openai", "agt_c", Outcome::NotFound),
        read("ws_last_read_other", 60, "openai", "agt_c", Outcome::Success),
        AuditEvent::new(NOW + 70, ws, Actor::User("usr_lr".into()), Action::SecretReveal, Outcome::Success)
            .secret("openai"),
        read(ws, 5, "twilio", "agt_c", Outcome::Success),
    ];
    ok(store.append_audit(events.to_vec()).await, "append_audit");
    let names: Vec<String> = ["stripe", "openai", "twilio", "never"].map(String::from).to_vec();
    let last = |agent: Option<&'static str>| {
        let names = names.clone();
        async move {
            let mut got = ok(store.last_reads(ws, agent, &names).await, "last_reads");
            got.sort();
            got.into_iter().map(|(n, at)| (n, at - NOW)).collect::<Vec<_>>()
        }
    };
    let pair = |n: &str, at: Millis| (n.to_owned(), at);
    assert_eq!(last(None).await, [pair("stripe", 30), pair("twilio", 5)], "by any agent");
    // An agent's newest record (the highest seq) counts; its later denied read does not.
    assert_eq!(last(Some("agt_a")).await, [pair("stripe", 20)], "by agt_a");
    assert_eq!(last(Some("agt_b")).await, [pair("stripe", 30)]);
    assert_eq!(last(Some("agt_c")).await, [pair("twilio", 5)], "not another workspace's read");
    assert!(ok(store.last_reads(ws, None, &[]).await, "no names").is_empty());
}

/// API keys keep their scope, hash and times; revoking is idempotent; uses never go back.
pub async fn api_key_scopes_round_trip(store: &dyn Store) {
    let ws = "ws_keys";
    workspace(store, ws).await;
    agent(store, ws, "agt_k1").await;
    agent(store, ws, "agt_k2").await;
    let limited =
        api_key(ws, "key_limited", KeyScope::Agents(BTreeSet::from(["agt_k1".to_owned(), "agt_k2".to_owned()])));
    let mut all = api_key(ws, "key_all", KeyScope::All);
    all.created_at = NOW + 1;
    all.expires_at = None;
    ok(store.create_api_key(&limited, b"hash-limited", &event(ws, Action::ApiKeyCreate)).await, "limited");
    ok(store.create_api_key(&all, b"hash-all", &event(ws, Action::ApiKeyCreate)).await, "all");
    assert_eq!(ok(store.list_api_keys(ws).await, "list_api_keys"), vec![all.clone(), limited.clone()], "newest first");
    let loaded = ok(store.load_api_keys(None).await, "load_api_keys");
    assert!(loaded.contains(&(limited.clone(), b"hash-limited".to_vec())));
    assert!(loaded.contains(&(all.clone(), b"hash-all".to_vec())));

    ok(store.record_api_key_use(&[("key_limited".into(), NOW + 50)]).await, "use");
    ok(store.record_api_key_use(&[("key_limited".into(), NOW + 20)]).await, "an older use");
    let revoked =
        ok(store.revoke_api_key(ws, "key_limited", NOW + 60, &event(ws, Action::ApiKeyRevoke)).await, "revoke");
    assert_eq!((revoked.revoked_at, revoked.last_used_at), (Some(NOW + 60), Some(NOW + 50)));
    assert_eq!(revoked.scope, limited.scope, "the scope survives the revocation");
    let twice = ok(store.revoke_api_key(ws, "key_limited", NOW + 70, &event(ws, Action::ApiKeyRevoke)).await, "again");
    assert_eq!(twice.revoked_at, Some(NOW + 60), "revoking twice keeps the first time");
    workspace(store, "ws_keys_other").await;
    let r = store.revoke_api_key("ws_keys_other", "key_all", NOW, &event("ws_keys_other", Action::ApiKeyRevoke)).await;
    refused(r, ErrorKind::NotFound, "api_key_not_found", "another workspace's key");
}

/// Root key rotation re-wraps data keys in one transaction; a version that changed meanwhile
/// refuses the whole rotation.
pub async fn root_key_rewrap(store: &dyn Store) {
    let ws = "ws_rotate";
    workspace(store, ws).await;
    secret(store, ws, "sec_rot_a", &[]).await;
    secret(store, ws, "sec_rot_b", &[]).await;
    let mine =
        |all: Vec<SealedVersion>| -> Vec<SealedVersion> { all.into_iter().filter(|v| v.workspace_id == ws).collect() };
    let versions = mine(ok(store.all_sealed_versions().await, "all_sealed_versions"));
    assert_eq!(versions.len(), 2);
    let rewrap = |v: &SealedVersion| {
        let mut v = v.clone();
        v.sealed.root_key_id = "root-2".into();
        v.sealed.wrapped_dek = format!("rewrapped-{}", v.secret_id).into_bytes();
        v
    };

    // The first server to start records its key; later claims get the recorded one.
    let recorded = ok(store.claim_root_key("root-1").await, "claim_root_key");
    assert_eq!(ok(store.claim_root_key("another").await, "claim_root_key"), recorded);

    // One stale entry (its ciphertext is not the stored one): nothing changes.
    let mut stale: Vec<SealedVersion> = versions.iter().map(rewrap).collect();
    stale[1].sealed.ciphertext = b"not what is stored".to_vec();
    let r = store.replace_wrapped_keys(&stale, "root-2", &[event(ws, Action::RootKeyRotate)]).await;
    refused(r, ErrorKind::Conflict, "version_conflict", "a stale rotation");
    assert_eq!(
        mine(ok(store.all_sealed_versions().await, "after")).iter().map(|v| &v.sealed).collect::<Vec<_>>(),
        versions.iter().map(|v| &v.sealed).collect::<Vec<_>>(),
        "no key was replaced"
    );
    assert_eq!(ok(store.claim_root_key("another").await, "claim_root_key"), recorded, "nor the recorded key");

    let fresh: Vec<SealedVersion> = versions.iter().map(rewrap).collect();
    ok(store.replace_wrapped_keys(&fresh, "root-2", &[event(ws, Action::RootKeyRotate)]).await, "rotation");
    let after = mine(ok(store.all_sealed_versions().await, "after"));
    assert_eq!(
        after.iter().map(|v| &v.sealed).collect::<Vec<_>>(),
        fresh.iter().map(|v| &v.sealed).collect::<Vec<_>>()
    );
    let current = ok(store.load_current_secrets(None).await, "load_current_secrets");
    let a = current.iter().find(|r| r.meta.id == "sec_rot_a").map(|r| r.sealed.clone());
    assert_eq!(a, Some(fresh[0].sealed.clone()), "the read model sees the new wrapping, same ciphertext");
    let rotations = audit_of(store, ws).await.iter().filter(|r| r.event.action == Action::RootKeyRotate).count();
    assert_eq!(rotations, 1, "only the rotation that happened is recorded");
    assert_eq!(ok(store.claim_root_key("another").await, "claim_root_key"), "root-2", "the new key is recorded");
}

/// An invitation is used once; a new one replaces the pending one; members are not invited.
pub async fn invitations_are_single_use(store: &dyn Store) {
    let ws = "ws_invite";
    workspace(store, ws).await;
    let first = invitation(ws, "inv_first", "new@example.com");
    ok(store.create_invitation(&first, b"inv-first", &[event(ws, Action::InvitationCreate)]).await, "invite");
    let second = invitation(ws, "inv_second", "NEW@example.com");
    ok(store.create_invitation(&second, b"inv-second", &[event(ws, Action::InvitationCreate)]).await, "invite again");
    let pending: Vec<String> = ok(store.list_invitations(ws, NOW).await, "list").into_iter().map(|i| i.id).collect();
    assert_eq!(pending, ["inv_second"], "the new invitation replaced the pending one");
    let old = ok(store.invitation_by_hash(b"inv-first").await, "by_hash");
    assert!(old.is_some_and(|i| i.revoked_at.is_some()));

    let newcomer = user("usr_invited", "new@example.com");
    let account = NewAccount { user: &newcomer, password_hash: "h" };
    let accepted = [event(ws, Action::InvitationAccept)];
    ok(store.accept_invitation(&second, "usr_invited", Some(account), NOW + 1, &accepted).await, "accept");
    assert_eq!(ok(store.memberships_of("usr_invited").await, "memberships"), vec![(ws.into(), Role::Member)]);
    let again = store.accept_invitation(&second, "usr_invited", None, NOW + 2, &[]).await;
    refused(again, ErrorKind::NotFound, "invitation_invalid", "a used invitation");
    let revoked = store.accept_invitation(&first, "usr_invited", None, NOW + 2, &[]).await;
    refused(revoked, ErrorKind::NotFound, "invitation_invalid", "a replaced invitation");
    let used = ok(store.invitation_by_hash(b"inv-second").await, "by_hash");
    assert!(used.is_some_and(|i| i.accepted_at == Some(NOW + 1)));

    let r = store.create_invitation(&invitation(ws, "inv_member", "New@Example.com"), b"inv-member", &[]).await;
    refused(r, ErrorKind::Conflict, "already_member", "inviting a member");

    // Revoking: once, and only while pending.
    let third = invitation(ws, "inv_third", "third@example.com");
    ok(store.create_invitation(&third, b"inv-third", &[]).await, "invite");
    let gone =
        ok(store.revoke_invitation(ws, "inv_third", NOW + 3, &[event(ws, Action::InvitationRevoke)]).await, "revoke");
    assert_eq!(gone.revoked_at, Some(NOW + 3));
    let r = store.revoke_invitation(ws, "inv_third", NOW + 4, &[]).await;
    refused(r, ErrorKind::NotFound, "invitation_not_found", "revoking twice");
    let r = store.accept_invitation(&third, "usr_invited", None, NOW + 4, &[]).await;
    refused(r, ErrorKind::NotFound, "invitation_invalid", "a revoked invitation");

    // An expired invitation is not pending.
    let late = invitation(ws, "inv_late", "late@example.com");
    ok(store.create_invitation(&late, b"inv-late", &[]).await, "invite");
    let r = store.accept_invitation(&late, "usr_invited", None, NOW + DAY, &[]).await;
    refused(r, ErrorKind::NotFound, "invitation_invalid", "an expired invitation");
    assert!(ok(store.list_invitations(ws, NOW + DAY).await, "list").is_empty());
}

/// Sessions and personal access tokens end when revoked or when the password changes.
pub async fn sessions_and_tokens_are_revoked(store: &dyn Store) {
    ok(store.create_user(&user("usr_sess", "sess@example.com"), "old", &[], &[]).await, "user");
    ok(store.create_user(&user("usr_sess_other", "sess-other@example.com"), "old", &[], &[]).await, "user");
    let session = |id: &str, created_at: Millis, expires_at: Millis| Session {
        id: id.into(),
        user_id: "usr_sess".into(),
        created_at,
        expires_at,
        revoked_at: None,
        client: "127.0.0.1".into(),
        user_agent: "conformance".into(),
    };
    let token = |id: &str| PersonalToken {
        id: id.into(),
        user_id: "usr_sess".into(),
        name: id.into(),
        prefix: "av_p".into(),
        created_at: NOW,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    let expired = session("ses_expired", NOW - 2 * DAY, NOW - DAY);
    ok(store.create_session(&expired, b"ses-expired", &[]).await, "session");
    for (id, hash) in [("ses_a", b"ses-a"), ("ses_b", b"ses-b"), ("ses_c", b"ses-c")] {
        ok(store.create_session(&session(id, NOW, NOW + DAY), hash, &[]).await, "session");
    }
    let listed: Vec<String> = ok(store.list_sessions("usr_sess").await, "list").into_iter().map(|s| s.id).collect();
    assert_eq!(listed.len(), 3, "the expired session was cleared: {listed:?}");
    assert_eq!(ok(store.session_by_hash(b"ses-a").await, "by_hash"), Some(session("ses_a", NOW, NOW + DAY)));

    let r = store.revoke_session("usr_sess_other", "ses_a", NOW, &[]).await;
    refused(r, ErrorKind::NotFound, "session_not_found", "someone else's session");
    ok(store.revoke_session("usr_sess", "ses_a", NOW + 1, &[]).await, "revoke");
    ok(store.revoke_session("usr_sess", "ses_a", NOW + 2, &[]).await, "revoke twice");
    let a = ok(store.session_by_hash(b"ses-a").await, "by_hash");
    assert_eq!(a.and_then(|s| s.revoked_at), Some(NOW + 1), "the first revocation counts");

    for (id, hash) in [("pat_a", b"pat-a"), ("pat_b", b"pat-b"), ("pat_c", b"pat-c")] {
        ok(store.create_personal_token(&token(id), hash, &[]).await, "token");
    }
    ok(store.record_personal_token_use("pat_a", NOW + 9).await, "use");
    ok(store.record_personal_token_use("pat_a", NOW + 3).await, "an older use");
    let r = store.revoke_personal_token("usr_sess_other", "pat_a", NOW, &[]).await;
    refused(r, ErrorKind::NotFound, "token_not_found", "someone else's token");
    let a = ok(store.revoke_personal_token("usr_sess", "pat_a", NOW + 10, &[]).await, "revoke");
    assert_eq!((a.revoked_at, a.last_used_at), (Some(NOW + 10), Some(NOW + 9)));

    // A password change ends every other live session and, when asked, every other token.
    let change = PasswordChange {
        user_id: "usr_sess",
        password_hash: "new",
        now: NOW + 20,
        keep_session: Some("ses_b"),
        revoke_tokens: true,
        keep_token: Some("pat_b"),
    };
    let (sessions, tokens) = ok(store.set_password(&change, &[]).await, "set_password");
    assert_eq!((sessions, tokens), (1, 1), "ses_c and pat_c end; revoked ones are not counted again");
    let live = |hash: &'static [u8]| async move {
        ok(store.session_by_hash(hash).await, "session").is_some_and(|s| s.is_usable(NOW + 21))
    };
    assert!(live(b"ses-b").await && !live(b"ses-c").await);
    let tokens: Vec<(String, bool)> = ok(store.list_personal_tokens("usr_sess").await, "tokens")
        .into_iter()
        .map(|t| (t.id.clone(), t.is_usable(NOW + 21)))
        .collect();
    assert!(tokens.contains(&("pat_b".into(), true)) && tokens.contains(&("pat_c".into(), false)), "{tokens:?}");
    let stored = ok(store.user_by_email("sess@example.com").await, "user_by_email").map(|(_, hash)| hash);
    assert_eq!(stored.as_deref(), Some("new"));
    let r = store.set_password(&PasswordChange { user_id: "usr_nobody", ..change }, &[]).await;
    refused(r, ErrorKind::NotFound, "user_not_found", "a missing user's password");
}

/// Every committed mutation takes the next change number and says what it changed; a refused one
/// takes none.
pub async fn changes_are_numbered_in_commit_order(store: &dyn Store) {
    let ws = "ws_changes";
    workspace(store, ws).await;
    let before = ok(store.latest_change().await, "latest_change");
    assert_eq!(store.committed_change(), before, "this process committed the newest change");

    agent(store, ws, "agt_changes").await;
    let a2 = agent(store, ws, "agt_changes_2").await;
    let dup = store.create_agent(&a2, &event(ws, Action::AgentCreate).agent("agt_changes_2")).await;
    refused(dup, ErrorKind::Conflict, "agent_exists", "a duplicate agent");
    secret(store, ws, "sec_changes", &["agt_changes"]).await;

    let after = ok(store.latest_change().await, "latest_change");
    assert_eq!(after, before + 3, "three committed changes, the refused one took no number");
    assert_eq!(store.committed_change(), after);
    let changes = ok(store.changes_since(before, 100).await, "changes_since");
    assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [before + 1, before + 2, before + 3]);
    assert!(changes.iter().all(|c| c.workspace_id.as_deref() == Some(ws)), "{changes:?}");
    assert_eq!(changes[0].agent_id.as_deref(), Some("agt_changes"));
    assert_eq!(changes[0].actions, ["agent.create"]);
    assert_eq!(changes[2].actions, ["secret.create"]);
    assert!(changes.iter().all(|c| c.mine), "made through this store");
    assert_eq!(ok(store.changes_since(before, 1).await, "changes_since").len(), 1, "the limit holds");

    // A change spanning workspaces names none: servers reload everything for it.
    let rotation = [event(ws, Action::RootKeyRotate), event("ws_other", Action::RootKeyRotate)];
    ok(store.replace_wrapped_keys(&[], "root-2", &rotation).await, "an empty rotation");
    let last = ok(store.changes_since(after, 10).await, "changes_since");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].workspace_id, None);

    assert!(ok(store.prune_changes(after).await, "prune_changes") >= 3);
    let left = ok(store.changes_since(0, 1000).await, "changes_since");
    assert!(left.iter().all(|c| c.seq >= after), "{left:?}");
}

/// An agent's egress policy: none stored means the default; set twice replaces; another
/// workspace's agent is not found; it goes with the agent.
pub async fn egress_policies_round_trip(store: &dyn Store) {
    use agentvault_core::model::{EgressMode, EgressPolicy};
    let ws = "ws_egress";
    workspace(store, ws).await;
    workspace(store, "ws_egress_other").await;
    agent(store, ws, "agt_egress").await;
    assert_eq!(ok(store.get_egress_policy(ws, "agt_egress").await, "get"), None);
    let allow = EgressPolicy {
        mode: EgressMode::Allowlist,
        hosts: vec!["api.stripe.com".into(), "*.googleapis.com:8443".into()],
        updated_at: NOW,
    };
    ok(store.set_egress_policy(ws, "agt_egress", &allow, &event(ws, Action::AgentEgressSet)).await, "set");
    assert_eq!(ok(store.get_egress_policy(ws, "agt_egress").await, "get"), Some(allow));
    let none = EgressPolicy { mode: EgressMode::None, hosts: vec![], updated_at: NOW + 1 };
    ok(store.set_egress_policy(ws, "agt_egress", &none, &event(ws, Action::AgentEgressSet)).await, "replace");
    assert_eq!(ok(store.get_egress_policy(ws, "agt_egress").await, "get"), Some(none.clone()));
    let set = event(ws, Action::AgentEgressSet);
    let wrong = store.set_egress_policy("ws_egress_other", "agt_egress", &none, &set);
    refused(wrong.await, ErrorKind::NotFound, "agent_not_found", "another workspace's agent");
    assert_eq!(ok(store.get_egress_policy("ws_egress_other", "agt_egress").await, "get"), None);
    ok(store.delete_agent(ws, "agt_egress", &event(ws, Action::AgentDelete)).await, "delete_agent");
    assert_eq!(ok(store.get_egress_policy(ws, "agt_egress").await, "get"), None);
    let gone = store.set_egress_policy(ws, "agt_egress", &none, &set);
    refused(gone.await, ErrorKind::NotFound, "agent_not_found", "a deleted agent");
}

/// Injected-only secrets round-trip and go with their secret; the egress CA is stored once.
pub async fn injections_and_the_egress_ca(store: &dyn Store) {
    let ws = "ws_inject";
    workspace(store, ws).await;
    agent(store, ws, "agt_inject").await;
    let s = secret(store, ws, "sec_inject", &["agt_inject"]).await;
    let hosts = vec!["api.stripe.com".to_owned()];
    let set = event(ws, Action::SecretInjectionSet);
    ok(store.set_injection(ws, &s.id, Some(&hosts), NOW, &set).await, "set_injection");
    let all = ok(store.load_injections().await, "load_injections");
    assert!(all.contains(&(ws.to_owned(), s.id.clone(), hosts.clone())), "{all:?}");
    refused(
        store.set_injection(ws, "sec_missing", Some(&hosts), NOW, &set).await,
        ErrorKind::NotFound,
        "secret_not_found",
        "a missing secret",
    );
    ok(store.set_injection(ws, &s.id, None, NOW, &set).await, "readable again");
    assert!(!ok(store.load_injections().await, "load").iter().any(|(_, id, _)| *id == s.id));
    ok(store.set_injection(ws, &s.id, Some(&hosts), NOW, &set).await, "set again");
    ok(store.delete_secret(ws, &s.id, &event(ws, Action::SecretDelete)).await, "delete_secret");
    assert!(!ok(store.load_injections().await, "load").iter().any(|(_, id, _)| *id == s.id), "it went with the secret");

    let first = ok(store.create_egress_ca("CERT-1", &sealed("ca-1"), NOW).await, "create_egress_ca");
    let second = ok(store.create_egress_ca("CERT-2", &sealed("ca-2"), NOW).await, "create_egress_ca again");
    assert_eq!(first.0, "CERT-1");
    assert_eq!(second.0, "CERT-1", "the first CA stays");
    ok(store.rewrap_egress_ca(&sealed("ca-3")).await, "rewrap");
    let now = ok(store.get_egress_ca().await, "get_egress_ca");
    assert_eq!(now.map(|(pem, s)| (pem, s.wrapped_dek)), Some(("CERT-1".to_owned(), b"dek-ca-3".to_vec())));
}

/// A secret's own values per environment: created with the secret, changed and removed apart
/// from the default value (each with its own versions), loaded for the read model, re-wrapped by
/// a root key rotation and deleted with the secret; the protected flag round-trips.
pub async fn environment_values_round_trip(store: &dyn Store) {
    let ws = "ws_envs";
    workspace(store, ws).await;
    agent(store, ws, "agt_envs").await;
    let mut meta = secret_meta(ws, "sec_envs", &["agt_envs"]);
    meta.protected = true;
    let keys = vec!["client_id".to_owned(), "client_secret".to_owned()];
    meta.envs = vec![
        EnvValueMeta { env: Env::Sandbox, kind: SecretKind::Single, keys: None, version: 1, updated_at: NOW },
        EnvValueMeta { env: Env::Live, kind: SecretKind::Kv, keys: Some(keys.clone()), version: 1, updated_at: NOW },
    ];
    let envs = [(Env::Sandbox, sealed("envs-sandbox")), (Env::Live, sealed("envs-live"))];
    let create = event(ws, Action::SecretCreate).secret(&meta.name);
    ok(store.create_secret_with_envs(&meta, &sealed("envs-default"), &envs, &create).await, "create with envs");
    let got = some(ok(store.get_secret(ws, &meta.name).await, "get_secret"), "the secret exists");
    assert_eq!(got, meta, "metadata with the environments and the protected flag round-trips");
    let record = |records: Vec<crate::SecretRecord>| records.into_iter().find(|r| r.meta.id == "sec_envs");
    let loaded = some(record(ok(store.load_current_secrets(Some(ws)).await, "load")), "loaded");
    assert_eq!(loaded.sealed, sealed("envs-default"));
    assert_eq!(loaded.envs, envs.to_vec(), "each environment's sealed value, in environment order");
    assert_eq!(loaded.meta, meta);

    // A new live value, no sandbox value any more, not protected: the default stays at version 1.
    let live2 = sealed("envs-live-2");
    let changes = [
        EnvChange {
            env: Env::Live,
            version: 2,
            value: Some(NewVersion { kind: SecretKind::Single, keys: None, sealed: &live2 }),
        },
        EnvChange { env: Env::Sandbox, version: 0, value: None },
    ];
    let change = SecretChange {
        secret_id: "sec_envs",
        expected_version: 1,
        description: None,
        value: None,
        envs: &changes,
        protected: Some(false),
        now: NOW + 10,
        actor_id: "usr_conformance",
    };
    let after = ok(store.update_secret(ws, &change, &event(ws, Action::SecretUpdate)).await, "update envs");
    assert_eq!((after.version, after.protected), (1, false));
    assert_eq!(
        after.envs,
        [EnvValueMeta { env: Env::Live, kind: SecretKind::Single, keys: None, version: 2, updated_at: NOW + 10 }]
    );
    let live_versions: Vec<(u32, SecretKind)> =
        ok(store.list_env_versions(ws, "sec_envs", Env::Live).await, "live versions")
            .into_iter()
            .map(|v| (v.version, v.kind))
            .collect();
    assert_eq!(live_versions, [(2, SecretKind::Single), (1, SecretKind::Kv)], "newest first");
    let loaded = some(record(ok(store.load_current_secrets(None).await, "load all")), "loaded");
    assert_eq!(loaded.envs, [(Env::Live, live2.clone())]);

    // A sandbox value again: its versions go on from the removed one's.
    let sandbox2 = sealed("envs-sandbox-2");
    let stale = [EnvChange {
        env: Env::Sandbox,
        version: 1,
        value: Some(NewVersion { kind: SecretKind::Single, keys: None, sealed: &sandbox2 }),
    }];
    let stale_change = SecretChange { envs: &stale, ..change.clone() };
    let r = store.update_secret(ws, &stale_change, &event(ws, Action::SecretUpdate)).await;
    refused(r, ErrorKind::Conflict, "version_conflict", "a sandbox version 1 again");
    let again = [EnvChange {
        env: Env::Sandbox,
        version: 2,
        value: Some(NewVersion { kind: SecretKind::Single, keys: None, sealed: &sandbox2 }),
    }];
    let change = SecretChange { envs: &again, protected: None, now: NOW + 20, ..change };
    let after = ok(store.update_secret(ws, &change, &event(ws, Action::SecretUpdate)).await, "sandbox again");
    assert_eq!(after.env_value(Env::Sandbox).map(|e| e.version), Some(2));
    assert!(!after.protected, "an unchanged flag stays");

    // A root key rotation re-wraps the environments' versions too.
    let mine: Vec<SealedVersion> = ok(store.all_sealed_versions().await, "all_sealed_versions")
        .into_iter()
        .filter(|v| v.secret_id == "sec_envs")
        .collect();
    let mut listed: Vec<(Option<Env>, u32)> = mine.iter().map(|v| (v.env, v.version)).collect();
    listed.sort();
    assert_eq!(
        listed,
        [(None, 1), (Some(Env::Sandbox), 1), (Some(Env::Sandbox), 2), (Some(Env::Live), 1), (Some(Env::Live), 2)]
    );
    let rewrapped: Vec<SealedVersion> = mine
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.sealed.root_key_id = "root-envs".into();
            v.sealed.wrapped_dek = format!("rewrapped-{:?}-{}", v.env, v.version).into_bytes();
            v
        })
        .collect();
    ok(store.replace_wrapped_keys(&rewrapped, "root-1", &[event(ws, Action::RootKeyRotate)]).await, "rotate");
    let loaded = some(record(ok(store.load_current_secrets(Some(ws)).await, "load")), "loaded");
    assert!(loaded.envs.iter().all(|(_, s)| s.root_key_id == "root-envs"), "{:?}", loaded.envs);
    assert_eq!(loaded.sealed.root_key_id, "root-envs");

    // Deleting the secret takes every environment's versions with it.
    ok(store.delete_secret(ws, "sec_envs", &event(ws, Action::SecretDelete)).await, "delete");
    assert!(ok(store.all_sealed_versions().await, "after delete").iter().all(|v| v.secret_id != "sec_envs"));
    assert!(ok(store.list_env_versions(ws, "sec_envs", Env::Live).await, "live versions").is_empty());

    // An API key for one environment keeps it.
    let mut key = api_key(ws, "key_envs_live", KeyScope::All);
    key.env = Some(Env::Live);
    ok(store.create_api_key(&key, b"hash-envs-live", &event(ws, Action::ApiKeyCreate)).await, "create key");
    let keys = ok(store.list_api_keys(ws).await, "list keys");
    assert_eq!(keys.iter().find(|k| k.id == "key_envs_live").map(|k| k.env), Some(Some(Env::Live)));
}

/// Every save of a function is a version kept with its author; a deployment points pre-release or
/// live at one of them (rollback: an older one), is audited, and is what the read model loads.
pub async fn functions_are_versioned_and_deployed(store: &dyn Store) {
    let ws = "ws_deploy";
    workspace(store, ws).await;
    agent(store, ws, "agt_dep").await;
    let v1 = function(ws, "agt_dep", "pay", 1);
    ok(store.create_function(&v1, &event(ws, Action::FunctionCreate)).await, "create");
    let mut v2 = function(ws, "agt_dep", "pay", 2);
    v2.code = "def pay(conv, n):\n    return n * 2\n".into();
    ok(store.update_function(&v2, &event(ws, Action::FunctionUpdate)).await, "update");
    let versions = ok(store.list_function_versions(ws, "agt_dep", "pay").await, "versions");
    let listed: Vec<(u32, &str, &str)> =
        versions.iter().map(|v| (v.version, v.code.as_str(), v.created_by.as_str())).collect();
    assert_eq!(listed, [(2, v2.code.as_str(), "usr_conformance"), (1, v1.code.as_str(), "usr_conformance")]);
    assert_eq!((versions[1].parameters.clone(), versions[1].timeout_ms), (v1.parameters.clone(), v1.timeout_ms));
    refused(
        store.list_function_versions(ws, "agt_dep", "nope").await,
        ErrorKind::NotFound,
        "function_not_found",
        "versions of no function",
    );
    let stored = some(ok(store.get_function(ws, "agt_dep", "pay").await, "get"), "stored");
    assert!(stored.deployments.is_empty(), "a new function is deployed nowhere");

    let before = audit_of(store, ws).await.len();
    let live = Deployment {
        env: Env::Live,
        version: 2,
        deployed_by: "usr_admin".into(),
        deployed_at: NOW + 5,
        by_admin: true,
    };
    let deployed =
        ok(store.deploy_function(ws, "agt_dep", "pay", &live, &event(ws, Action::FunctionDeploy)).await, "deploy");
    assert_eq!(deployed.deployments, std::slice::from_ref(&live));
    let pre = Deployment {
        env: Env::PreRelease,
        version: 1,
        deployed_by: "usr_member".into(),
        deployed_at: NOW + 6,
        by_admin: false,
    };
    ok(store.deploy_function(ws, "agt_dep", "pay", &pre, &event(ws, Action::FunctionDeploy)).await, "deploy pre");
    // Rollback: live runs version 1 again.
    let back = Deployment { version: 1, deployed_at: NOW + 7, ..live.clone() };
    let rolled =
        ok(store.deploy_function(ws, "agt_dep", "pay", &back, &event(ws, Action::FunctionDeploy)).await, "rollback");
    assert_eq!(rolled.deployments, [pre.clone(), back.clone()], "in environment order");
    assert_eq!(rolled.version, 2, "the latest version stays the latest");
    let listed = ok(store.list_functions(ws, "agt_dep").await, "list");
    assert_eq!(listed[0].deployments, [pre.clone(), back.clone()]);

    let missing = Deployment { version: 9, ..live.clone() };
    let r = store.deploy_function(ws, "agt_dep", "pay", &missing, &event(ws, Action::FunctionDeploy)).await;
    refused(r, ErrorKind::NotFound, "version_not_found", "a version never saved");
    let r = store.deploy_function(ws, "agt_dep", "nope", &live, &event(ws, Action::FunctionDeploy)).await;
    refused(r, ErrorKind::NotFound, "function_not_found", "no such function");
    assert_eq!(audit_of(store, ws).await.len(), before + 3, "the three deployments are recorded");

    let mut loaded = ok(store.load_deployed_functions(Some(ws)).await, "load_deployed");
    loaded.sort_by_key(|d| d.deployment.env);
    let got: Vec<(Env, u32, &str, bool)> = loaded
        .iter()
        .map(|d| (d.deployment.env, d.function.version, d.function.code.as_str(), d.deployment.by_admin))
        .collect();
    assert_eq!(got, [(Env::PreRelease, 1, v1.code.as_str(), false), (Env::Live, 1, v1.code.as_str(), true)]);
    assert_eq!(loaded[0].function.parameters, v1.parameters);
    assert!(ok(store.load_deployed_functions(None).await, "all").len() >= 2);

    ok(store.delete_function(ws, "agt_dep", "pay", &event(ws, Action::FunctionDelete)).await, "delete");
    assert!(ok(store.load_deployed_functions(Some(ws)).await, "after delete").is_empty());
}
