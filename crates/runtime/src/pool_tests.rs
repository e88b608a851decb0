//! The runtime against real Python workers (sandboxed when bubblewrap works here).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agentvault_core::{ErrorKind, Result};
use serde_json::{Map, Value, json};

use super::*;

/// Two secrets: `stripe_api_key` (single) and `oauth` (pairs); `other_agents` exists without
/// access.
struct Vault {
    asked: AtomicUsize,
}

#[async_trait::async_trait]
impl SecretSource for Vault {
    async fn get_secret(&self, name: Option<&str>) -> SecretAnswer {
        self.asked.fetch_add(1, Ordering::Relaxed);
        match name {
            Some("stripe_api_key") => {
                SecretAnswer::Value(agentvault_core::SecretValue::Single("sk_live_abc123".into()))
            }
            Some("oauth") => SecretAnswer::Value(agentvault_core::SecretValue::Kv(vec![
                ("client_id".into(), "cid_42".into()),
                ("client_secret".into(), "cs_9f8e7d".into()),
            ])),
            Some("other_agents") => SecretAnswer::MissingAccess,
            Some(n) if agentvault_core::validate::secret_name(n).is_err() => SecretAnswer::Invalid("bad name".into()),
            _ => SecretAnswer::NotFound,
        }
    }
}

fn vault() -> Vault {
    Vault { asked: AtomicUsize::new(0) }
}

async fn runtime(opts: RuntimeOptions) -> Arc<Runtime> {
    let rt = Runtime::start(opts).await;
    assert!(rt.sandboxed().is_some(), "python3 is needed for these tests");
    rt
}

/// Runs `code` as function `f` of agent `agt_1`; each distinct code is its own version.
async fn run(rt: &Runtime, code: &str, args: Value, state: Value) -> Outcome {
    let version = code.bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    run_as(rt, "agt_1", "f", version, code, args, state).await
}

async fn run_as(rt: &Runtime, agent: &str, name: &str, version: u32, code: &str, args: Value, state: Value) -> Outcome {
    let inv = Invocation {
        id: "inv_test",
        workspace_id: "ws_test",
        agent_id: agent,
        function: name,
        version,
        code,
        args: args.as_object().cloned().unwrap_or_default(),
        conversation: json!({"id": "conv_1", "env": "sandbox", "state": state}),
        timeout: Some(std::time::Duration::from_secs(3)),
        generation: rt.generation(),
        own_worker: false,
    };
    rt.invoke(inv, &vault()).await.unwrap()
}

#[tokio::test]
async fn get_secret_returns_str_and_dict_and_everything_is_redacted() {
    let rt = runtime(RuntimeOptions::default()).await;
    let code = r#"
def f(conv: Conversation, amount):
    key = conv.utils.get_secret("stripe_api_key")
    pair = conv.utils.get_secret("oauth")
    assert isinstance(key, str) and isinstance(pair, dict), (type(key), type(pair))
    conv.log.info(f"using {key} for {amount}")
    print("client", pair["client_id"])
    conv.say("your key is " + key)
    conv.state.last = pair["client_secret"]
    conv.state.count = (conv.state.count or 0) + 1
    return {"content": key + "|" + str(pair), "missing": conv.state.nothing}
"#;
    let out = run(&rt, code, json!({"amount": 5}), json!({"count": 1})).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let all = format!("{} {} {:?} {:?}", out.result, out.state, out.utterances, out.logs);
    for value in ["sk_live_abc123", "cid_42", "cs_9f8e7d"] {
        assert!(!all.contains(value), "{value} leaked: {all}");
    }
    assert_eq!(out.result["content"].as_str().unwrap().split('|').next(), Some("[redacted:stripe_api_key]"));
    assert!(out.result["content"].as_str().unwrap().contains("[redacted:oauth]"));
    assert_eq!(out.result["missing"], Value::Null);
    assert_eq!(out.state["count"], 2);
    assert_eq!(out.state["last"], "[redacted:oauth]");
    assert_eq!(out.utterances, vec!["your key is [redacted:stripe_api_key]"]);
    assert_eq!(out.logs[0].content, "using [redacted:stripe_api_key] for 5");
    assert_eq!(out.logs[1].level, "stdout");
    assert_eq!(out.logs[1].content, "client [redacted:oauth]");
}

