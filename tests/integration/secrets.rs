//! Secrets over the management API: lifecycle, key/value values, validation.

use serde_json::{Value, json};

use crate::support::Server;

#[test]
fn a_secret_goes_through_its_whole_life() {
    let s = Server::start();
    let ws = s.default_ws();
    let a1 = s.create_agent(&ws, "Support bot");
    let a2 = s.create_agent(&ws, "Billing bot");
    let base = format!("/api/v1/workspaces/{ws}/secrets");

    let created = s.post(
        &base,
        json!({"name": "stripe_api_key", "description": "Stripe live key", "value": "sk_live_AAA111", "agents": [a1]}),
    );
    let c = created.expect(201);
    assert_eq!(c["name"], "stripe_api_key");
    assert_eq!(c["type"], "single");
    assert_eq!(c["version"], 1);
    assert_eq!(c["agents"], json!([a1]));
    assert!(c["id"].as_str().unwrap().starts_with("sec_"));
    assert!(!created.text.contains("sk_live_AAA111"), "responses carry no value");

    let list = s.get(&base);
    assert_eq!(list.expect(200)["items"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains("sk_live_AAA111"), "the list carries no value");
    let meta = s.get(&format!("{base}/stripe_api_key"));
    assert_eq!(meta.expect(200)["description"], "Stripe live key");
    assert!(!meta.text.contains("sk_live_AAA111"));

    // A new value is a new version; the description alone is not.
    let up = s.patch(&format!("{base}/stripe_api_key"), json!({"value": "sk_live_BBB222"}));
    assert_eq!(up.expect(200)["version"], 2);
    let up = s.patch(&format!("{base}/stripe_api_key"), json!({"description": "rotated"}));
    assert_eq!(up.expect(200)["version"], 2);
    assert_eq!(up.body["description"], "rotated");
    let versions = s.get(&format!("{base}/stripe_api_key/versions"));
    let v: Vec<_> = versions.expect(200)["items"].as_array().unwrap().iter().map(|v| v["version"].clone()).collect();
    assert_eq!(v, vec![json!(2), json!(1)]);
    assert!(!versions.text.contains("sk_live"));

    let revealed = s.post(&format!("{base}/stripe_api_key/reveal"), json!({}));
    assert_eq!(revealed.expect(200)["value"], "sk_live_BBB222");
    assert_eq!(revealed.body["version"], 2);

    // Access is replaced as a whole.
    let acc = s.put(&format!("{base}/stripe_api_key/access"), json!({"agents": [a2, a1, a2]}));
    let mut expected = vec![a1.clone(), a2.clone()];
    expected.sort();
    assert_eq!(acc.expect(200)["agents"], json!(expected));
    s.put(&format!("{base}/stripe_api_key/access"), json!({"agents": []})).expect(200);
    assert_eq!(s.get(&format!("{base}/stripe_api_key")).body["agents"], json!([]));

    // Names are immutable.
    s.patch(&format!("{base}/stripe_api_key"), json!({"name": "other"})).expect_error(400, "invalid_input");
    s.patch(&format!("{base}/stripe_api_key"), json!({})).expect_error(400, "invalid_input");

    s.delete(&format!("{base}/stripe_api_key")).expect(204);
    s.get(&format!("{base}/stripe_api_key")).expect_error(404, "secret_not_found");
    s.delete(&format!("{base}/stripe_api_key")).expect_error(404, "secret_not_found");
    s.get(&format!("{base}/stripe_api_key/versions")).expect_error(404, "secret_not_found");
    // The name is free again.
    s.post(&base, json!({"name": "stripe_api_key", "value": "sk_new"})).expect(201);
    assert_eq!(s.get(&format!("{base}/stripe_api_key")).body["version"], 1);
}

#[test]
fn key_value_secrets_keep_their_pairs() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Booking bot");
    let base = format!("/api/v1/workspaces/{ws}/secrets");
    let value = json!({"client_id": "booking-client", "client_secret": "s3cr3t-value", "scope.read": ""});
    let c = s.create_secret(&ws, "booking_service_oauth", value.clone(), &[&agent]);
    assert_eq!(c["type"], "kv");
    assert_eq!(c["keys"], json!(["client_id", "client_secret", "scope.read"]));
    let (_, key) = s.create_key(&ws, json!([agent]));
    assert_eq!(s.read(&key, &agent, "booking_service_oauth").expect(200)["value"], value);
    assert_eq!(s.read(&key, &agent, "booking_service_oauth").body["type"], "kv");

    let next = json!({"client_id": "booking-client", "client_secret": "rotated"});
    let up = s.patch(&format!("{base}/booking_service_oauth"), json!({"value": next}));
    assert_eq!(up.expect(200)["keys"], json!(["client_id", "client_secret"]));
    assert_eq!(s.read(&key, &agent, "booking_service_oauth").body["value"], next);
    // A secret can change type with a new version.
    s.patch(&format!("{base}/booking_service_oauth"), json!({"value": "now-single"})).expect(200);
    let r = s.read(&key, &agent, "booking_service_oauth");
    assert_eq!((r.body["type"].clone(), r.body["value"].clone()), (json!("single"), json!("now-single")));
}

