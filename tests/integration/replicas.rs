//! Several agentvault servers on one PostgreSQL: every change made through one reaches the
//! others' read models, in order, and a client that sends `X-Agentvault-Index` back never reads
//! older data than its own write. These tests always run on PostgreSQL (a database of their own
//! on the test cluster), whatever backend the rest of the suite uses.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use agentvault_store::testing::{Cluster, TestPostgres};

use crate::support::backend::{new_database, new_database_on};
use crate::support::{DataDir, Options, Resp, Server, command};

/// Two servers (A and B) on one new database, with one root key and one bootstrap token.
struct Pair {
    a: Server,
    b: Server,
    dirs: [DataDir; 2],
    url: String,
    ws: String,
    agent: String,
    key: String,
}

const ROOT_KEY: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8M=";

fn start(dir: &DataDir, url: &str, token: &str) -> Server {
    dir.start_with(Options {
        bootstrap_token: Some(token),
        extra_env: vec![("AGENTVAULT_DATABASE_URL", url.to_owned()), ("AGENTVAULT_ROOT_KEY", ROOT_KEY.to_owned())],
        ..Options::default()
    })
}

fn pair() -> Pair {
    pair_on(new_database())
}

fn pair_on(url: String) -> Pair {
    let dirs = [DataDir::new(), DataDir::new()];
    let token = dirs[0].token.clone();
    let mut a = start(&dirs[0], &url, &token);
    let mut b = start(&dirs[1], &url, &token);
    a.admin = token.clone();
    b.admin = token;
    let ws = a.default_ws();
    assert_eq!(b.default_ws(), ws, "both servers share the default workspace");
    let agent = a.create_agent(&ws, "bot");
    a.create_secret(&ws, "stripe", json!("v1"), &[&agent]);
    let (_, key) = a.create_key(&ws, json!([agent]));
    // B has it all soon (the tests below use the index where they need it at once).
    let caught_up = eventually(Duration::from_secs(5), || b.read(&key, &agent, "stripe").status == 200);
    assert!(caught_up.is_some(), "B never learned of the key made on A");
    Pair { a, b, dirs, url, ws, agent, key }
}

fn index_of(r: &Resp) -> String {
    r.header("x-agentvault-index").unwrap_or_else(|| panic!("a change answers with its index: {r:?}")).to_owned()
}

fn read_with_index(s: &Server, key: &str, agent: &str, name: &str, index: &str) -> Resp {
    let auth = format!("Bearer {key}");
    s.request_with(
        "GET",
        &format!("/api/v1/agents/{agent}/secrets/{name}"),
        &[("Authorization", &auth), ("X-Agentvault-Index", index)],
        None,
    )
}

/// Polls `check` on `s` every 20 ms until it holds, at most `limit`; returns how long it took.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_write_on_one_server_is_read_on_the_other_and_the_index_gives_read_your_writes() {
    let p = pair();
    for n in 2..=6 {
        let value = format!("v{n}");
        let r = p.a.patch(&format!("/api/v1/workspaces/{}/secrets/stripe", p.ws), json!({"value": value}));
        r.expect(200);
        let index = index_of(&r);
        // With the index, B answers only once it has the change: never the old value.
        let read = read_with_index(&p.b, &p.key, &p.agent, "stripe", &index);
        assert_eq!(read.expect(200)["value"], json!(value), "B with index {index}");
    }
    // Without it, B has the change soon after (woken by the database's notification).
    let r = p.a.patch(&format!("/api/v1/workspaces/{}/secrets/stripe", p.ws), json!({"value": "v7"}));
    r.expect(200);
    let took = eventually(Duration::from_secs(5), || p.b.read(&p.key, &p.agent, "stripe").body["value"] == json!("v7"));
    assert!(took.is_some(), "B never saw the change");

    // Reads on B are audited in the one log, with the writes made on A.
    let reads = p.a.audit(&p.ws, "action=secret.read");
    assert!(reads.len() >= 6, "{reads:?}");
}

