//! Invitations: an admin invites by email and role; the invitee chooses their own password, or
//! proves they hold the existing account. No admin ever sets another person's password.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Options, Server, with_admin};

fn emails(s: &Server, ws: &str, token: &str) -> Vec<String> {
    let r = s.request("GET", &format!("/api/v1/workspaces/{ws}/members"), Some(token), None);
    r.expect(200)["items"].as_array().unwrap().iter().map(|m| m["email"].as_str().unwrap().to_owned()).collect()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn invitations_are_shown_once_single_use_and_revocable() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let invitations = format!("/api/v1/workspaces/{ws}/invitations");

    let first = s.invite(&ws, "grace@example.com", "member");
    let first_code = first["code"].as_str().unwrap().to_owned();
    assert!(first_code.starts_with("avi_") && first_code.len() >= 4 + 43, "256 random bits: {first_code}");
    assert_eq!(first["path"], json!(format!("/invite/{first_code}")));
    assert_eq!((first["email"].clone(), first["role"].clone()), (json!("grace@example.com"), json!("member")));
    let expires = time::OffsetDateTime::parse(
        first["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_hours();
    assert!((167..=168).contains(&days), "seven days by default: {days}h");

    // The holder of the code sees what it offers; nothing is a member yet.
    let info = s.request("GET", &format!("/api/v1/invitations/{first_code}"), None, None);
    let info = info.expect(200).clone();
    assert_eq!(info["workspace_name"], "default");
    assert_eq!(info["account_exists"], false);
    let page = s.request_with("GET", first["path"].as_str().unwrap(), &[], None);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text.contains("<label for=\"password\">") && !page.text.contains("<script>"), "{}", page.text);
    assert_eq!(emails(&s, &ws, &s.admin), vec![ADMIN_EMAIL]);

    // A new invitation for the same person replaces the pending one.
    let second = s.invite(&ws, "GRACE@example.com", "admin");
    let code = second["code"].as_str().unwrap().to_owned();
    let listed = s.get(&invitations);
    let items = listed.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], second["id"]);
    assert!(!listed.text.contains(&code) && !listed.text.contains(&first_code), "codes are never listed");
    let replaced = s.accept(&first_code, &[], json!({"password": "cobol compiler 1959"}));
    replaced.expect_error(404, "invitation_invalid");
    assert!(replaced.body["error"]["message"].as_str().unwrap().contains("ask your workspace admin"));

    // Bad input leaves the invitation pending and creates nobody.
    s.accept(&code, &[], json!({"password": "short"})).expect_error(400, "invalid_input");
    s.accept(&code, &[], json!({"name": "Grace"})).expect_error(400, "invalid_input");
    s.accept(&code, &[], json!({"password": "cobol compiler 1959", "role": "admin"}))
        .expect_error(400, "invalid_input");
    s.request("POST", "/api/v1/auth/login", None, Some(&json!({"email": "grace@example.com", "password": "short"})))
        .expect(401);
    assert_eq!(s.get(&invitations).body["items"].as_array().unwrap().len(), 1);

    // Accepting creates the account with the invitee's password and signs them in.
    let r = s.accept(&code, &[], json!({"name": "Grace", "password": "cobol compiler 1959"}));
    let body = r.expect(201).clone();
    assert_eq!(body["user"]["email"], "GRACE@example.com");
    assert_eq!(body["workspace"], json!({"id": ws, "name": "default", "role": "admin"}));
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let me = s.request_with("GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    assert_eq!(me.expect(200)["workspaces"][0]["role"], "admin");
    s.login("grace@example.com", "cobol compiler 1959");

    // Once only; and an expired, revoked or used code all get the same answer.
    s.accept(&code, &[], json!({"password": "another password 2024"})).expect_error(404, "invitation_invalid");
    s.request("GET", &format!("/api/v1/invitations/{code}"), None, None).expect_error(404, "invitation_invalid");
    assert_eq!(s.get(&invitations).body["items"], json!([]));
    // A member is not invited again.
    let again =
        s.post(&format!("/api/v1/workspaces/{ws}/members"), json!({"email": "grace@EXAMPLE.com", "role": "member"}));
    again.expect_error(409, "already_member");

    // Revoking: the link stops working.
    let alan = s.invite(&ws, "alan@example.com", "member");
    let alan_code = alan["code"].as_str().unwrap();
    let alan_id = alan["id"].as_str().unwrap();
    assert_eq!(s.delete(&format!("{invitations}/{alan_id}")).status, 204);
    s.delete(&format!("{invitations}/{alan_id}")).expect_error(404, "invitation_not_found");
    s.accept(alan_code, &[], json!({"password": "enigma machine 1939"})).expect_error(404, "invitation_invalid");
    assert!(!emails(&s, &ws, &s.admin).contains(&"alan@example.com".to_owned()));

    // Audited, never with a code.
    assert_eq!(s.audit(&ws, "action=invitation.create").len(), 3);
    assert_eq!(s.audit(&ws, "action=invitation.revoke").len(), 2, "the replaced one and the revoked one");
    let accepted = s.audit(&ws, "action=invitation.accept");
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["target_id"], body["user"]["id"]);
    let all = serde_json::to_string(&s.audit(&ws, "")).unwrap();
    for c in [&first_code, &code, &alan_code.to_owned()] {
        assert!(!all.contains(c.as_str()), "an invitation code reached the audit log");
        assert!(!(s.stderr() + &s.stdout).contains(c.as_str()), "an invitation code reached a log");
    }
    assert!(!all.contains("cobol compiler"));
}

