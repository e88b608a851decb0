//! The agent-read policy: whether an agent may read a secret now, with the audit record and the
//! metric of every attempt. One policy serves both ways an agent reads: the HTTP read path
//! (`GET /api/v1/agents/{agent_id}/secrets/{name}`, with an API key) and `conv.utils.get_secret`
//! in a function run by the built-in runtime.
//!
//! Everything comes from the read model; the only database work is the (group-committed) audit
//! append, which is durable before a value is handed over.

use std::sync::Arc;

use agentvault_core::audit::{Action, AuditEventRef, Outcome};
use agentvault_core::model::{AGENT_PREFIX, Actor, Env, Millis};
use agentvault_core::{Error, ErrorKind, Result, SecretValue, validate};
use agentvault_runtime::{SecretAnswer, SecretSource};

use crate::AppState;
use crate::api::read::AgentReadOut;
use crate::now_millis;
use crate::read_model::{KeyEntry, SecretEntry};

/// Who reads, as the policy needs to know it.
pub struct AgentRead<'a> {
    pub workspace_id: &'a str,
    pub agent_id: &'a str,
    /// Whether the credential acts for the agent (an API key's scope covers it).
    pub credential_covers_agent: bool,
    /// Who and what every attempt's audit record names.
    pub audit: ReadAudit<'a>,
    /// Whether an injected-only secret may be handed over (to be replaced by a placeholder: a
    /// function's `get_secret`); over HTTP it is refused with 403 `injection_only`.
    pub injection_ok: bool,
    /// The environment the value is read for (its own value, else the default); `None`: the
    /// default value (an API key for every environment, read without `?env=`).
    pub env: Option<Env>,
    /// What a protected secret's value may reach: code an admin deployed (or an API key, which
    /// only admins create). A function version deployed by a member, or running in sandbox, is
    /// not trusted.
    pub trusted: bool,
}

/// What the audit record of a read attempt names besides its workspace, outcome and detail (the
/// error code of a refusal, or the version and environment of the value read).
pub struct ReadAudit<'a> {
    pub at: Millis,
    /// [`Actor::kind`] and [`Actor::id`] of who reads.
    pub actor_kind: &'static str,
    pub actor_id: &'a str,
    /// The secret and the agent, each only when well-formed: nothing else goes into the log.
    pub secret_name: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub target_id: Option<&'a str>,
    /// Appended to every record's detail (the function and invocation of a function's read).
    pub context: Option<&'a str>,
}

impl AgentRead<'_> {
    /// An attempt's detail, with the reader's context.
    fn detail(&self, mut detail: String) -> String {
        if let Some(context) = self.audit.context {
            detail.push(' ');
            detail.push_str(context);
        }
        detail
    }

    /// An attempt's audit record.
    fn record<'d>(&'d self, outcome: Outcome, detail: &'d str) -> AuditEventRef<'d> {
        let a = &self.audit;
        AuditEventRef {
            at: a.at,
            workspace_id: self.workspace_id,
            actor_kind: a.actor_kind,
            actor_id: a.actor_id,
            action: Action::SecretRead,
            outcome,
            secret_name: a.secret_name,
            agent_id: a.agent_id,
            target_id: a.target_id,
            detail: Some(detail),
        }
    }
}

/// Why a protected secret is refused, and what to do: `None` when it may be read.
fn protected_refusal(name: &str, r: &AgentRead<'_>, has_own_sandbox_value: bool) -> Option<String> {
    match r.env {
        Some(Env::Sandbox) if !has_own_sandbox_value => Some(format!(
            "secret '{name}' is protected: its value reaches only function versions an admin deployed to pre-release \
             or live, never code in sandbox. Give it a sandbox value to build and test with (an admin can, on the \
             secret's page), or ask an admin to deploy this function"
        )),
        Some(Env::Sandbox) => None,
        _ if r.trusted => None,
        env => Some(format!(
            "secret '{name}' is protected: its value reaches only function versions an admin deployed, and the \
             version running in {} was deployed by a member. Ask an admin to deploy it",
            env.map_or("this environment", Env::as_str)
        )),
    }
}

/// A value read, with the hosts it may be sent to when the secret is injected only.
pub type Read = (Arc<SecretEntry>, SecretValue, Option<Arc<Vec<String>>>);

/// Reads the current value of secret `name` for an agent, or refuses: a malformed name
/// (`invalid`), an agent the credential does not act for or that no longer exists, or without
/// access (`denied`), a secret that does not exist (`not_found`). Every attempt is audited and
/// counted; a value is returned only once its audit record is durable.
pub async fn agent_read(st: &AppState, r: &AgentRead<'_>, name: &str) -> Result<Read> {
    let granted = grant(st, r, name)?;
    st.audit.append_ref(r.record(Outcome::Success, &granted.detail)).await?;
    Ok(granted.handed_over(st))
}

