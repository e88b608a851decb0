//! The audit log: every mutation and every agent read, filterable, paginated, never a value.

use serde_json::{Value, json};

use crate::support::Server;

#[test]
fn mutations_and_reads_are_audited_without_values() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "Billing bot");
    let b = s.create_agent(&ws, "Other bot");
    let base = format!("/api/v1/workspaces/{ws}/secrets");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_AUDITVALUE"), &[&a]);
    s.create_secret(&ws, "oauth", json!({"client_id": "cid", "client_secret": "AUDITKV"}), &[&a]);
    s.patch(&format!("{base}/stripe_api_key"), json!({"value": "sk_live_AUDITVALUE2"})).expect(200);
    s.put(&format!("{base}/stripe_api_key/access"), json!({"agents": [a, b]})).expect(200);
    s.post(&format!("{base}/stripe_api_key/reveal"), json!({})).expect(200);
    let (key_id, key) = s.create_key(&ws, json!("all"));
    s.read(&key, &a, "stripe_api_key").expect(200);
    s.read(&key, &a, "oauth").expect(200);
    s.read(&key, &b, "oauth").expect(403);
    s.read(&key, &a, "missing_one").expect(404);
    s.read(&key, &a, "Bad-Name").expect(400);
    s.delete(&format!("{base}/oauth")).expect(204);
    s.delete(&format!("/api/v1/workspaces/{ws}/api-keys/{key_id}")).expect(200);

    let all = s.audit(&ws, "");
    let raw = serde_json::to_string(&all).unwrap();
    for value in ["sk_live_AUDITVALUE", "AUDITKV", &key] {
        assert!(!raw.contains(value), "the audit log holds a value or token: {value}");
    }
    let actions: Vec<&str> = all.iter().map(|r| r["action"].as_str().unwrap()).collect();
    for expected in [
        "workspace.create",
        "agent.create",
        "secret.create",
        "secret.update",
        "secret.access.set",
        "secret.reveal",
        "api_key.create",
        "secret.read",
        "secret.delete",
        "api_key.revoke",
    ] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    // Newest first.
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert_eq!(all[0]["action"], "api_key.revoke");

    let reads = s.audit(&ws, "action=secret.read");
    let outcome = |r: &Value| (r["outcome"].as_str().unwrap().to_owned(), r["secret"].clone(), r["agent_id"].clone());
    let mut seen: Vec<_> = reads.iter().map(outcome).collect();
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(seen.len(), 5, "{reads:?}");
    assert!(seen.contains(&("success".into(), json!("stripe_api_key"), json!(a))));
    assert!(seen.contains(&("denied".into(), json!("oauth"), json!(b))));
    assert!(seen.contains(&("not_found".into(), json!("missing_one"), json!(a))));
    assert!(seen.contains(&("invalid".into(), Value::Null, json!(a))));
    for r in &reads {
        assert_eq!(r["actor"], json!({"type": "api_key", "id": key_id}));
    }
    let success = reads.iter().find(|r| r["outcome"] == "success").unwrap();
    assert!(success["detail"].as_str().unwrap().starts_with("version="), "{success}");

    // Filters combine.
    assert_eq!(s.audit(&ws, "action=secret.read&outcome=denied").len(), 1);
    let about_b: Vec<_> =
        s.audit(&ws, &format!("agent={b}")).iter().map(|r| r["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(about_b, vec!["secret.read", "agent.create"]);
    let stripe = s.audit(&ws, "secret=stripe_api_key");
    assert!(stripe.iter().all(|r| r["secret"] == "stripe_api_key"));
    assert_eq!(stripe.len(), 5, "create, update, access, reveal, read: {stripe:?}");
    assert!(s.audit(&ws, "since=2999-01-01T00:00:00Z").is_empty());
    assert_eq!(s.audit(&ws, "until=2999-01-01T00:00:00Z").len(), all.len());
    assert!(s.audit(&ws, "until=2000-01-01T00:00:00Z").is_empty());

    // Pagination by cursor walks every record exactly once.
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = s.get(&format!("/api/v1/workspaces/{ws}/audit?limit=3{cursor}"));
        let body = page.expect(200).clone();
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        walked.extend(items.iter().map(|r| r["id"].as_i64().unwrap()));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(walked, ids);

    for bad in [
        "action=secret.steal",
        "outcome=maybe",
        "limit=0",
        "limit=501",
        "since=yesterday",
        "cursor=abc",
        "secret=Bad-Name",
        "agent=x",
        "colour=red",
    ] {
        let r = s.get(&format!("/api/v1/workspaces/{ws}/audit?{bad}"));
        r.expect_error(400, "invalid_input");
    }
    // The message lists every outcome a filter may name.
    let r = s.get(&format!("/api/v1/workspaces/{ws}/audit?outcome=maybe"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("invalid, failed"), "{}", r.text);
    assert_eq!(s.get(&format!("/api/v1/workspaces/{ws}/audit?outcome=failed")).status, 200);
}

#[test]
fn concurrent_reads_are_each_audited_exactly_once() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    s.create_secret(&ws, "k", json!("v"), &[&a]);
    let (_, key) = s.create_key(&ws, json!("all"));
    let threads = 16;
    let per_thread = 25;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (s, key, a) = (&s, &key, &a);
            scope.spawn(move || {
                for i in 0..per_thread {
                    // Every third read is denied (no such secret) and audited without waiting.
                    let name = if (t + i) % 3 == 0 { "missing" } else { "k" };
                    let r = s.read(key, a, name);
                    assert!(r.status == 200 || r.status == 404, "{}", r.text);
                }
            });
        }
    });
    let reads = s.audit(&ws, "action=secret.read");
    assert_eq!(reads.len(), threads * per_thread, "every read is audited once");
    let mut ids: Vec<i64> = reads.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), threads * per_thread, "audit ids are unique");
    let allowed = reads.iter().filter(|r| r["outcome"] == "success").count();
    let expected_allowed =
        (0..threads).flat_map(|t| (0..per_thread).map(move |i| (t + i) % 3 != 0)).filter(|x| *x).count();
    assert_eq!(allowed, expected_allowed);
    let metrics = s.request("GET", "/metrics", None, None).text;
    assert!(metrics.contains("agentvault_audit_failures_total 0"), "{metrics}");
    // The request edge counted every read by route and status.
    let route = r#"agentvault_http_requests_total{method="GET",route="/api/v1/agents/{agent_id}/secrets/{name}""#;
    for (status, n) in [(200, expected_allowed), (404, threads * per_thread - expected_allowed)] {
        assert!(metrics.contains(&format!("{route},status=\"{status}\"}} {n}\n")), "{status} × {n}: {metrics}");
    }
}