#[test]
fn invitations_expire() {
    let env = vec![("AGENTVAULT_INVITATION_TTL", "2s".to_owned())];
    let (s, _tmp) = with_admin(Options { extra_env: env, ..Options::default() });
    let ws = s.default_ws();
    let invitation = s.invite(&ws, "grace@example.com", "member");
    let code = invitation["code"].as_str().unwrap();
    s.request("GET", &format!("/api/v1/invitations/{code}"), None, None).expect(200);
    std::thread::sleep(Duration::from_millis(2200));
    s.request("GET", &format!("/api/v1/invitations/{code}"), None, None).expect_error(404, "invitation_invalid");
    s.accept(code, &[], json!({"password": "cobol compiler 1959"})).expect_error(404, "invitation_invalid");
    assert_eq!(s.get(&format!("/api/v1/workspaces/{ws}/invitations")).body["items"], json!([]));
    assert_eq!(emails(&s, &ws, &s.admin), vec![ADMIN_EMAIL]);
}

#[test]
fn an_existing_account_joins_only_by_its_holder() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let ws2 = s.post("/api/v1/workspaces", json!({"name": "second"})).expect(201)["id"].as_str().unwrap().to_owned();
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    s.add_user(&ws, "alan@example.com", "member", "enigma machine 1939");
    let grace = s.personal_token("grace@example.com", "cobol compiler 1959");
    let alan = s.personal_token("alan@example.com", "enigma machine 1939");

    // Inviting an existing account does not attach it.
    let invitation = s.invite(&ws2, "grace@example.com", "member");
    let code = invitation["code"].as_str().unwrap().to_owned();
    assert_eq!(s.request("GET", &format!("/api/v1/invitations/{code}"), None, None).body["account_exists"], true);
    assert_eq!(emails(&s, &ws2, &s.admin), vec![ADMIN_EMAIL]);

    // Nobody but Grace gets in with it.
    let r = s.accept(&code, &[], json!({}));
    r.expect_error(401, "unauthenticated");
    assert!(r.text.contains("already has an account"), "{}", r.text);
    s.accept(&code, &[], json!({"password": "not her password at all"})).expect_error(401, "unauthenticated");
    s.accept(&code, &[], json!({"password": "cobol compiler 1959", "name": "Eve"})).expect_error(400, "invalid_input");
    s.accept(&code, &[("Authorization", &bearer(&alan))], json!({})).expect_error(403, "forbidden");
    s.accept(&code, &[("Authorization", &bearer(&s.admin))], json!({})).expect_error(403, "forbidden");
    let (ada_cookie, ada_csrf) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    s.accept(&code, &[("Cookie", &ada_cookie), ("X-CSRF-Token", &ada_csrf)], json!({})).expect_error(403, "forbidden");
    let (grace_cookie, grace_csrf) = s.login("grace@example.com", "cobol compiler 1959");
    // A session without its CSRF token is refused (a cross-site form cannot accept for her).
    s.accept(&code, &[("Cookie", &grace_cookie)], json!({})).expect_error(403, "csrf_failed");
    assert_eq!(emails(&s, &ws2, &s.admin), vec![ADMIN_EMAIL]);

    // Grace, signed in: joins.
    let r = s.accept(&code, &[("Cookie", &grace_cookie), ("X-CSRF-Token", &grace_csrf)], json!({}));
    assert_eq!(r.expect(200)["workspace"]["id"], json!(ws2));
    assert!(r.header("set-cookie").is_none(), "her session goes on");
    assert_eq!(emails(&s, &ws2, &grace).len(), 2);

    // With a personal token, and with the account's password (which signs in).
    let ws3 = s.post("/api/v1/workspaces", json!({"name": "third"})).expect(201)["id"].as_str().unwrap().to_owned();
    let code = s.invite(&ws3, "grace@example.com", "admin")["code"].as_str().unwrap().to_owned();
    s.accept(&code, &[("Authorization", &bearer(&grace))], json!({})).expect(200);
    let code = s.invite(&ws3, "alan@example.com", "member")["code"].as_str().unwrap().to_owned();
    let r = s.accept(&code, &[], json!({"password": "enigma machine 1939"}));
    assert_eq!(r.expect(200)["workspace"]["role"], "member");
    assert!(r.body["csrf_token"].is_string() && r.header("set-cookie").unwrap().contains("av_session="));
    assert_eq!(emails(&s, &ws3, &alan).len(), 3);
}

