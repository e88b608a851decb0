//! An agent's Python functions: their definitions, checked by the host's Python before they are
//! stored (the code compiles, and it defines `def <name>(conv, <params>...)`), and their
//! invocations.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{
    CONVERSATION_PREFIX, DeployedFunction, Deployment, Env, FUNCTION_PREFIX, Function, FunctionParam,
    INVOCATION_PREFIX, ParamType, Perm, Principal, Role, SecretRef,
};
use agentvault_core::{Error, Result, validate};
use agentvault_runtime::Invocation;
use serde_json::{Map, Value, json};

use super::Body;
use super::read::FunctionReads;
use crate::api::functions::{CreateFunction, DeployBody, FunctionOut, FunctionVersionOut, ParamBody, ReplaceFunction};
use crate::api::invoke::{ConversationIn, DraftRunBody, DraftRunOut, InvokeBody, InvokeErrorOut, InvokeOut, LogOut};
use crate::auth::new_id;
use crate::{AppState, now_millis};

/// The wall-clock limits a function may ask for, in milliseconds.
const TIMEOUT_MS: std::ops::RangeInclusive<u32> = 100..=60_000;
const CONVERSATION_ID_MAX: usize = 128;

/// Checks everything but the code's meaning; returns the parameters.
fn check_definition(
    description: &str,
    params: Vec<ParamBody>,
    code: &str,
    timeout_ms: Option<u32>,
) -> Result<Vec<FunctionParam>> {
    if description.trim().is_empty() {
        return Err(Error::invalid("description", "describe when the LLM should call this function"));
    }
    validate::description(description)?;
    if params.len() > validate::FUNCTION_PARAMS_MAX {
        return Err(Error::invalid(
            "parameters",
            format!("{} parameters given; the limit is {}", params.len(), validate::FUNCTION_PARAMS_MAX),
        ));
    }
    let mut out: Vec<FunctionParam> = Vec::with_capacity(params.len());
    for p in params {
        validate::python_name("parameters", "parameter name", &p.name)?;
        if p.name == "conv" {
            return Err(Error::invalid(
                "parameters",
                "conv is the conversation, always the first argument; it is not an LLM parameter",
            ));
        }
        if out.iter().any(|q| q.name == p.name) {
            return Err(Error::invalid("parameters", format!("the parameter {} is declared twice", p.name)));
        }
        validate::description(&p.description).map_err(|e| e.with_field("parameters"))?;
        let kind = ParamType::parse(&p.kind).ok_or_else(|| {
            Error::invalid("parameters", format!("the type of {} must be string, number, integer or boolean", p.name))
        })?;
        out.push(FunctionParam { name: p.name, description: p.description, kind, required: false });
    }
    if code.trim().is_empty() {
        return Err(Error::invalid("code", "the function definition is empty"));
    }
    if code.len() > validate::FUNCTION_CODE_MAX_BYTES {
        return Err(Error::too_large(
            "code_too_large",
            format!("the code is {} bytes; the limit is {}", code.len(), validate::FUNCTION_CODE_MAX_BYTES),
        )
        .with_field("code"));
    }
    if let Some(t) = timeout_ms.filter(|t| !TIMEOUT_MS.contains(t)) {
        return Err(Error::invalid("timeout_ms", format!("timeout_ms is {t}; it must be between 100 and 60000")));
    }
    Ok(out)
}

/// Checks the code; returns the secrets it names, and marks the parameters a call must pass.
async fn check_code(code: &str, name: &str, params: &mut [FunctionParam]) -> Result<Vec<SecretRef>> {
    let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
    let checked = agentvault_runtime::check_function(code, name, &names).await?;
    for p in params.iter_mut() {
        p.required = checked.required.contains(&p.name);
    }
    Ok(checked.refs)
}

fn function_not_found(name: &str) -> Error {
    Error::not_found("function_not_found", format!("this agent has no function named '{}'", name.escape_default()))
}