fn assert_nothing_stored(s: &Server, ws: &str) {
    let list = s.get(&format!("/api/v1/workspaces/{ws}/secrets"));
    assert_eq!(list.expect(200)["items"], json!([]), "a rejected request left a secret behind");
    let audit = s.audit(ws, "action=secret.create");
    assert!(audit.is_empty(), "a rejected request left an audit record: {audit:?}");
}

#[test]
fn bad_secrets_are_rejected_whole_with_clear_errors() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "bot");
    let other_ws =
        s.post("/api/v1/workspaces", json!({"name": "other"})).expect(201)["id"].as_str().unwrap().to_owned();
    let foreign_agent = s.create_agent(&other_ws, "foreign");
    let base = format!("/api/v1/workspaces/{ws}/secrets");
    let many: serde_json::Map<String, Value> = (0..101).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"name": "Stripe", "value": "v"}), 400, "invalid_input", "name"),
        (json!({"name": "1abc", "value": "v"}), 400, "invalid_input", "name"),
        (json!({"name": "has-dash", "value": "v"}), 400, "invalid_input", "name"),
        (json!({"name": "a".repeat(65), "value": "v"}), 400, "invalid_input", "name"),
        (json!({"name": "", "value": "v"}), 400, "invalid_input", "name"),
        (json!({"name": "ok", "value": ""}), 400, "invalid_input", "value"),
        (json!({"name": "ok", "value": {}}), 400, "invalid_input", "value"),
        (json!({"name": "ok", "value": Value::Object(many)}), 400, "invalid_input", "value"),
        (json!({"name": "ok", "value": {"bad key": "v"}}), 400, "invalid_input", "value"),
        (json!({"name": "ok", "value": "v", "description": "d".repeat(1001)}), 400, "invalid_input", "description"),
        (json!({"name": "ok", "value": "v", "agents": ["not-an-id"]}), 400, "invalid_input", "agents"),
        (json!({"name": "ok", "value": "v", "agents": ["agt_00000000000000000000"]}), 422, "unknown_agent", "agents"),
        (json!({"name": "ok", "value": "v", "agents": [agent, foreign_agent]}), 422, "unknown_agent", "agents"),
        (json!({"name": "ok", "value": "x".repeat(70_000)}), 413, "value_too_large", "value"),
        (json!({"name": "ok"}), 400, "invalid_input", "body"),
        (json!({"name": "ok", "value": "v", "agent": []}), 400, "invalid_input", "body"),
    ];
    for (body, status, code, field) in cases {
        let r = s.post(&base, body.clone());
        assert_eq!((r.status, r.code()), (status, code), "for {body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "for {body}: {}", r.text);
        assert_nothing_stored(&s, &ws);
    }

    // Values that are not strings are refused without quoting them back.
    for value in [json!(12345678), json!(["sk_live_LEAK"]), json!({"k": 987654}), json!(true), Value::Null] {
        let r = s.post(&base, json!({"name": "ok", "value": value}));
        r.expect_error(400, "invalid_input");
        for leak in ["12345678", "sk_live_LEAK", "987654"] {
            assert!(!r.text.contains(leak), "the error quotes the value: {}", r.text);
        }
    }
    // Not JSON, or not declared as JSON.
    let raw = |ct: Option<&str>, body: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut req = agent.post(format!("{}{}", s.base, base)).header("Authorization", format!("Bearer {}", s.admin));
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let mut resp = req.send(body).unwrap();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
    };
    let (st, text) = raw(Some("application/json"), "{\"name\": \"ok\", \"value\": ");
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("not valid JSON"), "{text}");
    let (st, text) = raw(None, r#"{"name":"ok","value":"v"}"#);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("Content-Type: application/json"), "{text}");
    // The fields' values in an array, in order, are not the object (serde alone would take them).
    let (st, text) = raw(Some("application/json"), r#" ["ok", "v"]"#);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("must be a JSON object, not an array"), "{text}");
    let (st, text) = raw(Some("application/json; charset=utf-8"), "null");
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("must be a JSON object, not null"), "{text}");
    assert_nothing_stored(&s, &ws);
    let (st, text) = raw(Some("Application/JSON; charset=UTF-8"), r#"{"name":"ok","value":"v"}"#);
    assert_eq!(st, 201, "{text}");
    s.delete(&format!("{base}/ok")).expect(204);

    // Duplicates conflict and change nothing.
    s.create_secret(&ws, "dup", json!("first"), &[]);
    s.post(&base, json!({"name": "dup", "value": "second"})).expect_error(409, "secret_exists");
    assert_eq!(s.post(&format!("{base}/dup/reveal"), json!({})).body["value"], "first");
    // Updates are validated the same way and change nothing when refused.
    s.patch(&format!("{base}/dup"), json!({"value": ""})).expect_error(400, "invalid_input");
    s.patch(&format!("{base}/dup"), json!({"value": "x".repeat(70_000)})).expect_error(413, "value_too_large");
    s.put(&format!("{base}/dup/access"), json!({"agents": [foreign_agent]})).expect_error(422, "unknown_agent");
    let meta = s.get(&format!("{base}/dup"));
    assert_eq!((meta.body["version"].clone(), meta.body["agents"].clone()), (json!(1), json!([])));
    // Malformed names in URLs.
    s.get(&format!("{base}/Bad-Name")).expect_error(400, "invalid_input");
}

#[test]
fn a_new_key_value_version_can_keep_current_pairs() {
    let s = crate::support::Server::start();
    let ws = s.default_ws();
    s.create_secret(&ws, "oauth", serde_json::json!({"client_id": "cid_KEEP", "client_secret": "cs_OLD"}), &[]);
    s.create_secret(&ws, "single", serde_json::json!("v_SINGLE"), &[]);
    let path = |n: &str| format!("/api/v1/workspaces/{ws}/secrets/{n}");
    let cases = [
        ("single", serde_json::json!({"value": {"a": "b"}, "keep": ["x"]}), "no pairs to keep"),
        ("oauth", serde_json::json!({"value": "flat", "keep": ["client_id"]}), "keep goes with a key/value value"),
        ("oauth", serde_json::json!({"value": {}, "keep": ["nope"]}), "no key 'nope'"),
        (
            "oauth",
            serde_json::json!({"value": {"client_id": "x"}, "keep": ["client_id"]}),
            "both given a new value and kept",
        ),
    ];
    for (name, body, message) in cases {
        let r = s.patch(&path(name), body.clone());
        r.expect_error(400, "invalid_input");
        assert_eq!(r.body["error"]["field"], "keep", "{body}");
        assert!(r.body["error"]["message"].as_str().unwrap().contains(message), "{body}: {}", r.text);
        assert!(!r.text.contains("cid_KEEP") && !r.text.contains("v_SINGLE"));
    }
    assert_eq!(s.get(&path("oauth")).expect(200)["version"], 1, "a refused update changes nothing");
    let r = s.patch(
        &path("oauth"),
        serde_json::json!({"value": {"client_secret": "cs_NEW", "scope": "read"}, "keep": ["client_id"]}),
    );
    assert_eq!(r.expect(200)["keys"], serde_json::json!(["client_id", "client_secret", "scope"]));
    let v = s.post(&format!("{}/reveal", path("oauth")), serde_json::json!({})).expect(200).clone();
    assert_eq!(v["value"], serde_json::json!({"client_id": "cid_KEEP", "client_secret": "cs_NEW", "scope": "read"}));
}

#[test]
fn an_earlier_version_is_restored_as_a_new_one_and_keys_are_revealed_one_at_a_time() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    let (_, key) = s.create_key(&ws, json!([agent]));
    let base = format!("/api/v1/workspaces/{ws}/secrets");
    s.create_secret(&ws, "oauth", json!({"client_id": "id_V1", "client_secret": "cs_V1"}), &[&agent]);
    s.patch(&format!("{base}/oauth"), json!({"value": {"client_id": "id_V2", "client_secret": "cs_V2"}})).expect(200);
    s.patch(&format!("{base}/oauth"), json!({"value": {"token": "tok_V3"}})).expect(200);

    // Restoring version 1: version 4 with version 1's value and keys; the answer holds no value.
    let restored = s.post(&format!("{base}/oauth/versions/1/restore"), json!({}));
    let r = restored.expect(200).clone();
    assert_eq!((r["version"].clone(), r["keys"].clone()), (json!(4), json!(["client_id", "client_secret"])));
    assert!(!restored.text.contains("cs_V1"));
    // Agents read it at once; the history is kept; the audit record says where it came from.
    let read = s.read(&key, &agent, "oauth");
    assert_eq!(read.expect(200)["value"], json!({"client_id": "id_V1", "client_secret": "cs_V1"}));
    let versions = s.get(&format!("{base}/oauth/versions")).expect(200)["items"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 4);
    let audit = s.audit(&ws, "action=secret.update&secret=oauth");
    assert_eq!(audit[0]["detail"], json!("version=4 restored_from=1"));

    // Refusals change nothing.
    s.post(&format!("{base}/oauth/versions/4/restore"), json!({})).expect_error(409, "version_is_current");
    s.post(&format!("{base}/oauth/versions/9/restore"), json!({})).expect_error(404, "version_not_found");
    s.post(&format!("{base}/nothing/versions/1/restore"), json!({})).expect_error(404, "secret_not_found");
    assert_eq!(s.get(&format!("{base}/oauth")).expect(200)["version"], json!(4));

    // One key's value, audited with its key; the whole value as before.
    let one = s.post(&format!("{base}/oauth/reveal?key=client_secret"), json!({}));
    let one = one.expect(200).clone();
    assert_eq!((one["value"].clone(), one["key"].clone()), (json!("cs_V1"), json!("client_secret")));
    let whole = s.post(&format!("{base}/oauth/reveal"), json!({})).expect(200).clone();
    assert_eq!(whole["value"], json!({"client_id": "id_V1", "client_secret": "cs_V1"}));
    assert!(whole.get("key").is_none());
    let reveals = s.audit(&ws, "action=secret.reveal&secret=oauth");
    let details: Vec<&Value> = reveals.iter().map(|r| &r["detail"]).collect();
    assert_eq!(details, [&json!("version=4"), &json!("version=4 key=client_secret")]);
    s.post(&format!("{base}/oauth/reveal?key=nope"), json!({})).expect_error(404, "key_not_found");
    s.create_secret(&ws, "single", json!("v"), &[]);
    s.post(&format!("{base}/single/reveal?key=a"), json!({})).expect_error(409, "not_key_value");
    s.post(&format!("{base}/oauth/reveal?other=1"), json!({})).expect_error(400, "invalid_input");
    assert_eq!(s.audit(&ws, "action=secret.reveal").len(), 2, "refused reveals reveal nothing");
}

