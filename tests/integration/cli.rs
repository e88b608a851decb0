//! The terminal client against a running server.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Options, command, with_admin};

#[test]
fn the_terminal_client_manages_agents_secrets_keys_and_reads_the_log() {
    let (s, data) = with_admin(Options::default());
    let token = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let config_home = data.beside("config");
    let run = |args: &[&str], stdin: Option<&str>, env: bool| -> Output {
        let mut cmd = command();
        cmd.args(args)
            .env("XDG_CONFIG_HOME", &config_home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if env {
            cmd.env("AGENTVAULT_ADDR", &s.base).env("AGENTVAULT_TOKEN", &token);
        }
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let ok = |out: &Output| {
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let out = ok(&run(&["agents", "create", "Support bot"], None, true));
    assert!(out.contains("NAME") && out.contains("Support bot"), "{out}");
    let out = ok(&run(
        &["secrets", "create", "stripe_api_key", "--agent", "Support bot", "--value-stdin", "--description", "Stripe"],
        Some("sk_live_FROMCLI\n"),
        true,
    ));
    assert!(out.contains("stripe_api_key") && !out.contains("sk_live_FROMCLI"), "{out}");
    let value_file = data.beside("value.json");
    std::fs::write(&value_file, r#"{"client_id": "abc", "client_secret": "FROMFILE"}"#).unwrap();
    ok(&run(&["secrets", "create", "oauth", "--kv", "--value-file", value_file.to_str().unwrap()], None, true));
    let listed: Value = serde_json::from_str(&ok(&run(&["secrets", "list", "--json"], None, true))).unwrap();
    let names: Vec<_> =
        listed["items"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, vec!["oauth", "stripe_api_key"]);
    ok(&run(&["secrets", "update", "stripe_api_key", "--value-stdin"], Some("sk_live_SECOND"), true));
    ok(&run(&["secrets", "grant", "oauth", "Support bot"], None, true));
    let versions = ok(&run(&["secrets", "versions", "stripe_api_key"], None, true));
    assert!(versions.lines().count() == 3, "header and two versions: {versions}");

    // An API key from the client reads the new value through the agent path.
    let created: Value =
        serde_json::from_str(&ok(&run(&["keys", "create", "voice", "--agent", "Support bot", "--json"], None, true)))
            .unwrap();
    let key = created["token"].as_str().unwrap();
    let ws = s.default_ws();
    let agent = s.get(&format!("/api/v1/workspaces/{ws}/agents")).body["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.read(key, &agent, "stripe_api_key").expect(200)["value"], "sk_live_SECOND");
    assert_eq!(s.read(key, &agent, "oauth").expect(200)["value"]["client_secret"], "FROMFILE");
    ok(&run(&["secrets", "revoke", "oauth", &agent], None, true));
    s.read(key, &agent, "oauth").expect_error(403, "missing_access");

    let log = ok(&run(&["audit", "--limit", "50"], None, true));
    for action in ["secret.create", "secret.update", "secret.access.set", "api_key.create", "secret.read"] {
        assert!(log.contains(action), "{action} missing from\n{log}");
    }
    assert!(!log.contains("sk_live") && !log.contains("FROMFILE"));

    // Members: an invitation link instead of a password; invitations are listed and revoked.
    let out = ok(&run(&["members", "invite", "grace@example.com", "--role", "admin"], None, true));
    let link = out.lines().find_map(|l| l.split_whitespace().find(|w| w.contains("/invite/avi_"))).unwrap().to_owned();
    assert!(link.starts_with(&s.base), "{out}");
    let listed = ok(&run(&["members", "invitations"], None, true));
    assert!(listed.contains("grace@example.com") && !listed.contains("avi_"), "{listed}");
    let code = link.rsplit('/').next().unwrap();
    s.accept(code, &[], serde_json::json!({"password": "cobol compiler 1959"})).expect(201);
    let members = ok(&run(&["members", "list"], None, true));
    assert!(members.contains("grace@example.com") && members.contains("admin"), "{members}");
    let alan: Value =
        serde_json::from_str(&ok(&run(&["members", "invite", "alan@example.com", "--json"], None, true))).unwrap();
    ok(&run(&["members", "revoke-invitation", alan["id"].as_str().unwrap()], None, true));
    s.accept(alan["code"].as_str().unwrap(), &[], serde_json::json!({"password": "enigma machine 1939"}))
        .expect_error(404, "invitation_invalid");
    ok(&run(&["members", "set-role", "grace@example.com", "member"], None, true));
    ok(&run(&["members", "remove", "grace@example.com"], None, true));
    assert!(!ok(&run(&["members", "list"], None, true)).contains("grace@example.com"));
    let refused = run(&["members", "invite", "not-an-email"], None, true);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("email"));

    // Errors carry the server's message and a non-zero exit code.
    let bad = run(&["secrets", "get", "Bad-Name"], None, true);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("lowercase letter"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let none = run(&["agents", "list"], None, false);
    assert!(String::from_utf8_lossy(&none.stderr).contains("agentvault login"));

    // login stores the address and token, readable by the owner only.
    let out = ok(&run(&["login", "--addr", &s.base, "--token-stdin"], Some(&format!("{token}\n")), false));
    assert!(out.contains(ADMIN_EMAIL), "{out}");
    let stored = config_home.join("agentvault/credentials");
    assert_eq!(std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777, 0o600);
    let agents = ok(&run(&["agents", "list"], None, false));
    assert!(agents.contains("Support bot"));
    let wrong = run(&["login", "--addr", &s.base, "--token-stdin"], Some("avp_not_a_real_token\n"), false);
    assert!(!wrong.status.success());
}

/// A command has no server log to point to: a failure says what went wrong.
#[test]
fn a_failing_command_says_what_went_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    // A database that is not agentvault's: its first migration cannot apply.
    let made = std::process::Command::new("python3")
        .args(["-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE workspaces (x)'); c.commit()"])
        .arg(dir.join("agentvault.db"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(dir.join("root.key"), "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8M=\n").unwrap();
    std::fs::set_permissions(dir.join("root.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out =
        crate::support::command().args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not be brought up to date") && err.contains("already exists"), "{err}");
    assert!(!err.contains("server log"), "{err}");
}

/// Audit settings that cannot work are refused at start, with what to give instead.
#[test]
fn bad_audit_settings_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = crate::support::command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(&["--audit-retention", "5m"], "under a day");
    refused(&["--audit-retention", "soon"], "not a duration");
    refused(&["--audit-export-file", "/tmp/a.jsonl", "--audit-export-command", "cat"], "cannot be used with");
    refused(&["--audit-export-file", "/tmp/a.jsonl", "--audit-export-rotate-mb", "0"], "at least 1");
    refused(&["--audit-export-command", " "], "command is empty");
    assert!(!tmp.path().join("data").join("agentvault.db").exists(), "nothing was created");
}