#[test]
fn the_secret_filter_takes_a_prefix_ending_in_a_star() {
    let (s, _tmp) = crate::support::with_admin(crate::support::Options::default());
    let ws = s.default_ws();
    s.create_secret(&ws, "stripe_api_key", json!("a"), &[]);
    s.create_secret(&ws, "stripe_webhook", json!("b"), &[]);
    s.create_secret(&ws, "zendesk_token", json!("c"), &[]);
    let names = |q: &str| {
        let mut n: Vec<String> = s
            .audit(&ws, &format!("action=secret.create&{q}"))
            .iter()
            .map(|r| r["secret"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("secret=stripe*"), ["stripe_api_key", "stripe_webhook"]);
    assert_eq!(names("secret=stripe_api_key"), ["stripe_api_key"]);
    assert!(names("secret=stripe").is_empty(), "without a star the name is exact");
    for bad in ["*", "Stripe*", "str*pe"] {
        s.get(&format!("/api/v1/workspaces/{ws}/audit?secret={bad}")).expect_error(400, "invalid_input");
    }
    // The console's Secret field matches by the start of the name, exports included.
    let (cookie, _) = s.login(crate::support::ADMIN_EMAIL, crate::support::ADMIN_PASSWORD);
    let csv = s.request_with(
        "GET",
        &format!("/w/{ws}/audit/export?format=csv&action=secret.create&secret=stripe"),
        &[("Cookie", &cookie)],
        None,
    );
    assert_eq!(csv.status, 200, "{}", csv.text);
    assert_eq!(csv.text.lines().count(), 3, "{}", csv.text);
}

#[test]
fn the_log_pages_oldest_first_or_newest_first_without_skipping_or_repeating() {
    let s = Server::start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_ORDER"), &[&agent]);
    let (_, key) = s.create_key(&ws, json!("all"));
    for _ in 0..6 {
        s.read(&key, &agent, "stripe_api_key").expect(200);
    }
    // Every page of `limit` records in `order`, following next_cursor; records written between
    // two pages are found by the pages after them (oldest first) or not at all (newest first).
    let walk = |order: &str, filter: &str, limit: u32, between: &dyn Fn(usize)| {
        let mut walked: Vec<i64> = Vec::new();
        let mut cursor = String::new();
        for page_no in 0.. {
            let body = s
                .get(&format!("/api/v1/workspaces/{ws}/audit?limit={limit}{order}{filter}{cursor}"))
                .expect(200)
                .clone();
            let items = body["items"].as_array().unwrap();
            assert!(items.len() <= limit as usize);
            walked.extend(items.iter().map(|r| r["id"].as_i64().unwrap()));
            between(page_no);
            match body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        walked
    };
    let none = |_: usize| {};
    let newest = walk("", "", 4, &none);
    assert!(newest.windows(2).all(|w| w[0] > w[1]), "newest first by default: {newest:?}");
    assert_eq!(walk("&order=newest", "", 4, &none), newest);
    let mut oldest = walk("&order=oldest", "", 4, &none);
    assert!(oldest.windows(2).all(|w| w[0] < w[1]), "oldest first: {oldest:?}");
    oldest.reverse();
    assert_eq!(oldest, newest, "the same records both ways");
    // Every page size, filtered: each record once.
    let reads = walk("", "&action=secret.read", 100, &none);
    assert_eq!(reads.len(), 6);
    for limit in 1..=7 {
        let mut up = walk("&order=oldest", "&action=secret.read", limit, &none);
        assert_eq!(walk("&order=newest", "&action=secret.read", limit, &none), reads, "newest, pages of {limit}");
        up.reverse();
        assert_eq!(up, reads, "oldest, pages of {limit}");
    }
    // Reads while paging oldest first: each new one is found once, after the others.
    let grown = walk("&order=oldest", "&action=secret.read", 2, &|page| {
        if page < 2 {
            s.read(&key, &agent, "stripe_api_key").expect(200);
        }
    });
    assert_eq!(grown.len(), 8, "{grown:?}");
    assert!(grown.windows(2).all(|w| w[0] < w[1]), "{grown:?}");
    s.get(&format!("/api/v1/workspaces/{ws}/audit?order=sideways")).expect_error(400, "invalid_input");
}

/// Reads the export file's lines (and those of rotated files beside it) as JSON.
fn exported(dir: &crate::support::DataDir, name: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir.beside(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(name)))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            lines.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} in {f:?}: {e}")));
        }
    }
    lines
}

