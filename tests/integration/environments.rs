//! Environments: a secret's own value per environment (sandbox, pre-release, live) read by
//! `get_secret` and by the read path with per-environment API keys; functions deployed to
//! pre-release and live (members to pre-release, admins to live), rollback, `not_deployed`; and
//! protected secrets, whose values reach only versions an admin deployed.

use serde_json::{Value, json};

use crate::support::{Options, Server, define, invoke, with_admin};

/// Returns which value it read, by its length: the values differ in length, and a length is not
/// redacted.
const LEN: &str = "def peek(conv):\n    return {'len': len(conv.utils.get_secret('stripe_api_key'))}\n";

const DEFAULT: &str = "sk_default_123";
const SANDBOX: &str = "sk_test_1";
const LIVE: &str = "sk_live_the_real_one_42";

fn functions_path(ws: &str, agent: &str) -> String {
    format!("/api/v1/workspaces/{ws}/agents/{agent}/functions")
}

fn deploy(s: &Server, token: &str, ws: &str, agent: &str, name: &str, env: &str, version: u32) -> crate::support::Resp {
    let path = format!("{}/{name}/deploy", functions_path(ws, agent));
    s.request("POST", &path, Some(token), Some(&json!({"env": env, "version": version})))
}

fn run(s: &Server, token: Option<&str>, ws: &str, agent: &str, name: &str, env: &str) -> Value {
    let body = json!({"args": {}, "conversation": {"env": env}});
    invoke(s, token, ws, agent, name, body).expect(200).clone()
}

fn secret_with_values(s: &Server, ws: &str, agent: &str, protected: bool) {
    let body = json!({
        "name": "stripe_api_key",
        "value": DEFAULT,
        "values": {"sandbox": SANDBOX, "live": LIVE},
        "agents": [agent],
        "protected": protected,
    });
    let created = s.post(&format!("/api/v1/workspaces/{ws}/secrets"), body).expect(201).clone();
    let envs: Vec<&str> =
        created["environments"].as_array().unwrap().iter().map(|e| e["env"].as_str().unwrap()).collect();
    assert_eq!(envs, ["sandbox", "live"], "{created}");
    assert_eq!(created["protected"], protected);
}

#[test]
fn get_secret_returns_the_value_of_the_conversations_environment() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    secret_with_values(&s, &ws, &agent, false);
    define(&s, &ws, &agent, "peek", json!([]), LEN);
    deploy(&s, &s.admin, &ws, &agent, "peek", "pre-release", 1).expect(200);
    deploy(&s, &s.admin, &ws, &agent, "peek", "live", 1).expect(200);

    for (env, value) in [("sandbox", SANDBOX), ("pre-release", DEFAULT), ("live", LIVE)] {
        let out = run(&s, None, &ws, &agent, "peek", env);
        assert_eq!(out["result"]["len"], value.len(), "{env}: {out}");
    }
    // Each read records the environment, which value it read, and the function version.
    let reads = s.audit(&ws, "action=secret.read");
    let details: Vec<&str> = reads.iter().map(|r| r["detail"].as_str().unwrap()).collect();
    for expected in ["env=sandbox value=sandbox", "env=pre-release value=default", "env=live value=live"] {
        assert!(
            details.iter().any(|d| d.contains(expected) && d.contains("function_version=1")),
            "{expected} in {details:?}"
        );
    }

    // A changed live value is read by the next live invocation; removing it falls back to the default.
    let path = format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key");
    let changed = s.patch(&path, json!({"values": {"live": "sk_live_2"}})).expect(200).clone();
    assert_eq!(changed["version"], 1, "the default value is untouched");
    assert_eq!(
        changed["environments"][1],
        json!({"env": "live", "type": "single", "version": 2, "updated_at": changed["environments"][1]["updated_at"]})
    );
    assert_eq!(run(&s, None, &ws, &agent, "peek", "live")["result"]["len"], "sk_live_2".len());
    let removed = s.patch(&path, json!({"values": {"live": null}})).expect(200).clone();
    let envs: Vec<&str> =
        removed["environments"].as_array().unwrap().iter().map(|e| e["env"].as_str().unwrap()).collect();
    assert_eq!(envs, ["sandbox"]);
    assert_eq!(run(&s, None, &ws, &agent, "peek", "live")["result"]["len"], DEFAULT.len());
    s.patch(&path, json!({"values": {"live": null}})).expect_error(400, "invalid_input");
    // The live value's versions stay after its removal, numbered apart from the default's.
    let live_versions = s.get(&format!("{path}/versions?env=live")).expect(200).clone();
    let numbers: Vec<u64> =
        live_versions["items"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(s.get(&format!("{path}/versions")).expect(200)["items"].as_array().unwrap().len(), 1);
    s.get(&format!("{path}/versions?env=prod")).expect_error(400, "invalid_input");

    // An admin reveals each environment's own value.
    let reveal = s.post(&format!("{path}/reveal?env=sandbox"), json!({})).expect(200).clone();
    assert_eq!((reveal["value"].clone(), reveal["env"].clone()), (json!(SANDBOX), json!("sandbox")));
    s.post(&format!("{path}/reveal?env=live"), json!({})).expect_error(404, "env_value_not_found");
    assert_eq!(s.post(&format!("{path}/reveal"), json!({})).expect(200)["value"], DEFAULT);
}