#[test]
fn a_revoked_key_and_a_deleted_agent_stop_working_on_every_server() {
    let p = pair();
    p.b.read(&p.key, &p.agent, "stripe").expect(200);
    let keys = p.a.get(&format!("/api/v1/workspaces/{}/api-keys", p.ws));
    let key_id = keys.expect(200)["items"][0]["id"].as_str().unwrap().to_owned();
    let r = p.a.delete(&format!("/api/v1/workspaces/{}/api-keys/{key_id}", p.ws));
    assert!(r.status < 300, "{r:?}");
    let index = index_of(&r);
    read_with_index(&p.b, &p.key, &p.agent, "stripe", &index).expect_error(401, "unauthenticated");

    // A grant revoked on A, without the index: denied on B by the next poll at the latest.
    let (_, key2) = p.a.create_key(&p.ws, json!("all"));
    let other = p.a.create_agent(&p.ws, "other");
    p.a.put(&format!("/api/v1/workspaces/{}/secrets/stripe/access", p.ws), json!({"agents": [other]})).expect(200);
    let denied = eventually(Duration::from_secs(3), || p.b.read(&key2, &p.agent, "stripe").status == 403);
    assert!(denied.is_some(), "B still serves a revoked grant");

    let r = p.a.delete(&format!("/api/v1/workspaces/{}/agents/{other}", p.ws));
    let index = index_of(&r);
    let auth = format!("Bearer {}", p.b.admin);
    let agents = p.b.request_with(
        "GET",
        &format!("/api/v1/workspaces/{}/agents", p.ws),
        &[("Authorization", &auth), ("X-Agentvault-Index", &index)],
        None,
    );
    let names: Vec<Value> = agents.expect(200)["items"].as_array().unwrap().iter().map(|a| a["name"].clone()).collect();
    assert_eq!(names, [json!("bot")]);
}

#[test]
fn an_index_not_reached_is_a_clear_503_and_a_bad_one_a_400() {
    let p = pair();
    let r = read_with_index(&p.b, &p.key, &p.agent, "stripe", "999999999");
    r.expect_error(503, "index_not_reached");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("change 999999999"), "{r:?}");
    read_with_index(&p.b, &p.key, &p.agent, "stripe", "soon").expect_error(400, "invalid_input");
    read_with_index(&p.b, &p.key, &p.agent, "stripe", "-1").expect_error(400, "invalid_input");
    // Reads carry no index; changes do, and it grows.
    assert!(p.b.read(&p.key, &p.agent, "stripe").header("x-agentvault-index").is_none());
    let first = index_of(&p.b.post(&format!("/api/v1/workspaces/{}/agents", p.ws), json!({"name": "x1"})));
    let second = index_of(&p.a.post(&format!("/api/v1/workspaces/{}/agents", p.ws), json!({"name": "x2"})));
    assert!(second.parse::<i64>().unwrap() > first.parse::<i64>().unwrap());
}

/// Ends B's `LISTEN` connection from the database side.
fn terminate_listeners(url: &str) -> i64 {
    let sql = "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
               WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()";
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-c", sql])
        .arg(url)
        .output()
        .expect("psql runs (it comes with PostgreSQL)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_dropped_notification_connection_loses_no_change() {
    let p = pair();
    // Let both servers open their listening connection, then end them.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(terminate_listeners(&p.url) >= 1, "the servers listen for changes");
    for n in 0..5 {
        p.a.patch(&format!("/api/v1/workspaces/{}/secrets/stripe", p.ws), json!({"value": format!("after-{n}")}))
            .expect(200);
    }
    let seen =
        eventually(Duration::from_secs(5), || p.b.read(&p.key, &p.agent, "stripe").body["value"] == json!("after-4"));
    assert!(seen.is_some(), "B missed changes made while its notifications were cut");
    // And it listens again: the next change arrives too.
    p.a.patch(&format!("/api/v1/workspaces/{}/secrets/stripe", p.ws), json!({"value": "later"})).expect(200);
    let seen =
        eventually(Duration::from_secs(5), || p.b.read(&p.key, &p.agent, "stripe").body["value"] == json!("later"));
    assert!(seen.is_some());
}

#[test]
fn a_server_killed_and_restarted_catches_up() {
    let mut p = pair();
    p.b.kill9();
    for n in 0..20 {
        p.a.create_secret(&p.ws, &format!("while_down_{n}"), json!(format!("d{n}")), &[&p.agent]);
    }
    let r = p.a.patch(&format!("/api/v1/workspaces/{}/secrets/stripe", p.ws), json!({"value": "newest"}));
    let index = index_of(&r);
    let token = p.dirs[0].token.clone();
    let mut b = start(&p.dirs[1], &p.url, &token);
    b.admin = token;
    assert_eq!(read_with_index(&b, &p.key, &p.agent, "stripe", &index).expect(200)["value"], json!("newest"));
    for n in [0, 19] {
        assert_eq!(b.read(&p.key, &p.agent, &format!("while_down_{n}")).expect(200)["value"], json!(format!("d{n}")));
    }
    let ready = b.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text);
}

