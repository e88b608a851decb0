//! The agent read path: `GET /api/v1/agents/{agent_id}/secrets/{name}`.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[test]
fn agents_read_what_they_are_granted_and_nothing_else() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "Billing bot");
    let b = s.create_agent(&ws, "Support bot");
    let base = format!("/api/v1/workspaces/{ws}/secrets");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_READ1"), &[&a]);
    let (_, all) = s.create_key(&ws, json!("all"));
    let (_, only_b) = s.create_key(&ws, json!([b]));

    let ok = s.read(&all, &a, "stripe_api_key");
    assert_eq!(ok.expect(200), &json!({"name": "stripe_api_key", "type": "single", "value": "sk_live_READ1"}));
    // b is not on the access list.
    s.read(&all, &b, "stripe_api_key").expect_error(403, "missing_access");
    // The key is not scoped to a.
    s.read(&only_b, &a, "stripe_api_key").expect_error(403, "missing_access");
    s.read(&all, &a, "no_such_secret").expect_error(404, "secret_not_found");
    s.read(&all, &a, "Bad-Name").expect_error(400, "invalid_input");
    s.read(&all, "agt_00000000000000000000", "stripe_api_key").expect_error(403, "missing_access");

    // Grant: effective on the very next read.
    s.put(&format!("{base}/stripe_api_key/access"), json!({"agents": [a, b]})).expect(200);
    assert_eq!(s.read(&only_b, &b, "stripe_api_key").expect(200)["value"], "sk_live_READ1");
    // New value: the next read sees it.
    s.patch(&format!("{base}/stripe_api_key"), json!({"value": "sk_live_READ2"})).expect(200);
    assert_eq!(s.read(&only_b, &b, "stripe_api_key").expect(200)["value"], "sk_live_READ2");
    // Revoke: the next read is refused.
    s.put(&format!("{base}/stripe_api_key/access"), json!({"agents": [a]})).expect(200);
    s.read(&only_b, &b, "stripe_api_key").expect_error(403, "missing_access");
    // Delete: gone on the next read.
    s.delete(&format!("{base}/stripe_api_key")).expect(204);
    s.read(&all, &a, "stripe_api_key").expect_error(404, "secret_not_found");
}

#[test]
fn credentials_are_checked_before_anything_else() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    s.create_secret(&ws, "k", json!("v"), &[&a]);
    let path = format!("/api/v1/agents/{a}/secrets/k");

    s.request("GET", &path, None, None).expect_error(401, "unauthenticated");
    s.request("GET", &path, Some("avk_unknownunknownunknownunknownunknown00"), None)
        .expect_error(401, "unauthenticated");
    // A malformed header.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "avk_token_without_scheme"] {
        let mut r = agent.get(format!("{}{}", s.base, path)).header("Authorization", header).call().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{header}");
        assert!(r.headers().get("www-authenticate").is_some());
        assert!(r.body_mut().read_to_string().unwrap().contains("unauthenticated"));
    }
    // Unauthenticated callers learn nothing, not even that a name is malformed.
    s.request("GET", &format!("/api/v1/agents/{a}/secrets/Bad-Name"), None, None).expect_error(401, "unauthenticated");
    // The admin token is not an agent credential.
    s.read(&s.admin, &a, "k").expect_error(403, "forbidden");

    // Expired keys stop working.
    let expires = time_in(Duration::from_millis(1500));
    let r = s.post(
        &format!("/api/v1/workspaces/{ws}/api-keys"),
        json!({"name": "short", "agents": "all", "expires_at": expires}),
    );
    let token = r.expect(201)["token"].as_str().unwrap().to_owned();
    s.read(&token, &a, "k").expect(200);
    std::thread::sleep(Duration::from_millis(2000));
    let r = s.read(&token, &a, "k");
    r.expect_error(401, "unauthenticated");
    assert!(r.text.contains("expired"), "{}", r.text);
    let listed = s.get(&format!("/api/v1/workspaces/{ws}/api-keys"));
    assert!(listed.body["items"].as_array().unwrap().iter().any(|k| k["status"] == "expired"));

    // API keys cannot manage anything.
    let (_, key) = s.create_key(&ws, json!("all"));
    for (method, p) in [
        ("GET", format!("/api/v1/workspaces/{ws}/secrets")),
        ("GET", format!("/api/v1/workspaces/{ws}/agents")),
        ("GET", format!("/api/v1/workspaces/{ws}/audit")),
        ("GET", format!("/api/v1/workspaces/{ws}/api-keys")),
        ("POST", format!("/api/v1/workspaces/{ws}/secrets/k/reveal")),
        ("DELETE", format!("/api/v1/workspaces/{ws}/secrets/k")),
    ] {
        s.request(method, &p, Some(&key), None).expect_error(403, "forbidden");
    }
    s.request("POST", "/api/v1/workspaces", Some(&key), Some(&json!({"name": "mine"}))).expect_error(403, "forbidden");
    assert_eq!(s.get(&format!("/api/v1/workspaces/{ws}/secrets/k")).body["version"], 1, "nothing changed");
}

