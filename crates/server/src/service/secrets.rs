//! Secrets: metadata, versions, access lists, and the admin's reveal.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Binding, Env, EnvValueMeta, Perm, Principal, SECRET_PREFIX, Sealed, SecretMeta};
use agentvault_core::{Error, Result, SecretValue, validate};
use agentvault_store::{EnvChange, NewVersion, SecretChange};
use zeroize::Zeroizing;

use super::{Body, agent_list, secret_name_param};
use crate::api::secrets::{
    AgentUseOut, CreateSecret, EnvValuesChange, EnvValuesIn, FunctionUseOut, ImportSecret, ImportSecrets, RevealOut,
    RevealQuery, SecretUsageOut, SetAccess, UpdateSecret,
};
use crate::api::{SecretOut, VersionOut};
use crate::auth::new_id;
use crate::{AppState, now_millis, rfc3339};

impl AppState {
    /// The metadata of a secret of the workspace, or 404.
    pub async fn secret_of(&self, ws: &str, name: &str) -> Result<SecretMeta> {
        secret_name_param(name)?;
        self.store.get_secret(ws, name).await?.ok_or_else(|| Error::secret_not_found(name))
    }

    /// Seals an encoded value as `version` of the secret.
    pub fn seal(&self, meta: &SecretMeta, version: u32, encoded: &[u8]) -> Result<Sealed> {
        let binding = Binding { workspace_id: &meta.workspace_id, secret_id: &meta.id, version };
        self.keyring.seal(binding, encoded).map_err(|e| Error::internal(format!("sealing failed: {e}")))
    }

    /// Seals an encoded value as `version` of environment `env`'s own value of the secret.
    pub fn seal_env(&self, meta: &SecretMeta, env: Env, version: u32, encoded: &[u8]) -> Result<Sealed> {
        let id = env.binding_id(&meta.id);
        let binding = Binding { workspace_id: &meta.workspace_id, secret_id: &id, version };
        self.keyring.seal(binding, encoded).map_err(|e| Error::internal(format!("sealing failed: {e}")))
    }
}

/// An environment's value given in a request, validated and encoded.
struct EnvValueIn {
    env: Env,
    value: SecretValue,
    encoded: Zeroizing<Vec<u8>>,
}

fn checked_env_value(env: Env, value: SecretValue) -> Result<EnvValueIn> {
    let encoded = value.validate_and_encode().map_err(|e| {
        let field = format!("values.{env}");
        Error { field: Some(field.into()), ..e }
    })?;
    Ok(EnvValueIn { env, value, encoded })
}

/// The environments' values given at creation, in environment order.
fn env_values_in(v: EnvValuesIn) -> Result<Vec<EnvValueIn>> {
    [(Env::Sandbox, v.sandbox), (Env::PreRelease, v.pre_release), (Env::Live, v.live)]
        .into_iter()
        .filter_map(|(env, value)| value.map(|value| checked_env_value(env, value)))
        .collect()
}

/// The environments' values changed by a PATCH: a new value, or (None) a removal.
fn env_changes_in(v: EnvValuesChange) -> Result<Vec<(Env, Option<EnvValueIn>)>> {
    let mut out = Vec::new();
    for (env, change) in [(Env::Sandbox, v.sandbox), (Env::PreRelease, v.pre_release), (Env::Live, v.live)] {
        match change {
            None => {}
            Some(None) => out.push((env, None)),
            Some(Some(value)) => out.push((env, Some(checked_env_value(env, value)?))),
        }
    }
    Ok(out)
}

fn envs_detail(envs: &[Env]) -> String {
    envs.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(",")
}

fn agents_detail(agents: &[String]) -> String {
    if agents.is_empty() { "agents=none".into() } else { format!("agents={}", agents.join(",")) }
}

/// The secrets of a workspace: metadata only, never values.
pub async fn list(st: &AppState, p: &Principal, ws: &str) -> Result<Vec<SecretOut>> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let secrets = st.store.list_secrets(&ws.id).await?;
    Ok(secrets.into_iter().map(SecretOut::from).collect())
}

