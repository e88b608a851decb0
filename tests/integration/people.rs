//! People and permissions: the first admin, sessions, roles, personal access tokens.

use serde_json::{Value, json};

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, DataDir, Options, Server, command, setup_code, with_admin};

#[test]
fn the_first_admin_is_set_up_once_with_the_setup_code() {
    let s = Server::start();
    let code = setup_code(&s);
    let body = |code: &str, password: &str| json!({"setup_code": code, "email": ADMIN_EMAIL, "name": "Ada", "password": password});
    let r = s.request("POST", "/api/v1/setup", None, Some(&body("WRONG-CODE1", ADMIN_PASSWORD)));
    r.expect_error(401, "unauthenticated");
    let r = s.request("POST", "/api/v1/setup", None, Some(&body(&code, "short")));
    r.expect_error(400, "invalid_input");
    let r = s.request(
        "POST",
        "/api/v1/setup",
        None,
        Some(&json!({"setup_code": code, "email": "not-an-email", "password": ADMIN_PASSWORD})),
    );
    r.expect_error(400, "invalid_input");
    assert_eq!(r.body["error"]["field"], "email");

    // The code works without its dash and in lowercase, too.
    let r =
        s.request("POST", "/api/v1/setup", None, Some(&body(&code.replace('-', "").to_lowercase(), ADMIN_PASSWORD)));
    let created = r.expect(201).clone();
    assert_eq!(created["user"]["email"], ADMIN_EMAIL);
    assert_eq!(created["workspaces"][0]["role"], "admin");
    let cookie = r.header("set-cookie").unwrap();
    for attr in ["av_session=avs_", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure flag without TLS");
    assert!(!r.text.contains(ADMIN_PASSWORD));

    // Once only.
    s.request("POST", "/api/v1/setup", None, Some(&body(&code, ADMIN_PASSWORD))).expect_error(409, "setup_done");
    // The bootstrap token now acts as the first admin.
    let me = s.request("GET", "/api/v1/me", Some(&s.admin), None);
    assert_eq!(me.expect(200)["user"]["email"], ADMIN_EMAIL);
    let tokens = s.request("GET", "/api/v1/me/tokens", Some(&s.admin), None);
    assert_eq!(tokens.expect(200)["items"][0]["name"], "bootstrap token");

    // The audit log records the new user, and the sign-in that setup performed.
    let ws = s.default_ws();
    assert_eq!(s.audit(&ws, "action=user.create").len(), 1);
    assert_eq!(s.audit(&ws, "action=auth.sign_in&outcome=success").len(), 1);
    let log = s.stderr() + &s.stdout;
    assert!(!log.contains(ADMIN_PASSWORD), "the password reached a log");
}

#[test]
fn sessions_need_csrf_for_changes_and_end_at_sign_out() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let (cookie, csrf) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let me = s.request_with("GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    assert_eq!(me.expect(200)["csrf_token"], json!(csrf));
    // Reading needs no CSRF token; changing does.
    s.request_with("GET", &format!("/api/v1/workspaces/{ws}/agents"), &[("Cookie", &cookie)], None).expect(200);
    let create = |headers: &[(&str, &str)]| {
        s.request_with("POST", &format!("/api/v1/workspaces/{ws}/agents"), headers, Some(&json!({"name": "bot"})))
    };
    create(&[("Cookie", &cookie)]).expect_error(403, "csrf_failed");
    create(&[("Cookie", &cookie), ("X-CSRF-Token", "0123456789abcdef0123456789abcdef")])
        .expect_error(403, "csrf_failed");
    assert_eq!(
        s.get(&format!("/api/v1/workspaces/{ws}/agents")).body["items"],
        json!([]),
        "refused writes change nothing"
    );
    create(&[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]).expect(201);

    // Sessions are listed and can be ended from another session.
    let (cookie2, csrf2) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let sessions = s.request_with("GET", "/api/v1/me/sessions", &[("Cookie", &cookie2)], None);
    let items = sessions.expect(200)["items"].as_array().unwrap().clone();
    assert!(items.len() >= 3, "setup, and two sign-ins: {items:?}");
    let out = s.request_with("POST", "/api/v1/auth/logout", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], None);
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let gone = s.request_with("GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    gone.expect_error(401, "unauthenticated");
    // The second session lives on until it is revoked.
    s.request_with("GET", "/api/v1/me", &[("Cookie", &cookie2)], None).expect(200);
    let second = s.request_with("GET", "/api/v1/me/sessions", &[("Cookie", &cookie2)], None).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["status"] == "active")
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .unwrap();
    let path = format!("/api/v1/me/sessions/{second}");
    s.request_with("DELETE", &path, &[("Cookie", &cookie2), ("X-CSRF-Token", &csrf2)], None);
    assert_eq!(s.audit(&ws, "action=auth.sign_out").len(), 1);
    assert!(!s.audit(&ws, "action=auth.session_revoke").is_empty());
}