#[test]
fn the_read_path_returns_the_value_of_the_keys_environment() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    secret_with_values(&s, &ws, &agent, false);
    let key = |env: &str| {
        let body = json!({"name": format!("{env} key"), "agents": "all", "env": env});
        let r = s.post(&format!("/api/v1/workspaces/{ws}/api-keys"), body);
        let b = r.expect(201);
        assert_eq!(b["env"], env);
        b["token"].as_str().unwrap().to_owned()
    };
    let (sandbox, pre, live, all) = (key("sandbox"), key("pre-release"), key("live"), key("all"));
    let read = |token: &str, query: &str| {
        let path = format!("/api/v1/agents/{agent}/secrets/stripe_api_key{query}");
        s.request("GET", &path, Some(token), None)
    };
    assert_eq!(read(&sandbox, "").expect(200)["value"], SANDBOX);
    assert_eq!(read(&pre, "").expect(200)["value"], DEFAULT, "no pre-release value: the default");
    assert_eq!(read(&live, "").expect(200)["value"], LIVE);
    assert_eq!(read(&live, "?env=live").expect(200)["value"], LIVE);
    // A key for every environment reads the default, or the environment it names.
    assert_eq!(read(&all, "").expect(200)["value"], DEFAULT);
    assert_eq!(read(&all, "?env=live").expect(200)["value"], LIVE);
    assert_eq!(read(&all, "?env=sandbox").expect(200)["value"], SANDBOX);
    read(&all, "?env=prod").expect_error(400, "invalid_input");
    // A sandbox key never reads a live value.
    let r = read(&sandbox, "?env=live");
    r.expect_error(403, "wrong_environment");
    assert!(!r.text.contains(LIVE));
    let (_, old) = s.create_key(&ws, json!("all"));
    assert_eq!(read(&old, "").expect(200)["value"], DEFAULT, "a key made without env reads as before");

    let details: Vec<String> = s
        .audit(&ws, "action=secret.read&outcome=success")
        .iter()
        .map(|r| r["detail"].as_str().unwrap().to_owned())
        .collect();
    assert!(details.iter().any(|d| d == "version=1 env=live value=live"), "{details:?}");
    assert!(details.iter().any(|d| d == "version=1 env=none value=default"), "{details:?}");
}

#[test]
fn deploys_choose_what_pre_release_and_live_run_and_an_older_version_rolls_back() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    define(&s, &ws, &agent, "answer", json!([]), "def answer(conv):\n    return 'v1'\n");
    let base = format!("{}/answer", functions_path(&ws, &agent));

    // Nothing is deployed yet: pre-release and live refuse, sandbox runs the saved version.
    let body = json!({"args": {}, "conversation": {"env": "live"}});
    let r = invoke(&s, None, &ws, &agent, "answer", body);
    r.expect_error(409, "not_deployed");
    assert!(r.text.contains("deploy"), "{}", r.text);
    assert_eq!(run(&s, None, &ws, &agent, "answer", "sandbox")["result"], "v1");

    deploy(&s, &s.admin, &ws, &agent, "answer", "live", 1).expect(200);
    let v2 = json!({"description": "test function", "parameters": [], "code": "def answer(conv):\n    return 'v2'\n"});
    s.put(&base, v2).expect(200);
    assert_eq!(run(&s, None, &ws, &agent, "answer", "sandbox")["result"], "v2", "sandbox runs the latest");
    assert_eq!(run(&s, None, &ws, &agent, "answer", "live")["result"], "v1", "live runs what was deployed");

    let deployed = deploy(&s, &s.admin, &ws, &agent, "answer", "live", 2).expect(200).clone();
    assert_eq!(deployed["environments"]["live"]["version"], 2);
    assert_eq!(run(&s, None, &ws, &agent, "answer", "live")["result"], "v2");
    // Rollback: deploy the older version.
    deploy(&s, &s.admin, &ws, &agent, "answer", "live", 1).expect(200);
    assert_eq!(run(&s, None, &ws, &agent, "answer", "live")["result"], "v1");

    let f = s.get(&base).expect(200).clone();
    assert_eq!(f["environments"]["sandbox"]["version"], 2);
    assert_eq!(f["environments"]["live"]["version"], 1);
    assert_eq!(f["environments"]["live"]["by_admin"], true);
    assert!(f["environments"].get("pre-release").is_none(), "{f}");
    let versions = s.get(&format!("{base}/versions")).expect(200).clone();
    let listed: Vec<(u64, &str)> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["code"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(2, "def answer(conv):\n    return 'v2'\n"), (1, "def answer(conv):\n    return 'v1'\n")]);
    assert!(versions["items"][0]["created_by"].as_str().unwrap().starts_with("usr_"));

    deploy(&s, &s.admin, &ws, &agent, "answer", "live", 9).expect_error(404, "version_not_found");
    deploy(&s, &s.admin, &ws, &agent, "answer", "sandbox", 1).expect_error(400, "invalid_input");
    deploy(&s, &s.admin, &ws, &agent, "nope", "live", 1).expect_error(404, "function_not_found");
    let records = s.audit(&ws, "action=function.deploy");
    let details: Vec<&str> = records.iter().map(|r| r["detail"].as_str().unwrap()).collect();
    assert_eq!(
        details,
        [
            "name=answer env=live version=1 previous=2 rollback",
            "name=answer env=live version=2 previous=1",
            "name=answer env=live version=1"
        ],
        "newest first"
    );
    assert!(records.iter().all(|r| r["actor"]["type"] == "user"), "{records:?}");
}