/// Creates a secret (version 1) with its access list. Nothing is stored if any part is invalid.
pub async fn create(st: &AppState, p: &Principal, ws: &str, body: Body<CreateSecret>) -> Result<SecretOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let body = body?;
    validate::secret_name(&body.name)?;
    validate::description(&body.description)?;
    let encoded = body.value.validate_and_encode()?;
    let agents = agent_list("agents", body.agents)?;
    let env_values = env_values_in(body.values)?;
    let _w = st.write_lock.lock().await;
    let now = now_millis();
    let mut meta = SecretMeta {
        id: new_id(SECRET_PREFIX)?,
        workspace_id: ws.id.clone(),
        name: body.name,
        description: body.description,
        kind: body.value.kind(),
        keys: body.value.keys(),
        version: 1,
        agents,
        created_at: now,
        updated_at: now,
        protected: body.protected,
        envs: Vec::new(),
    };
    let sealed = st.seal(&meta, 1, &encoded)?;
    let mut env_sealed = Vec::with_capacity(env_values.len());
    for v in &env_values {
        env_sealed.push((v.env, st.seal_env(&meta, v.env, 1, &v.encoded)?));
        meta.envs.push(EnvValueMeta {
            env: v.env,
            kind: v.value.kind(),
            keys: v.value.keys(),
            version: 1,
            updated_at: now,
        });
    }
    let mut detail = format!("version=1 type={} {}", meta.kind.as_str(), agents_detail(&meta.agents));
    if !env_values.is_empty() {
        let envs: Vec<Env> = env_values.iter().map(|v| v.env).collect();
        detail.push_str(&format!(" values={}", envs_detail(&envs)));
    }
    if meta.protected {
        detail.push_str(" protected");
    }
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::SecretCreate, Outcome::Success)
        .secret(&meta.name)
        .target(&meta.id)
        .detail(detail);
    st.store.create_secret_with_envs(&meta, &sealed, &env_sealed, &audit).await?;
    st.model.put_secret(&meta, sealed, env_sealed);
    st.refresh_gauges();
    Ok(meta.into())
}

/// Most secrets one import creates.
const IMPORT_MAX: usize = 100;

/// Creates several secrets in one transaction: each is validated first (its field named
/// `secrets[i].<field>`), names must be unique among them and in the workspace; all or none.
pub async fn import(st: &AppState, p: &Principal, ws: &str, body: Body<ImportSecrets>) -> Result<Vec<SecretOut>> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let body = body?;
    if body.secrets.is_empty() || body.secrets.len() > IMPORT_MAX {
        return Err(Error::invalid(
            "secrets",
            format!("give 1 to {IMPORT_MAX} secrets to import; {} given", body.secrets.len()),
        ));
    }
    let at = |i: usize, e: Error| {
        let field = format!("secrets[{i}].{}", e.public_field().unwrap_or("value"));
        Error { field: Some(field.into()), ..e }
    };
    let mut checked = Vec::with_capacity(body.secrets.len());
    for (i, s) in body.secrets.into_iter().enumerate() {
        validate::secret_name(&s.name).map_err(|e| at(i, e))?;
        validate::description(&s.description).map_err(|e| at(i, e))?;
        if checked.iter().any(|(c, _, _): &(ImportSecret, _, _)| c.name == s.name) {
            return Err(Error::conflict("secret_exists", format!("{} is given twice in this import", s.name))
                .with_field(format!("secrets[{i}].name")));
        }
        let encoded = s.value.validate_and_encode().map_err(|e| at(i, e))?;
        let agents = agent_list("agents", s.agents.clone()).map_err(|e| at(i, e))?;
        checked.push((s, encoded, agents));
    }
    let _w = st.write_lock.lock().await;
    let now = now_millis();
    let mut batch = Vec::with_capacity(checked.len());
    let mut audit = Vec::with_capacity(checked.len());
    for (s, encoded, agents) in checked {
        let meta = SecretMeta {
            id: new_id(SECRET_PREFIX)?,
            workspace_id: ws.id.clone(),
            kind: s.value.kind(),
            keys: s.value.keys(),
            name: s.name,
            description: s.description,
            version: 1,
            agents,
            created_at: now,
            updated_at: now,
            protected: false,
            envs: Vec::new(),
        };
        let sealed = st.seal(&meta, 1, &encoded)?;
        audit.push(
            AuditEvent::new(now, &ws.id, p.actor(), Action::SecretCreate, Outcome::Success)
                .secret(&meta.name)
                .target(&meta.id)
                .detail(format!("version=1 type={} {} import", meta.kind.as_str(), agents_detail(&meta.agents))),
        );
        batch.push((meta, sealed));
    }
    st.store.create_secrets(&batch, &audit).await?;
    let mut out = Vec::with_capacity(batch.len());
    for (meta, sealed) in batch {
        st.model.put_secret(&meta, sealed, Vec::new());
        out.push(meta.into());
    }
    st.refresh_gauges();
    Ok(out)
}