#[tokio::test]
async fn refusals_raise_the_documented_exceptions() {
    let rt = runtime(RuntimeOptions::default()).await;
    let code = r#"
from agentvault import SecretNotFound as SNF, MissingAccess as MA, InvalidInput as II
def f(conv):
    seen = []
    for name in ["nope", "other_agents", "Bad-Name", 42]:
        try:
            conv.utils.get_secret(name)
        except (SNF, MA, II) as e:
            seen.append(type(e).__name__ + ":" + str(e))
    return "\n".join(seen)
"#;
    let out = run(&rt, code, json!({}), json!({})).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let text = out.result.as_str().unwrap();
    assert!(text.contains("SecretNotFound:secret 'nope' not found"), "{text}");
    assert!(text.contains("MissingAccess:agent agt_1 has no access to secret 'other_agents'"), "{text}");
    assert!(text.contains("InvalidInput:bad name"), "{text}");
    assert!(text.contains("InvalidInput:a secret name is a str, not int"), "{text}");

    let uncaught = run(&rt, "def f(conv):\n    return conv.utils.get_secret('nope')\n", json!({}), json!({})).await;
    let err = uncaught.error.unwrap();
    assert_eq!(err.kind, "SecretNotFound");
    assert!(err.traceback.contains("f.py\", line 2, in f"), "{}", err.traceback);
    assert!(err.traceback.contains("return conv.utils.get_secret('nope')"), "{}", err.traceback);
}

#[tokio::test]
async fn errors_in_the_function_redact_the_traceback() {
    let rt = runtime(RuntimeOptions::default()).await;
    let code = "def f(conv):\n    key = conv.utils.get_secret('stripe_api_key')\n    raise ValueError('bad key ' + repr(key))\n";
    let out = run(&rt, code, json!({}), json!({})).await;
    let err = out.error.unwrap();
    assert_eq!(err.kind, "ValueError");
    assert_eq!(err.message, "bad key '[redacted:stripe_api_key]'");
    assert!(err.traceback.contains("ValueError: bad key '[redacted:stripe_api_key]'"), "{}", err.traceback);
    assert!(!err.traceback.contains("sk_live"));
}

#[tokio::test]
async fn warm_workers_are_reused_and_pick_up_new_versions() {
    let rt = runtime(RuntimeOptions::default()).await;
    let v1 = "import os\ndef f(conv):\n    return f'v1 {os.getpid()}'\n";
    let v2 = "import os\ndef f(conv):\n    return f'v2 {os.getpid()}'\n";
    let a = run_as(&rt, "agt_w", "f", 1, v1, json!({}), json!({})).await;
    let b = run_as(&rt, "agt_w", "f", 1, v1, json!({}), json!({})).await;
    let c = run_as(&rt, "agt_w", "f", 2, v2, json!({}), json!({})).await;
    assert!(a.cold && !b.cold && !c.cold);
    assert_eq!(a.result, b.result);
    let pid = a.result.as_str().unwrap().split(' ').nth(1).unwrap().to_owned();
    assert_eq!(c.result.as_str().unwrap(), format!("v2 {pid}"));
    // Another agent never gets this agent's worker.
    let d = run_as(&rt, "agt_other", "f", 1, v1, json!({}), json!({})).await;
    assert!(d.cold);
}

#[tokio::test]
async fn limits_end_invocations_with_an_error_and_the_worker_is_replaced() {
    // Inside bubblewrap (when it works here) and without it: the limits are the same.
    for sandbox in [SandboxMode::Auto, SandboxMode::Off] {
        limits_hold(sandbox).await;
    }
}