#[test]
fn sign_in_failures_say_nothing_and_are_rate_limited() {
    let env =
        vec![("AGENTVAULT_LOGIN_MAX_FAILURES", "3".to_owned()), ("AGENTVAULT_LOGIN_MAX_PER_CLIENT", "8".to_owned())];
    let (s, _tmp) = with_admin(Options { extra_env: env, ..Options::default() });
    let ws = s.default_ws();
    let login = |email: &str, password: &str| {
        s.request("POST", "/api/v1/auth/login", None, Some(&json!({"email": email, "password": password})))
    };
    let unknown = login("nobody@example.com", ADMIN_PASSWORD);
    let wrong = login(ADMIN_EMAIL, "not the right password");
    unknown.expect_error(401, "unauthenticated");
    wrong.expect_error(401, "unauthenticated");
    assert_eq!(unknown.body, wrong.body, "an unknown email and a wrong password look the same");
    // A password of the wrong JSON type is refused without being quoted back.
    let typed = s.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"email": ADMIN_EMAIL, "password": 987654321987_u64})),
    );
    typed.expect_error(400, "invalid_input");
    assert!(!typed.text.contains("987654321987") && typed.text.contains("expected a string"), "{}", typed.text);
    login(ADMIN_EMAIL, "still not right at all").expect(401);
    login(ADMIN_EMAIL, "third wrong password").expect(401);
    // The account is now locked for the window, even with the right password.
    let limited = login(ADMIN_EMAIL, ADMIN_PASSWORD);
    limited.expect_error(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    // Other accounts from the same client run into the per-client budget (8 attempts, counting
    // the setup and the attempts above).
    let mut refused = None;
    for attempt in 0..10 {
        let r = login(&format!("someone{attempt}@example.com"), "whatever password");
        if r.status == 429 {
            refused = Some(attempt);
            break;
        }
        r.expect_error(401, "unauthenticated");
    }
    assert!(refused.is_some_and(|n| n >= 1), "the client budget ran out: {refused:?}");
    let denied = s.audit(&ws, "action=auth.sign_in&outcome=denied");
    assert_eq!(denied.len(), 3, "failures of the known account are audited: {denied:?}");
    assert!(!serde_json::to_string(&denied).unwrap().contains("not the right password"));
}