fn wait_for(mut check: impl FnMut() -> bool, what: &str) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn the_export_stream_writes_every_record_once_across_restarts_and_to_a_command() {
    use crate::support::{DataDir, Options};
    let dir = DataDir::new();
    let file = dir.beside("audit.jsonl");
    let opts = |extra: Vec<(&'static str, String)>| Options { extra_env: extra, ..dir.opts() };
    let to_file = vec![("AGENTVAULT_AUDIT_EXPORT_FILE", file.display().to_string())];
    let mut s = dir.start_with(opts(to_file.clone()));
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Export bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_EXPORTVALUE"), &[&agent]);
    let (_, key) = s.create_key(&ws, json!("all"));
    for _ in 0..5 {
        s.read(&key, &agent, "stripe_api_key").expect(200);
    }
    s.read(&key, &agent, "missing_one").expect(404);
    let listed = s.audit(&ws, "");
    wait_for(|| exported(&dir, "audit.jsonl").len() >= listed.len(), "the export");
    let lines = exported(&dir, "audit.jsonl");
    let raw = std::fs::read_to_string(&file).unwrap();
    for secret in ["sk_live_EXPORTVALUE", key.as_str()] {
        assert!(!raw.contains(secret), "the export holds a value or token");
    }
    // The same records as the listing (oldest first), each with its workspace.
    let ids = |v: &[Value]| v.iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>();
    let mut expected = ids(&listed);
    expected.reverse();
    assert_eq!(ids(&lines), expected);
    assert!(lines.iter().all(|l| l["workspace_id"] == json!(ws)));
    let read = lines.iter().find(|l| l["action"] == "secret.read" && l["outcome"] == "success").unwrap();
    assert_eq!((read["secret"].as_str(), read["agent_id"].as_str()), (Some("stripe_api_key"), Some(agent.as_str())));
    assert!(read["at"].as_str().unwrap().ends_with('Z'));

    // Stopped and started again, it goes on from its position: nothing twice, nothing missed.
    s.stop();
    let mut s = dir.start_with(opts(to_file));
    s.read(&key, &agent, "stripe_api_key").expect(200);
    let listed = s.audit(&ws, "");
    wait_for(|| exported(&dir, "audit.jsonl").len() >= listed.len(), "the export after a restart");
    let mut expected = ids(&listed);
    expected.reverse();
    assert_eq!(ids(&exported(&dir, "audit.jsonl")), expected, "each record once, in order");
    s.stop();

    // To a command's standard input instead: it reads on from the same position.
    let piped = dir.beside("piped.jsonl");
    let command = vec![("AGENTVAULT_AUDIT_EXPORT_COMMAND", format!("cat >> '{}'", piped.display()))];
    let s = dir.start_with(opts(command));
    s.read(&key, &agent, "stripe_api_key").expect(200);
    let total = s.audit(&ws, "").len();
    wait_for(|| exported(&dir, "piped.jsonl").len() + exported(&dir, "audit.jsonl").len() >= total, "the command");
    let piped_lines = exported(&dir, "piped.jsonl");
    assert!(!piped_lines.is_empty() && piped_lines.iter().all(|l| l["id"].as_i64() > expected.last().copied()));
}