fn not_deployed(name: &str, env: Env) -> Error {
    Error::conflict(
        "not_deployed",
        format!(
            "no version of {name} is deployed to {env}, so a conversation in {env} cannot run it; deploy one with \
             POST .../functions/{name}/deploy {{\"env\": \"{env}\", \"version\": N}} (sandbox runs the latest \
             saved version)"
        ),
    )
}

/// The versions of a function, newest first, with who saved each and when.
pub async fn versions(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    name: &str,
) -> Result<Vec<FunctionVersionOut>> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    validate::python_name("name", "function name", name).map_err(|_| function_not_found(name))?;
    let versions = st.store.list_function_versions(&ws.id, &agent.id, name).await?;
    Ok(versions.into_iter().map(FunctionVersionOut::from).collect())
}

/// Deploys a saved version to pre-release (members and admins) or live (admins only); deploying
/// an older version is a rollback. Audited; the agent's workers start afresh.
pub async fn deploy(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    name: &str,
    body: Body<DeployBody>,
) -> Result<FunctionOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let body = body?;
    let env = match Env::parse(&body.env) {
        Some(Env::Sandbox) => {
            return Err(Error::invalid(
                "env",
                "sandbox always runs the latest saved version; deploy to pre-release or live",
            ));
        }
        Some(env) => env,
        None => {
            return Err(Error::invalid(
                "env",
                format!("env is '{}'; deploy to pre-release or live", body.env.escape_default()),
            ));
        }
    };
    let by_admin = p.role_in(&ws.id) == Some(Role::Admin);
    if env == Env::Live && !by_admin {
        return Err(Error::forbidden(
            "deploying to live needs the admin role in this workspace: live conversations get live credentials. \
             Deploy to pre-release, and ask an admin to deploy the version to live",
        ));
    }
    if body.version == 0 {
        return Err(Error::invalid("version", "versions are numbered from 1"));
    }
    let agent = st.agent_of(&ws.id, agent_id).await?;
    validate::python_name("name", "function name", name).map_err(|_| function_not_found(name))?;
    let now = now_millis();
    let actor = p.actor();
    let deployment =
        Deployment { env, version: body.version, deployed_by: actor.id().to_owned(), deployed_at: now, by_admin };
    let _w = st.write_lock.lock().await;
    let previous = st.model.deployed(&ws.id, &agent.id, name, env).map(|d| d.deployment.version);
    let mut detail = format!("name={name} env={env} version={}", body.version);
    if let Some(prev) = previous {
        detail.push_str(&format!(" previous={prev}"));
        if prev > body.version {
            detail.push_str(" rollback");
        }
    }
    let mut audit =
        AuditEvent::new(now, &ws.id, actor, Action::FunctionDeploy, Outcome::Success).agent(&agent.id).detail(detail);
    if let Some(f) = st.model.function(&ws.id, &agent.id, name) {
        audit = audit.target(&f.id);
    }
    let function = st.store.deploy_function(&ws.id, &agent.id, name, &deployment, &audit).await?;
    let version = st
        .store
        .list_function_versions(&ws.id, &agent.id, name)
        .await?
        .into_iter()
        .find(|v| v.version == body.version)
        .ok_or_else(|| Error::internal("a deployed version cannot be read back"))?;
    let deployed = Function {
        description: version.description,
        parameters: version.parameters,
        code: version.code,
        timeout_ms: version.timeout_ms,
        version: version.version,
        updated_at: version.created_at,
        secret_refs: Vec::new(),
        deployments: Vec::new(),
        ..function.clone()
    };
    st.model.put_deployed(DeployedFunction { deployment, function: deployed });
    drop(_w);
    // No worker goes on running what was deployed before.
    st.runtime.forget_agent(&agent.id);
    Ok(function.into())
}

/// An agent's functions.
pub async fn list(st: &AppState, p: &Principal, ws: &str, agent_id: &str) -> Result<Vec<FunctionOut>> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let functions = st.store.list_functions(&ws.id, &agent.id).await?;
    Ok(functions.into_iter().map(FunctionOut::from).collect())
}

