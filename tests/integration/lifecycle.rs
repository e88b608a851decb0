//! First start, restarts, kill -9, root key rotation.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::support::backend::on_postgres;
use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, DataDir, Options, Server, command, with_admin};

#[test]
fn first_start_initialises_everything_and_prints_the_token_once() {
    let data = DataDir::new();
    let dir = &data.path;
    let mut first = Server::start_in(dir, "", Options::default());
    let token = first
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("ava_"))
        .expect("the first start prints an admin token")
        .to_owned();
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("root.key"), 0o600, "the generated root key is private");
    if !on_postgres() {
        assert_eq!(mode("agentvault.db"), 0o600, "the database is private");
    }
    assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700);
    first.admin = token.clone();
    let ws = first.default_ws();
    assert!(ws.starts_with("ws_"));
    let key_before = std::fs::read(dir.join("root.key")).unwrap();
    first.stop();

    let second = Server::start_in(dir, &token, Options::default());
    assert!(!second.stdout.contains("ava_"), "a second start prints no token: {}", second.stdout);
    assert_eq!(second.default_ws(), ws, "the same default workspace is reused");
    assert_eq!(std::fs::read(dir.join("root.key")).unwrap(), key_before, "the root key is reused");
    let names: Vec<_> =
        second.get("/api/v1/workspaces").body["items"].as_array().unwrap().iter().map(|w| w["name"].clone()).collect();
    assert_eq!(names, vec![json!("default")]);
}

#[test]
fn a_bootstrap_token_from_the_environment_becomes_the_admin_token() {
    let data = DataDir::new();
    let s = data.start();
    assert!(!s.stdout.contains(&data.token), "a token given by the operator is not echoed");
    s.default_ws();
    let bad = s.request("GET", "/api/v1/workspaces", Some("test_admin_wrong_token_0000000000"), None);
    bad.expect_error(401, "unauthenticated");

    let short =
        Server::try_start_in(&data.beside("e"), "x", Options { bootstrap_token: Some("short"), ..Options::default() });
    let err = short.err().expect("a short bootstrap token is refused");
    assert!(err.contains("AGENTVAULT_BOOTSTRAP_TOKEN must be at least"), "{err}");
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let data = DataDir::new();
    let mut s = data.start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_first"), &[&agent]);
    s.patch(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key"), json!({"value": "sk_live_second"})).expect(200);
    let (_, key) = s.create_key(&ws, json!([agent]));
    s.read(&key, &agent, "stripe_api_key").expect(200);
    s.kill9();

    let s = data.start();
    let r = s.read(&key, &agent, "stripe_api_key");
    assert_eq!(r.expect(200)["value"], "sk_live_second");
    let reads = s.audit(&ws, "action=secret.read&outcome=success");
    assert_eq!(reads.len(), 2, "the read answered before the kill is in the log: {reads:?}");
    let meta = s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key"));
    assert_eq!(meta.expect(200)["version"], 2);
}

#[test]
fn rotating_the_root_key_keeps_every_value_readable() {
    let data = DataDir::new();
    let dir = &data.path;
    let mut s = data.start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "bot");
    for i in 0..5 {
        s.create_secret(&ws, &format!("secret_{i}"), json!(format!("value-{i}-v1")), &[&agent]);
        s.patch(&format!("/api/v1/workspaces/{ws}/secrets/secret_{i}"), json!({"value": format!("value-{i}-v2")}))
            .expect(200);
    }
    s.create_secret(&ws, "oauth", json!({"client_id": "id-1", "client_secret": "shh"}), &[&agent]);
    // An environment's own value is sealed apart, with versions of its own: rotated too.
    let staged = json!({"name": "staged", "value": "default-v1", "values": {"live": "live-v1"}, "agents": [agent]});
    s.post(&format!("/api/v1/workspaces/{ws}/secrets"), staged).expect(201);
    s.patch(&format!("/api/v1/workspaces/{ws}/secrets/staged"), json!({"values": {"live": "live-v2"}})).expect(200);
    let (_, key) = s.create_key(&ws, json!("all"));

    // On SQLite, refused while the server runs: it holds the data directory. (On PostgreSQL it
    // runs beside the servers: see replicas::the_root_key_rotates_while_the_servers_run.)
    if !on_postgres() {
        let mut busy = command();
        busy.args(["rotate-root-key", "--data-dir"]).arg(dir);
        let busy = busy.output().unwrap();
        assert!(!busy.status.success());
        assert!(
            String::from_utf8_lossy(&busy.stderr).contains("another agentvault process"),
            "{}",
            String::from_utf8_lossy(&busy.stderr)
        );
    }
    s.stop();

    let old_key = std::fs::read_to_string(dir.join("root.key")).unwrap();
    let keys =
        |t: &str| t.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    if on_postgres() {
        // On PostgreSQL the keyring is used as given, never rewritten (running servers hold their
        // own copy): the new key goes first in the file.
        let new = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
        std::fs::write(dir.join("root.key"), format!("{new}\n{}\n", keys(&old_key)[0])).unwrap();
    }
    let mut rotate = command();
    rotate.args(["rotate-root-key", "--data-dir"]).arg(dir);
    crate::support::backend::on_database(&mut rotate, dir);
    let out = rotate.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("re-wrapped 14 of 14 data keys"), "{stdout}");
    let new_key = std::fs::read_to_string(dir.join("root.key")).unwrap();
    if on_postgres() {
        assert_eq!(keys(&new_key).len(), 2, "the keyring file is left as given");
        std::fs::write(dir.join("root.key"), format!("{}\n", keys(&new_key)[0])).unwrap();
    } else {
        assert_eq!(keys(&new_key).len(), 1, "the old key is retired");
    }
    assert_ne!(keys(&new_key)[0], keys(&old_key)[0]);
    assert_eq!(std::fs::metadata(dir.join("root.key")).unwrap().permissions().mode() & 0o777, 0o600);

    let s = data.start();
    for i in 0..5 {
        assert_eq!(s.read(&key, &agent, &format!("secret_{i}")).expect(200)["value"], format!("value-{i}-v2"));
    }
    assert_eq!(
        s.read(&key, &agent, "oauth").expect(200)["value"],
        json!({"client_id": "id-1", "client_secret": "shh"})
    );
    assert_eq!(
        s.post(&format!("/api/v1/workspaces/{ws}/secrets/secret_0/reveal"), json!({})).expect(200)["value"],
        "value-0-v2"
    );
    let live = s.request("GET", &format!("/api/v1/agents/{agent}/secrets/staged?env=live"), Some(&key), None);
    assert_eq!(live.expect(200)["value"], "live-v2");
    assert_eq!(s.read(&key, &agent, "staged").expect(200)["value"], "default-v1");
    assert_eq!(s.audit(&ws, "action=root_key.rotate").len(), 1);
    drop(s);

    // With the old key the data no longer opens, and the server says why instead of serving errors.
    let wrong = data
        .try_start_with(Options { extra_env: vec![("AGENTVAULT_ROOT_KEY", keys(&old_key)[0].clone())], ..data.opts() });
    let err = wrong.err().expect("the old root key is refused");
    assert!(err.contains("which the configured keyring does not hold"), "{err}");
}