async fn limits_hold(sandbox: SandboxMode) {
    let limits = Limits { memory_bytes: 256 << 20, ..Limits::default() };
    let rt = runtime(RuntimeOptions { limits, sandbox, ..Default::default() }).await;
    // (code, error type, whether the worker must be replaced)
    let cases = [
        ("def f(conv):\n    while True:\n        pass\n", "Timeout", true),
        ("import os\ndef f(conv):\n    os._exit(7)\n", "WorkerCrashed", true),
        ("import os\ndef f(conv):\n    os.abort()\n", "WorkerCrashed", true),
        ("def f(conv):\n    x = []\n    while True:\n        x.append(' ' * 10_000_000)\n", "MemoryError", true),
        ("def f(conv):\n    return 'x' * 50_000_000\n", "OutputTooLarge", true),
        ("import sys\ndef f(conv):\n    sys.exit(3)\n", "SystemExit", true),
        // No new processes: the call fails, the worker stays usable.
        ("import os\ndef f(conv):\n    os.fork()\n", "OSError", false),
        ("import subprocess\ndef f(conv):\n    subprocess.run(['true'])\n", "OSError", false),
    ];
    for (i, (code, kind, replaced)) in cases.into_iter().enumerate() {
        let version = i as u32 + 1;
        let out = run_as(&rt, "agt_l", "f", version, code, json!({}), json!({})).await;
        let err = out.error.unwrap_or_else(|| panic!("{code}: no error"));
        assert_eq!(err.kind, kind, "{code}: {err:?}");
        assert_eq!(rt.idle_workers("agt_l"), usize::from(!replaced), "{code}: {err:?}");
        let ok = run_as(&rt, "agt_l", "g", 1, "def g(conv):\n    return 'fine'\n", json!({}), json!({})).await;
        assert_eq!(ok.result, "fine", "after {code}: {:?}", ok.error);
        assert_eq!(ok.cold, replaced, "after {code}");
        rt.forget_agent("agt_l");
    }
    // Threads still work under the filter that stops new processes.
    let code = "import threading\ndef f(conv):\n    r = []\n    t = threading.Thread(target=lambda: r.append(1))\n    t.start(); t.join()\n    return str(r)\n";
    assert_eq!(run(&rt, code, json!({}), json!({})).await.result, "[1]");
}

#[tokio::test]
async fn output_beyond_the_limit_is_cut() {
    let opts = RuntimeOptions { max_output_chars: 1000, ..Default::default() };
    let rt = runtime(opts).await;
    let code = "def f(conv):\n    for i in range(1000):\n        conv.log.info('line %d' % i)\n    return 'done'\n";
    let out = run(&rt, code, json!({}), json!({})).await;
    assert_eq!(out.result, "done");
    assert!(out.truncated);
    assert!(out.logs.len() < 200, "{}", out.logs.len());
}

#[tokio::test]
async fn the_libraries_are_importable_and_the_environment_is_empty() {
    let rt = runtime(RuntimeOptions::default()).await;
    let code = "import os, requests, urllib3, jsonschema\ndef f(conv):\n    return {k: v for k, v in os.environ.items() if k not in ('PATH', 'LANG', 'HOME', 'TMPDIR', 'PWD', 'LC_CTYPE')}\n";
    let out = run(&rt, code, json!({}), json!({})).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.result, json!({}));
}

#[tokio::test]
async fn a_slow_function_does_not_hold_up_others() {
    let rt = runtime(RuntimeOptions::default()).await;
    let slow = run_as(
        &rt,
        "agt_slow",
        "f",
        1,
        "import time\ndef f(conv):\n    time.sleep(2)\n    return 'slow'\n",
        json!({}),
        json!({}),
    );
    let quick = async {
        let out = run_as(&rt, "agt_quick", "f", 1, "def f(conv):\n    return 'quick'\n", json!({}), json!({})).await;
        (out, std::time::Instant::now())
    };
    let started = std::time::Instant::now();
    let (slow, (quick, quick_done)) = tokio::join!(slow, quick);
    assert_eq!(slow.result, "slow");
    assert_eq!(quick.result, "quick");
    // Ordering, not speed: the quick one finished while the slow one was still sleeping.
    assert!(quick_done.duration_since(started) < slow.duration, "the quick function waited for the slow one");
}

