//! Agents' Python functions over the API: definitions checked by the host's Python.

use serde_json::json;

use crate::support::Server;

const CODE: &str = "import json\n\n\ndef create_payment(conv: Conversation, amount: int, currency='usd'):\n    stripe = conv.utils.get_secret('stripe_api_key')\n    return json.dumps({'amount': amount})\n";

#[test]
fn functions_are_checked_before_they_are_stored() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    let base = format!("/api/v1/workspaces/{ws}/agents/{agent}/functions");
    let param = json!({"name": "amount", "description": "in cents", "type": "integer"});
    let body = |name: &str, code: &str, params: serde_json::Value| json!({"name": name, "description": "Charge the caller", "parameters": params, "code": code});

    let created = s.post(&base, body("create_payment", CODE, json!([param])));
    let c = created.expect(201).clone();
    assert_eq!((c["version"].clone(), c["parameters"][0]["type"].clone()), (json!(1), json!("integer")));
    assert!(c["id"].as_str().unwrap().starts_with("fn_"));
    s.post(&base, body("create_payment", CODE, json!([param]))).expect_error(409, "function_exists");

    let cases = [
        (
            body("create_payment2", "def create_payment2(conv):\n    return (\n", json!([])),
            422,
            "invalid_code",
            "line 2",
        ),
        (body("other", CODE, json!([param])), 422, "invalid_code", "does not define a function named other"),
        (
            body("create_payment", "def create_payment(amount, conv):\n    pass\n", json!([param])),
            422,
            "invalid_code",
            "first parameter",
        ),
        (
            body("refund", "def refund(conv):\n    pass\n", json!([param])),
            422,
            "invalid_code",
            "amount is not a parameter",
        ),
        (
            body("refund", "def refund(conv):\n    pass\n", json!([{"name": "amount", "type": "money"}])),
            400,
            "invalid_input",
            "string, number, integer or boolean",
        ),
        (
            body("refund", "def refund(conv):\n    pass\n", json!([{"name": "conv", "type": "string"}])),
            400,
            "invalid_input",
            "conversation",
        ),
        (body("class", "def f(conv):\n    pass\n", json!([])), 400, "invalid_input", "keyword"),
        (
            body("has-dash", "def f(conv):\n    pass\n", json!([])),
            400,
            "invalid_input",
            "letters, digits and underscores",
        ),
        (
            json!({"name": "refund", "description": " ", "code": "def refund(conv):\n    pass\n"}),
            400,
            "invalid_input",
            "describe when",
        ),
        (
            // PostgreSQL's text cannot hold a NUL: both backends refuse it with 400, not 500.
            json!({"name": "refund", "description": "refund\u{0}", "code": "def refund(conv):\n    pass\n"}),
            400,
            "invalid_input",
            "control characters",
        ),
        (
            json!({"name": "refund", "description": "d", "code": "def refund(conv):\n    pass\n", "timeout_ms": 5}),
            400,
            "invalid_input",
            "timeout_ms",
        ),
    ];
    for (b, status, code, message) in cases {
        let r = s.post(&base, b.clone());
        assert_eq!((r.status, r.code()), (status, code), "{b}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(message), "{b}: {}", r.text);
    }
    assert_eq!(s.get(&base).expect(200)["items"].as_array().unwrap().len(), 1, "refused functions are not stored");

    // A new definition is a new version; a bad one changes nothing.
    let one = format!("{base}/create_payment");
    let replaced =
        s.put(&one, json!({"description": "Charge", "parameters": [param], "code": CODE.replace("json.dumps", "str")}));
    assert_eq!(replaced.expect(200)["version"], 2);
    s.put(&one, json!({"description": "Charge", "code": "def create_payment(conv:\n"}))
        .expect_error(422, "invalid_code");
    let got = s.get(&one);
    assert_eq!(got.expect(200)["version"], 2);
    assert!(got.body["code"].as_str().unwrap().contains("str({"));

    // Other agents and workspaces do not see it.
    let other = s.create_agent(&ws, "Other bot");
    s.get(&format!("/api/v1/workspaces/{ws}/agents/{other}/functions/create_payment"))
        .expect_error(404, "function_not_found");
    let ws2 = s.post("/api/v1/workspaces", json!({"name": "second"})).expect(201)["id"].as_str().unwrap().to_owned();
    s.get(&format!("/api/v1/workspaces/{ws2}/agents/{agent}/functions")).expect_error(404, "agent_not_found");

    s.delete(&one).expect(204);
    s.get(&one).expect_error(404, "function_not_found");
    let actions: Vec<_> = s.audit(&ws, "").iter().map(|r| r["action"].as_str().unwrap().to_owned()).collect();
    for a in ["function.create", "function.update", "function.delete"] {
        assert!(actions.contains(&a.to_owned()), "{a}");
    }
}