/// A secret's metadata: type, key names, access list, current version. Never the value.
pub async fn get(st: &AppState, p: &Principal, ws: &str, name: &str) -> Result<SecretOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    Ok(st.secret_of(&ws.id, name).await?.into())
}

/// Changes the description and/or the value (a new value becomes a new version).
pub async fn update(st: &AppState, p: &Principal, ws: &str, name: &str, body: Body<UpdateSecret>) -> Result<SecretOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let body = body?;
    secret_name_param(name)?;
    if body.name.is_some() {
        return Err(Error::invalid(
            "name",
            "secret names are immutable because functions reference them; create a new secret and delete this one instead",
        ));
    }
    if body.description.is_none() && body.value.is_none() && body.values.is_none() && body.protected.is_none() {
        return Err(Error::invalid(
            "body",
            "nothing to change: give a new description, value, environment values or protected flag",
        ));
    }
    if let Some(d) = &body.description {
        validate::description(d)?;
    }
    let env_changes = env_changes_in(body.values.unwrap_or_default())?;
    let _w = st.write_lock.lock().await;
    let current = st.secret_of(&ws.id, name).await?;
    let now = now_millis();
    // Each environment's new version is numbered after its newest, also a removed value's.
    let mut env_sealed: Vec<(Env, Sealed)> = Vec::new();
    let mut env_versions: Vec<(Env, u32, Option<&EnvValueIn>)> = Vec::new();
    for (env, change) in &env_changes {
        match change {
            Some(v) => {
                let newest =
                    st.store.list_env_versions(&ws.id, &current.id, *env).await?.first().map_or(0, |v| v.version);
                env_sealed.push((*env, st.seal_env(&current, *env, newest + 1, &v.encoded)?));
                env_versions.push((*env, newest + 1, Some(v)));
            }
            None if current.env_value(*env).is_none() => {
                return Err(Error::invalid(
                    format!("values.{env}"),
                    format!("{name} has no {env} value of its own to remove; {env} reads the default value"),
                ));
            }
            None => env_versions.push((*env, 0, None)),
        }
    }
    let env_keys: Vec<Option<Vec<String>>> =
        env_versions.iter().map(|(_, _, v)| v.and_then(|v| v.value.keys())).collect();
    let mut store_changes = Vec::with_capacity(env_versions.len());
    for (i, (env, version, v)) in env_versions.iter().enumerate() {
        let value = match v {
            Some(v) => {
                let sealed = env_sealed.iter().find(|(e, _)| e == env).map(|(_, s)| s);
                sealed.map(|s| NewVersion { kind: v.value.kind(), keys: env_keys[i].as_deref(), sealed: s })
            }
            None => None,
        };
        store_changes.push(EnvChange { env: *env, version: *version, value });
    }
    let value = with_kept_pairs(st, &ws.id, name, body.value, body.keep)?;
    let encoded = value.as_ref().map(SecretValue::validate_and_encode).transpose()?;
    let next = current.version + 1;
    let sealed = encoded.as_ref().map(|e| st.seal(&current, next, e)).transpose()?;
    let keys = value.as_ref().and_then(SecretValue::keys);
    let actor = p.actor();
    let change = SecretChange {
        secret_id: &current.id,
        expected_version: current.version,
        description: body.description.as_deref(),
        value: match (&value, &sealed) {
            (Some(v), Some(s)) => Some(NewVersion { kind: v.kind(), keys: keys.as_deref(), sealed: s }),
            _ => None,
        },
        envs: &store_changes,
        protected: body.protected,
        now,
        actor_id: actor.id(),
    };
    let mut detail = Vec::new();
    if sealed.is_some() {
        detail.push(format!("version={next}"));
    }
    for (env, version, v) in &env_versions {
        match v {
            Some(_) => detail.push(format!("{env}.version={version}")),
            None => detail.push(format!("{env}.removed")),
        }
    }
    if let Some(p) = body.protected {
        detail.push(if p { "protected".to_owned() } else { "unprotected".to_owned() });
    }
    if body.description.is_some() {
        detail.push("description".to_owned());
    }
    let audit = AuditEvent::new(now, &ws.id, actor.clone(), Action::SecretUpdate, Outcome::Success)
        .secret(name)
        .target(&current.id)
        .detail(detail.join(" "));
    let meta = st.store.update_secret(&ws.id, &change, &audit).await?;
    st.model.update_secret_envs(&meta, sealed, env_sealed);
    Ok(meta.into())
}

