//! The authorization matrix: every route × every kind of caller → the expected answer. The table
//! is checked against the server's own list of routes (its OpenAPI document, generated from the
//! router), so a route added without an entry here fails this test.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Options, Resp, invoke, with_admin};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// No credential needed.
    Public,
    /// An API key scoped to the agent.
    AgentRead,
    /// Any valid credential (the answer is filtered to what it may see).
    AnyCredential,
    /// A user who is an admin somewhere.
    CreateWorkspace,
    /// A user, about themselves.
    UserSelf,
    /// A member (or admin) of the workspace.
    WorkspaceMember,
    /// An admin of the workspace.
    WorkspaceAdmin,
    /// A member or admin of the workspace, or an API key scoped to the agent (checked below,
    /// since every caller kind in the table is something else).
    Invoke,
}

/// The kinds of caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    NoCredential,
    Malformed,
    UnknownToken,
    RevokedToken,
    ExpiredToken,
    KeyForAnotherAgent,
    OtherWorkspaceAdmin,
    Member,
    Admin,
}

const CALLERS: [Caller; 9] = [
    Caller::NoCredential,
    Caller::Malformed,
    Caller::UnknownToken,
    Caller::RevokedToken,
    Caller::ExpiredToken,
    Caller::KeyForAnotherAgent,
    Caller::OtherWorkspaceAdmin,
    Caller::Member,
    Caller::Admin,
];

/// What should happen.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Authorized: anything but 401, 403 or a hidden workspace (the request itself may be invalid).
    Allowed,
    Status(u16),
    /// 404 `workspace_not_found`: the workspace is not visible to the caller.
    Hidden,
}

fn expect(policy: Policy, caller: Caller) -> Expect {
    use Caller::*;
    use Expect::*;
    use Policy::*;
    let bad_credential = matches!(caller, NoCredential | Malformed | UnknownToken | RevokedToken | ExpiredToken);
    match policy {
        Public => Allowed,
        // Valid credentials of another kind (personal tokens, keys for other agents): 403.
        AgentRead => {
            if bad_credential {
                Status(401)
            } else {
                Status(403)
            }
        }
        _ if bad_credential => Status(401),
        AnyCredential => Allowed,
        _ if caller == KeyForAnotherAgent => Status(403),
        CreateWorkspace => {
            if caller == Member {
                Status(403)
            } else {
                Allowed
            }
        }
        UserSelf => Allowed,
        WorkspaceMember | WorkspaceAdmin | Invoke if caller == OtherWorkspaceAdmin => Hidden,
        WorkspaceMember | Invoke => Allowed,
        WorkspaceAdmin => {
            if caller == Member {
                Status(403)
            } else {
                Allowed
            }
        }
    }
}