#[test]
fn a_secret_lists_the_functions_that_name_it_and_each_agents_last_read() {
    let s = Server::start();
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    let support = s.create_agent(&ws, "Support bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_USAGE"), &[&billing]);
    let base = |agent: &str| format!("/api/v1/workspaces/{ws}/agents/{agent}/functions");
    let usage_path = format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key/usage");

    // Nobody names it yet.
    let usage = s.get(&usage_path).expect(200).clone();
    assert_eq!(usage["functions"], json!([]));
    assert_eq!(
        usage["agents"],
        json!([{"agent_id": billing, "agent_name": "Billing bot", "has_access": true, "last_read_at": null}])
    );

    // The function's answer lists the calls it found; the usage lists it, with the access of its
    // agent. Support bot names the secret without access.
    let f = s.post(
        &base(&billing),
        json!({"name": "create_payment", "description": "Charge", "parameters": [{"name": "amount", "type": "integer"}], "code": CODE}),
    );
    assert_eq!(f.expect(201)["secret_refs"], json!([{"secret": "stripe_api_key", "line": 5}]));
    let peek = "def peek(conv):\n    return conv.utils.get_secret(\"stripe_api_key\")[:2]\n";
    s.post(&base(&support), json!({"name": "peek", "description": "Peek", "parameters": [], "code": peek})).expect(201);
    let usage = s.get(&usage_path).expect(200).clone();
    assert_eq!(
        usage["functions"],
        json!([
            {"agent_id": billing, "agent_name": "Billing bot", "function": "create_payment", "line": 5, "can_read": true},
            {"agent_id": support, "agent_name": "Support bot", "function": "peek", "line": 2, "can_read": false},
        ])
    );
    assert_eq!(usage["agents"][1]["has_access"], json!(false));

    // A run that reads the secret is the agent's last read; a denied one is not.
    let run = crate::support::invoke(&s, None, &ws, &billing, "create_payment", json!({"args": {"amount": 5}}));
    assert!(run.expect(200)["error"].is_null(), "{}", run.text);
    let denied = crate::support::invoke(&s, None, &ws, &support, "peek", json!({"args": {}}));
    assert_eq!(denied.expect(200)["error"]["type"], json!("MissingAccess"));
    let usage = s.get(&usage_path).expect(200).clone();
    let read_at = usage["agents"][0]["last_read_at"].as_str().unwrap().to_owned();
    assert!(read_at.ends_with('Z'), "{usage}");
    assert!(usage["agents"][1]["last_read_at"].is_null(), "a denied read is not a read: {usage}");

    // A new version without the call, and a deleted function, leave the list.
    let plain = "def create_payment(conv, amount):\n    return 'ok'\n";
    let replaced = s.put(
        &format!("{}/create_payment", base(&billing)),
        json!({"description": "Charge", "parameters": [{"name": "amount", "type": "integer"}], "code": plain}),
    );
    assert_eq!(replaced.expect(200)["secret_refs"], json!([]));
    s.delete(&format!("{}/peek", base(&support))).expect(204);
    assert_eq!(s.get(&usage_path).expect(200)["functions"], json!([]));
    s.get(&format!("/api/v1/workspaces/{ws}/secrets/nothing_here/usage")).expect_error(404, "secret_not_found");
}

#[test]
fn a_missing_required_argument_is_refused_before_the_code_runs() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    let base = format!("/api/v1/workspaces/{ws}/agents/{agent}/functions");
    // amount has no default; currency has one.
    let params = json!([{"name": "amount", "type": "integer"}, {"name": "currency", "type": "string"}]);
    let code =
        "def create_payment(conv, amount, currency='usd'):\n    conv.say('ran')\n    return f'{amount} {currency}'\n";
    let f =
        s.post(&base, json!({"name": "create_payment", "description": "Charge", "parameters": params, "code": code}));
    assert_eq!(f.expect(201)["required"], json!(["amount"]));

    let invoke = |args: serde_json::Value| {
        crate::support::invoke(&s, None, &ws, &agent, "create_payment", json!({"args": args}))
    };
    let r = invoke(json!({"currency": "eur"}));
    r.expect_error(400, "invalid_input");
    assert_eq!(r.body["error"]["field"], json!("args.amount"), "{}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("needs the argument amount"), "{}", r.text);
    assert!(s.audit(&ws, "action=function.invoke").is_empty(), "nothing ran");
    // The optional one may be left out.
    assert_eq!(invoke(json!({"amount": 5})).expect(200)["result"], json!("5 usd"));
}