/// A key/value value with the current values of the `keep` keys added.
fn with_kept_pairs(
    st: &AppState,
    ws: &str,
    name: &str,
    value: Option<SecretValue>,
    keep: Vec<String>,
) -> Result<Option<SecretValue>> {
    if keep.is_empty() {
        return Ok(value);
    }
    let Some(SecretValue::Kv(given)) = &value else {
        return Err(Error::invalid(
            "keep",
            "keep goes with a key/value value: the pairs to change, and the keys to keep",
        ));
    };
    let mut pairs = given.clone();
    let entry = st.model.secret(ws, name).ok_or_else(|| Error::secret_not_found(name))?;
    let current = st.open(&entry)?;
    let SecretValue::Kv(old) = &current else {
        return Err(Error::invalid("keep", "the current value is a single value; there are no pairs to keep"));
    };
    for key in keep {
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(Error::invalid(
                "keep",
                format!("key '{}' is both given a new value and kept", key.escape_default()),
            ));
        }
        let (k, v) = old.iter().find(|(k, _)| *k == key).ok_or_else(|| {
            Error::invalid("keep", format!("the current value has no key '{}' to keep", key.escape_default()))
        })?;
        pairs.push((k.clone(), v.clone()));
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(SecretValue::Kv(pairs)))
}

/// Replaces the list of agents allowed to read the secret; effective on the next read.
pub async fn set_access(
    st: &AppState,
    p: &Principal,
    ws: &str,
    name: &str,
    body: Body<SetAccess>,
) -> Result<SecretOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let body = body?;
    secret_name_param(name)?;
    let agents = agent_list("agents", body.agents)?;
    let _w = st.write_lock.lock().await;
    let current = st.secret_of(&ws.id, name).await?;
    let now = now_millis();
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::SecretAccessSet, Outcome::Success)
        .secret(name)
        .target(&current.id)
        .detail(agents_detail(&agents));
    let meta = st.store.set_secret_access(&ws.id, &current.id, &agents, now, &audit).await?;
    st.model.update_secret(&meta, None);
    Ok(meta.into())
}

/// Deletes a secret with every version and its key material.
pub async fn delete(st: &AppState, p: &Principal, ws: &str, name: &str) -> Result<()> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let _w = st.write_lock.lock().await;
    let current = st.secret_of(&ws.id, name).await?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::SecretDelete, Outcome::Success)
        .secret(name)
        .target(&current.id)
        .detail(format!("versions={}", current.version));
    st.store.delete_secret(&ws.id, &current.id, &audit).await?;
    st.model.remove_secret(&ws.id, name);
    st.egress.set_injection(&ws.id, &current.id, None);
    st.refresh_gauges();
    Ok(())
}