#[test]
fn while_postgresql_is_away_nothing_is_served_unaudited_and_both_servers_recover() {
    let cluster = Cluster::start_new().unwrap();
    let p = pair_on(new_database_on(&TestPostgres::on(&cluster)));
    let path = format!("/api/v1/workspaces/{}/secrets/stripe", p.ws);
    p.a.patch(&path, json!({"value": "acknowledged"})).expect(200);
    let index = index_of(&p.a.patch(&path, json!({"value": "acknowledged-2"})));
    assert_eq!(read_with_index(&p.b, &p.key, &p.agent, "stripe", &index).expect(200)["value"], json!("acknowledged-2"));

    cluster.stop().unwrap();
    // Reads need their audit record: without the database, no value leaves either server.
    for s in [&p.a, &p.b] {
        let r = s.read(&p.key, &p.agent, "stripe");
        assert_eq!(r.status, 503, "{r:?}");
        assert!(!r.text.contains("acknowledged"), "a value without its audit record: {}", r.text);
        let w = s.patch(&path, json!({"value": "lost?"}));
        assert_eq!(w.status, 503, "{w:?}");
        assert!(w.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{w:?}");
        assert_eq!(s.get("/readyz").status, 503);
    }

    cluster.start().unwrap();
    for s in [&p.a, &p.b] {
        let back = eventually(Duration::from_secs(15), || s.read(&p.key, &p.agent, "stripe").status == 200);
        assert!(back.is_some(), "a server did not recover by itself");
    }
    assert_eq!(
        p.b.read(&p.key, &p.agent, "stripe").expect(200)["value"],
        json!("acknowledged-2"),
        "nothing acknowledged was lost"
    );
    let index = index_of(&p.a.patch(&path, json!({"value": "after"})));
    assert_eq!(read_with_index(&p.b, &p.key, &p.agent, "stripe", &index).expect(200)["value"], json!("after"));
    let ready = eventually(Duration::from_secs(10), || p.b.get("/readyz").status == 200);
    assert!(ready.is_some(), "B stays unready: {}", p.b.get("/readyz").text);
}

/// Invokes on `s` with the admin token and `X-Agentvault-Index`.
fn invoke_with_index(s: &Server, ws: &str, agent: &str, name: &str, index: &str) -> Resp {
    let auth = format!("Bearer {}", s.admin);
    s.request_with(
        "POST",
        &format!("/api/v1/workspaces/{ws}/agents/{agent}/functions/{name}/invoke"),
        &[("Authorization", &auth), ("X-Agentvault-Index", index)],
        Some(&json!({"args": {}})),
    )
}

#[test]
fn a_function_changed_on_one_server_runs_its_new_version_on_the_other() {
    let p = pair();
    let path = format!("/api/v1/workspaces/{}/agents/{}/functions", p.ws, p.agent);
    let code = |v: &str| format!("def hello(conv):\n    return 'version {v} ' + conv.utils.get_secret('stripe')\n");
    let r = p.a.post(&path, json!({"name": "hello", "description": "d", "parameters": [], "code": code("one")}));
    r.expect(201);
    let out = invoke_with_index(&p.b, &p.ws, &p.agent, "hello", &index_of(&r));
    assert_eq!(out.expect(200)["result"], json!("version one [redacted:stripe]"));

    let r = p.a.put(&format!("{path}/hello"), json!({"description": "d", "parameters": [], "code": code("two")}));
    r.expect(200);
    let out = invoke_with_index(&p.b, &p.ws, &p.agent, "hello", &index_of(&r));
    assert_eq!(out.expect(200)["result"], json!("version two [redacted:stripe]"));

    let r = p.a.delete(&format!("{path}/hello"));
    assert!(r.status < 300, "{r:?}");
    invoke_with_index(&p.b, &p.ws, &p.agent, "hello", &index_of(&r)).expect_error(404, "function_not_found");
}

/// Both servers audit agent reads (each with group commits of its own) while a client pages the
/// audit log over HTTP, each page from the other server: no pass skips a record that commits late
/// or repeats one. Every pass must hold exactly the records, as finally listed, up to its first.
#[test]
fn paging_the_audit_log_across_servers_never_skips_or_repeats_while_both_audit_reads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let p = pair();
    let stop = AtomicBool::new(false);
    let page = |s: &Server, cursor: &Option<String>| {
        let mut q = format!("/api/v1/workspaces/{}/audit?limit=40", p.ws);
        if let Some(c) = cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        s.get(&q).expect(200).clone()
    };
    let passes: Vec<Vec<i64>> = std::thread::scope(|scope| {
        for server in [&p.a, &p.b, &p.a, &p.b] {
            let (stop, key, agent) = (&stop, &p.key, &p.agent);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    server.read(key, agent, "stripe").expect(200);
                }
            });
        }
        let mut passes = Vec::new();
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            let (mut ids, mut cursor, mut n) = (Vec::new(), None, 0);
            loop {
                let body = page(if n % 2 == 0 { &p.a } else { &p.b }, &cursor);
                n += 1;
                ids.extend(body["items"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()));
                match body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            passes.push(ids);
        }
        stop.store(true, Ordering::Relaxed);
        passes
    });
    assert!(passes[5].len() > 100, "the servers audited reads meanwhile: {}", passes[5].len());
    let all: Vec<i64> = p.a.audit(&p.ws, "").iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(all.windows(2).all(|w| w[0] > w[1]), "the log is listed newest first, each record once");
    for ids in &passes {
        let top = ids[0];
        let expected: Vec<i64> = all.iter().copied().filter(|id| *id <= top).collect();
        assert_eq!(ids, &expected, "a pass from {top} holds every record up to it, once");
    }
}