/// Creates a function; the code must compile and define the named function.
pub async fn create(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    body: Body<CreateFunction>,
) -> Result<FunctionOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let body = body?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    validate::python_name("name", "function name", &body.name)?;
    let mut params = check_definition(&body.description, body.parameters, &body.code, body.timeout_ms)?;
    let secret_refs = check_code(&body.code, &body.name, &mut params).await?;
    let now = now_millis();
    let function = Function {
        id: new_id(FUNCTION_PREFIX)?,
        workspace_id: ws.id.clone(),
        agent_id: agent.id.clone(),
        name: body.name,
        description: body.description,
        parameters: params,
        code: body.code,
        timeout_ms: body.timeout_ms,
        version: 1,
        created_at: now,
        updated_at: now,
        secret_refs,
        deployments: Vec::new(),
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::FunctionCreate, Outcome::Success)
        .agent(&agent.id)
        .target(&function.id)
        .detail(format!("name={} version=1", function.name));
    {
        let _w = st.write_lock.lock().await;
        st.store.create_function(&function, &audit).await?;
        st.model.put_function(function.clone());
    }
    // Nothing an earlier function left in the agent's workers outlives a change of its functions.
    st.runtime.forget_agent(&agent.id);
    Ok(function.into())
}

/// Checks again the stored functions that may have been saved before agentvault recorded what
/// the check finds (the secrets they name, the parameters a call must pass), and records it.
/// Run in the background at start; returns how many functions it updated.
pub async fn recheck_saved(st: &AppState) -> Result<usize> {
    let mut updated = 0;
    for ws in st.store.list_workspaces().await? {
        for agent in st.store.list_agents(&ws.id).await? {
            for mut f in st.store.list_functions(&ws.id, &agent.id).await? {
                let maybe_old = (f.secret_refs.is_empty() && f.code.contains("get_secret"))
                    || (!f.parameters.is_empty() && f.parameters.iter().all(|p| !p.required));
                if !maybe_old {
                    continue;
                }
                let names: Vec<String> = f.parameters.iter().map(|p| p.name.clone()).collect();
                let Ok(checked) = agentvault_runtime::check_function(&f.code, &f.name, &names).await else {
                    continue;
                };
                let required_now: Vec<&String> = f.parameters.iter().filter(|p| p.required).map(|p| &p.name).collect();
                if checked.refs == f.secret_refs && checked.required.iter().collect::<Vec<_>>() == required_now {
                    continue;
                }
                for p in &mut f.parameters {
                    p.required = checked.required.contains(&p.name);
                }
                f.secret_refs = checked.refs;
                let _w = st.write_lock.lock().await;
                st.store.record_function_check(&f).await?;
                // Invocations read the definition from the read model: it gets the findings too.
                for env in [Env::PreRelease, Env::Live] {
                    if let Some(d) = st.model.deployed(&f.workspace_id, &f.agent_id, &f.name, env)
                        && d.function.version == f.version
                    {
                        let mut d = DeployedFunction::clone(&d);
                        d.function.parameters = f.parameters.clone();
                        st.model.put_deployed(d);
                    }
                }
                if st.model.function(&f.workspace_id, &f.agent_id, &f.name).is_some_and(|m| m.version == f.version) {
                    st.model.put_function(f);
                }
                updated += 1;
            }
        }
    }
    Ok(updated)
}

/// One function.
pub async fn get(st: &AppState, p: &Principal, ws: &str, agent_id: &str, name: &str) -> Result<FunctionOut> {
    let ws = st.workspace_for(p, ws, Perm::ViewAgents)?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let function = st.store.get_function(&ws.id, &agent.id, name).await?.ok_or_else(|| function_not_found(name))?;
    Ok(function.into())
}

/// Replaces a function's definition (a new version).
pub async fn replace(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    name: &str,
    body: Body<ReplaceFunction>,
) -> Result<FunctionOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let body = body?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let current = st.store.get_function(&ws.id, &agent.id, name).await?.ok_or_else(|| function_not_found(name))?;
    let mut params = check_definition(&body.description, body.parameters, &body.code, body.timeout_ms)?;
    let secret_refs = check_code(&body.code, &current.name, &mut params).await?;
    let now = now_millis();
    let function = Function {
        secret_refs,
        description: body.description,
        parameters: params,
        code: body.code,
        timeout_ms: body.timeout_ms,
        version: current.version + 1,
        updated_at: now,
        ..current
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::FunctionUpdate, Outcome::Success)
        .agent(&agent.id)
        .target(&function.id)
        .detail(format!("name={} version={}", function.name, function.version));
    {
        let _w = st.write_lock.lock().await;
        st.store.update_function(&function, &audit).await?;
        st.model.put_function(function.clone());
    }
    st.runtime.forget_agent(&agent.id);
    Ok(function.into())
}