async fn invoke_in(rt: &Runtime, ws: &str, agent: &str, id: &str, code: &str, secrets: &Vault) -> Result<Outcome> {
    let inv = Invocation {
        id,
        workspace_id: ws,
        agent_id: agent,
        function: "f",
        version: code.bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619)),
        code,
        args: Map::new(),
        conversation: json!({"id": "conv_1", "env": "sandbox", "state": {}}),
        timeout: Some(std::time::Duration::from_secs(10)),
        generation: rt.generation(),
        own_worker: false,
    };
    rt.invoke(inv, secrets).await
}

#[tokio::test]
async fn a_warm_worker_redacts_values_read_by_earlier_invocations() {
    let rt = runtime(RuntimeOptions::default()).await;
    // The value is kept in a module-level variable and in builtins, and given back later
    // without being read again, by the same function and by another one.
    let keep = r#"
import builtins
kept = None
def f(conv, read=False):
    global kept
    if read:
        kept = conv.utils.get_secret("stripe_api_key")
        builtins.stash = [kept, repr(kept), kept.encode()]
    return f"kept {kept}"
"#;
    let first = run_as(&rt, "agt_k", "f", 1, keep, json!({"read": true}), json!({})).await;
    assert_eq!(first.result, "kept [redacted:stripe_api_key]");
    let vault = vault();
    let inv = Invocation {
        id: "inv_2",
        workspace_id: "ws_test",
        agent_id: "agt_k",
        function: "f",
        version: 1,
        code: keep,
        args: Map::new(),
        conversation: json!({"id": "conv_1", "env": "sandbox", "state": {}}),
        timeout: Some(std::time::Duration::from_secs(3)),
        generation: rt.generation(),
        own_worker: false,
    };
    let second = rt.invoke(inv, &vault).await.unwrap();
    assert!(!second.cold);
    assert_eq!(vault.asked.load(Ordering::Relaxed), 0, "the second call read nothing");
    assert_eq!(second.result, "kept [redacted:stripe_api_key]");
    let other =
        "import builtins\ndef g(conv):\n    conv.log.info(str(builtins.stash))\n    return str(builtins.stash)\n";
    let third = run_as(&rt, "agt_k", "g", 1, other, json!({}), json!({})).await;
    assert!(!third.cold);
    let all = format!("{:?} {:?}", third.result, third.logs);
    assert!(!all.contains("sk_live_abc123"), "{all}");
    assert_eq!(
        third.result,
        "['[redacted:stripe_api_key]', \"'[redacted:stripe_api_key]'\", b'[redacted:stripe_api_key]']"
    );
}

#[tokio::test]
async fn the_error_type_and_the_log_level_are_redacted_too() {
    let rt = runtime(RuntimeOptions::default()).await;
    let code = r#"
def f(conv):
    key = conv.utils.get_secret("stripe_api_key")
    conv.log._add(key, "level", False)
    raise type(key, (Exception,), {})("boom")
"#;
    let out = run(&rt, code, json!({}), json!({})).await;
    let err = out.error.unwrap();
    assert_eq!(err.kind, "[redacted:stripe_api_key]");
    assert_eq!(out.logs[0].level, "[redacted:stripe_api_key]");
    assert!(!format!("{err:?} {:?}", out.logs).contains("sk_live"));
}

