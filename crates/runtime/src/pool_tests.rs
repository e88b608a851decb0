//! The runtime against real Python workers (sandboxed when bubblewrap works here).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

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
        agent_id: agent,
        function: name,
        version,
        code,
        args: args.as_object().cloned().unwrap_or_default(),
        conversation: json!({"id": "conv_1", "env": "sandbox", "state": state}),
        timeout: Some(std::time::Duration::from_secs(3)),
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
