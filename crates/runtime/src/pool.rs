//! Warm workers per agent, and one invocation's conversation with its worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use agentvault_core::{Error, ErrorKind, Result, SecretValue};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::egress::{EgressHandler, InvocationTag, SocketDir, WorkerIdentity, WorkerSocket};
use crate::redact::Redactor;
use crate::sandbox::{Launcher, Limits, SandboxMode};

const WORKER: &str = include_str!("worker.py");

/// How the runtime is set up.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// The interpreter (a name on the PATH or a path).
    pub python: String,
    pub sandbox: SandboxMode,
    /// Paths no worker may see: the data directory, the root key file.
    pub hidden_paths: Vec<PathBuf>,
    pub limits: Limits,
    /// Invocations running at once, across all agents; more wait for a slot.
    pub max_running: usize,
    /// Invocations one workspace may run (or wait for) at once; more are refused at once. Less
    /// than `max_running`, so that one workspace cannot take every slot.
    pub max_per_workspace: usize,
    /// Invocations one agent may run (or wait for) at once; more are refused at once.
    pub max_per_agent: usize,
    /// Warm workers kept per agent.
    pub idle_per_agent: usize,
    /// Warm workers kept in all.
    pub idle_total: usize,
    /// A worker is replaced after this many invocations.
    pub recycle_after: u32,
    /// A warm worker unused for this long is stopped.
    pub idle_ttl: Duration,
    /// The wall-clock limit of an invocation whose function sets none.
    pub default_timeout: Duration,
    /// Characters of logs and utterances an invocation may produce.
    pub max_output_chars: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            python: crate::python(),
            sandbox: SandboxMode::Auto,
            hidden_paths: Vec::new(),
            limits: Limits::default(),
            max_running: 32,
            max_per_workspace: 16,
            max_per_agent: 8,
            idle_per_agent: 4,
            idle_total: 64,
            recycle_after: 500,
            idle_ttl: Duration::from_secs(300),
            default_timeout: Duration::from_secs(5),
            max_output_chars: 256 * 1024,
        }
    }
}

/// Answers `conv.utils.get_secret` for one invocation: the server, which knows the agent.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    /// `name` is None when the function passed something other than a string.
    async fn get_secret(&self, name: Option<&str>) -> SecretAnswer;
}

pub enum SecretAnswer {
    Value(SecretValue),
    NotFound,
    MissingAccess,
    /// `MissingAccess` with its reason: a protected secret, and what to do about it.
    Protected(String),
    Invalid(String),
}