#[test]
fn deploys_and_environment_values_made_on_one_server_apply_on_the_other() {
    let p = pair();
    let path = format!("/api/v1/workspaces/{}/agents/{}/functions", p.ws, p.agent);
    let code = |v: &str| format!("def hello(conv):\n    return 'version {v} ' + conv.utils.get_secret('stripe')\n");
    p.a.post(&path, json!({"name": "hello", "description": "d", "parameters": [], "code": code("one")})).expect(201);
    p.a.put(&format!("{path}/hello"), json!({"description": "d", "parameters": [], "code": code("two")})).expect(200);
    let live = |s: &Server, index: &str| {
        let auth = format!("Bearer {}", s.admin);
        s.request_with(
            "POST",
            &format!("{path}/hello/invoke"),
            &[("Authorization", &auth), ("X-Agentvault-Index", index)],
            Some(&json!({"args": {}, "conversation": {"env": "live"}})),
        )
    };
    let r = p.a.post(&format!("{path}/hello/deploy"), json!({"env": "live", "version": 1}));
    r.expect(200);
    assert_eq!(live(&p.b, &index_of(&r)).expect(200)["result"], json!("version one [redacted:stripe]"));
    let r = p.a.post(&format!("{path}/hello/deploy"), json!({"env": "live", "version": 2}));
    r.expect(200);
    assert_eq!(live(&p.b, &index_of(&r)).expect(200)["result"], json!("version two [redacted:stripe]"));

    // A live value set on A is what a live key reads on B.
    let body = json!({"name": "live key", "agents": "all", "env": "live"});
    let key = p.a.post(&format!("/api/v1/workspaces/{}/api-keys", p.ws), body).expect(201)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = p.a.patch(&format!("/api/v1/workspaces/{}/secrets/stripe", p.ws), json!({"values": {"live": "v_LIVE"}}));
    r.expect(200);
    let read = read_with_index(&p.b, &key, &p.agent, "stripe", &index_of(&r));
    assert_eq!(read.expect(200)["value"], "v_LIVE");
    assert_eq!(read_with_index(&p.b, &p.key, &p.agent, "stripe", &index_of(&r)).expect(200)["value"], "v1");
}