/// [`agent_read`] without waiting, where nothing in it waits: the store appends audit records
/// on the request's own thread (SQLite's journal). `None` where the append must wait (a
/// database round trip): use [`agent_read`] then.
pub fn agent_read_now(st: &AppState, r: &AgentRead<'_>, name: &str) -> Option<Result<Read>> {
    if !st.audit.appends_here() {
        return None;
    }
    Some(grant(st, r, name).and_then(|granted| {
        st.audit.append_here(r.record(Outcome::Success, &granted.detail))?;
        Ok(granted.handed_over(st))
    }))
}

/// A read the policy allows, before its audit record is appended.
struct Granted {
    entry: Arc<SecretEntry>,
    value: SecretValue,
    injection: Option<Arc<Vec<String>>>,
    /// The audit record's detail.
    detail: String,
}

impl Granted {
    /// The read, counted, once its record is durable.
    fn handed_over(self, st: &AppState) -> Read {
        st.metrics.read("allowed");
        (self.entry, self.value, self.injection)
    }
}

/// The policy of [`agent_read`]: every refusal is audited and counted here.
fn grant(st: &AppState, r: &AgentRead<'_>, name: &str) -> Result<Granted> {
    let deny = |outcome: Outcome, err: Error, metric: &'static str| {
        st.metrics.read(metric);
        let detail = r.detail(err.code.to_string());
        st.audit.append_nowait(r.record(outcome, &detail).to_event());
        err
    };
    if let Err(e) = validate::secret_name(name) {
        return Err(deny(Outcome::Invalid, e, "invalid"));
    }
    let (agent_ok, entry) = match r.credential_covers_agent {
        true => st.model.agent_and_secret(r.workspace_id, r.agent_id, name),
        false => (false, None),
    };
    if !agent_ok {
        return Err(deny(Outcome::Denied, Error::missing_access(r.agent_id, name), "denied"));
    }
    let Some(entry) = entry else {
        return Err(deny(Outcome::NotFound, Error::secret_not_found(name), "not_found"));
    };
    if !entry.access.contains(r.agent_id) {
        return Err(deny(Outcome::Denied, Error::missing_access(r.agent_id, name), "denied"));
    }
    let injection = st.egress.injection(r.workspace_id, &entry.id);
    if injection.is_some() && !r.injection_ok {
        let e = Error::new(
            ErrorKind::Forbidden,
            "injection_only",
            format!(
                "secret '{name}' is injected only: its value is never handed out; agentvault's egress proxy sends it \
                 in requests that a function makes to the secret's hosts"
            ),
        );
        return Err(deny(Outcome::Denied, e, "denied"));
    }
    if entry.protected
        && let Some(message) = protected_refusal(name, r, entry.own_value(Env::Sandbox).is_some())
    {
        let e = Error::new(ErrorKind::Forbidden, "missing_access", message);
        return Err(deny(Outcome::Denied, e, "denied"));
    }
    let chosen = entry.value_for(r.env);
    let value = st.open_value(&entry, chosen)?;
    let env = r.env.map_or("none", Env::as_str);
    let source = chosen.own.map_or("default", Env::as_str);
    let detail = r.detail(match &injection {
        Some(_) => format!("version={} env={env} value={source} placeholder", chosen.version),
        None => format!("version={} env={env} value={source}", chosen.version),
    });
    Ok(Granted { entry, value, injection, detail })
}

/// The environment an API key reads for: its own; for a key of every environment the one asked
/// for with `?env=` (the default value without it). A key of one environment never reads
/// another's.
fn key_env(key: &KeyEntry, asked: Option<&str>) -> Result<Option<Env>> {
    let asked = match asked {
        Some(a) => Some(Env::parse(a).ok_or_else(|| {
            Error::invalid("env", format!("env is '{}'; it must be sandbox, pre-release or live", a.escape_default()))
        })?),
        None => None,
    };
    match (key.meta.env, asked) {
        (Some(own), Some(a)) if own != a => Err(Error::new(
            ErrorKind::Forbidden,
            "wrong_environment",
            format!("this API key reads {own} values only; use a key for {a}, or one for every environment"),
        )),
        (Some(own), _) => Ok(Some(own)),
        (None, a) => Ok(a),
    }
}

/// A read over HTTP by an agent with an (authenticated) API key, at `now` (the time the key
/// was checked at: the record's time).
pub async fn read_with_key(
    st: &AppState,
    key: &KeyEntry,
    agent_id: String,
    name: String,
    env: Option<&str>,
    now: Millis,
) -> Result<AgentReadOut> {
    let env = key_env(key, env)?;
    let (entry, value, _) = agent_read(st, &key_reader(key, &agent_id, &name, env, now), &name).await?;
    Ok(AgentReadOut { name, kind: entry.kind.into(), value })
}

