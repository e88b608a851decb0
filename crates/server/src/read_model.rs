//! The in-memory read model: everything the hot paths need (credentials, agents, the current
//! sealed version and access set of every secret, functions' definitions), so that an agent's
//! read and a function's invocation cost no SQL query.
//! The database is written first; the model is updated after the write commits.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use agentvault_core::SecretKind;
use agentvault_core::model::{
    AdminToken, Agent, ApiKeyMeta, DeployedFunction, Env, Function, KeyScope, Millis, Sealed, SecretMeta, Workspace,
};
use agentvault_crypto::DataKey;
use agentvault_store::SecretRecord;

pub type TokenHash = [u8; 32];

/// What an agent read needs to know about a secret.
#[derive(Clone, Debug)]
pub struct SecretEntry {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub kind: SecretKind,
    pub version: u32,
    pub sealed: Sealed,
    pub access: HashSet<String>,
    /// Handed only to function versions an admin deployed; in sandbox only its own sandbox value.
    pub protected: bool,
    /// Each environment's own value, at [`Env::index`].
    pub envs: [Option<EnvEntry>; 3],
    /// The default value's data key, once it has been read.
    pub key: KeyCache,
}

/// A value's data key, unwrapped at its first read and kept with the value (it dies with the
/// entry: a new version is a new entry). A clone starts empty.
#[derive(Default)]
pub struct KeyCache(OnceLock<Box<DataKey>>);

impl KeyCache {
    /// The key, unwrapped with `unwrap_key` the first time.
    pub fn get_or_unwrap<E>(&self, unwrap_key: impl FnOnce() -> Result<DataKey, E>) -> Result<&DataKey, E> {
        if let Some(key) = self.0.get() {
            return Ok(key);
        }
        let key = unwrap_key()?;
        Ok(self.0.get_or_init(|| Box::new(key)))
    }
}

impl Clone for KeyCache {
    fn clone(&self) -> Self {
        KeyCache::default()
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache(..)")
    }
}

/// An environment's own value of a secret.
#[derive(Clone, Debug)]
pub struct EnvEntry {
    pub kind: SecretKind,
    pub version: u32,
    pub sealed: Sealed,
    /// The secret id its versions are sealed for ([`Env::binding_id`]).
    pub binding_id: String,
    pub key: KeyCache,
}

/// The value one environment reads: its own, or the default.
#[derive(Clone, Copy, Debug)]
pub struct ValueRef<'a> {
    pub kind: SecretKind,
    pub version: u32,
    pub sealed: &'a Sealed,
    /// The secret id it is sealed for.
    pub binding_id: &'a str,
    /// The environment whose own value it is; `None`: the default value.
    pub own: Option<Env>,
    pub key: &'a KeyCache,
}

impl SecretEntry {
    pub fn from_record(r: SecretRecord) -> SecretEntry {
        let SecretRecord { meta, sealed, envs } = r;
        let mut own: [Option<EnvEntry>; 3] = [None, None, None];
        for (env, sealed) in envs {
            if let Some(m) = meta.env_value(env) {
                own[env.index()] = Some(EnvEntry {
                    kind: m.kind,
                    version: m.version,
                    sealed,
                    binding_id: env.binding_id(&meta.id),
                    key: KeyCache::default(),
                });
            }
        }
        SecretEntry {
            access: meta.agents.into_iter().collect(),
            id: meta.id,
            workspace_id: meta.workspace_id,
            name: meta.name,
            kind: meta.kind,
            version: meta.version,
            sealed,
            protected: meta.protected,
            envs: own,
            key: KeyCache::default(),
        }
    }

    /// The default value.
    pub fn default_value(&self) -> ValueRef<'_> {
        ValueRef {
            kind: self.kind,
            version: self.version,
            sealed: &self.sealed,
            binding_id: &self.id,
            own: None,
            key: &self.key,
        }
    }

    /// The environment's own value, if it has one.
    pub fn own_value(&self, env: Env) -> Option<ValueRef<'_>> {
        self.envs[env.index()].as_ref().map(|e| ValueRef {
            kind: e.kind,
            version: e.version,
            sealed: &e.sealed,
            binding_id: &e.binding_id,
            own: Some(env),
            key: &e.key,
        })
    }

    /// What `env` reads (its own value, else the default); the default without an environment.
    pub fn value_for(&self, env: Option<Env>) -> ValueRef<'_> {
        env.and_then(|e| self.own_value(e)).unwrap_or_else(|| self.default_value())
    }
}