/// A plain read path is answered in front of the router; one with a percent-encoded character
/// goes through the router. Both must give the same answers, headers and counts.
#[test]
fn reads_answered_in_front_and_by_the_router_are_alike() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    let b = s.create_agent(&ws, "other bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_FRONT"), &[&a]);
    let (_, key) = s.create_key(&ws, json!("all"));
    let r =
        s.post(&format!("/api/v1/workspaces/{ws}/api-keys"), json!({"name": "live", "agents": "all", "env": "live"}));
    let live = r.expect(201)["token"].as_str().unwrap().to_owned();
    // The same request, plain and with its first character percent-encoded.
    let both = |agent: &str, name: &str, query: &str, token: Option<&str>| {
        let plain = format!("/api/v1/agents/{agent}/secrets/{name}{query}");
        let encoded = format!("/api/v1/agents/{agent}/secrets/%{:02X}{}{query}", name.as_bytes()[0], &name[1..]);
        (s.request("GET", &plain, token, None), s.request("GET", &encoded, token, None))
    };
    let cases: [(&str, &str, &str, Option<&str>, u16); 10] = [
        (&a, "stripe_api_key", "", Some(&key), 200),
        (&a, "stripe_api_key", "?env=live", Some(&key), 200),
        (&a, "stripe_api_key", "", Some(&live), 200),
        (&a, "stripe_api_key", "?env=sandbox", Some(&live), 403),
        (&a, "stripe_api_key", "?env=moon", Some(&key), 400),
        (&a, "stripe_api_key", "?color=red", Some(&key), 400),
        (&b, "stripe_api_key", "", Some(&key), 403),
        (&a, "no_such_secret", "", Some(&key), 404),
        (&a, "Bad-Name", "", Some(&key), 400),
        (&a, "stripe_api_key", "?color=red", None, 401),
    ];
    let before = read_counts(&s);
    for (agent, name, query, token, status) in cases {
        let (front, routed) = both(agent, name, query, token);
        let what = format!("{name}{query}");
        assert_eq!(front.status, status, "{what}: {}", front.text);
        assert_eq!((front.status, &front.body), (routed.status, &routed.body), "{what}");
        for h in ["content-type", "cache-control", "x-content-type-options", "www-authenticate"] {
            assert_eq!(front.header(h), routed.header(h), "{what}: {h}");
        }
        assert_eq!(front.header("cache-control"), Some("no-store"), "{what}");
    }
    // Each request counted once, under the read route, whichever way it was answered.
    let after = read_counts(&s);
    for (status, n) in [("200", 6), ("400", 6), ("401", 2), ("403", 4), ("404", 2)] {
        let grew = after.get(status).copied().unwrap_or(0) - before.get(status).copied().unwrap_or(0);
        assert_eq!(grew, n, "status {status}: {before:?} -> {after:?}");
    }
    // Both were audited alike: two successful reads per 200.
    let reads = s.audit(&ws, "action=secret.read&outcome=success");
    assert_eq!(reads.len(), 6, "{reads:?}");
    // Other methods and an index to wait for go to the router.
    s.request("POST", &format!("/api/v1/agents/{a}/secrets/stripe_api_key"), Some(&key), None)
        .expect_error(405, "invalid_input");
    let r = s.request_with(
        "GET",
        &format!("/api/v1/agents/{a}/secrets/stripe_api_key"),
        &[("Authorization", &format!("Bearer {key}")), ("X-Agentvault-Index", "1")],
        None,
    );
    assert_eq!(r.expect(200)["value"], "sk_live_FRONT");
}

/// The request counts of the read route by status, from `/metrics`.
fn read_counts(s: &Server) -> std::collections::HashMap<String, u64> {
    let metrics = s.request("GET", "/metrics", None, None);
    let label = "route=\"/api/v1/agents/{agent_id}/secrets/{name}\",status=\"";
    metrics
        .text
        .lines()
        .filter(|l| l.starts_with("agentvault_http_requests_total{method=\"GET\""))
        .filter_map(|l| {
            let rest = &l[l.find(label)? + label.len()..];
            let (status, count) = rest.split_once("\"} ")?;
            Some((status.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// RFC 3339 for now + `d`.
fn time_in(d: Duration) -> String {
    (time::OffsetDateTime::now_utc() + d).format(&time::format_description::well_known::Rfc3339).unwrap()
}