#[test]
fn several_secrets_are_imported_together_or_not_at_all() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    let (_, key) = s.create_key(&ws, json!([agent]));
    s.create_secret(&ws, "taken", json!("t"), &[]);
    let path = format!("/api/v1/workspaces/{ws}/secret-imports");
    let count =
        |s: &Server| s.get(&format!("/api/v1/workspaces/{ws}/secrets")).expect(200)["items"].as_array().unwrap().len();

    // Any bad entry refuses the whole import, naming it; nothing is stored or audited.
    let bad = [
        (
            json!({"secrets": [{"name": "a_key", "value": "x"}, {"name": "Bad Name", "value": "y"}]}),
            400,
            "secrets[1].name",
        ),
        (json!({"secrets": [{"name": "a_key", "value": ""}]}), 400, "secrets[0].value"),
        (json!({"secrets": []}), 400, "secrets"),
    ];
    for (body, status, field) in bad {
        let r = s.post(&path, body.clone());
        r.expect_error(status, "invalid_input");
        assert_eq!(r.body["error"]["field"], json!(field), "{body}: {}", r.text);
    }
    s.post(&path, json!({"secrets": [{"name": "a_key", "value": "x"}, {"name": "taken", "value": "y"}]}))
        .expect_error(409, "secret_exists");
    let twice = s.post(&path, json!({"secrets": [{"name": "a_key", "value": "x"}, {"name": "a_key", "value": "y"}]}));
    twice.expect_error(409, "secret_exists");
    assert_eq!(twice.body["error"]["field"], json!("secrets[1].name"));
    s.post(&path, json!({"secrets": [{"name": "a_key", "value": "x", "agents": ["agt_doesnotexist0000"]}]}))
        .expect_error(422, "unknown_agent");
    assert_eq!(count(&s), 1);
    assert!(s.audit(&ws, "action=secret.create").len() == 1, "refused imports leave no audit record");

    // A good one: every secret created at once, readable at once.
    let r = s.post(
        &path,
        json!({"secrets": [
            {"name": "stripe_api_key", "value": "sk_live_IMPORT", "agents": [agent]},
            {"name": "booking_oauth", "value": {"client_id": "cid", "client_secret": "cs"}, "description": "Booking"},
        ]}),
    );
    let items = r.expect(201)["items"].clone();
    assert_eq!(
        items.as_array().unwrap().iter().map(|i| i["name"].clone()).collect::<Vec<_>>(),
        [json!("stripe_api_key"), json!("booking_oauth")]
    );
    assert!(!r.text.contains("sk_live_IMPORT"));
    assert_eq!(count(&s), 3);
    assert_eq!(s.read(&key, &agent, "stripe_api_key").expect(200)["value"], json!("sk_live_IMPORT"));
    let created = s.audit(&ws, "action=secret.create");
    assert_eq!(created.len(), 3);
    assert!(created[0]["detail"].as_str().unwrap().ends_with("import"), "{created:?}");
}