/// Deletes a function.
pub async fn delete(st: &AppState, p: &Principal, ws: &str, agent_id: &str, name: &str) -> Result<()> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let agent = st.agent_of(&ws.id, agent_id).await?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::FunctionDelete, Outcome::Success)
        .agent(&agent.id)
        .detail(format!("name={name}"));
    {
        let _w = st.write_lock.lock().await;
        st.store.delete_function(&ws.id, &agent.id, name, &audit).await?;
        st.model.remove_function(&ws.id, &agent.id, name);
    }
    st.runtime.forget_agent(&agent.id);
    Ok(())
}

/// Runs a function with arguments and a conversation. The function's `get_secret` calls are
/// answered for its agent by the agent-read policy ([`super::read`]).
pub async fn invoke(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    name: &str,
    body: Body<InvokeBody>,
) -> Result<InvokeOut> {
    let ws = match p {
        Principal::ApiKey { scope, .. } => {
            let ws = st.visible_workspace(p, ws)?;
            if !scope.covers(agent_id) {
                return Err(Error::forbidden(format!(
                    "this API key is not scoped to agent {}; use a key for that agent",
                    agent_id.escape_default()
                )));
            }
            ws
        }
        _ => st.workspace_for(p, ws, Perm::InvokeFunctions)?,
    };
    let body = body?;
    // From the read model: an invocation runs no SQL.
    if !st.model.agent_in(&ws.id, agent_id) {
        return Err(super::agents::not_found(agent_id));
    }
    let generation = st.runtime.generation();
    let latest = st.model.function(&ws.id, agent_id, name).ok_or_else(|| function_not_found(name))?;
    let (conversation, env) = conversation(body.conversation)?;
    // Sandbox runs the latest saved version; pre-release and live the version deployed there.
    let deployed;
    let (function, trusted): (&Function, bool) = match env {
        Env::Sandbox => (&latest, false),
        env => {
            deployed = st.model.deployed(&ws.id, agent_id, name, env).ok_or_else(|| not_deployed(name, env))?;
            (&deployed.function, deployed.deployment.by_admin)
        }
    };
    check_args(&function.name, &function.parameters, &body.args)?;
    let run = Run {
        name: &function.name,
        code: &function.code,
        timeout_ms: function.timeout_ms,
        what: Ran::Saved(function.version),
        generation,
        env,
        trusted,
    };
    execute(st, p, &ws.id, agent_id, run, body.args, conversation).await
}

/// Runs what the Function Editor holds as an unsaved draft: the definition is checked as a save
/// would check it, then runs like an invocation (the same sandbox, limits and redaction) in a
/// worker of its own, and is never stored. Audited as `function.invoke` with `draft` and the
/// SHA-256 of the code. Only those who may save the agent's functions may run a draft, and a
/// draft runs in sandbox only (unreviewed code: no protected value, no other environment's
/// values; pre-release and live run deployed versions).
pub async fn run_draft(
    st: &AppState,
    p: &Principal,
    ws: &str,
    agent_id: &str,
    body: Body<DraftRunBody>,
) -> Result<DraftRunOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageAgents)?;
    let body = body?;
    if !st.model.agent_in(&ws.id, agent_id) {
        return Err(super::agents::not_found(agent_id));
    }
    let (conversation, env) = conversation(body.conversation)?;
    if env != Env::Sandbox {
        return Err(Error::invalid(
            "conversation.env",
            format!(
                "a draft runs in sandbox only, not in {env}; save it, deploy that version to {env}, and invoke it there"
            ),
        ));
    }
    let f = body.function;
    validate::python_name("function.name", "function name", &f.name)?;
    let checked = check_definition(&f.description, f.parameters, &f.code, f.timeout_ms)
        .map_err(|e| prefix_field(e, "function"))?;
    let mut params = checked;
    check_code(&f.code, &f.name, &mut params).await.map_err(|e| prefix_field(e, "function"))?;
    check_args(&f.name, &params, &body.args)?;
    let code_sha256: String = agentvault_crypto::sha256(f.code.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let run = Run {
        name: &f.name,
        code: &f.code,
        timeout_ms: f.timeout_ms,
        what: Ran::Draft(&code_sha256),
        generation: st.runtime.generation(),
        env,
        trusted: false,
    };
    let run = execute(st, p, &ws.id, agent_id, run, body.args, conversation).await?;
    Ok(DraftRunOut { code_sha256, run })
}