/// An API key and when it was last used (kept here, flushed to the database in batches).
#[derive(Debug)]
pub struct KeyEntry {
    pub meta: ApiKeyMeta,
    pub last_used: AtomicI64,
    pub last_flushed: AtomicI64,
}

impl KeyEntry {
    pub fn new(meta: ApiKeyMeta) -> KeyEntry {
        let used = meta.last_used_at.unwrap_or(0);
        KeyEntry { meta, last_used: AtomicI64::new(used), last_flushed: AtomicI64::new(used) }
    }

    /// Records a use at `now`. The time is written only when it moves on (once a millisecond at
    /// most), so that requests on other cores with the same key do not all write its cache line.
    pub fn touch(&self, now: Millis) {
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// The same key with changed metadata, keeping its usage counters.
    fn with_meta(&self, meta: ApiKeyMeta) -> KeyEntry {
        KeyEntry {
            meta,
            last_used: AtomicI64::new(self.last_used.load(Ordering::Relaxed)),
            last_flushed: AtomicI64::new(self.last_flushed.load(Ordering::Relaxed)),
        }
    }

    pub fn last_used_at(&self) -> Option<Millis> {
        Some(self.last_used.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
}

#[derive(Default)]
struct Inner {
    workspaces: HashMap<String, Workspace>,
    /// agent id → workspace id
    agents: HashMap<String, String>,
    /// workspace id → secret name → entry
    secrets: HashMap<String, HashMap<String, Arc<SecretEntry>>>,
    api_keys: HashMap<TokenHash, Arc<KeyEntry>>,
    admin_tokens: HashMap<TokenHash, Arc<AdminToken>>,
    /// workspace id → (agent id, function name) → definition: an invocation runs no SQL.
    functions: HashMap<String, HashMap<(String, String), Arc<Function>>>,
    /// workspace id → (agent id, function name, environment) → the version deployed there.
    deployed: HashMap<String, HashMap<DeployedKey, Arc<DeployedFunction>>>,
}

/// (agent id, function name, environment)
type DeployedKey = (String, String, Env);

/// Shared, lock-protected; readers take the lock only long enough to clone an `Arc`. The lock is
/// sharded: a reader locks its thread's shard (a cache line of its own), so readers on many cores
/// do not write one line for every lookup; a writer, rare, locks every shard.
#[derive(Default)]
pub struct ReadModel {
    inner: ShardedLock<Inner>,
}

/// One workspace's part of the model, as the store holds it.
pub struct WorkspaceSlice {
    /// `None` when the workspace is gone.
    pub workspace: Option<Workspace>,
    pub agents: Vec<Agent>,
    pub secrets: Vec<SecretRecord>,
    pub api_keys: Vec<(ApiKeyMeta, Vec<u8>)>,
    pub functions: Vec<Function>,
    pub deployed: Vec<DeployedFunction>,
}

impl Inner {
    fn put_function(&mut self, f: Function) {
        let key = (f.agent_id.clone(), f.name.clone());
        self.functions.entry(f.workspace_id.clone()).or_default().insert(key, Arc::new(f));
    }

    fn put_deployed(&mut self, d: DeployedFunction) {
        let key = (d.function.agent_id.clone(), d.function.name.clone(), d.deployment.env);
        self.deployed.entry(d.function.workspace_id.clone()).or_default().insert(key, Arc::new(d));
    }

    /// Adds agents, secrets and keys; a key already known in `old_keys` keeps its usage counters.
    fn fill(
        &mut self,
        agents: Vec<Agent>,
        secrets: Vec<SecretRecord>,
        keys: Vec<(ApiKeyMeta, Vec<u8>)>,
        functions: Vec<Function>,
        deployed: Vec<DeployedFunction>,
        old_keys: &HashMap<TokenHash, Arc<KeyEntry>>,
    ) {
        for f in functions {
            self.put_function(f);
        }
        for d in deployed {
            self.put_deployed(d);
        }
        for a in agents {
            self.agents.insert(a.id, a.workspace_id);
        }
        for r in secrets {
            let e = SecretEntry::from_record(r);
            self.secrets.entry(e.workspace_id.clone()).or_default().insert(e.name.clone(), Arc::new(e));
        }
        for (k, h) in keys {
            if let Some(h) = hash_of(&h) {
                let entry = match old_keys.get(&h) {
                    Some(old) => {
                        let e = old.with_meta(k);
                        e.last_used.fetch_max(e.meta.last_used_at.unwrap_or(0), Ordering::Relaxed);
                        e
                    }
                    None => KeyEntry::new(k),
                };
                self.api_keys.insert(h, Arc::new(entry));
            }
        }
    }
}

/// Everything the model is built from at start.
pub struct Snapshot {
    pub workspaces: Vec<Workspace>,
    pub agents: Vec<Agent>,
    pub secrets: Vec<SecretRecord>,
    pub api_keys: Vec<(ApiKeyMeta, Vec<u8>)>,
    pub admin_tokens: Vec<(AdminToken, Vec<u8>)>,
    pub functions: Vec<Function>,
    pub deployed: Vec<DeployedFunction>,
}

fn hash_of(bytes: &[u8]) -> Option<TokenHash> {
    bytes.try_into().ok()
}

impl ReadModel {
    pub fn load(s: Snapshot) -> ReadModel {
        let model = ReadModel::default();
        model.replace_all(s);
        model
    }

    /// Replaces everything with `s` (a server catching up after missing changes). API keys keep
    /// the last-use times recorded here and not yet flushed.
    pub fn replace_all(&self, s: Snapshot) {
        let mut inner = self.write();
        let old_keys = std::mem::take(&mut inner.api_keys);
        let mut fresh = Inner::default();
        for ws in s.workspaces {
            fresh.workspaces.insert(ws.id.clone(), ws);
        }
        fresh.fill(s.agents, s.secrets, s.api_keys, s.functions, s.deployed, &old_keys);
        for (t, h) in s.admin_tokens {
            if let Some(h) = hash_of(&h) {
                fresh.admin_tokens.insert(h, Arc::new(t));
            }
        }
        *inner = fresh;
    }

    /// Replaces one workspace's part with `slice` (a change of that workspace, applied).
    pub fn replace_workspace(&self, workspace_id: &str, slice: WorkspaceSlice) {
        let mut inner = self.write();
        let mut old_keys = HashMap::new();
        inner.api_keys.retain(|h, k| {
            let other = k.meta.workspace_id != workspace_id;
            if !other {
                old_keys.insert(*h, k.clone());
            }
            other
        });
        inner.agents.retain(|_, ws| ws != workspace_id);
        inner.secrets.remove(workspace_id);
        inner.functions.remove(workspace_id);
        inner.deployed.remove(workspace_id);
        match slice.workspace {
            Some(ws) => {
                inner.workspaces.insert(ws.id.clone(), ws);
            }
            None => {
                inner.workspaces.remove(workspace_id);
            }
        }
        inner.fill(slice.agents, slice.secrets, slice.api_keys, slice.functions, slice.deployed, &old_keys);
    }

    fn read(&self) -> ShardedLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> ShardedLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    // --- lookups (hot path) ---------------------------------------------------------------

    pub fn api_key(&self, hash: &TokenHash) -> Option<Arc<KeyEntry>> {
        self.read().api_keys.get(hash).cloned()
    }

    pub fn admin_token(&self, hash: &TokenHash) -> Option<Arc<AdminToken>> {
        self.read().admin_tokens.get(hash).cloned()
    }

    /// The workspace of an agent.
    pub fn agent_workspace(&self, agent_id: &str) -> Option<String> {
        self.read().agents.get(agent_id).cloned()
    }

    /// Whether `agent_id` exists in `workspace_id`.
    pub fn agent_in(&self, workspace_id: &str, agent_id: &str) -> bool {
        self.read().agents.get(agent_id).is_some_and(|ws| ws == workspace_id)
    }

    pub fn secret(&self, workspace_id: &str, name: &str) -> Option<Arc<SecretEntry>> {
        self.read().secrets.get(workspace_id)?.get(name).cloned()
    }

    /// An agent read's two lookups under one lock: whether the agent is in the workspace, and
    /// the secret (looked up only when it is).
    pub fn agent_and_secret(&self, workspace_id: &str, agent_id: &str, name: &str) -> (bool, Option<Arc<SecretEntry>>) {
        let inner = self.read();
        let agent_ok = inner.agents.get(agent_id).is_some_and(|ws| ws == workspace_id);
        let secret = match agent_ok {
            true => inner.secrets.get(workspace_id).and_then(|m| m.get(name)).cloned(),
            false => None,
        };
        (agent_ok, secret)
    }

    pub fn workspace(&self, id: &str) -> Option<Workspace> {
        self.read().workspaces.get(id).cloned()
    }

    /// The metadata the agent-secrets listing needs: secrets of `workspace_id` readable by `agent_id`.
    pub fn secrets_of_agent(&self, workspace_id: &str, agent_id: &str) -> Vec<Arc<SecretEntry>> {
        let inner = self.read();
        let mut out: Vec<Arc<SecretEntry>> = inner
            .secrets
            .get(workspace_id)
            .map(|m| m.values().filter(|e| e.access.contains(agent_id)).cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn api_keys(&self) -> Vec<Arc<KeyEntry>> {
        self.read().api_keys.values().cloned().collect()
    }

    pub fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.agents.len(), inner.secrets.values().map(HashMap::len).sum())
    }

    // --- updates (after the database write committed) -------------------------------------

    pub fn put_workspace(&self, ws: Workspace) {
        self.write().workspaces.insert(ws.id.clone(), ws);
    }

    pub fn put_agent(&self, agent_id: &str, workspace_id: &str) {
        self.write().agents.insert(agent_id.to_owned(), workspace_id.to_owned());
    }

    /// A function's current definition.
    pub fn function(&self, workspace_id: &str, agent_id: &str, name: &str) -> Option<Arc<Function>> {
        let inner = self.read();
        inner.functions.get(workspace_id)?.get(&(agent_id.to_owned(), name.to_owned())).cloned()
    }

    pub fn put_function(&self, f: Function) {
        self.write().put_function(f);
    }

    pub fn remove_function(&self, workspace_id: &str, agent_id: &str, name: &str) {
        let mut inner = self.write();
        if let Some(m) = inner.functions.get_mut(workspace_id) {
            m.remove(&(agent_id.to_owned(), name.to_owned()));
        }
        if let Some(m) = inner.deployed.get_mut(workspace_id) {
            m.retain(|(agent, function, _), _| agent != agent_id || function != name);
        }
    }

    /// The version of a function deployed to `env` (pre-release or live), with its definition.
    pub fn deployed(&self, workspace_id: &str, agent_id: &str, name: &str, env: Env) -> Option<Arc<DeployedFunction>> {
        let inner = self.read();
        inner.deployed.get(workspace_id)?.get(&(agent_id.to_owned(), name.to_owned(), env)).cloned()
    }

    pub fn put_deployed(&self, d: DeployedFunction) {
        self.write().put_deployed(d);
    }

    /// Removes an agent with its functions, its grants and its place in API key scopes.
    pub fn remove_agent(&self, workspace_id: &str, agent_id: &str) {
        let mut inner = self.write();
        inner.agents.remove(agent_id);
        if let Some(m) = inner.functions.get_mut(workspace_id) {
            m.retain(|(agent, _), _| agent != agent_id);
        }
        if let Some(m) = inner.deployed.get_mut(workspace_id) {
            m.retain(|(agent, _, _), _| agent != agent_id);
        }
        if let Some(secrets) = inner.secrets.get_mut(workspace_id) {
            for entry in secrets.values_mut() {
                if entry.access.contains(agent_id) {
                    let mut changed = SecretEntry::clone(entry);
                    changed.access.remove(agent_id);
                    *entry = Arc::new(changed);
                }
            }
        }
        for key in inner.api_keys.values_mut() {
            if let KeyScope::Agents(set) = &key.meta.scope
                && key.meta.workspace_id == workspace_id
                && set.contains(agent_id)
            {
                let mut meta = key.meta.clone();
                if let KeyScope::Agents(s) = &mut meta.scope {
                    s.remove(agent_id);
                }
                *key = Arc::new(key.with_meta(meta));
            }
        }
    }

    /// Sets a secret's current version, access list and environments' values from its metadata
    /// (`envs`: the sealed value of each environment in `meta.envs`).
    pub fn put_secret(&self, meta: &SecretMeta, sealed: Sealed, envs: Vec<(Env, Sealed)>) {
        let entry = SecretEntry::from_record(SecretRecord { meta: meta.clone(), sealed, envs });
        self.write().secrets.entry(entry.workspace_id.clone()).or_default().insert(entry.name.clone(), Arc::new(entry));
    }

    /// Replaces the metadata-derived parts (access, version, protected, which environments have
    /// their own value) keeping the sealed bytes unless new ones are given.
    pub fn update_secret(&self, meta: &SecretMeta, sealed: Option<Sealed>) {
        self.update_secret_envs(meta, sealed, Vec::new());
    }

    /// As [`ReadModel::update_secret`], with new sealed values for some environments (`envs`);
    /// the other environments in `meta.envs` keep theirs.
    pub fn update_secret_envs(&self, meta: &SecretMeta, sealed: Option<Sealed>, mut envs: Vec<(Env, Sealed)>) {
        let Some(old) = self.secret(&meta.workspace_id, &meta.name) else { return };
        let sealed = sealed.unwrap_or_else(|| old.sealed.clone());
        for m in &meta.envs {
            if !envs.iter().any(|(e, _)| *e == m.env)
                && let Some(kept) = &old.envs[m.env.index()]
            {
                envs.push((m.env, kept.sealed.clone()));
            }
        }
        self.put_secret(meta, sealed, envs);
    }

    pub fn remove_secret(&self, workspace_id: &str, name: &str) {
        if let Some(m) = self.write().secrets.get_mut(workspace_id) {
            m.remove(name);
        }
    }

    pub fn put_api_key(&self, hash: TokenHash, meta: ApiKeyMeta) {
        self.write().api_keys.insert(hash, Arc::new(KeyEntry::new(meta)));
    }

    /// Marks a key revoked: it stops working on the next request.
    pub fn revoke_api_key(&self, key_id: &str, revoked_at: Millis) {
        let mut inner = self.write();
        for key in inner.api_keys.values_mut() {
            if key.meta.id == key_id {
                let mut meta = key.meta.clone();
                meta.revoked_at = Some(revoked_at);
                *key = Arc::new(key.with_meta(meta));
            }
        }
    }

    /// Every workspace.
    pub fn workspaces(&self) -> Vec<Workspace> {
        self.read().workspaces.values().cloned().collect()
    }

    /// Forgets the admin tokens (once the first admin exists they are personal access tokens).
    pub fn clear_admin_tokens(&self) {
        self.write().admin_tokens.clear();
    }

    /// Replaces the admin tokens (they end when the first admin is set up, on any server).
    pub fn replace_admin_tokens(&self, tokens: Vec<(AdminToken, Vec<u8>)>) {
        let fresh = tokens.into_iter().filter_map(|(t, h)| Some((hash_of(&h)?, Arc::new(t)))).collect();
        self.write().admin_tokens = fresh;
    }

    pub fn put_admin_token(&self, hash: TokenHash, token: AdminToken) {
        self.write().admin_tokens.insert(hash, Arc::new(token));
    }
}

#[cfg(test)]
mod tests {
    use agentvault_core::model::Binding;
    use agentvault_crypto::Keyring;

    use super::KeyCache;

    #[test]
    fn a_key_is_unwrapped_once_and_a_clone_starts_empty() {
        let ring = Keyring::generate().unwrap();
        let binding = Binding { workspace_id: "ws_1", secret_id: "sec_1", version: 1 };
        let sealed = ring.seal(binding, b"v").unwrap();
        let cache = KeyCache::default();
        let mut unwraps = 0;
        for _ in 0..3 {
            let key = cache
                .get_or_unwrap(|| {
                    unwraps += 1;
                    ring.data_key(binding, &sealed)
                })
                .unwrap();
            assert_eq!(&key.open(binding, &sealed).unwrap()[..], b"v");
        }
        assert_eq!(unwraps, 1);
        let copy = cache.clone();
        assert!(copy.0.get().is_none(), "a clone holds no key");
        assert!(copy.get_or_unwrap(|| Err::<agentvault_crypto::DataKey, _>("refused")).is_err());
        assert_eq!(format!("{cache:?}"), "KeyCache(..)");
    }
}