#[test]
fn a_root_key_from_the_environment_is_used_and_never_written() {
    let data = DataDir::new();
    let dir = &data.path;
    let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8M="; // 32 bytes
    let s = data.start_with(Options { extra_env: vec![("AGENTVAULT_ROOT_KEY", key.to_owned())], ..data.opts() });
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "bot");
    s.create_secret(&ws, "k", json!("v"), &[&agent]);
    assert!(!dir.join("root.key").exists(), "no key file is generated when the key comes from the environment");
    drop(s);
    let bad = data
        .try_start_with(Options { extra_env: vec![("AGENTVAULT_ROOT_KEY", "c2hvcnQ=".into())], ..Options::default() });
    let err = bad.err().unwrap();
    assert!(err.contains("AGENTVAULT_ROOT_KEY is invalid") && err.contains("32 bytes"), "{err}");
    // Without any key the server refuses rather than using a new one over existing data (SQLite:
    // before generating it; PostgreSQL: the database records which key its data is under).
    let none = data.try_start_with(Options::default()).err().unwrap();
    let expected = if on_postgres() {
        "which the configured keyring does not hold"
    } else {
        "has a database but no root key file"
    };
    assert!(none.contains(expected), "{none}");
}

#[test]
fn once_a_user_exists_no_start_creates_or_honours_a_bootstrap_token() {
    let (mut s, data) = with_admin(Options::default());
    let token = &data.token;
    // Setup made the bootstrap token the first admin's personal token; the admin revokes it.
    let tokens = s.request("GET", "/api/v1/me/tokens", Some(token), None);
    let id = tokens.expect(200)["items"][0]["id"].as_str().unwrap().to_owned();
    s.request("DELETE", &format!("/api/v1/me/tokens/{id}"), Some(token), None).expect(200);
    s.request("GET", "/api/v1/workspaces", Some(token), None).expect_error(401, "unauthenticated");
    s.stop();

    // The operator left AGENTVAULT_BOOTSTRAP_TOKEN set: the revoked token stays revoked.
    let mut again = data.start();
    assert!(!again.stdout.contains("first start"), "{}", again.stdout);
    again.request("GET", "/api/v1/workspaces", Some(token), None).expect_error(401, "unauthenticated");
    again.request("GET", "/api/v1/me", Some(token), None).expect_error(401, "unauthenticated");
    assert!(
        again.stderr().contains("AGENTVAULT_BOOTSTRAP_TOKEN is set but ignored"),
        "the log says why the variable has no effect: {}",
        again.stderr()
    );
    again.stop();

    // Without the variable no start mints and prints a fresh admin token either.
    let third = Server::start_in(&data.path, "", Options::default());
    assert!(!third.stdout.contains("ava_") && !third.stdout.contains("first start"), "{}", third.stdout);
    assert!(!third.stdout.contains("setup code"), "setup is done: {}", third.stdout);
    // The first admin still signs in as before.
    let (cookie, _) = third.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert!(!cookie.is_empty());
}