#[tokio::test]
async fn agents_and_workspaces_past_their_share_are_refused_at_once() {
    let opts = RuntimeOptions { max_running: 3, max_per_workspace: 2, max_per_agent: 1, ..Default::default() };
    let rt = runtime(opts).await;
    let sleep = "import time\ndef f(conv):\n    time.sleep(2)\n    return 'slept'\n";
    let quick = "def f(conv):\n    return 'quick'\n";
    let (v1, v2, v3, v4) = (vault(), vault(), vault(), vault());
    let sleepers = async {
        tokio::join!(
            invoke_in(&rt, "ws_a", "agt_a1", "inv_1", sleep, &v1),
            invoke_in(&rt, "ws_a", "agt_a2", "inv_2", sleep, &v2)
        )
    };
    let probes = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let agent = invoke_in(&rt, "ws_a", "agt_a1", "inv_3", quick, &v3).await.unwrap_err();
        let workspace = invoke_in(&rt, "ws_a", "agt_a3", "inv_4", quick, &v3).await.unwrap_err();
        let refused_in = started.elapsed();
        let other = invoke_in(&rt, "ws_b", "agt_b1", "inv_5", quick, &v4).await.unwrap();
        (agent, workspace, refused_in, other, std::time::Instant::now())
    };
    let ((s1, s2), (agent, workspace, refused_in, other, other_done)) = tokio::join!(sleepers, probes);
    let sleepers_done = std::time::Instant::now();
    assert_eq!(s1.unwrap().result, "slept");
    assert_eq!(s2.unwrap().result, "slept");
    assert_eq!((agent.kind, agent.code.as_ref()), (ErrorKind::RateLimited, "too_many_invocations"));
    assert!(agent.message.contains("--function-max-per-agent"), "{}", agent.message);
    assert_eq!(workspace.code, "too_many_invocations");
    assert!(workspace.message.contains("--function-max-per-workspace"), "{}", workspace.message);
    assert!(refused_in < std::time::Duration::from_millis(500), "refusing took {refused_in:?}");
    assert_eq!(other.result, "quick");
    assert!(other_done < sleepers_done);
    // The shares are given back: the agent may run again.
    assert_eq!(invoke_in(&rt, "ws_a", "agt_a1", "inv_6", quick, &v3).await.unwrap().result, "quick");
}

#[tokio::test]
async fn a_worker_running_when_its_agent_is_forgotten_is_not_reused() {
    let rt = runtime(RuntimeOptions::default()).await;
    let slow = "import time\ndef f(conv):\n    time.sleep(1)\n    return 'done'\n";
    let (out, ()) = tokio::join!(run_as(&rt, "agt_f", "f", 1, slow, json!({}), json!({})), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        rt.forget_agent("agt_f");
    });
    assert_eq!(out.result, "done");
    assert_eq!(rt.idle_workers("agt_f"), 0);
    // Workers started after it are kept as usual.
    run_as(&rt, "agt_f", "f", 1, slow, json!({}), json!({})).await;
    assert_eq!(rt.idle_workers("agt_f"), 1);
}

/// A function writes frames of its own onto the worker's channel: a fake answer, and a
/// get_secret for another invocation id.
#[tokio::test]
async fn a_forged_frame_stops_the_worker_and_is_not_used() {
    let rt = runtime(RuntimeOptions::default()).await;
    let forge = |frame: &str| {
        format!(
            "import __main__, os, struct\ndef f(conv):\n    body = {frame:?}.encode()\n    os.write(__main__._OUT, struct.pack('>I', len(body)) + body)\n    return 'real'\n"
        )
    };
    let frames = [
        r#"{"t": "done", "id": "inv_forged", "result": "forged", "state": {}, "utterances": [], "logs": [], "error": null}"#,
        r#"{"t": "get_secret", "id": "inv_made_up", "name": "stripe_api_key"}"#,
        r#"{"t": "done", "result": "forged", "state": {}, "utterances": [], "logs": [], "error": null}"#,
    ];
    for frame in frames {
        let vault = vault();
        let code = forge(frame);
        let out = invoke_in(&rt, "ws_test", "agt_forge", "inv_real", &code, &vault).await.unwrap();
        let err = out.error.unwrap_or_else(|| panic!("{frame}: no error, result {}", out.result));
        assert_eq!(err.kind, "WorkerCrashed", "{frame}");
        assert!(err.message.contains("private channel"), "{}", err.message);
        assert_eq!(out.result, Value::Null);
        assert_eq!(vault.asked.load(Ordering::Relaxed), 0, "a forged get_secret was answered");
        assert_eq!(rt.idle_workers("agt_forge"), 0, "{frame}");
    }
}

