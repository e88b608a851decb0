//! Workspaces are isolated: nothing in one is visible or reachable from a credential of another.

use serde_json::json;

use crate::support::Server;

#[test]
fn credentials_of_one_workspace_reach_nothing_in_another() {
    let s = Server::start();
    let ws1 = s.default_ws();
    let ws2 = s.post("/api/v1/workspaces", json!({"name": "acme"})).expect(201)["id"].as_str().unwrap().to_owned();
    s.post("/api/v1/workspaces", json!({"name": "acme"})).expect_error(409, "workspace_exists");
    let a1 = s.create_agent(&ws1, "bot");
    let a2 = s.create_agent(&ws2, "bot");
    // The same secret name in both workspaces holds independent values.
    s.create_secret(&ws1, "api_token", json!("ws1-value"), &[&a1]);
    s.create_secret(&ws2, "api_token", json!("ws2-value"), &[&a2]);
    let (k1_id, k1) = s.create_key(&ws1, json!("all"));
    let (k2_id, k2) = s.create_key(&ws2, json!("all"));
    assert_eq!(s.read(&k1, &a1, "api_token").expect(200)["value"], "ws1-value");
    assert_eq!(s.read(&k2, &a2, "api_token").expect(200)["value"], "ws2-value");

    // A key of ws2, scoped to "all", cannot read as an agent of ws1.
    let r = s.read(&k2, &a1, "api_token");
    r.expect_error(403, "missing_access");
    assert!(!r.text.contains("ws1-value"));
    s.read(&k1, &a2, "api_token").expect_error(403, "missing_access");

    // Keys see only their own workspace.
    let seen = s.request("GET", "/api/v1/workspaces", Some(&k2), None);
    let ids: Vec<_> = seen.expect(200)["items"].as_array().unwrap().iter().map(|w| w["id"].clone()).collect();
    assert_eq!(ids, vec![json!(ws2)]);
    s.request("GET", &format!("/api/v1/workspaces/{ws1}/secrets"), Some(&k2), None).expect_error(403, "forbidden");

    // Ids of one workspace do not resolve under another.
    s.get(&format!("/api/v1/workspaces/{ws2}/agents/{a1}")).expect_error(404, "agent_not_found");
    s.patch(&format!("/api/v1/workspaces/{ws2}/agents/{a1}"), json!({"name": "hijack"}))
        .expect_error(404, "agent_not_found");
    s.delete(&format!("/api/v1/workspaces/{ws2}/agents/{a1}")).expect_error(404, "agent_not_found");
    s.get(&format!("/api/v1/workspaces/{ws2}/agents/{a1}/secrets")).expect_error(404, "agent_not_found");
    // Agents of another workspace cannot be granted access or scoped into a key.
    s.post(&format!("/api/v1/workspaces/{ws2}/secrets"), json!({"name": "x", "value": "v", "agents": [a1]}))
        .expect_error(422, "unknown_agent");
    s.put(&format!("/api/v1/workspaces/{ws2}/secrets/api_token/access"), json!({"agents": [a1]}))
        .expect_error(422, "unknown_agent");
    s.post(&format!("/api/v1/workspaces/{ws2}/api-keys"), json!({"name": "k", "agents": [a1]}))
        .expect_error(422, "unknown_agent");
    // Unknown workspaces are 404.
    s.get("/api/v1/workspaces/ws_00000000000000000000/secrets").expect_error(404, "workspace_not_found");

    // Each workspace's log holds what its own credentials did (including the denied attempts
    // above), and nothing done by the other's.
    let actors =
        |ws: &str| s.audit(ws, "").iter().map(|r| r["actor"]["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (actors1, actors2) = (actors(&ws1), actors(&ws2));
    assert!(actors1.contains(&k1_id) && !actors1.contains(&k2_id), "{actors1:?}");
    assert!(actors2.contains(&k2_id) && !actors2.contains(&k1_id), "{actors2:?}");
    let denied = s.audit(&ws2, "action=secret.read&outcome=denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["agent_id"], json!(a1));
    assert_eq!(s.get(&format!("/api/v1/workspaces/{ws2}/agents")).body["items"].as_array().unwrap().len(), 1);
}