/// [`read_with_key`] without waiting (see [`agent_read_now`]); `None`: use [`read_with_key`].
pub fn read_with_key_now(
    st: &AppState,
    key: &KeyEntry,
    agent_id: &str,
    name: &str,
    env: Option<&str>,
    now: Millis,
) -> Option<Result<AgentReadOut>> {
    let env = match key_env(key, env) {
        Ok(env) => env,
        Err(e) => return Some(Err(e)),
    };
    let read = agent_read_now(st, &key_reader(key, agent_id, name, env, now), name)?;
    Some(read.map(|(entry, value, _)| AgentReadOut { name: name.to_owned(), kind: entry.kind.into(), value }))
}

/// Who reads with an API key, for the policy.
fn key_reader<'a>(key: &'a KeyEntry, agent_id: &'a str, name: &'a str, env: Option<Env>, now: Millis) -> AgentRead<'a> {
    let agent_ok = validate::id_with_prefix("agent_id", AGENT_PREFIX, agent_id).is_ok();
    let name_ok = validate::secret_name(name).is_ok();
    AgentRead {
        workspace_id: &key.meta.workspace_id,
        agent_id,
        credential_covers_agent: key.meta.scope.covers(agent_id),
        audit: ReadAudit {
            at: now,
            actor_kind: Actor::API_KEY,
            actor_id: &key.meta.id,
            secret_name: name_ok.then_some(name),
            agent_id: agent_ok.then_some(agent_id),
            target_id: None,
            context: None,
        },
        injection_ok: false,
        env,
        trusted: true,
    }
}

/// Answers one invocation's `get_secret` calls for its agent, audited as reads by the agent.
pub struct FunctionReads {
    pub st: AppState,
    pub workspace_id: String,
    pub agent_id: String,
    pub invocation_id: String,
    /// The function and invocation, appended to every record's detail.
    pub context: String,
    /// The conversation's environment.
    pub env: Env,
    /// The running version was deployed by an admin (or by agentvault on upgrade) to pre-release
    /// or live: it may read protected secrets.
    pub trusted: bool,
}

impl FunctionReads {
    /// The reader of a `get_secret` call (`name`: the name asked for, if it is a str).
    fn reader<'a>(&'a self, name: Option<&'a str>) -> AgentRead<'a> {
        AgentRead {
            workspace_id: &self.workspace_id,
            agent_id: &self.agent_id,
            credential_covers_agent: true,
            audit: ReadAudit {
                at: now_millis(),
                actor_kind: Actor::AGENT,
                actor_id: &self.agent_id,
                secret_name: name.filter(|n| validate::secret_name(n).is_ok()),
                agent_id: Some(&self.agent_id),
                target_id: Some(&self.invocation_id),
                context: Some(&self.context),
            },
            injection_ok: true,
            env: Some(self.env),
            trusted: self.trusted,
        }
    }
}

#[async_trait::async_trait]
impl SecretSource for FunctionReads {
    async fn get_secret(&self, name: Option<&str>) -> SecretAnswer {
        let Some(name) = name else {
            self.st.metrics.read("invalid");
            let reader = self.reader(None);
            let detail = reader.detail("invalid_input".to_owned());
            self.st.audit.append_nowait(reader.record(Outcome::Invalid, &detail).to_event());
            return SecretAnswer::Invalid("a secret name is a str".into());
        };
        let reader = self.reader(Some(name));
        match agent_read(&self.st, &reader, name).await {
            Ok((_, value, None)) => SecretAnswer::Value(value),
            // The function gets a placeholder per value; the proxy swaps it for the value in
            // requests to the secret's hosts while this invocation runs.
            Ok((_, value, Some(hosts))) => {
                if self.st.egress_tls.is_none() {
                    return SecretAnswer::Invalid(format!(
                        "secret '{name}' is injected only, and the egress proxy cannot inject it on this server \
                         (its CA is not available; see the server's log)"
                    ));
                }
                match self.st.injections.register(&self.invocation_id, name, &value, &hosts) {
                    Ok(placeholder) => SecretAnswer::Value(placeholder),
                    Err(e) => {
                        tracing::error!(error = %e.message, "making a placeholder failed");
                        SecretAnswer::Invalid("the secret cannot be read right now".into())
                    }
                }
            }
            Err(e) if e.kind == ErrorKind::InvalidInput => SecretAnswer::Invalid(e.message.into_owned()),
            Err(e)
                if e.code == "missing_access"
                    && self.st.model.secret(&self.workspace_id, name).is_some_and(|s| s.protected) =>
            {
                SecretAnswer::Protected(e.message.into_owned())
            }
            Err(e) if e.code == "missing_access" => SecretAnswer::MissingAccess,
            Err(e) if e.code == "secret_not_found" => SecretAnswer::NotFound,
            Err(e) if e.kind == ErrorKind::Unavailable => {
                tracing::error!(error = %e.message, "auditing a function's secret read failed");
                SecretAnswer::Invalid("the read cannot be audited right now, so it is refused".into())
            }
            Err(e) => {
                tracing::error!(error = %e.message, "opening a secret for a function failed");
                SecretAnswer::Invalid("the secret cannot be read right now".into())
            }
        }
    }
}
