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