#[test]
fn a_member_requests_access_and_an_admin_approves_or_declines() {
    let (s, _tmp) = crate::support::with_admin(crate::support::Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    let (_, key) = s.create_key(&ws, json!([agent]));
    s.create_secret(&ws, "stripe_api_key", json!("sk_REQ"), &[]);
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    let member = s.personal_token("grace@example.com", "cobol compiler 1959");
    let as_member =
        |method: &str, path: &str, body: Option<Value>| s.request(method, path, Some(&member), body.as_ref());
    let ask = format!("/api/v1/workspaces/{ws}/agents/{agent}/access-requests");

    let r = as_member("POST", &ask, Some(json!({"secret": "stripe_api_key"})));
    let req = r.expect(201).clone();
    assert_eq!((req["status"].clone(), req["secret"].clone()), (json!("pending"), json!("stripe_api_key")));
    as_member("POST", &ask, Some(json!({"secret": "stripe_api_key"}))).expect_error(409, "access_request_pending");
    as_member("POST", &ask, Some(json!({"secret": "Not A Name"}))).expect_error(400, "invalid_input");
    // Only admins see requests.
    as_member("GET", &format!("/api/v1/workspaces/{ws}/access-requests"), None).expect_error(403, "forbidden");
    let listed = s.get(&format!("/api/v1/workspaces/{ws}/access-requests")).expect(200)["items"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    s.read(&key, &agent, "stripe_api_key").expect_error(403, "missing_access");

    // Approved: the agent reads it at once; the request cannot be answered twice.
    let id = req["id"].as_str().unwrap();
    let approved = s.post(&format!("/api/v1/workspaces/{ws}/access-requests/{id}/approve"), json!({}));
    assert_eq!(approved.expect(200)["status"], json!("approved"));
    assert_eq!(s.read(&key, &agent, "stripe_api_key").expect(200)["value"], json!("sk_REQ"));
    s.post(&format!("/api/v1/workspaces/{ws}/access-requests/{id}/decline"), json!({}))
        .expect_error(404, "access_request_not_found");
    as_member("POST", &ask, Some(json!({"secret": "stripe_api_key"}))).expect_error(409, "access_already_granted");

    // Declined: nothing changes but the request.
    let other = as_member("POST", &ask, Some(json!({"secret": "zendesk_token"}))).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post(&format!("/api/v1/workspaces/{ws}/access-requests/{other}/approve"), json!({}))
        .expect_error(404, "secret_not_found");
    let declined = s.post(&format!("/api/v1/workspaces/{ws}/access-requests/{other}/decline"), json!({}));
    assert_eq!(declined.expect(200)["status"], json!("declined"));
    let actions: Vec<String> = s
        .audit(&ws, "")
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .filter(|a| a.starts_with("access."))
        .collect();
    assert_eq!(actions, ["access.decline", "access.request", "access.approve", "access.request"]);
}