#[test]
fn members_build_agents_and_never_see_secrets() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let member_id = s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    let member = s.personal_token("grace@example.com", "cobol compiler 1959");
    let as_member =
        |method: &str, path: &str, body: Option<Value>| s.request(method, path, Some(&member), body.as_ref());

    // Agents: yes.
    let agent = as_member("POST", &format!("/api/v1/workspaces/{ws}/agents"), Some(json!({"name": "Support bot"})));
    let agent_id = agent.expect(201)["id"].as_str().unwrap().to_owned();
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_MEMBERNEVER"), &[&agent_id]);
    let listing = as_member("GET", &format!("/api/v1/workspaces/{ws}/agents/{agent_id}/secrets"), None);
    assert_eq!(listing.expect(200)["items"][0]["name"], "stripe_api_key");
    assert!(!listing.text.contains("MEMBERNEVER"));
    as_member("GET", &format!("/api/v1/workspaces/{ws}/members"), None).expect(200);

    // Secrets, keys, members, audit: no.
    let secrets = format!("/api/v1/workspaces/{ws}/secrets");
    for (method, path, body) in [
        ("GET", secrets.clone(), None),
        ("POST", secrets.clone(), Some(json!({"name": "x", "value": "v"}))),
        ("GET", format!("{secrets}/stripe_api_key"), None),
        ("POST", format!("{secrets}/stripe_api_key/reveal"), None),
        ("PUT", format!("{secrets}/stripe_api_key/access"), Some(json!({"agents": []}))),
        ("DELETE", format!("{secrets}/stripe_api_key"), None),
        ("POST", format!("/api/v1/workspaces/{ws}/api-keys"), Some(json!({"name": "k", "agents": "all"}))),
        ("POST", format!("/api/v1/workspaces/{ws}/members"), Some(json!({"email": "x@example.com", "role": "admin"}))),
        ("GET", format!("/api/v1/workspaces/{ws}/invitations"), None),
        ("PATCH", format!("/api/v1/workspaces/{ws}/members/{member_id}"), Some(json!({"role": "admin"}))),
        ("GET", format!("/api/v1/workspaces/{ws}/audit"), None),
        ("POST", "/api/v1/workspaces".to_owned(), Some(json!({"name": "mine"}))),
    ] {
        let r = as_member(method, &path, body);
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{method} {path}: {}", r.text);
        assert!(!r.text.contains("MEMBERNEVER"));
    }
    assert_eq!(s.get(&format!("{secrets}/stripe_api_key")).body["agents"], json!([agent_id]), "nothing changed");

    // Roles change, but a workspace never loses its last admin.
    let admin_id = s.get("/api/v1/me").body["user"]["id"].as_str().unwrap().to_owned();
    let members = format!("/api/v1/workspaces/{ws}/members");
    s.patch(&format!("{members}/{admin_id}"), json!({"role": "member"})).expect_error(409, "last_admin");
    s.delete(&format!("{members}/{admin_id}")).expect_error(409, "last_admin");
    s.patch(&format!("{members}/{member_id}"), json!({"role": "owner"})).expect_error(400, "invalid_input");
    s.patch(&format!("{members}/{member_id}"), json!({"role": "admin"})).expect(200);
    as_member("GET", &secrets, None).expect(200);
    s.patch(&format!("{members}/{admin_id}"), json!({"role": "member"})).expect(200);
    // Now Grace is the only admin.
    s.request("DELETE", &format!("{members}/{member_id}"), Some(&member), None).expect_error(409, "last_admin");

    // Bad input changes nothing.
    let before = s.request("GET", &members, Some(&member), None).body["items"].as_array().unwrap().len();
    for (body, status, code) in [
        (json!({"email": "not-an-email", "role": "member"}), 400, "invalid_input"),
        (json!({"email": "new@example.com", "role": "member", "password": "long enough pass 1"}), 400, "invalid_input"),
        (json!({"email": "new@example.com"}), 400, "invalid_input"),
        (json!({"email": "new@example.com", "role": "root"}), 400, "invalid_input"),
        (json!({"email": "GRACE@example.com", "role": "member"}), 409, "already_member"),
    ] {
        let r = s.request("POST", &members, Some(&member), Some(&body));
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.text);
    }
    assert_eq!(s.request("GET", &members, Some(&member), None).body["items"].as_array().unwrap().len(), before);
    let invitations = format!("/api/v1/workspaces/{ws}/invitations");
    assert_eq!(s.request("GET", &invitations, Some(&member), None).body["items"], json!([]), "no invitation was made");
    // Ada is a member now: the log is Grace's to read.
    s.request("GET", &format!("/api/v1/workspaces/{ws}/audit"), Some(&s.admin), None).expect_error(403, "forbidden");
    let audit =
        s.request("GET", &format!("/api/v1/workspaces/{ws}/audit?action=member.role_change"), Some(&member), None);
    assert_eq!(audit.expect(200)["items"].as_array().unwrap().len(), 2);
}

