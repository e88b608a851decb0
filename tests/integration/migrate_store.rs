//! `agentvault migrate-store`: an installation built on SQLite through the API moves into a new
//! PostgreSQL database, and a server started there serves the same values to the same API key,
//! the same audit log in the same order, and the same people. Always SQLite to PostgreSQL,
//! whatever backend the rest of the suite uses.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::support::backend::new_database;
use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, DataDir, Options, Server, command, define, with_admin};

fn migrate(from: &str, to: &str, extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(["migrate-store", "--from", from]).env("AGENTVAULT_DATABASE_URL", to);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql").args(["-X", "-At", "-c", sql]).arg(url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A server on SQLite (whatever the suite's backend) with its first admin.
fn sqlite_server() -> (Server, DataDir) {
    with_admin(Options { extra_env: vec![("AGENTVAULT_DATABASE_URL", String::new())], ..Options::default() })
}

/// A server on PostgreSQL database `url`, keyed with the root key file of `source`.
fn postgres_server(dir: &DataDir, url: &str, source: &Path) -> Server {
    dir.start_with(Options {
        extra_env: vec![
            ("AGENTVAULT_DATABASE_URL", url.to_owned()),
            ("AGENTVAULT_ROOT_KEY_FILE", source.join("root.key").display().to_string()),
        ],
        ..dir.opts()
    })
}

#[test]
fn an_installation_moves_from_sqlite_to_postgres_with_its_values_log_and_people() {
    let (mut s, data) = sqlite_server();
    s.admin = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    let other = s.create_agent(&ws, "Support bot");
    s.create_secret(&ws, "stripe", json!("sk_live_v1"), &[&agent]);
    s.patch(&format!("/api/v1/workspaces/{ws}/secrets/stripe"), json!({"value": "sk_live_v2"})).expect(200);
    s.create_secret(&ws, "oauth", json!({"client_id": "id-1", "client_secret": "shh"}), &[&agent, &other]);
    let staged = json!({"name": "staged", "value": "default-v1", "values": {"live": "live-v1"}, "agents": [agent]});
    s.post(&format!("/api/v1/workspaces/{ws}/secrets"), staged).expect(201);
    define(&s, &ws, &agent, "lookup", json!([]), "def lookup(conv):\n    return {'ok': True}\n");
    let (_, key) = s.create_key(&ws, json!([agent]));
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    for _ in 0..3 {
        assert_eq!(s.read(&key, &agent, "stripe").expect(200)["value"], "sk_live_v2");
    }
    s.read(&key, &other, "stripe").expect_error(403, "missing_access");
    let log_before = s.audit(&ws, "order=oldest");
    assert!(log_before.iter().filter(|r| r["action"] == "secret.read").count() >= 3, "{log_before:?}");
    // Two more reads, and no clean stop: their records may still be in the audit journal, which
    // the move replays first.
    for _ in 0..2 {
        s.read(&key, &agent, "oauth").expect(200);
    }
    s.kill9();

    let url = new_database();
    // The password (the test cluster trusts local connections, so any password will do) is never
    // shown.
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    let with_password = format!("{scheme}://{user}:Pa55w0rdXYZ@{host}");
    let db = data.path.join("agentvault.db");
    let out = migrate(&format!("sqlite://{}", db.display()), &with_password, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(!summary.contains("Pa55w0rdXYZ") && !stderr(&out).contains("Pa55w0rdXYZ"), "{summary}");
    for table in ["secret_versions", "secret_env_versions", "audit_log", "users", "function_versions", "counters"] {
        assert!(summary.contains(table), "{table} in {summary}");
    }
    // 4 default-value versions and 1 environment value, all opened with the root key.
    assert!(summary.contains("5 of the newest sealed values were opened"), "{summary}");
    assert!(summary.contains("AGENTVAULT_DATABASE_URL"), "{summary}");

    // A server on PostgreSQL with the same root key: same log, same values, same people.
    let pg_dir = DataDir::new();
    let mut p = postgres_server(&pg_dir, &url, &data.path);
    let (cookie, _) = p.login("grace@example.com", "cobol compiler 1959");
    assert!(cookie.starts_with("av_session="));
    p.admin = p.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let log_after = p.audit(&ws, "order=oldest");
    let last_before = log_before.last().unwrap()["id"].as_i64().unwrap();
    let copied: Vec<Value> = log_after.iter().filter(|r| r["id"].as_i64().unwrap() <= last_before).cloned().collect();
    assert_eq!(copied, log_before, "the log moved whole, in the same order");
    let journaled: Vec<&Value> = log_after.iter().filter(|r| r["id"].as_i64().unwrap() > last_before).take(2).collect();
    for r in journaled {
        assert_eq!((&r["action"], &r["secret"]), (&json!("secret.read"), &json!("oauth")), "{r}");
    }
    assert!(log_after.len() > log_before.len(), "the sign-ins above are new records after the copied ones");

    assert_eq!(p.read(&key, &agent, "stripe").expect(200)["value"], "sk_live_v2");
    assert_eq!(
        p.read(&key, &agent, "oauth").expect(200)["value"],
        json!({"client_id": "id-1", "client_secret": "shh"})
    );
    let live = p.request("GET", &format!("/api/v1/agents/{agent}/secrets/staged?env=live"), Some(&key), None);
    assert_eq!(live.expect(200)["value"], "live-v1");
    p.read(&key, &other, "stripe").expect_error(403, "missing_access");
    let versions = p.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe/versions")).expect(200).clone();
    assert_eq!(versions["items"].as_array().unwrap().len(), 2, "{versions}");
    let functions = p.get(&format!("/api/v1/workspaces/{ws}/agents/{agent}/functions")).expect(200).clone();
    assert_eq!(functions["items"][0]["name"], "lookup", "{functions}");

    // New records and changes continue after the copied ones.
    p.create_secret(&ws, "after_move", json!("new"), &[&agent]);
    assert_eq!(p.read(&key, &agent, "after_move").expect(200)["value"], "new");
    let newest = p.audit(&ws, "order=oldest");
    let ids: Vec<i64> = newest.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Moving again into the database that now holds data is refused, and changes nothing.
    let secrets_before = psql(&url, "SELECT COUNT(*) FROM secret_versions");
    let again = migrate(&format!("sqlite://{}", db.display()), &url, &[]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
    assert_eq!(psql(&url, "SELECT COUNT(*) FROM secret_versions"), secrets_before);
    assert_eq!(p.read(&key, &agent, "after_move").expect(200)["value"], "new");
}

#[test]
fn migrate_store_refuses_a_bad_source_or_target_and_a_running_server() {
    let (mut s, data) = sqlite_server();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "bot");
    s.create_secret(&ws, "stripe", json!("sk_live_1"), &[&agent]);
    let db = data.path.join("agentvault.db");
    let from = format!("sqlite://{}", db.display());
    let url = new_database();

    // A server holds the data directory: the source could change under the copy.
    let busy = migrate(&from, &url, &[]);
    assert!(!busy.status.success());
    assert!(stderr(&busy).contains("another agentvault process"), "{}", stderr(&busy));
    s.stop();

    let cases: Vec<(String, String, &str)> = vec![
        (format!("sqlite://{}", data.beside("missing.db").display()), url.clone(), "no SQLite database"),
        ("postgres://u:p@localhost/db".into(), url.clone(), "sqlite:///"),
        (from.clone(), "mysql://u:p@localhost/db".into(), "postgres://"),
        (from.clone(), "postgres://u:Pa55w0rdXYZ@127.0.0.1:1/db".into(), "cannot connect"),
    ];
    for (from, to, says) in cases {
        let out = migrate(&from, &to, &[]);
        assert!(!out.status.success(), "{from} -> {to}");
        assert!(stderr(&out).contains(says), "{from} -> {to}: {}", stderr(&out));
        assert!(!stderr(&out).contains("Pa55w0rdXYZ"), "{}", stderr(&out));
    }
    // A file that is not an agentvault database is left alone.
    let text = data.beside("notes.db");
    std::fs::write(&text, "not a database").unwrap();
    let out = migrate(&format!("sqlite://{}", text.display()), &url, &[]);
    assert!(stderr(&out).contains("not an agentvault database"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "not a database");

    // A database holding something else is refused before any table is added to it.
    psql(&url, "CREATE TABLE orders (id BIGINT)");
    let out = migrate(&from, &url, &[]);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        psql(&url, "SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = 'public'"),
        "orders"
    );

    // Without the root key the copy cannot be verified: refused, the target untouched.
    let fresh = new_database();
    std::fs::rename(data.path.join("root.key"), data.beside("root.key.away")).unwrap();
    let out = migrate(&from, &fresh, &[]);
    assert!(stderr(&out).contains("no root key file"), "{}", stderr(&out));
    // With a root key that is not the data's, nothing is committed.
    let out = migrate(&from, &fresh, &[("AGENTVAULT_ROOT_KEY", "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8M=")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("could not be opened"), "{}", stderr(&out));
    assert_eq!(psql(&fresh, "SELECT (SELECT COUNT(*) FROM secrets) + (SELECT COUNT(*) FROM audit_log)"), "0");

    // A NUL in a description, as an earlier release stored it: PostgreSQL's text cannot hold it.
    // The copy names the value and copies nothing.
    std::fs::rename(data.beside("root.key.away"), data.path.join("root.key")).unwrap();
    let planted = std::process::Command::new("python3")
        .arg("-c")
        .arg(r#"import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("UPDATE agents SET description = ? WHERE id = ?", ("refunds\x00", sys.argv[2])); c.commit()"#)
        .arg(&db)
        .arg(&agent)
        .status()
        .unwrap();
    assert!(planted.success());
    let out = migrate(&from, &fresh, &[]);
    assert!(!out.status.success());
    let says = stderr(&out);
    assert!(says.contains("agents.description") && says.contains(&agent) && says.contains("NUL"), "{says}");
    assert_eq!(psql(&fresh, "SELECT (SELECT COUNT(*) FROM agents) + (SELECT COUNT(*) FROM workspaces)"), "0");
}