#[test]
fn functions_saved_before_references_were_kept_are_checked_again_at_start() {
    if crate::support::backend::sqlite_only("a database written by an earlier agentvault (edited as a file)") {
        return;
    }
    let data = crate::support::DataDir::new();
    let mut s = data.start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_OLD"), &[&agent]);
    let code = "def create_payment(conv, amount):\n    return conv.utils.get_secret('stripe_api_key')[:2]\n";
    s.post(
        &format!("/api/v1/workspaces/{ws}/agents/{agent}/functions"),
        json!({"name": "create_payment", "description": "Charge", "parameters": [{"name": "amount", "type": "integer"}], "code": code}),
    )
    .expect(201);
    let deploy = format!("/api/v1/workspaces/{ws}/agents/{agent}/functions/create_payment/deploy");
    s.post(&deploy, json!({"env": "live", "version": 1})).expect(200);
    s.stop();

    // What an earlier agentvault stored: no references, no required flags (the saved version
    // that live runs included).
    let script = "import json, sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        c.execute('DELETE FROM function_secret_refs')\n\
        for fid, params in c.execute('SELECT id, parameters FROM functions').fetchall():\n\
        \x20   ps = json.loads(params)\n\
        \x20   [p.pop('required', None) for p in ps]\n\
        \x20   c.execute('UPDATE functions SET parameters = ? WHERE id = ?', (json.dumps(ps), fid))\n\
        \x20   c.execute('UPDATE function_versions SET parameters = ? WHERE function_id = ?', (json.dumps(ps), fid))\n\
        c.commit()\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(data.path.join("agentvault.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let s = data.start();
    let path = format!("/api/v1/workspaces/{ws}/agents/{agent}/functions/create_payment");
    let started = std::time::Instant::now();
    loop {
        let f = s.get(&path).expect(200).clone();
        if f["secret_refs"] == json!([{"secret": "stripe_api_key", "line": 2}]) && f["required"] == json!(["amount"]) {
            assert_eq!(f["version"], json!(1), "the definition is unchanged");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "not checked again: {f}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let usage = s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key/usage")).expect(200).clone();
    assert_eq!(usage["functions"][0]["function"], json!("create_payment"));
    let r = crate::support::invoke(&s, None, &ws, &agent, "create_payment", json!({"args": {}}));
    r.expect_error(400, "invalid_input");
    let live = json!({"args": {}, "conversation": {"env": "live"}});
    crate::support::invoke(&s, None, &ws, &agent, "create_payment", live).expect_error(400, "invalid_input");
}