#[test]
fn personal_tokens_are_shown_once_and_revocable() {
    let (s, _tmp) = with_admin(Options::default());
    let token = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert!(token.starts_with("avp_"));
    let me = s.request("GET", "/api/v1/me", Some(&token), None);
    assert_eq!(me.expect(200)["user"]["email"], ADMIN_EMAIL);
    assert!(me.body.get("csrf_token").is_none(), "bearer requests need no CSRF token");
    let list = s.request("GET", "/api/v1/me/tokens", Some(&token), None);
    assert!(!list.text.contains(&token));
    let id = list.body["items"].as_array().unwrap().iter().find(|t| t["name"] == "test").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.request("DELETE", &format!("/api/v1/me/tokens/{id}"), Some(&token), None).expect(200);
    let r = s.request("GET", "/api/v1/me", Some(&token), None);
    r.expect_error(401, "unauthenticated");
    assert!(r.text.contains("revoked"));
    // Tokens of other users cannot be revoked.
    s.request("DELETE", "/api/v1/me/tokens/pat_00000000000000000000", Some(&s.admin), None)
        .expect_error(404, "token_not_found");
    // A personal token is not an agent credential.
    let other = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    s.create_secret(&ws, "k", json!("v"), &[&a]);
    s.read(&other, &a, "k").expect_error(403, "forbidden");
    // Password change: the old password stops working.
    let r = s.request(
        "PUT",
        "/api/v1/me/password",
        Some(&other),
        Some(&json!({"current_password": "wrong one entirely", "new_password": "babbage difference engine"})),
    );
    r.expect_error(400, "invalid_input");
    let r = s.request(
        "PUT",
        "/api/v1/me/password",
        Some(&other),
        Some(&json!({"current_password": ADMIN_PASSWORD, "new_password": "babbage difference engine"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    s.request("POST", "/api/v1/auth/login", None, Some(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})))
        .expect(401);
    s.login(ADMIN_EMAIL, "babbage difference engine");
}

#[test]
fn users_can_be_created_from_the_command_line() {
    use std::io::Write;
    use std::process::Stdio;
    let data = DataDir::new();
    let mut s = data.start();
    let create = |args: &[&str], password: &str| {
        let mut cmd = command();
        crate::support::backend::on_database(&mut cmd, &data.path);
        let mut child = cmd
            .args(["user", "create", "--data-dir"])
            .arg(&data.path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    // Not while the server runs.
    let busy = create(&["--email", ADMIN_EMAIL, "--role", "admin"], ADMIN_PASSWORD);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("another agentvault process"));
    s.stop();

    let weak = create(&["--email", ADMIN_EMAIL, "--role", "admin"], "weak");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too short"));
    let member_first = create(&["--email", ADMIN_EMAIL], ADMIN_PASSWORD);
    assert!(String::from_utf8_lossy(&member_first.stderr).contains("first user must be an admin"));
    let ok = create(&["--email", ADMIN_EMAIL, "--role", "admin", "--name", "Ada"], ADMIN_PASSWORD);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let ok = create(&["--email", "grace@example.com", "--workspace", "default"], "cobol compiler 1959");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let dup = create(&["--email", "GRACE@example.com"], "cobol compiler 1959");
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    let s = data.start_with(Options::default());
    assert!(!s.stdout.contains("setup code"), "no setup code once a user exists");
    s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (cookie, _) = s.login("grace@example.com", "cobol compiler 1959");
    let me = s.request_with("GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    assert_eq!(me.expect(200)["workspaces"][0]["role"], "member");
    // The bootstrap token became the admin's personal token.
    assert_eq!(s.request("GET", "/api/v1/me", Some(&data.token), None).body["user"]["email"], ADMIN_EMAIL);
}

#[test]
fn the_setup_page_creates_the_first_admin() {
    let s = Server::start();
    let code = setup_code(&s);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}/setup", s.base);
    let mut page = agent.get(&url).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = page.body_mut().read_to_string().unwrap();
    for label in ["<label for=\"setup_code\">", "<label for=\"email\">", "<label for=\"password\">"] {
        assert!(html.contains(label), "{label} missing");
    }
    assert!(!html.contains("<script"), "the page runs no script");

    let post = |fields: &[(&str, &str)]| {
        let mut r = agent.post(&url).send_form(fields.iter().copied()).unwrap();
        let status = r.status().as_u16();
        let cookie = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
        (status, r.body_mut().read_to_string().unwrap(), cookie)
    };
    // A wrong code: the error sits by the field, the typed email stays, the password does not.
    let (status, html, cookie) = post(&[
        ("setup_code", "WRONG-CODE1"),
        ("email", "ada@example.com"),
        ("name", "<Ada>"),
        ("password", ADMIN_PASSWORD),
    ]);
    assert_eq!(status, 401);
    assert!(cookie.is_none());
    assert!(html.contains("id=\"setup_code-error\""), "{html}");
    assert!(
        html.contains("value=\"ada@example.com\"") && html.contains("value=\"&lt;Ada&gt;\""),
        "typed values are kept, escaped"
    );
    assert!(!html.contains(ADMIN_PASSWORD));
    let (status, html, _) = post(&[("setup_code", &code), ("email", "ada@example.com"), ("password", "weak")]);
    assert_eq!(status, 400);
    assert!(html.contains("id=\"password-error\""), "{html}");

    let (status, html, cookie) =
        post(&[("setup_code", &code), ("email", ADMIN_EMAIL), ("name", "Ada"), ("password", ADMIN_PASSWORD)]);
    assert_eq!(status, 201, "{html}");
    assert!(cookie.unwrap().contains("HttpOnly"));
    s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (status, html, _) = post(&[("setup_code", &code), ("email", "eve@example.com"), ("password", ADMIN_PASSWORD)]);
    assert_eq!(status, 409);
    assert!(html.contains("is set up"));
}

#[test]
fn a_password_change_ends_the_other_sessions_and_can_revoke_tokens() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let (here, here_csrf) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (stolen, _) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let cli_token = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let other_token = s.personal_token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let me = |cookie: &str| s.request_with("GET", "/api/v1/me", &[("Cookie", cookie)], None).status;
    let change =
        |headers: &[(&str, &str)], body: Value| s.request_with("PUT", "/api/v1/me/password", headers, Some(&body));

    let r = change(
        &[("Cookie", &here), ("X-CSRF-Token", &here_csrf)],
        json!({"current_password": ADMIN_PASSWORD, "new_password": "babbage difference engine"}),
    );
    let out = r.expect(200).clone();
    // The setup's session, the stolen one and the two that made the tokens.
    assert_eq!(out, json!({"sessions_ended": 4, "tokens_revoked": 0}));
    assert_eq!(me(&here), 200, "the session that changed the password goes on");
    assert_eq!(me(&stolen), 401, "every other session ends");
    s.request("GET", "/api/v1/me", Some(&other_token), None).expect(200);

    // With revoke_tokens, personal tokens go too (except the one making the request).
    let bearer = format!("Bearer {cli_token}");
    let r = change(
        &[("Authorization", &bearer)],
        json!({"current_password": "babbage difference engine", "new_password": "lovelace note g 1843", "revoke_tokens": true}),
    );
    assert_eq!(
        r.expect(200).clone(),
        json!({"sessions_ended": 1, "tokens_revoked": 2}),
        "the bootstrap token and the other one"
    );
    assert_eq!(me(&here), 401);
    s.request("GET", "/api/v1/me", Some(&other_token), None).expect_error(401, "unauthenticated");
    s.request("GET", "/api/v1/me", Some(&s.admin), None).expect_error(401, "unauthenticated");
    s.request("GET", "/api/v1/me", Some(&cli_token), None).expect(200);
    s.login(ADMIN_EMAIL, "lovelace note g 1843");

    let audit = s.request(
        "GET",
        &format!("/api/v1/workspaces/{ws}/audit?action=user.password_change&outcome=success"),
        Some(&cli_token),
        None,
    );
    let audit = audit.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().any(|e| e["detail"].as_str().unwrap().contains("tokens_revoked")), "{audit:?}");
    assert!(!serde_json::to_string(&audit).unwrap().contains("lovelace"));
}

/// Requests that appear to come from `client` (the server trusts X-Forwarded-For here).
fn from<'a>(client: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("X-Forwarded-For", client)];
    h.extend_from_slice(extra);
    h
}