/// The field of an error about the draft's definition, within the request (`function.code`).
fn prefix_field(e: Error, prefix: &str) -> Error {
    match e.public_field().map(str::to_owned) {
        Some(field) if !field.is_empty() => e.with_field(format!("{prefix}.{field}")),
        _ => e,
    }
}

/// What runs: a saved version, or a draft (by the SHA-256 of its code).
enum Ran<'a> {
    Saved(u32),
    Draft(&'a str),
}

/// A function's code to run, for [`execute`].
struct Run<'a> {
    name: &'a str,
    code: &'a str,
    timeout_ms: Option<u32>,
    what: Ran<'a>,
    /// [`agentvault_runtime::Runtime::generation`], taken before the code was read.
    generation: u64,
    /// The conversation's environment: which values `get_secret` answers with.
    env: Env,
    /// Whether an admin deployed this version (protected secrets' values reach only such code).
    trusted: bool,
}

/// Runs checked code with its arguments: `get_secret` answered for the agent, the answer
/// redacted, the run audited.
async fn execute(
    st: &AppState,
    p: &Principal,
    ws_id: &str,
    agent_id: &str,
    run: Run<'_>,
    args: Map<String, Value>,
    conversation: Value,
) -> Result<InvokeOut> {
    let env = run.env;
    let invocation_id = new_id(INVOCATION_PREFIX)?;
    let conversation_id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let (what, version, own_worker) = match run.what {
        Ran::Saved(v) => (format!("version={v}"), v, false),
        // Version 0 is never a saved one; the worker is the draft's alone anyway.
        Ran::Draft(hash) => (format!("draft code_sha256={hash}"), 0, true),
    };
    let source = FunctionReads {
        st: st.clone(),
        workspace_id: ws_id.to_owned(),
        agent_id: agent_id.to_owned(),
        context: match run.what {
            Ran::Saved(v) => format!("function={} function_version={v} invocation={invocation_id}", run.name),
            Ran::Draft(_) => format!("function={} {what} invocation={invocation_id}", run.name),
        },
        invocation_id: invocation_id.clone(),
        env,
        trusted: run.trusted,
    };
    let inv = Invocation {
        id: &invocation_id,
        workspace_id: ws_id,
        agent_id,
        function: run.name,
        version,
        code: run.code,
        args,
        conversation,
        timeout: run.timeout_ms.map(|ms| std::time::Duration::from_millis(u64::from(ms))),
        generation: run.generation,
        own_worker,
    };
    let outcome = st.runtime.invoke(inv, &source).await;
    // The invocation's placeholders are worth nothing from now on; the connections the egress
    // proxy refused it go into its logs.
    let refused = st.injections.end(&invocation_id);
    let mut outcome = outcome?;
    outcome.logs.extend(refused.into_iter().map(|content| agentvault_runtime::LogEntry {
        level: "warning".into(),
        content,
        is_pii: false,
    }));
    let duration_ms = outcome.duration.as_secs_f64() * 1000.0;
    let mut detail = format!("function={} {what} env={env} duration_ms={duration_ms:.1}", run.name);
    if let Some(e) = &outcome.error {
        detail.push_str(&format!(" error={}", audit_name(&e.kind)));
    }
    let audit_outcome = if outcome.error.is_some() { Outcome::Failed } else { Outcome::Success };
    st.audit.append_nowait(
        AuditEvent::new(now_millis(), ws_id, p.actor(), Action::FunctionInvoke, audit_outcome)
            .agent(agent_id)
            .target(&invocation_id)
            .detail(detail),
    );
    Ok(InvokeOut {
        invocation_id,
        conversation_id,
        result: outcome.result,
        state: outcome.state,
        utterances: outcome.utterances,
        logs: outcome
            .logs
            .into_iter()
            .map(|l| LogOut { level: l.level, content: l.content, is_pii: l.is_pii })
            .collect(),
        error: outcome.error.map(|e| InvokeErrorOut { kind: e.kind, message: e.message, traceback: e.traceback }),
        truncated: outcome.truncated,
        duration_ms,
        cold: outcome.cold,
        sandboxed: st.runtime.sandboxed().unwrap_or(false),
    })
}