/// Something a function left running writes a frame while the worker is idle: the next
/// invocation gets a fresh worker and its own answer.
#[tokio::test]
async fn a_frame_written_out_of_turn_retires_the_worker() {
    let rt = runtime(RuntimeOptions::default()).await;
    let code = r#"
import __main__, os, struct, threading, time
def f(conv):
    def later():
        time.sleep(0.3)
        body = b'{"t": "done", "id": "inv_next", "result": "forged", "state": {}, "utterances": [], "logs": [], "error": null}'
        os.write(__main__._OUT, struct.pack(">I", len(body)) + body)
    threading.Thread(target=later).start()
    return "planted"
"#;
    let vault = vault();
    let planted = invoke_in(&rt, "ws_test", "agt_late", "inv_first", code, &vault).await.unwrap();
    assert_eq!(planted.result, "planted");
    assert_eq!(rt.idle_workers("agt_late"), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let next =
        invoke_in(&rt, "ws_test", "agt_late", "inv_next", "def f(conv):\n    return 'mine'\n", &vault).await.unwrap();
    assert_eq!(next.result, "mine");
    assert!(next.cold, "the worker that wrote out of turn was reused");
}

#[tokio::test]
async fn a_sandboxed_worker_has_no_network_of_its_own() {
    let rt = runtime(RuntimeOptions::default()).await;
    if rt.sandboxed() != Some(true) {
        return; // only bubblewrap gives a worker a network namespace
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = "import os, socket\ndef f(conv, port):\n    try:\n        socket.create_connection(('127.0.0.1', port), timeout=2)\n        reached = 'connected'\n    except OSError as e:\n        reached = type(e).__name__\n    return {'reached': reached, 'proxy': os.environ.get('HTTP_PROXY')}\n";
    let out = run(&rt, code, json!({"port": port}), json!({})).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.result, json!({"reached": "ConnectionRefusedError", "proxy": null}));
}

/// An egress handler that answers every request with the identity of the socket it came in on.
struct Echo;

#[async_trait::async_trait]
impl EgressHandler for Echo {
    async fn serve(&self, mut conn: tokio::net::TcpStream, worker: Arc<WorkerIdentity>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let Ok(n) = conn.read(&mut buf).await else { return };
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let inv = worker.current();
        let body = format!(
            "{} {} {}",
            worker.agent_id,
            inv.as_ref().map_or("-", |i| i.invocation_id.as_str()),
            String::from_utf8_lossy(&head).lines().next().unwrap_or_default()
        );
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        let _ = conn.write_all(resp.as_bytes()).await;
    }
}

#[tokio::test]
async fn the_proxy_knows_each_worker_by_its_socket() {
    let rt = runtime(RuntimeOptions::default()).await;
    rt.set_egress(Arc::new(Echo), None).unwrap();
    let code = "import urllib.request\ndef f(conv):\n    return urllib.request.urlopen('http://api.example.com/x?y=1', timeout=5).read().decode()\n";
    for agent in ["agt_one", "agt_two"] {
        let out = run_as(&rt, agent, "f", 1, code, json!({}), json!({})).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.result, format!("{agent} inv_test GET http://api.example.com/x?y=1 HTTP/1.1"));
    }
}

/// A draft runs in a worker of its own: never a warm one, never kept, so nothing it leaves
/// behind reaches the agent's saved functions.
#[tokio::test]
async fn a_draft_runs_in_a_worker_of_its_own() {
    let rt = runtime(RuntimeOptions::default()).await;
    let saved = "import builtins\ndef f(conv: Conversation):\n    return str(hasattr(builtins, 'draft_mark'))\n";
    let first = run(&rt, saved, json!({}), json!({})).await;
    assert_eq!((first.result.clone(), first.cold), (json!("False"), true), "{:?}", first.error);
    let draft = "import builtins\nbuiltins.draft_mark = 1\ndef f(conv: Conversation):\n    return 'draft'\n";
    for _ in 0..2 {
        let inv = Invocation {
            id: "inv_draft",
            workspace_id: "ws_test",
            agent_id: "agt_1",
            function: "f",
            version: 0,
            code: draft,
            args: Map::new(),
            conversation: json!({"id": "conv_1", "env": "sandbox", "state": {}}),
            timeout: Some(std::time::Duration::from_secs(3)),
            generation: rt.generation(),
            own_worker: true,
        };
        let out = rt.invoke(inv, &vault()).await.unwrap();
        assert_eq!((out.result, out.cold), (json!("draft"), true), "a new worker each time");
    }
    let after = run(&rt, saved, json!({}), json!({})).await;
    assert_eq!((after.result, after.cold), (json!("False"), false), "the saved function's warm worker, untouched");
}