#[test]
fn members_cannot_deploy_to_live_nor_reach_protected_values() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    let member = s.personal_token("grace@example.com", "cobol compiler 1959");
    let agent = s.create_agent(&ws, "Booking bot");
    s.post(
        &format!("/api/v1/workspaces/{ws}/secrets"),
        json!({"name": "stripe_api_key", "value": LIVE, "agents": [agent], "protected": true}),
    )
    .expect(201);
    // Reversed, so that redaction of the value itself cannot hide it: only the policy can.
    let steal = "def steal(conv):\n    return conv.utils.get_secret('stripe_api_key')[::-1]\n";
    let path = functions_path(&ws, &agent);
    let body = json!({"name": "steal", "description": "d", "parameters": [], "code": steal});
    s.request("POST", &path, Some(&member), Some(&body)).expect(201);

    // In sandbox the protected value is never handed over; the message says why and what to do.
    let out = run(&s, Some(&member), &ws, &agent, "steal", "sandbox");
    assert_eq!(out["error"]["type"], "MissingAccess", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("protected") && message.contains("sandbox value"), "{message}");
    assert!(!out.to_string().contains(&LIVE.chars().rev().collect::<String>()));

    // A member cannot deploy to live; to pre-release they can, and that version gets no protected value.
    let r = deploy(&s, &member, &ws, &agent, "steal", "live", 1);
    r.expect_error(403, "forbidden");
    assert!(r.text.contains("admin"), "{}", r.text);
    deploy(&s, &member, &ws, &agent, "steal", "pre-release", 1).expect(200);
    let out = run(&s, Some(&member), &ws, &agent, "steal", "pre-release");
    assert_eq!(out["error"]["type"], "MissingAccess", "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("deployed by a member"), "{out}");
    invoke(&s, Some(&member), &ws, &agent, "steal", json!({"args": {}, "conversation": {"env": "live"}}))
        .expect_error(409, "not_deployed");

    // An admin deploys a reviewed version to live: it reads the value.
    let reviewed = json!({"description": "d", "parameters": [], "code": "def steal(conv):\n    return str(len(conv.utils.get_secret('stripe_api_key')))\n"});
    s.put(&format!("{path}/steal"), reviewed).expect(200);
    deploy(&s, &s.admin, &ws, &agent, "steal", "live", 2).expect(200);
    let out = run(&s, Some(&member), &ws, &agent, "steal", "live");
    assert_eq!(out["result"], json!(LIVE.len().to_string()), "{out}");

    // The member saves their own code again: sandbox runs it (without the value), live does not.
    s.request(
        "PUT",
        &format!("{path}/steal"),
        Some(&member),
        Some(&json!({"description": "d", "parameters": [], "code": steal})),
    )
    .expect(200);
    assert_eq!(run(&s, Some(&member), &ws, &agent, "steal", "sandbox")["error"]["type"], "MissingAccess");
    let live = run(&s, Some(&member), &ws, &agent, "steal", "live");
    assert_eq!(live["result"], json!(LIVE.len().to_string()), "live still runs the admin's version: {live}");

    // With a sandbox value of its own, sandbox code gets that (and only that).
    let secret = format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key");
    s.patch(&secret, json!({"values": {"sandbox": "sk_test_abc"}})).expect(200);
    assert_eq!(run(&s, Some(&member), &ws, &agent, "steal", "sandbox")["result"], "cba_tset_ks");
    // Only admins switch the flag (secrets are admins' business).
    let r = s.request("PATCH", &secret, Some(&member), Some(&json!({"protected": false})));
    r.expect_error(403, "forbidden");
    let denied = s.audit(&ws, "action=secret.read&outcome=denied");
    assert!(denied.len() >= 3, "{denied:?}");
}