/// The versions of a secret's default value, newest first (metadata only).
pub async fn versions(st: &AppState, p: &Principal, ws: &str, name: &str) -> Result<Vec<VersionOut>> {
    versions_in(st, p, ws, name, None).await
}

/// The versions of a secret's default value, or with `env` of that environment's own value,
/// newest first (metadata only).
pub async fn versions_in(
    st: &AppState,
    p: &Principal,
    ws: &str,
    name: &str,
    env: Option<&str>,
) -> Result<Vec<VersionOut>> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let env = env.map(parse_env).transpose()?;
    let current = st.secret_of(&ws.id, name).await?;
    let versions = match env {
        None => st.store.list_versions(&ws.id, &current.id).await?,
        Some(e) => st.store.list_env_versions(&ws.id, &current.id, e).await?,
    };
    Ok(versions.into_iter().map(VersionOut::from).collect())
}

/// `?env=` of a secret route.
fn parse_env(e: &str) -> Result<Env> {
    Env::parse(e).ok_or_else(|| {
        Error::invalid("env", format!("env is '{}'; it must be sandbox, pre-release or live", e.escape_default()))
    })
}

/// Restores an earlier version: its value becomes a new version (the history is kept). The value
/// is opened and sealed again inside the server; it is never returned.
pub async fn restore(st: &AppState, p: &Principal, ws: &str, name: &str, version: u32) -> Result<SecretOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    secret_name_param(name)?;
    let _w = st.write_lock.lock().await;
    let current = st.secret_of(&ws.id, name).await?;
    if version == current.version {
        return Err(Error::conflict("version_is_current", format!("version {version} is the current version already"))
            .with_field("version"));
    }
    let not_found = || {
        Error::not_found(
            "version_not_found",
            format!("{name} has no version {version}; its versions are 1 to {}", current.version),
        )
    };
    let old_meta = st
        .store
        .list_versions(&ws.id, &current.id)
        .await?
        .into_iter()
        .find(|v| v.version == version)
        .ok_or_else(not_found)?;
    let old = st.store.sealed_version(&ws.id, &current.id, version).await?.ok_or_else(not_found)?;
    let binding = Binding { workspace_id: &ws.id, secret_id: &current.id, version };
    let plaintext = st
        .keyring
        .open(binding, &old.sealed)
        .map_err(|e| crate::open_failed(e, format_args!("secret {} version {version}", current.id)))?;
    let value = SecretValue::decode(old_meta.kind, &plaintext)?;
    let encoded = value.validate_and_encode()?;
    let now = now_millis();
    let next = current.version + 1;
    let sealed = st.seal(&current, next, &encoded)?;
    let keys = value.keys();
    let actor = p.actor();
    let change = SecretChange {
        secret_id: &current.id,
        expected_version: current.version,
        description: None,
        value: Some(NewVersion { kind: value.kind(), keys: keys.as_deref(), sealed: &sealed }),
        envs: &[],
        protected: None,
        now,
        actor_id: actor.id(),
    };
    let audit = AuditEvent::new(now, &ws.id, actor.clone(), Action::SecretUpdate, Outcome::Success)
        .secret(name)
        .target(&current.id)
        .detail(format!("version={next} restored_from={version}"));
    let meta = st.store.update_secret(&ws.id, &change, &audit).await?;
    st.model.update_secret(&meta, Some(sealed));
    Ok(meta.into())
}