#[test]
fn a_draft_runs_checked_like_a_save_and_is_never_stored() {
    let (s, _tmp) = crate::support::with_admin(crate::support::Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_DRAFT"), &[&agent]);
    crate::support::define(
        &s,
        &ws,
        &agent,
        "charge",
        json!([]),
        "def charge(conv: Conversation):\n    return 'saved'\n",
    );
    let drafts = format!("/api/v1/workspaces/{ws}/agents/{agent}/draft-runs");
    let draft = |name: &str, code: &str, params: serde_json::Value, args: serde_json::Value| {
        json!({"function": {"name": name, "description": "Charge the caller", "parameters": params, "code": code},
               "args": args, "conversation": {"env": "sandbox", "state": {"n": 1}}})
    };
    let code = "def charge(conv: Conversation, amount: int):\n    conv.state['n'] += 1\n    \
                return conv.utils.get_secret('stripe_api_key') + ' draft ' + str(amount)\n";
    let param = json!([{"name": "amount", "description": "in cents", "type": "integer"}]);

    // What the draft says runs, with the secret redacted as in any invocation.
    let out = s.post(&drafts, draft("charge", code, param.clone(), json!({"amount": 250}))).expect(200).clone();
    assert_eq!(out["run"]["result"], json!("[redacted:stripe_api_key] draft 250"), "{out}");
    assert_eq!(out["run"]["state"], json!({"n": 2}));
    assert!(out["run"]["cold"].as_bool().unwrap(), "a draft gets a worker of its own");
    assert!(!out.to_string().contains("sk_live_DRAFT"));
    let hash = {
        let o = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(code.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(o.stdout).unwrap().split(' ').next().unwrap().to_owned()
    };
    assert_eq!(out["code_sha256"], json!(hash));

    // Never stored: the saved version is unchanged and still what an invocation runs.
    let saved = s.get(&format!("/api/v1/workspaces/{ws}/agents/{agent}/functions/charge")).expect(200).clone();
    assert_eq!((saved["version"].clone(), saved["parameters"].clone()), (json!(1), json!([])));
    let invoked = crate::support::invoke(&s, None, &ws, &agent, "charge", json!({})).expect(200).clone();
    assert_eq!(invoked["result"], json!("saved"));
    // A draft of a function not saved yet runs too, and leaves no function behind.
    let new = draft("refund", "def refund(conv: Conversation):\n    return 'refunded'\n", json!([]), json!({}));
    assert_eq!(s.post(&drafts, new).expect(200)["run"]["result"], json!("refunded"));
    let listed = s.get(&format!("/api/v1/workspaces/{ws}/agents/{agent}/functions")).expect(200).clone();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // Audited as a draft run, with the code's hash; its reads say so too.
    let runs = s.audit(&ws, "action=function.invoke");
    let detail = runs[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("function=refund draft code_sha256="), "{detail}");
    let detail = runs[2]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("function=charge draft code_sha256={hash}")), "{detail}");
    let reads = s.audit(&ws, "action=secret.read");
    assert!(reads[0]["detail"].as_str().unwrap().contains(&format!("draft code_sha256={hash}")), "{reads:?}");

    // Checked like a save, before anything runs; the field names the draft's part.
    let bad = s.post(&drafts, draft("charge", "def charge(conv):\n    return (\n", json!([]), json!({})));
    bad.expect_error(422, "invalid_code");
    assert_eq!(bad.body["error"]["field"], json!("function.code"));
    let mut blank = draft("charge", code, param.clone(), json!({"amount": 1}));
    blank["function"]["description"] = json!(" ");
    let r = s.post(&drafts, blank);
    r.expect_error(400, "invalid_input");
    assert_eq!(r.body["error"]["field"], json!("function.description"));
    let r = s.post(&drafts, draft("charge", code, param.clone(), json!({})));
    r.expect_error(400, "invalid_input");
    assert_eq!(r.body["error"]["field"], json!("args.amount"), "its own parameters are checked: {}", r.text);
    s.post(&drafts, draft("Bad-Name", code, param.clone(), json!({}))).expect_error(400, "invalid_input");
    // A draft is unreviewed code: sandbox only, and a protected secret without a sandbox value
    // never reaches it.
    let mut live = draft("charge", code, param.clone(), json!({"amount": 1}));
    live["conversation"]["env"] = json!("live");
    let r = s.post(&drafts, live);
    r.expect_error(400, "invalid_input");
    assert_eq!(r.body["error"]["field"], json!("conversation.env"), "{}", r.text);
    assert!(r.text.contains("sandbox only"), "{}", r.text);
    assert_eq!(s.audit(&ws, "action=function.invoke").len(), 3, "refused drafts never ran");
    s.patch(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key"), json!({"protected": true})).expect(200);
    let out = s.post(&drafts, draft("charge", code, param.clone(), json!({"amount": 5}))).expect(200).clone();
    assert_eq!(out["run"]["error"]["type"], json!("MissingAccess"), "{out}");
    assert!(!out.to_string().contains("sk_live_DRAFT"));
    s.patch(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key"), json!({"protected": false})).expect(200);

    // The same limits: the draft's own timeout ends it.
    let mut slow =
        draft("slow", "import time\ndef slow(conv: Conversation):\n    time.sleep(5)\n", json!([]), json!({}));
    slow["function"]["timeout_ms"] = json!(300);
    let out = s.post(&drafts, slow).expect(200).clone();
    assert_eq!(out["run"]["error"]["type"], json!("Timeout"), "{out}");

    // Only those who may save functions: a member may, an API key may not (though it may invoke).
    s.add_user(&ws, "member@example.com", "member", "quiet lantern orchard 42");
    let member = s.personal_token("member@example.com", "quiet lantern orchard 42");
    let ok =
        s.request("POST", &drafts, Some(&member), Some(&draft("charge", code, param.clone(), json!({"amount": 1}))));
    assert_eq!(ok.status, 200, "{}", ok.text);
    let (_, key) = s.create_key(&ws, json!([agent]));
    let r = s.request("POST", &drafts, Some(&key), Some(&draft("charge", code, param, json!({"amount": 1}))));
    r.expect_error(403, "forbidden");
    let missing = "/draft-runs".to_owned();
    let r = s.post(&format!("/api/v1/workspaces/{ws}/agents/agt_00000000000000000000{missing}"), json!({}));
    r.expect_error(400, "invalid_input");
    let body = draft("charge", code, json!([]), json!({}));
    let r = s.post(&format!("/api/v1/workspaces/{ws}/agents/agt_00000000000000000000{missing}"), body);
    r.expect_error(404, "agent_not_found");
}