/// The attack the invitations close: the admin of workspace A created an account with a
/// password of their choosing and waited for the admin of B to add that email to B.
#[test]
fn an_admin_cannot_take_over_an_account_another_workspace_invites() {
    let env = vec![("AGENTVAULT_LOGIN_MAX_FAILURES", "3".to_owned())];
    let (s, _tmp) = with_admin(Options { extra_env: env, ..Options::default() });
    // B: Ada's workspace, with a secret. A: a workspace whose admin is Mallory.
    let ws_b = s.default_ws();
    s.create_secret(&ws_b, "bank_password", json!("hunter2-BANK"), &[]);
    let ws_a = s.post("/api/v1/workspaces", json!({"name": "team-a"})).expect(201)["id"].as_str().unwrap().to_owned();
    s.add_user(&ws_a, "mallory@example.com", "admin", "nightshade garden 1");
    let mallory = s.personal_token("mallory@example.com", "nightshade garden 1");
    let as_mallory =
        |method: &str, path: &str, body: Option<Value>| s.request(method, path, Some(&mallory), body.as_ref());

    // The old way is closed: an admin cannot set anyone's password through the members API.
    let r = as_mallory(
        "POST",
        &format!("/api/v1/workspaces/{ws_a}/members"),
        Some(json!({"email": "cto@victim.example", "role": "member", "password": "mallory knows this 1"})),
    );
    r.expect_error(400, "invalid_input");
    assert_eq!(r.body["error"]["field"], "password");
    assert!(r.text.contains("chosen by the invitee"), "{}", r.text);
    let login = |password: &str| {
        s.request(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": "cto@victim.example", "password": password})),
        )
    };
    login("mallory knows this 1").expect_error(401, "unauthenticated");
    let pending = as_mallory("GET", &format!("/api/v1/workspaces/{ws_a}/invitations"), None);
    assert_eq!(pending.expect(200)["items"], json!([]));

    // Mallory invites the CTO's email to A and accepts it herself: her own invitation, so
    // allowed. She knows the account's password. Then she removes it from A.
    let a_invite = as_mallory(
        "POST",
        &format!("/api/v1/workspaces/{ws_a}/members"),
        Some(json!({"email": "cto@victim.example", "role": "member"})),
    );
    let a_code = a_invite.expect(201)["code"].as_str().unwrap().to_owned();
    let r = s.accept(&a_code, &[], json!({"password": "mallory knows this 1"}));
    let cto_id = r.expect(201)["user"]["id"].as_str().unwrap().to_owned();
    as_mallory("DELETE", &format!("/api/v1/workspaces/{ws_a}/members/{cto_id}"), None);

    // Later, B's admin invites the CTO as an admin of B.
    let b_invite = s.invite(&ws_b, "cto@victim.example", "admin");
    let b_code = b_invite["code"].as_str().unwrap().to_owned();
    let b_members = emails(&s, &ws_b, &s.admin);
    assert!(!b_members.contains(&"cto@victim.example".to_owned()), "not attached before accepting: {b_members:?}");

    // Mallory, knowing the account's password but not B's code, cannot join B.
    let (cto_cookie, cto_csrf) = s.login("cto@victim.example", "mallory knows this 1");
    let as_cto = [("Cookie", cto_cookie.as_str()), ("X-CSRF-Token", cto_csrf.as_str())];
    let secrets = format!("/api/v1/workspaces/{ws_b}/secrets");
    s.request_with("GET", &secrets, &as_cto, None).expect_error(404, "workspace_not_found");
    s.request_with("GET", &format!("/api/v1/workspaces/{ws_b}/invitations"), &as_cto, None)
        .expect_error(404, "workspace_not_found");
    as_mallory("GET", &format!("/api/v1/workspaces/{ws_b}/invitations"), None).expect_error(404, "workspace_not_found");
    for guess in [a_code.as_str(), "avi_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        s.accept(guess, &as_cto, json!({})).expect_error(404, "invitation_invalid");
        s.accept(guess, &[], json!({"password": "mallory knows this 1"})).expect_error(404, "invitation_invalid");
    }

    // B's code does nothing without the account's password or session: not for B's own admin,
    // not for Mallory, not for someone guessing passwords (who is rate-limited like a sign-in).
    s.accept(&b_code, &[], json!({})).expect_error(401, "unauthenticated");
    s.accept(&b_code, &[("Authorization", &bearer(&s.admin))], json!({})).expect_error(403, "forbidden");
    s.accept(&b_code, &[("Authorization", &bearer(&mallory))], json!({})).expect_error(403, "forbidden");
    s.accept(&b_code, &[], json!({"password": "nightshade garden 1"})).expect_error(401, "unauthenticated");
    s.accept(&b_code, &[], json!({"name": "CTO", "password": "a brand new password"}))
        .expect_error(400, "invalid_input");
    s.accept(&b_code, &[], json!({"password": "guess number two!"})).expect_error(401, "unauthenticated");
    s.accept(&b_code, &[], json!({"password": "guess number three"})).expect_error(401, "unauthenticated");
    s.accept(&b_code, &[], json!({"password": "guess number four!"})).expect_error(429, "rate_limited");

    // Nothing changed in B: no new member, the secret unread, the invitation still pending.
    assert_eq!(emails(&s, &ws_b, &s.admin), b_members);
    s.request_with("POST", &format!("{secrets}/bank_password/reveal"), &as_cto, None)
        .expect_error(404, "workspace_not_found");
    let pending = s.get(&format!("/api/v1/workspaces/{ws_b}/invitations"));
    assert_eq!(pending.expect(200)["items"][0]["id"], b_invite["id"]);
    assert!(s.audit(&ws_b, "action=secret.reveal").is_empty());
    assert!(s.audit(&ws_b, "action=invitation.accept").is_empty());
}