/// Reveals the current value to an admin. Audited before the value is returned.
pub async fn reveal(st: &AppState, p: &Principal, ws: &str, name: &str, q: Result<RevealQuery>) -> Result<RevealOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let q = q?;
    let key = q.key;
    let env = q.env.as_deref().map(parse_env).transpose()?;
    secret_name_param(name)?;
    let entry = st.model.secret(&ws.id, name).ok_or_else(|| Error::secret_not_found(name))?;
    let chosen = match env {
        None => entry.default_value(),
        Some(e) => entry.own_value(e).ok_or_else(|| {
            Error::not_found(
                "env_value_not_found",
                format!("{name} has no {e} value of its own; {e} reads the default value (reveal it without env)"),
            )
            .with_field("env")
        })?,
    };
    let value = st.open_value(&entry, chosen)?;
    let value = match (&key, &value) {
        (None, _) => value,
        (Some(k), SecretValue::Kv(pairs)) => {
            let found = pairs.iter().find(|(pk, _)| pk == k);
            let (_, v) = found.ok_or_else(|| {
                Error::not_found("key_not_found", format!("{name} has no key '{}'", k.escape_default()))
                    .with_field("key")
            })?;
            SecretValue::Single(v.clone())
        }
        (Some(_), SecretValue::Single(_)) => {
            return Err(Error::conflict("not_key_value", format!("{name} is a single value; reveal it without key"))
                .with_field("key"));
        }
    };
    let mut detail = match &key {
        Some(k) => format!("version={} key={k}", chosen.version),
        None => format!("version={}", chosen.version),
    };
    if let Some(e) = env {
        detail.push_str(&format!(" env={e}"));
    }
    st.audit
        .append(
            AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::SecretReveal, Outcome::Success)
                .secret(name)
                .target(&entry.id)
                .detail(detail),
        )
        .await?;
    Ok(RevealOut {
        name: entry.name.clone(),
        kind: chosen.kind.into(),
        version: chosen.version,
        value,
        key,
        env: env.map(|e| e.as_str().to_owned()),
    })
}

/// Who uses a secret: the functions whose code names it, and for each agent that can read it or
/// whose functions name it, its last successful read (from the audit log).
pub async fn usage(st: &AppState, p: &Principal, ws: &str, name: &str) -> Result<SecretUsageOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let meta = st.secret_of(&ws.id, name).await?;
    let uses = st.store.secret_uses(&ws.id, &meta.name).await?;
    let agents = st.store.list_agents(&ws.id).await?;
    let agent_name = |id: &str| agents.iter().find(|a| a.id == id).map(|a| a.name.clone()).unwrap_or_default();
    let mut functions: Vec<FunctionUseOut> = uses
        .iter()
        .map(|u| FunctionUseOut {
            agent_name: agent_name(&u.agent_id),
            can_read: meta.agents.contains(&u.agent_id),
            agent_id: u.agent_id.clone(),
            function: u.function_name.clone(),
            line: u.line,
        })
        .collect();
    functions.sort_by(|a, b| (&a.agent_name, &a.function, a.line).cmp(&(&b.agent_name, &b.function, b.line)));
    // Reads by agents are written in groups: what was read a moment ago counts.
    st.audit.flush().await;
    let mut out = Vec::new();
    let names = [meta.name.clone()];
    for a in agents.iter().filter(|a| meta.agents.contains(&a.id) || uses.iter().any(|u| u.agent_id == a.id)) {
        let last = st.store.last_reads(&ws.id, Some(&a.id), &names).await?;
        out.push(AgentUseOut {
            agent_id: a.id.clone(),
            agent_name: a.name.clone(),
            has_access: meta.agents.contains(&a.id),
            last_read_at: last.first().map(|(_, at)| rfc3339(*at)),
        });
    }
    out.sort_by(|a, b| a.agent_name.cmp(&b.agent_name));
    Ok(SecretUsageOut { functions, agents: out })
}

/// When agents last read secrets, from the audit log's successful reads: each of `names` (that
/// was ever read) with the time of its newest read by `agent_id`, or by any agent when `None`.
/// Admins only, as the audit log is.
pub async fn last_reads(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: Option<&str>,
    names: &[String],
) -> Result<std::collections::HashMap<String, String>> {
    let ws = st.workspace_for(p, ws, Perm::ReadAudit)?;
    // Reads by agents are written in groups: what was read a moment ago counts.
    st.audit.flush().await;
    let reads = st.store.last_reads(&ws.id, agent_id, names).await?;
    Ok(reads.into_iter().map(|(name, at)| (name, rfc3339(at))).collect())
}