/// What to run.
pub struct Invocation<'a> {
    /// The invocation's id: every message to and from the worker carries it.
    pub id: &'a str,
    pub workspace_id: &'a str,
    pub agent_id: &'a str,
    pub function: &'a str,
    pub version: u32,
    pub code: &'a str,
    pub args: Map<String, Value>,
    /// `{id, env, state}`
    pub conversation: Value,
    pub timeout: Option<Duration>,
    /// [`Runtime::generation`], taken before `code` was read: a worker started for this code
    /// is never reused once the agent's functions change after that point.
    pub generation: u64,
    /// Runs in a worker of its own, started for it and stopped after it (an unsaved draft: its
    /// code never shares a worker with the agent's saved functions, before or after).
    pub own_worker: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct LogEntry {
    pub level: String,
    pub content: String,
    pub is_pii: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct FunctionError {
    /// The exception's class name (`SecretNotFound`, `ValueError`, ...), or `Timeout`,
    /// `WorkerCrashed`, `OutputTooLarge` for endings the runtime imposed.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
}

/// The outcome of an invocation, already redacted.
#[derive(Debug)]
pub struct Outcome {
    pub result: Value,
    pub state: Value,
    pub utterances: Vec<String>,
    pub logs: Vec<LogEntry>,
    pub error: Option<FunctionError>,
    /// Logs or utterances were cut at the output limit.
    pub truncated: bool,
    pub duration: Duration,
    /// A new worker was started for it.
    pub cold: bool,
}

/// The egress proxy's side of the runtime.
struct EgressSetup {
    handler: Arc<dyn EgressHandler>,
    dir: SocketDir,
    /// The CA bundle workers trust (system roots and the proxy's CA).
    bundle: Option<std::path::PathBuf>,
}

/// The function runtime: a launcher and the warm workers.
pub struct Runtime {
    launcher: std::result::Result<Launcher, String>,
    opts: RuntimeOptions,
    idle: Mutex<HashMap<String, Vec<Worker>>>,
    running: Semaphore,
    /// Invocations running or waiting for a slot, by workspace and by agent.
    counts: Mutex<Counts>,
    /// Each worker's stamp is the next value of this counter.
    stamps: AtomicU64,
    /// Agent → the stamp counter at its last `forget_agent`: older workers are never reused.
    forgotten: Mutex<HashMap<String, u64>>,
    /// The egress proxy, and the directory of the workers' sockets to it. Without it workers
    /// in the sandbox have no network at all.
    egress: OnceLock<EgressSetup>,
}

#[derive(Default)]
struct Counts {
    workspaces: HashMap<String, usize>,
    agents: HashMap<String, usize>,
}

/// An invocation's place in its workspace's and its agent's share; given back on drop.
struct Share<'a> {
    counts: &'a Mutex<Counts>,
    workspace_id: String,
    agent_id: String,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let Ok(mut counts) = self.counts.lock() else { return };
        let Counts { workspaces, agents } = &mut *counts;
        for (map, key) in [(workspaces, &self.workspace_id), (agents, &self.agent_id)] {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

impl Runtime {
    /// Finds python3 and bubblewrap. A runtime that cannot start workers still answers, with
    /// the reason, so the vault works without Python.
    pub async fn start(opts: RuntimeOptions) -> Arc<Runtime> {
        let launcher = Launcher::detect(&opts.python, opts.sandbox, &opts.hidden_paths, opts.limits.clone()).await;
        match &launcher {
            Ok(l) if l.sandboxed() => {
                tracing::info!(python = %l.version, "functions run in bubblewrap sandboxes")
            }
            Ok(l) => tracing::warn!(
                python = %l.version,
                "functions run UNSANDBOXED: bubblewrap (bwrap) is {}; workers get a cleared environment, \
                 resource limits and a seccomp filter, but can see the host's files. Install bubblewrap",
                if opts.sandbox == SandboxMode::Off { "turned off" } else { "not installed" }
            ),
            Err(e) => tracing::warn!("agents' functions cannot run: {e}"),
        }
        tracing::info!(
            max_running = opts.max_running,
            max_per_workspace = opts.max_per_workspace,
            max_per_agent = opts.max_per_agent,
            "function invocations at once"
        );
        let rt = Arc::new(Runtime {
            launcher,
            running: Semaphore::new(opts.max_running.max(1)),
            opts,
            idle: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
            stamps: AtomicU64::new(0),
            forgotten: Mutex::new(HashMap::new()),
            egress: OnceLock::new(),
        });
        let weak = Arc::downgrade(&rt);
        tokio::spawn(reap_idle(weak));
        rt
    }

    /// Routes every worker's network through `handler` (the egress proxy): each worker started
    /// from now on gets a socket of its own, served by it. `ca_pem` is a CA certificate workers
    /// trust besides the system's roots (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`): the proxy's own,
    /// for the hosts it injects credentials into. Set once, at server start.
    pub fn set_egress(&self, handler: Arc<dyn EgressHandler>, ca_pem: Option<&str>) -> std::io::Result<()> {
        let dir = SocketDir::create()?;
        let bundle = match ca_pem {
            Some(pem) => Some(crate::egress::write_ca_bundle(&dir.0, pem)?),
            None => None,
        };
        self.egress
            .set(EgressSetup { handler, dir, bundle })
            .map_err(|_| std::io::Error::other("the egress proxy is already set"))
    }

    /// Whether workers run in bubblewrap (None: they cannot run at all).
    pub fn sandboxed(&self) -> Option<bool> {
        self.launcher.as_ref().ok().map(Launcher::sandboxed)
    }

    fn launcher(&self) -> Result<&Launcher> {
        self.launcher.as_ref().map_err(|e| Error::unavailable(format!("functions cannot run on this server: {e}")))
    }

    /// Warm workers by agent (for tests and metrics).
    pub fn idle_workers(&self, agent_id: &str) -> usize {
        self.idle.lock().map(|m| m.get(agent_id).map_or(0, Vec::len)).unwrap_or(0)
    }

    /// Process ids of an agent's warm workers.
    pub fn idle_pids(&self, agent_id: &str) -> Vec<u32> {
        self.idle
            .lock()
            .map(|m| m.get(agent_id).map(|ws| ws.iter().filter_map(|w| w.child.id()).collect()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Stops an agent's warm workers, and keeps the ones running now from being reused: the
    /// agent was deleted, or one of its functions was created, changed or deleted, so nothing a
    /// function left behind in a worker's memory outlives it.
    pub fn forget_agent(&self, agent_id: &str) {
        if let Ok(mut forgotten) = self.forgotten.lock() {
            forgotten.insert(agent_id.to_owned(), self.stamps.load(Ordering::SeqCst));
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.remove(agent_id);
        }
    }

    /// The generation to give an invocation: take it before reading the function's code, so that
    /// a worker started for code that a concurrent change (and `forget_agent`) made obsolete is
    /// never put back into the pool.
    pub fn generation(&self) -> u64 {
        self.stamps.fetch_add(1, Ordering::SeqCst)
    }

    /// Whether a worker started before the agent's last `forget_agent`.
    fn stale(&self, agent_id: &str, worker: &Worker) -> bool {
        self.forgotten.lock().map_or(true, |f| f.get(agent_id).is_some_and(|stamp| worker.stamp < *stamp))
    }

    /// Takes a place in the workspace's and the agent's share, or refuses at once.
    fn share(&self, inv: &Invocation<'_>) -> Result<Share<'_>> {
        let mut counts = self.counts.lock().map_err(|_| Error::internal("the invocation counts are poisoned"))?;
        let agent_n = counts.agents.get(inv.agent_id).copied().unwrap_or(0);
        if agent_n >= self.opts.max_per_agent {
            return Err(too_many(format!(
                "agent {} already has {agent_n} function invocations running, the most one agent may run at once \
                 (the setting --function-max-per-agent); try again when one has finished",
                inv.agent_id
            )));
        }
        let workspace_n = counts.workspaces.get(inv.workspace_id).copied().unwrap_or(0);
        if workspace_n >= self.opts.max_per_workspace {
            return Err(too_many(format!(
                "this workspace already has {workspace_n} function invocations running, the most one workspace may \
                 run at once (the setting --function-max-per-workspace); try again when one has finished"
            )));
        }
        *counts.agents.entry(inv.agent_id.to_owned()).or_default() += 1;
        *counts.workspaces.entry(inv.workspace_id.to_owned()).or_default() += 1;
        Ok(Share { counts: &self.counts, workspace_id: inv.workspace_id.to_owned(), agent_id: inv.agent_id.to_owned() })
    }

    /// Runs a function. Errors are the runtime's own (no Python, too busy); whatever the
    /// function did, including crashing or running out of time, is in the outcome.
    pub async fn invoke(&self, inv: Invocation<'_>, secrets: &dyn SecretSource) -> Result<Outcome> {
        let started = Instant::now();
        let launcher = self.launcher()?;
        let timeout = inv.timeout.unwrap_or(self.opts.default_timeout);
        let _share = self.share(&inv)?;
        let _slot = tokio::time::timeout(timeout, self.running.acquire())
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "{} function invocations are running on this server, its limit (the setting \
                     --function-max-running); try again shortly",
                    self.opts.max_running
                ))
            })?
            .map_err(|_| Error::unavailable("the function runtime is stopping"))?;
        let idle = if inv.own_worker { None } else { self.take_idle(inv.agent_id) };
        let (mut worker, cold) = match idle {
            Some(w) => (w, false),
            None => {
                let egress = self.egress.get();
                (Worker::start(launcher, inv.workspace_id, inv.agent_id, inv.generation, egress).await?, true)
            }
        };
        if let Some(socket) = &worker.socket {
            socket.identity.set_current(Some(InvocationTag {
                invocation_id: inv.id.to_owned(),
                function: inv.function.to_owned(),
                conversation_id: inv.conversation["id"].as_str().unwrap_or_default().to_owned(),
            }));
        }
        let deadline = started + timeout;
        let ran = tokio::time::timeout_at(deadline.into(), worker.run(&inv, secrets, &self.opts)).await;
        let mut reusable = false;
        let mut outcome = match ran {
            Ok(Ok(done)) => {
                reusable = done.error.as_ref().is_none_or(|e| !POISONED.contains(&e.kind.as_str()))
                    && worker.uses < self.opts.recycle_after;
                done.into_outcome(cold)
            }
            Ok(Err(ending)) => {
                let error = ending.describe(&mut worker).await;
                Outcome::failed(error, cold)
            }
            Err(_) => Outcome::failed(
                FunctionError {
                    kind: "Timeout".into(),
                    message: format!(
                        "{} ran longer than its limit of {} ms and was stopped",
                        inv.function,
                        timeout.as_millis()
                    ),
                    traceback: String::new(),
                },
                cold,
            ),
        };
        if let Some(socket) = &worker.socket {
            socket.identity.set_current(None);
        }
        // Everything any invocation of this worker read, not only this one's.
        outcome.redact(&worker.redactor);
        if reusable && !inv.own_worker {
            self.put_idle(inv.agent_id, worker);
        }
        outcome.duration = started.elapsed();
        Ok(outcome)
    }

    fn take_idle(&self, agent_id: &str) -> Option<Worker> {
        loop {
            let worker = {
                let mut idle = self.idle.lock().ok()?;
                let list = idle.get_mut(agent_id)?;
                // The most recently used worker is the warmest.
                let w = list.pop();
                if list.is_empty() {
                    idle.remove(agent_id);
                }
                w?
            };
            if worker.wrote_out_of_turn() {
                // A function left something running that writes to the channel: nothing it
                // wrote is read, and the worker goes.
                tracing::warn!(agent = agent_id, "a warm worker wrote to its channel out of turn; it was stopped");
                continue;
            }
            if !self.stale(agent_id, &worker) {
                return Some(worker);
            }
        }
    }

    fn put_idle(&self, agent_id: &str, mut worker: Worker) {
        if self.stale(agent_id, &worker) {
            return;
        }
        if worker.wrote_out_of_turn() {
            tracing::warn!(agent = agent_id, "a worker wrote to its channel after its answer; it was stopped");
            return;
        }
        worker.last_used = Instant::now();
        let Ok(mut idle) = self.idle.lock() else { return };
        let total: usize = idle.values().map(Vec::len).sum();
        if total >= self.opts.idle_total {
            // Stop the least recently used warm worker of any agent.
            let oldest = idle
                .iter()
                .filter_map(|(a, ws)| ws.first().map(|w| (a.clone(), w.last_used)))
                .min_by_key(|(_, t)| *t)
                .map(|(a, _)| a);
            if let Some(a) = oldest
                && let Some(list) = idle.get_mut(&a)
            {
                list.remove(0);
                if list.is_empty() {
                    idle.remove(&a);
                }
            }
        }
        let list = idle.entry(agent_id.to_owned()).or_default();
        if list.len() < self.opts.idle_per_agent {
            list.push(worker);
        }
    }
}

fn too_many(message: String) -> Error {
    let mut e = Error::new(ErrorKind::RateLimited, "too_many_invocations", message);
    e.retry_after = Some(1);
    e
}

/// Exceptions after which a worker is not reused.
const POISONED: &[&str] = &["MemoryError", "RecursionError", "SystemExit", "KeyboardInterrupt"];

async fn reap_idle(rt: Weak<Runtime>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        let ttl = rt.opts.idle_ttl;
        if let Ok(mut idle) = rt.idle.lock() {
            for list in idle.values_mut() {
                list.retain(|w| w.last_used.elapsed() < ttl);
            }
            idle.retain(|_, l| !l.is_empty());
        }
    }
}

/// One Python process serving one agent.
struct Worker {
    /// Its place in the order workers were started (see `Runtime::forget_agent`).
    stamp: u64,
    /// Every value any invocation in this worker read: a function may keep one in memory and
    /// give it back on a later call.
    redactor: Redactor,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Function name → version whose code the worker has compiled.
    loaded: HashMap<String, u32>,
    uses: u32,
    last_used: Instant,
    /// The worker's socket to the egress proxy; closed when the worker goes.
    socket: Option<WorkerSocket>,
}

/// Why an invocation ended without the worker's answer.
enum Ending {
    /// The process closed the channel (crashed, was killed by a limit, exited).
    Closed,
    /// A frame larger than allowed.
    TooLarge(usize),
    /// Something that is not the protocol.
    Garbled(String),
    /// A message for another invocation: something in the worker wrote to the channel.
    Forged,
}

impl Ending {
    async fn describe(self, worker: &mut Worker) -> FunctionError {
        let (kind, message) = match self {
            Ending::TooLarge(n) => {
                ("OutputTooLarge", format!("the function's answer is {n} bytes, over the limit; return less"))
            }
            Ending::Garbled(what) => ("WorkerCrashed", format!("the worker broke the protocol ({what})")),
            Ending::Forged => (
                "WorkerCrashed",
                "the worker sent a message that does not belong to this invocation (the function wrote to the \
                 worker's private channel); the worker was stopped and replaced, and nothing it sent was used"
                    .to_owned(),
            ),
            Ending::Closed => {
                let status = tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await;
                let how = match status {
                    Ok(Ok(s)) => describe_status(s),
                    _ => "ended".to_owned(),
                };
                ("WorkerCrashed", format!("the Python process running the function {how}; it has been replaced"))
            }
        };
        let _ = worker.child.start_kill();
        FunctionError { kind: kind.into(), message, traceback: String::new() }
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    // bubblewrap reports a signal that killed its child as 128 + the signal.
    let signal = s.signal().or_else(|| s.code().filter(|c| *c > 128).map(|c| c - 128));
    match signal {
        Some(libc::SIGKILL) => "was killed (SIGKILL)".into(),
        Some(libc::SIGXCPU) => "used up its CPU time limit (SIGXCPU)".into(),
        Some(libc::SIGXFSZ) => "wrote a file over the size limit (SIGXFSZ)".into(),
        Some(libc::SIGSEGV) => "crashed (SIGSEGV)".into(),
        Some(libc::SIGABRT) => "aborted (SIGABRT)".into(),
        Some(sig) => format!("was ended by signal {sig}"),
        None => format!("exited with status {}", s.code().unwrap_or(-1)),
    }
}

/// The worker's `done` message.
struct Done {
    result: Value,
    state: Value,
    utterances: Vec<String>,
    logs: Vec<LogEntry>,
    error: Option<FunctionError>,
    truncated: bool,
}

impl Done {
    fn parse(mut v: Value) -> std::result::Result<Done, Ending> {
        let garbled = |what: &str| Ending::Garbled(format!("bad {what} in the answer"));
        let utterances = match v["utterances"].take() {
            Value::Array(items) => items.into_iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
            _ => return Err(garbled("utterances")),
        };
        let logs = match v["logs"].take() {
            Value::Array(items) => items
                .into_iter()
                .map(|i| LogEntry {
                    level: i["level"].as_str().unwrap_or("info").to_owned(),
                    content: i["content"].as_str().unwrap_or_default().to_owned(),
                    is_pii: i["is_pii"].as_bool().unwrap_or(false),
                })
                .collect(),
            _ => return Err(garbled("logs")),
        };
        let error = match v["error"].take() {
            Value::Null => None,
            e => Some(FunctionError {
                kind: e["type"].as_str().unwrap_or("Exception").to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
                traceback: e["traceback"].as_str().unwrap_or_default().to_owned(),
            }),
        };
        let state = match v["state"].take() {
            s @ Value::Object(_) => s,
            _ => json!({}),
        };
        Ok(Done { result: v["result"].take(), state, utterances, logs, error, truncated: v["truncated"] == true })
    }

    fn into_outcome(self, cold: bool) -> Outcome {
        Outcome {
            result: self.result,
            state: self.state,
            utterances: self.utterances,
            logs: self.logs,
            error: self.error,
            truncated: self.truncated,
            duration: Duration::ZERO,
            cold,
        }
    }
}

impl Outcome {
    fn failed(error: FunctionError, cold: bool) -> Outcome {
        Outcome {
            result: Value::Null,
            state: json!({}),
            utterances: Vec::new(),
            logs: Vec::new(),
            error: Some(error),
            truncated: false,
            duration: Duration::ZERO,
            cold,
        }
    }

    fn redact(&mut self, r: &Redactor) {
        if r.is_empty() {
            return;
        }
        r.json(&mut self.result);
        r.json(&mut self.state);
        for u in &mut self.utterances {
            *u = r.text(u);
        }
        for l in &mut self.logs {
            l.level = r.text(&l.level);
            l.content = r.text(&l.content);
        }
        if let Some(e) = &mut self.error {
            e.kind = r.text(&e.kind);
            e.message = r.text(&e.message);
            e.traceback = r.text(&e.traceback);
        }
    }
}

impl Worker {
    async fn start(
        launcher: &Launcher,
        workspace_id: &str,
        agent_id: &str,
        stamp: u64,
        egress: Option<&EgressSetup>,
    ) -> Result<Worker> {
        let socket = match egress {
            Some(e) => Some(
                WorkerSocket::open(&e.dir.0, WorkerIdentity::new(workspace_id, agent_id, stamp), e.handler.clone())
                    .map_err(|e| {
                        Error::unavailable(format!(
                            "cannot open the egress socket of a worker for agent {agent_id}: {e}"
                        ))
                    })?,
            ),
            None => None,
        };
        let mut child = launcher
            .spawn(WORKER, socket.as_ref().map(|s| s.path.as_path()), egress.and_then(|e| e.bundle.as_deref()))
            .map_err(|e| Error::unavailable(format!("cannot start a Python worker for agent {agent_id}: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::internal("a worker started without its pipes"));
        };
        let mut worker = Worker {
            stamp,
            redactor: Redactor::default(),
            child,
            stdin,
            stdout: BufReader::with_capacity(64 * 1024, stdout),
            loaded: HashMap::new(),
            uses: 0,
            last_used: Instant::now(),
            socket,
        };
        let ready = tokio::time::timeout(Duration::from_secs(20), worker.read_frame(64 * 1024)).await;
        match ready {
            Ok(Ok(v)) if v["t"] == "ready" => Ok(worker),
            Ok(Err(Ending::Closed)) => {
                let status = tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await;
                let how = match status {
                    Ok(Ok(s)) => describe_status(s),
                    _ => "ended".to_owned(),
                };
                Err(Error::unavailable(format!("a Python worker for agent {agent_id} {how} while starting")))
            }
            _ => Err(Error::unavailable(format!("a Python worker for agent {agent_id} did not start"))),
        }
    }

    async fn run(
        &mut self,
        inv: &Invocation<'_>,
        secrets: &dyn SecretSource,
        opts: &RuntimeOptions,
    ) -> std::result::Result<Done, Ending> {
        self.uses += 1;
        let fresh = self.loaded.get(inv.function) != Some(&inv.version);
        let msg = json!({
            "t": "invoke",
            "id": inv.id,
            "agent_id": inv.agent_id,
            "function": inv.function,
            "version": inv.version,
            "code": if fresh { Value::from(inv.code) } else { Value::Null },
            "args": inv.args,
            "conversation": inv.conversation,
            "max_output": opts.max_output_chars,
        });
        self.send(msg.to_string().as_bytes()).await?;
        if fresh {
            self.loaded.insert(inv.function.to_owned(), inv.version);
        }
        // Logs and utterances are capped by the worker; the frame limit also covers the result.
        let max_frame = opts.max_output_chars * 4 + (1 << 20);
        loop {
            let mut msg = self.read_frame(max_frame).await?;
            // Only answers to this invocation's request are read; anything else was forged.
            if msg["id"].as_str() != Some(inv.id) {
                return Err(Ending::Forged);
            }
            match msg["t"].as_str() {
                Some("done") => return Done::parse(msg),
                Some("get_secret") => {
                    let name = msg["name"].take();
                    let answer = secrets.get_secret(name.as_str()).await;
                    self.answer(inv.id, name.as_str(), answer).await?;
                }
                _ => return Err(Ending::Garbled("unknown message".into())),
            }
        }
    }

    async fn answer(&mut self, id: &str, name: Option<&str>, answer: SecretAnswer) -> std::result::Result<(), Ending> {
        let frame: Zeroizing<Vec<u8>> = match answer {
            SecretAnswer::Value(value) => {
                if let Some(name) = name {
                    self.redactor.add(name, &value);
                }
                let mut buf = Zeroizing::new(Vec::with_capacity(256));
                let doc = SecretFrame { t: "secret", id, ok: true, value: &value };
                serde_json::to_writer(&mut *buf, &doc).map_err(|e| Ending::Garbled(e.to_string()))?;
                buf
            }
            SecretAnswer::NotFound => refusal(id, "secret_not_found", ""),
            SecretAnswer::MissingAccess => refusal(id, "missing_access", ""),
            SecretAnswer::Protected(message) => refusal(id, "missing_access", &message),
            SecretAnswer::Invalid(message) => refusal(id, "invalid_input", &message),
        };
        self.send(&frame).await
    }

    /// Whether the worker has written anything, or closed its channel, while no request of
    /// its own was outstanding.
    fn wrote_out_of_turn(&self) -> bool {
        use std::os::fd::AsRawFd;
        if !self.stdout.buffer().is_empty() {
            return true;
        }
        let mut fds = libc::pollfd { fd: self.stdout.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll(2) on one valid pollfd that lives for the call, with a zero timeout.
        #[allow(unsafe_code)]
        let ready = unsafe { libc::poll(&mut fds, 1, 0) };
        ready != 0
    }

    async fn send(&mut self, body: &[u8]) -> std::result::Result<(), Ending> {
        let len = u32::try_from(body.len()).map_err(|_| Ending::TooLarge(body.len()))?;
        let mut frame = Zeroizing::new(Vec::with_capacity(body.len() + 4));
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(body);
        self.stdin.write_all(&frame).await.map_err(|_| Ending::Closed)?;
        self.stdin.flush().await.map_err(|_| Ending::Closed)
    }

    async fn read_frame(&mut self, max: usize) -> std::result::Result<Value, Ending> {
        let mut head = [0u8; 4];
        self.stdout.read_exact(&mut head).await.map_err(|_| Ending::Closed)?;
        let len = u32::from_be_bytes(head) as usize;
        if len > max {
            return Err(Ending::TooLarge(len));
        }
        let mut body = Zeroizing::new(vec![0u8; len]);
        self.stdout.read_exact(&mut body).await.map_err(|_| Ending::Closed)?;
        serde_json::from_slice(&body).map_err(|e| Ending::Garbled(format!("invalid JSON: {e}")))
    }
}

#[derive(Serialize)]
struct SecretFrame<'a> {
    t: &'static str,
    id: &'a str,
    ok: bool,
    value: &'a SecretValue,
}

fn refusal(id: &str, code: &str, message: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        json!({"t": "secret", "id": id, "ok": false, "error": code, "message": message}).to_string().into_bytes(),
    )
}