/// Every route of the API and who may call it.
const MATRIX: &[(&str, &str, Policy)] = &[
    ("GET", "/healthz", Policy::Public),
    ("GET", "/readyz", Policy::Public),
    ("GET", "/metrics", Policy::Public),
    ("GET", "/api/v1/openapi.json", Policy::Public),
    ("POST", "/api/v1/auth/login", Policy::Public),
    ("POST", "/api/v1/setup", Policy::Public),
    ("GET", "/setup", Policy::Public),
    ("POST", "/setup", Policy::Public),
    // Public by design: the invitation code is the credential, and accepting checks the invited
    // account itself (its session or token, or its password) — see invitations.rs.
    ("GET", "/api/v1/invitations/{code}", Policy::Public),
    ("POST", "/api/v1/invitations/{code}/accept", Policy::Public),
    ("GET", "/api/v1/agents/{agent_id}/secrets/{name}", Policy::AgentRead),
    ("GET", "/api/v1/workspaces", Policy::AnyCredential),
    ("POST", "/api/v1/workspaces", Policy::CreateWorkspace),
    ("POST", "/api/v1/auth/logout", Policy::UserSelf),
    ("GET", "/api/v1/me", Policy::UserSelf),
    ("PUT", "/api/v1/me/password", Policy::UserSelf),
    ("GET", "/api/v1/me/tokens", Policy::UserSelf),
    ("POST", "/api/v1/me/tokens", Policy::UserSelf),
    ("DELETE", "/api/v1/me/tokens/{token_id}", Policy::UserSelf),
    ("GET", "/api/v1/me/sessions", Policy::UserSelf),
    ("DELETE", "/api/v1/me/sessions/{session_id}", Policy::UserSelf),
    ("GET", "/api/v1/workspaces/{ws}/agents", Policy::WorkspaceMember),
    ("POST", "/api/v1/workspaces/{ws}/agents", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/agents/{agent_id}", Policy::WorkspaceMember),
    ("PATCH", "/api/v1/workspaces/{ws}/agents/{agent_id}", Policy::WorkspaceMember),
    ("DELETE", "/api/v1/workspaces/{ws}/agents/{agent_id}", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/agents/{agent_id}/secrets", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/agents/{agent_id}/egress", Policy::WorkspaceMember),
    ("POST", "/api/v1/workspaces/{ws}/agents/{agent_id}/access-requests", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/access-requests", Policy::WorkspaceAdmin),
    ("POST", "/api/v1/workspaces/{ws}/access-requests/{request_id}/approve", Policy::WorkspaceAdmin),
    ("POST", "/api/v1/workspaces/{ws}/access-requests/{request_id}/decline", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions", Policy::WorkspaceMember),
    ("POST", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}", Policy::WorkspaceMember),
    ("PUT", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}", Policy::WorkspaceMember),
    ("DELETE", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}", Policy::WorkspaceMember),
    ("POST", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}/invoke", Policy::Invoke),
    ("POST", "/api/v1/workspaces/{ws}/agents/{agent_id}/draft-runs", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}/versions", Policy::WorkspaceMember),
    // Members deploy to pre-release only; deploying to live needs an admin (a body-dependent
    // rule, checked in environments.rs: members_cannot_deploy_to_live_nor_reach_protected_values).
    ("POST", "/api/v1/workspaces/{ws}/agents/{agent_id}/functions/{name}/deploy", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/members", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/api-keys", Policy::WorkspaceMember),
    ("GET", "/api/v1/workspaces/{ws}/api-keys/{key_id}", Policy::WorkspaceMember),
    ("POST", "/api/v1/workspaces/{ws}/members", Policy::WorkspaceAdmin),
    ("PATCH", "/api/v1/workspaces/{ws}/members/{user_id}", Policy::WorkspaceAdmin),
    ("DELETE", "/api/v1/workspaces/{ws}/members/{user_id}", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/invitations", Policy::WorkspaceAdmin),
    ("DELETE", "/api/v1/workspaces/{ws}/invitations/{invitation_id}", Policy::WorkspaceAdmin),
    ("POST", "/api/v1/workspaces/{ws}/api-keys", Policy::WorkspaceAdmin),
    ("DELETE", "/api/v1/workspaces/{ws}/api-keys/{key_id}", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/secrets", Policy::WorkspaceAdmin),
    ("POST", "/api/v1/workspaces/{ws}/secrets", Policy::WorkspaceAdmin),
    ("POST", "/api/v1/workspaces/{ws}/secret-imports", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/secrets/{name}", Policy::WorkspaceAdmin),
    ("PATCH", "/api/v1/workspaces/{ws}/secrets/{name}", Policy::WorkspaceAdmin),
    ("DELETE", "/api/v1/workspaces/{ws}/secrets/{name}", Policy::WorkspaceAdmin),
    ("PUT", "/api/v1/workspaces/{ws}/secrets/{name}/access", Policy::WorkspaceAdmin),
    ("POST", "/api/v1/workspaces/{ws}/secrets/{name}/reveal", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/secrets/{name}/versions", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/secrets/{name}/usage", Policy::WorkspaceAdmin),
    ("POST", "/api/v1/workspaces/{ws}/secrets/{name}/versions/{version}/restore", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/audit", Policy::WorkspaceAdmin),
    ("PUT", "/api/v1/workspaces/{ws}/agents/{agent_id}/egress", Policy::WorkspaceAdmin),
    ("GET", "/api/v1/workspaces/{ws}/secrets/{name}/injection", Policy::WorkspaceAdmin),
    ("PUT", "/api/v1/workspaces/{ws}/secrets/{name}/injection", Policy::WorkspaceAdmin),
];

#[test]
fn every_route_answers_every_caller_as_the_matrix_says() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();

    // The server's own list of routes must match the matrix exactly.
    let doc = s.request("GET", "/api/v1/openapi.json", None, None).body;
    let served: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    let listed: BTreeSet<(String, String)> = MATRIX.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    let missing: Vec<_> = served.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&served).collect();
    assert!(missing.is_empty(), "routes without an entry in the authorization matrix: {missing:?}");
    assert!(stale.is_empty(), "matrix entries for routes that do not exist: {stale:?}");

    // The cast.
    let agent = s.create_agent(&ws, "reader");
    let other_agent = s.create_agent(&ws, "other");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_MATRIX"), &[&agent]);
    let (_, key_for_other) = s.create_key(&ws, json!([other_agent]));
    let (_, key_for_agent) = s.create_key(&ws, json!([agent]));
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    let member = s.personal_token("grace@example.com", "cobol compiler 1959");
    let ws2 = s.post("/api/v1/workspaces", json!({"name": "elsewhere"})).expect(201)["id"].as_str().unwrap().to_owned();
    s.add_user(&ws2, "edsger@example.com", "admin", "goto considered harmful");
    let outsider = s.personal_token("edsger@example.com", "goto considered harmful");
    let admin = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let revoked = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let tokens = s.request("GET", "/api/v1/me/tokens", Some(&admin), None).body["items"].as_array().unwrap().clone();
    let revoked_id = tokens.iter().find(|t| revoked.starts_with(t["prefix"].as_str().unwrap())).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.request("DELETE", &format!("/api/v1/me/tokens/{revoked_id}"), Some(&admin), None).expect(200);
    let (cookie, csrf) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let expires = (time::OffsetDateTime::now_utc() + Duration::from_millis(1200))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let expired = s
        .request_with(
            "POST",
            "/api/v1/me/tokens",
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            Some(&json!({"name": "short", "expires_at": expires})),
        )
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1500));

    // The agent read path with the right key, for contrast; and invoking as that agent (there
    // is no such function: authorized, then not found).
    s.read(&key_for_agent, &agent, "stripe_api_key").expect(200);
    invoke(&s, Some(&key_for_agent), &ws, &agent, "nothing", json!({})).expect_error(404, "function_not_found");

    let credential = |caller: Caller| -> Option<String> {
        match caller {
            Caller::NoCredential => None,
            Caller::Malformed => Some("Basic YWRhOmxvdmVsYWNl".into()),
            Caller::UnknownToken => Some("Bearer avp_thisTokenWasNeverIssued0000000000000000000".into()),
            Caller::RevokedToken => Some(format!("Bearer {revoked}")),
            Caller::ExpiredToken => Some(format!("Bearer {expired}")),
            Caller::KeyForAnotherAgent => Some(format!("Bearer {key_for_other}")),
            Caller::OtherWorkspaceAdmin => Some(format!("Bearer {outsider}")),
            Caller::Member => Some(format!("Bearer {member}")),
            Caller::Admin => Some(format!("Bearer {admin}")),
        }
    };
    let fill = |path: &str| {
        path.replace("{ws}", &ws)
            .replace("{agent_id}", &agent)
            .replace("{name}", "stripe_api_key")
            .replace("{key_id}", "key_00000000000000000000")
            .replace("{user_id}", "usr_00000000000000000000")
            .replace("{token_id}", "pat_00000000000000000000")
            .replace("{session_id}", "ses_00000000000000000000")
            .replace("{invitation_id}", "ivt_00000000000000000000")
            .replace("{code}", "avi_thisCodeWasNeverIssued000000000000000000000")
            .replace("{version}", "1")
            .replace("{request_id}", "req_00000000000000000000")
    };
    // Allowed calls must not change anything: deletions target ids that do not exist (except
    // where the path names a real secret or agent: those are sent to a missing one), and bodies
    // are empty, so they are refused as invalid after authorization.
    let harmless = |method: &str, path: &str| {
        if method == "DELETE"
            || method == "PATCH"
            || path.ends_with("/reveal")
            || path.ends_with("/access")
            || path.ends_with("/restore")
        {
            path.replace("/secrets/stripe_api_key", "/secrets/no_such_secret")
                .replace(&agent, "agt_00000000000000000000")
        } else {
            path.to_owned()
        }
    };

    let mut failures = Vec::new();
    for (method, template, policy) in MATRIX {
        for caller in CALLERS {
            let expected = expect(*policy, caller);
            let mut path = fill(template);
            if expected == Expect::Allowed {
                path = harmless(method, &path);
            }
            let auth = credential(caller);
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let body = (*method != "GET" && *method != "DELETE").then(|| json!({}));
            let r: Resp = s.request_with(method, &path, &headers, body.as_ref());
            let ok = match &expected {
                Expect::Allowed => r.status != 401 && r.status != 403 && r.code() != "workspace_not_found",
                Expect::Status(code) => r.status == *code,
                Expect::Hidden => r.status == 404 && r.code() == "workspace_not_found",
            };
            if !ok {
                failures.push(format!(
                    "{method} {template} as {caller:?}: expected {expected:?}, got {} {}",
                    r.status, r.text
                ));
            }
            assert!(
                !r.text.contains("sk_live_MATRIX") || (*policy == Policy::WorkspaceAdmin && caller == Caller::Admin)
            );
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));

    // Nothing changed along the way.
    let meta = s.request("GET", &format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key"), Some(&admin), None);
    assert_eq!((meta.body["version"].clone(), meta.body["agents"].clone()), (json!(1), json!([agent])));
    assert_eq!(
        s.request("GET", &format!("/api/v1/workspaces/{ws}/agents"), Some(&admin), None).body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Who may open a console page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    /// Anyone, signed in or not.
    Public,
    /// A member (or admin) of the workspace.
    Member,
    /// An admin of the workspace.
    Admin,
}

/// Every route of the console (`crates/server/src/console/mod.rs`) and who may open it. A route
/// added there belongs here too.
const CONSOLE_MATRIX: &[(&str, Page)] = &[
    ("/login", Page::Public),
    ("/invite/{code}", Page::Public),
    ("/assets/{file}", Page::Public),
    ("/favicon.ico", Page::Public),
    ("/w/{ws}/agents", Page::Member),
    ("/w/{ws}/agents/{agent_id}", Page::Member),
    ("/w/{ws}/agents/{agent_id}/functions/new", Page::Member),
    ("/w/{ws}/agents/{agent_id}/functions/{function}", Page::Member),
    ("/w/{ws}/users", Page::Member),
    ("/w/{ws}/api-keys", Page::Member),
    ("/w/{ws}/account", Page::Member),
    ("/w/{ws}/audit", Page::Admin),
    ("/w/{ws}/audit/export", Page::Admin),
    ("/w/{ws}/secrets", Page::Admin),
    ("/w/{ws}/secrets/new", Page::Admin),
    ("/w/{ws}/secrets/{name}", Page::Admin),
];

#[test]
fn every_console_page_answers_every_caller_as_the_matrix_says() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "reader");
    crate::support::define(&s, &ws, &agent, "peek", json!([]), "def peek(conv):\n    return 'ok'\n");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_CONSOLE_MATRIX"), &[&agent]);
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    let ws2 = s.post("/api/v1/workspaces", json!({"name": "elsewhere"})).expect(201)["id"].as_str().unwrap().to_owned();
    s.add_user(&ws2, "edsger@example.com", "admin", "goto considered harmful");
    let (admin, _) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (member, _) = s.login("grace@example.com", "cobol compiler 1959");
    let (outsider, _) = s.login("edsger@example.com", "goto considered harmful");
    let (ended, ended_csrf) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    s.request_with("POST", "/api/v1/auth/logout", &[("Cookie", &ended), ("X-CSRF-Token", &ended_csrf)], None);

    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
    let get = |path: &str, cookie: Option<&str>| {
        let mut req = http.get(format!("{}{path}", s.base)).header("Accept", "text/html");
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let mut resp = req.call().unwrap();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (resp.status().as_u16(), location, resp.body_mut().read_to_string().unwrap_or_default())
    };
    let mut failures = Vec::new();
    for (template, page) in CONSOLE_MATRIX {
        let path = template
            .replace("{ws}", &ws)
            .replace("{agent_id}", &agent)
            .replace("{function}", "peek")
            .replace("{name}", "stripe_api_key")
            .replace("{file}", "console.css")
            .replace("{code}", "avi_thisCodeWasNeverIssued000000000000000000000");
        let cases: [(&str, Option<&str>, &str); 5] = [
            ("no cookie", None, if *page == Page::Public { "open" } else { "sign in" }),
            ("an ended session", Some(&ended), if *page == Page::Public { "open" } else { "sign in again" }),
            ("an admin elsewhere", Some(&outsider), if *page == Page::Public { "open" } else { "hidden" }),
            ("a member", Some(&member), if *page == Page::Admin { "forbidden" } else { "open" }),
            ("the admin", Some(&admin), "open"),
        ];
        for (who, cookie, expected) in cases {
            let (status, location, body) = get(&path, cookie);
            let ok = match expected {
                // The invitation page answers an unknown code with its own 404 page.
                "open" => status == 200 || (template.starts_with("/invite/") && status == 404),
                "sign in" => status == 303 && location.starts_with("/login?next="),
                "sign in again" => status == 303 && location.starts_with("/login?expired=1&next="),
                "hidden" => status == 404,
                "forbidden" => status == 403,
                _ => false,
            };
            if !ok {
                failures.push(format!("{template} as {who}: expected {expected}, got {status} {location}"));
            }
            assert!(!body.contains("sk_live_CONSOLE_MATRIX"), "{template} as {who} shows the value");
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