const NEW_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const STRANGER_KEY: &str = "ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";

/// A server on `url` with the keyring `keys` (AGENTVAULT_ROOT_KEY: base64 keys, the first active).
fn start_keyed(dir: &DataDir, url: &str, token: &str, keys: &str) -> Result<Server, String> {
    let mut s = dir.try_start_with(Options {
        bootstrap_token: Some(token),
        extra_env: vec![("AGENTVAULT_DATABASE_URL", url.to_owned()), ("AGENTVAULT_ROOT_KEY", keys.to_owned())],
        ..Options::default()
    })?;
    s.admin = token.to_owned();
    Ok(s)
}

fn recorded_root_key(url: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-c", "SELECT value FROM settings WHERE name = 'root_key_id'"])
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The root key is rotated while two servers run, in the four documented steps (new key added
/// second, made first, `rotate-root-key` on the database, old key dropped), each a rolling
/// restart; agents read every secret on both servers throughout, and at the end a server with
/// only the new key reads everything. A server that missed the first step says which key it
/// lacks; one with a key the data was never sealed under refuses to start, naming the key.
#[test]
fn the_root_key_rotates_while_the_servers_run() {
    let old_new = format!("{ROOT_KEY},{NEW_KEY}");
    let new_old = format!("{NEW_KEY},{ROOT_KEY}");
    let p = pair();
    let (url, ws, agent, key) = (p.url.clone(), p.ws.clone(), p.agent.clone(), p.key.clone());
    let token = p.dirs[0].token.clone();
    p.a.create_secret(&ws, "oauth", json!({"client_id": "id-1", "client_secret": "shh"}), &[&agent]);
    p.a.patch(&format!("/api/v1/workspaces/{ws}/secrets/stripe"), json!({"value": "v2"})).expect(200);
    let old_id = recorded_root_key(&url);
    let Pair { a, b, dirs, .. } = p;
    let (mut a, mut b) = (a, b);
    let expected = |mid: bool| {
        let mut e = vec![("stripe", json!("v2")), ("oauth", json!({"client_id": "id-1", "client_secret": "shh"}))];
        if mid {
            e.push(("mid", json!("sealed under the new key")));
        }
        e
    };
    let reads_everything = |s: &Server, mid: bool, when: &str| {
        for (name, value) in expected(mid) {
            let r = s.read(&key, &agent, name);
            assert_eq!(r.expect(200)["value"], value, "{when}: {name} on {}", s.base);
        }
    };

    // A server that missed step 1: it keeps only the old key.
    let c_dir = DataDir::new();
    let c = start_keyed(&c_dir, &url, &token, ROOT_KEY).unwrap();

    // 1. The new key second in every keyring, one server at a time.
    a.stop();
    reads_everything(&b, false, "A restarting");
    a = start_keyed(&dirs[0], &url, &token, &old_new).unwrap();
    b.stop();
    reads_everything(&a, false, "B restarting");
    b = start_keyed(&dirs[1], &url, &token, &old_new).unwrap();
    reads_everything(&b, false, "step 1");

    // 2. The new key first (it seals from now on), one server at a time; a secret created
    //    meanwhile is sealed under it, and the servers still on OLD,NEW read it.
    a.stop();
    a = start_keyed(&dirs[0], &url, &token, &new_old).unwrap();
    let r = a.post(
        &format!("/api/v1/workspaces/{ws}/secrets"),
        json!({"name": "mid", "value": "sealed under the new key", "agents": [agent]}),
    );
    r.expect(201);
    let index = index_of(&r);
    let read = read_with_index(&b, &key, &agent, "mid", &index);
    assert_eq!(read.expect(200)["value"], "sealed under the new key");
    b.stop();
    reads_everything(&a, true, "B restarting");
    b = start_keyed(&dirs[1], &url, &token, &new_old).unwrap();
    reads_everything(&b, true, "step 2");

    // The server that missed step 1 cannot open what the new key sealed, and says which key
    // it needs (what it already held it still serves).
    let refused = read_with_index(&c, &key, &agent, "mid", &index);
    refused.expect_error(503, "unavailable");
    let message = refused.body["error"]["message"].as_str().unwrap().to_owned();
    let needed: String = message
        .split_whitespace()
        .find(|w| w.starts_with("rk_"))
        .unwrap_or_else(|| panic!("names the key: {message}"))
        .trim_end_matches([',', ';'])
        .to_owned();
    assert_ne!(needed, old_id);
    assert!(message.contains("add root key") && !message.contains("sealed under the new key"), "{message}");
    assert_eq!(c.read(&key, &agent, "stripe").expect(200)["value"], "v2");
    // Revealing it in the console or the API says the same.
    let reveal = c.post(&format!("/api/v1/workspaces/{ws}/secrets/mid/reveal"), json!({}));
    reveal.expect_error(503, "unavailable");
    assert!(
        reveal.body["error"]["message"].as_str().unwrap().contains(&format!("add root key {needed}")),
        "{reveal:?}"
    );
    let log = std::fs::read_to_string(&c.stderr_path).unwrap();
    assert!(log.contains(&needed) && !log.contains("sealed under the new key"), "{log}");
    drop(c);
    // Restarted as it is, it refuses to start, naming the key it lacks.
    let e = start_keyed(&c_dir, &url, &token, ROOT_KEY).err().expect("refused");
    assert!(e.contains(&format!("add root key {needed}")), "{e}");

    // 3. Re-wrap what is still under the old key, with the servers running (rotate runs on A's
    //    data directory while A holds it: on PostgreSQL it needs no lock).
    let mut rotate = command();
    rotate
        .args(["rotate-root-key", "--data-dir"])
        .arg(&dirs[0].path)
        .env("AGENTVAULT_DATABASE_URL", &url)
        .env("AGENTVAULT_ROOT_KEY", &new_old);
    let out = rotate.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // stripe v1 and v2, oauth v1 were under the old key; mid was not.
    assert!(stdout.contains("re-wrapped 3 of 4 data keys"), "{stdout}");
    assert_eq!(recorded_root_key(&url), needed, "the new key is recorded");
    for s in [&a, &b] {
        reads_everything(s, true, "after the re-wrap");
    }
    // A change after the rotation: both servers have applied the re-wrap (it is a change too).
    let r = a.patch(&format!("/api/v1/workspaces/{ws}/secrets/stripe"), json!({"value": "v3"}));
    let index = index_of(&r);
    assert_eq!(read_with_index(&b, &key, &agent, "stripe", &index).expect(200)["value"], "v3");
    let r = a.patch(&format!("/api/v1/workspaces/{ws}/secrets/stripe"), json!({"value": "v2"}));
    let index = index_of(&r);
    assert_eq!(read_with_index(&b, &key, &agent, "stripe", &index).expect(200)["value"], "v2");

    // 4. The old key dropped everywhere, one server at a time: only the new key reads everything.
    a.stop();
    reads_everything(&b, true, "A restarting");
    a = start_keyed(&dirs[0], &url, &token, NEW_KEY).unwrap();
    b.stop();
    reads_everything(&a, true, "step 4");
    b = start_keyed(&dirs[1], &url, &token, NEW_KEY).unwrap();
    reads_everything(&b, true, "step 4");
    assert_eq!(a.audit(&ws, "action=root_key.rotate").len(), 1);

    // A server with a key the data was never sealed under refuses to start, naming the one it needs.
    let stranger = DataDir::new();
    let e = start_keyed(&stranger, &url, &token, STRANGER_KEY).err().expect("refused");
    assert!(e.contains(&needed) && e.contains("root key"), "{e}");
    // So does one left with only the old key.
    let e = start_keyed(&stranger, &url, &token, ROOT_KEY).err().expect("refused");
    assert!(e.contains(&needed), "{e}");
}