/// The bootstrap token (admin of every workspace until the first admin exists) cannot invite: an
/// invitation accepted before setup would make a user without ending the token's power.
#[test]
fn the_bootstrap_token_cannot_invite_before_the_first_admin_exists() {
    let s = Server::start();
    let ws = s.default_ws();
    let r = s.post(&format!("/api/v1/workspaces/{ws}/members"), json!({"email": "eve@example.com", "role": "member"}));
    r.expect_error(409, "setup_first");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("/api/v1/setup"), "{}", r.text);
    let pending = s.get(&format!("/api/v1/workspaces/{ws}/invitations"));
    assert_eq!(pending.expect(200)["items"], json!([]), "nothing was left behind");
}

/// An admin who is demoted or removed takes their pending invitations with them: an invitation
/// never carries an admin's power past their role.
#[test]
fn pending_invitations_end_with_their_inviters_admin_role() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let mallory = s.add_user(&ws, "mallory@example.com", "admin", "nightshade garden 1");
    let mallory_token = s.personal_token("mallory@example.com", "nightshade garden 1");
    let invite = |email: &str| {
        let r = s.request(
            "POST",
            &format!("/api/v1/workspaces/{ws}/members"),
            Some(&mallory_token),
            Some(&json!({"email": email, "role": "admin"})),
        );
        r.expect(201)["code"].as_str().unwrap().to_owned()
    };
    let pending = |s: &Server| s.get(&format!("/api/v1/workspaces/{ws}/invitations")).expect(200)["items"].clone();

    // Demoted: the invitation made as an admin stops working.
    let before_demotion = invite("mallory.backup@example.com");
    s.patch(&format!("/api/v1/workspaces/{ws}/members/{mallory}"), json!({"role": "member"})).expect(200);
    assert_eq!(pending(&s), json!([]));
    let r = s.accept(&before_demotion, &[], json!({"name": "M", "password": "a backup door 2024"}));
    r.expect_error(404, "invitation_invalid");

    // Removed: the same.
    s.patch(&format!("/api/v1/workspaces/{ws}/members/{mallory}"), json!({"role": "admin"})).expect(200);
    let before_removal = invite("mallory.other@example.com");
    s.delete(&format!("/api/v1/workspaces/{ws}/members/{mallory}")).expect(204);
    assert_eq!(pending(&s), json!([]));
    let r = s.accept(&before_removal, &[], json!({"name": "M", "password": "a backup door 2024"}));
    r.expect_error(404, "invitation_invalid");
    assert_eq!(emails(&s, &ws, &s.admin), vec![ADMIN_EMAIL]);
}