#[test]
fn guesses_of_the_current_password_are_rate_limited_like_sign_ins() {
    let env =
        vec![("AGENTVAULT_LOGIN_MAX_FAILURES", "3".to_owned()), ("AGENTVAULT_TRUST_FORWARDED_FOR", "true".to_owned())];
    let (s, _tmp) = with_admin(Options { extra_env: env, ..Options::default() });
    let ws = s.default_ws();
    let thief = format!("Bearer {}", s.admin);
    let guess = |password: &str| {
        s.request_with(
            "PUT",
            "/api/v1/me/password",
            &from("203.0.113.9", &[("Authorization", &thief)]),
            Some(&json!({"current_password": password, "new_password": "taken over by the thief"})),
        )
    };
    for wrong in ["guess one is wrong", "guess two is wrong", "guess three is wrong"] {
        guess(wrong).expect_error(400, "invalid_input");
    }
    // Now even the right password is refused from there, as a sign-in would be.
    let limited = guess(ADMIN_PASSWORD);
    limited.expect_error(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    let login = s.request_with(
        "POST",
        "/api/v1/auth/login",
        &from("203.0.113.9", &[]),
        Some(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
    );
    login.expect_error(429, "rate_limited");
    assert_eq!(s.audit(&ws, "action=user.password_change&outcome=denied").len(), 3);
    // The password did not change; its owner signs in from elsewhere.
    let r = s.request_with(
        "POST",
        "/api/v1/auth/login",
        &from("198.51.100.7", &[]),
        Some(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
    );
    r.expect(200);
}

#[test]
fn wrong_passwords_from_one_client_do_not_lock_the_owner_out() {
    let env = vec![
        ("AGENTVAULT_LOGIN_MAX_FAILURES", "3".to_owned()),
        ("AGENTVAULT_LOGIN_MAX_PER_CLIENT", "12".to_owned()),
        ("AGENTVAULT_TRUST_FORWARDED_FOR", "true".to_owned()),
    ];
    let (s, _tmp) = with_admin(Options { extra_env: env, ..Options::default() });
    let login = |client: &str, email: &str, password: &str| {
        s.request_with(
            "POST",
            "/api/v1/auth/login",
            &from(client, &[]),
            Some(&json!({"email": email, "password": password})),
        )
    };
    let attacker = "203.0.113.9";
    let statuses: Vec<u16> = (0..6).map(|i| login(attacker, ADMIN_EMAIL, &format!("wrong guess {i}")).status).collect();
    assert_eq!(statuses, vec![401, 401, 401, 429, 429, 429]);
    // Ada, elsewhere, signs in with her password.
    login("198.51.100.7", ADMIN_EMAIL, ADMIN_PASSWORD).expect(200);
    // The attacking client stays limited, even with the right password...
    let limited = login(attacker, ADMIN_EMAIL, ADMIN_PASSWORD);
    limited.expect_error(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // ...and its attempt budget still runs out on other accounts (12 attempts, 7 used).
    let mut refused = None;
    for attempt in 0..8 {
        let r = login(attacker, &format!("someone{attempt}@example.com"), "whatever password");
        if r.status == 429 {
            refused = Some(attempt);
            break;
        }
        r.expect_error(401, "unauthenticated");
    }
    assert_eq!(refused, Some(5), "the client budget ran out");
    // Ada is still fine from her own address.
    login("198.51.100.7", ADMIN_EMAIL, ADMIN_PASSWORD).expect(200);
}