/// An error type as the audit log gets it: a name of `[A-Za-z0-9_.]{1,64}`, or `Error` (the
/// function chose its exception's name, which may carry anything).
fn audit_name(kind: &str) -> &str {
    let plain =
        (1..=64).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if plain { kind } else { "Error" }
}

/// Every argument is a declared parameter of the declared type, and every required parameter is
/// given (before any code runs).
fn check_args(function: &str, parameters: &[FunctionParam], args: &Map<String, Value>) -> Result<()> {
    if let Some(p) = parameters.iter().find(|p| p.required && !args.contains_key(&p.name)) {
        return Err(Error::invalid(
            format!("args.{}", p.name),
            format!(
                "{} needs the argument {} ({}); add it to args, e.g. {{\"{}\": {}}}",
                function,
                p.name,
                article(p.kind),
                p.name,
                match p.kind {
                    ParamType::String => "\"...\"",
                    ParamType::Number => "1.5",
                    ParamType::Integer => "1",
                    ParamType::Boolean => "true",
                }
            ),
        ));
    }
    for (name, value) in args {
        let field = format!("args.{name}");
        let Some(param) = parameters.iter().find(|p| &p.name == name) else {
            let declared: Vec<&str> = parameters.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::invalid(
                field,
                format!(
                    "{} has no parameter '{}'; its parameters are: {}",
                    function,
                    name.escape_default(),
                    if declared.is_empty() { "none".to_owned() } else { declared.join(", ") }
                ),
            ));
        };
        let ok = match param.kind {
            ParamType::String => value.is_string(),
            ParamType::Number => value.is_number(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Boolean => value.is_boolean(),
        };
        if !ok {
            return Err(Error::invalid(
                field,
                format!("{name} must be {} ({}), not {}", article(param.kind), param.kind.as_str(), json_type(value)),
            ));
        }
    }
    Ok(())
}

fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Number => "a number",
        ParamType::Integer => "a whole number",
        ParamType::Boolean => "true or false",
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n)
            if n.as_f64().is_some_and(|f| f.fract() == 0.0 && (f >= 2f64.powi(64) || f < -(2f64.powi(63)))) =>
        {
            "a whole number out of range (integers are -2^63 to 2^64-1)"
        }
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The conversation as the worker gets it: `{id, env, state}`, and its environment.
fn conversation(c: ConversationIn) -> Result<(Value, Env)> {
    let id = match c.id {
        Some(id) => {
            // Characters, as the API's schema counts them.
            if id.is_empty() || id.chars().count() > CONVERSATION_ID_MAX || id.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "conversation.id",
                    format!("a conversation id is 1 to {CONVERSATION_ID_MAX} printable characters"),
                ));
            }
            id
        }
        None => new_id(CONVERSATION_PREFIX)?,
    };
    let env = c.env.unwrap_or_else(|| "sandbox".to_owned());
    let Some(parsed) = Env::parse(&env) else {
        return Err(Error::invalid(
            "conversation.env",
            format!("env is '{}'; it must be sandbox, pre-release or live", env.escape_default()),
        ));
    };
    Ok((json!({"id": id, "env": env, "state": c.state.unwrap_or_default()}), parsed))
}
