//! The web console in a real browser, against a real server. Screenshots of the main pages go to
//! `test-output/screenshots/`.

use serde_json::json;

use crate::support::browser::Browser;
use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Options, Server, setup_code, with_admin};

#[test]
fn an_admin_adds_secrets_and_grants_access_in_the_console() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    let support = s.create_agent(&ws, "Support bot");
    let b = Browser::start();

    // Wrong password: the page says so and stays.
    b.goto(&format!("{}/login", s.base));
    b.type_into("#email", ADMIN_EMAIL);
    b.type_into("#password", "not the password");
    b.click("form[data-form=login] button[type=submit]");
    b.wait_text("form[data-form=login] [data-error-for='']", "email or password");
    b.screenshot("login");
    b.clear("#password");
    b.type_into("#password", ADMIN_PASSWORD);
    b.click("form[data-form=login] button[type=submit]");
    b.wait_until("the agents page", |b| b.url().ends_with(&format!("/w/{ws}/agents")));
    b.wait_text("main", "Billing bot");
    b.screenshot("agents");

    b.click("nav.tabs a[href$='/secrets']");
    b.wait_text("main .empty", "No secrets yet");
    b.screenshot("secrets-empty");
    b.click("main a[href$='/secrets/new']");

    // The name rule as you type, then a single secret for one of the two agents.
    b.type_into("#secret-name", "Stripe");
    b.wait_text("[data-error-for=name]", "must start with a lowercase letter");
    b.clear("#secret-name");
    b.type_into("#secret-name", "stripe_api_key");
    b.wait_until("the name error to clear", |b| b.text("[data-error-for=name]").is_empty());
    b.type_into("#secret-description", "Stripe live key");
    b.type_into("#secret-value", "sk_live_BROWSER_1");
    b.click(&format!("input[name=agents][value={billing}]"));
    b.screenshot("add-secret");
    b.click("form[data-form=secret-new] button[type=submit]");
    b.wait_until("the secret's page", |b| b.url().ends_with("/secrets/stripe_api_key"));
    b.wait_text("main h1", "stripe_api_key");
    assert_eq!(b.value("#secret-reveal"), "••••••••••••");
    let checked = |b: &Browser, agent: &str| {
        b.script(
            "return document.querySelector(arguments[0]).checked",
            json!([format!("input[name=agents][value={agent}]")]),
        ) == json!(true)
    };
    assert!(checked(&b, &billing) && !checked(&b, &support));
    assert!(!b.text("main").contains("sk_live_BROWSER_1"), "the value is on the page unasked");
    b.screenshot("secret-details");

    // A key/value secret.
    b.goto(&format!("{}/w/{ws}/secrets/new", s.base));
    b.type_into("#secret-name", "booking_oauth");
    b.click("input[name=kind][value=kv]");
    b.type_into("#kv-key-1", "client_id");
    b.type_into("#kv-value-1", "cid_BROWSER");
    b.click("[data-kv-add]");
    b.type_into("#kv-key-2", "client_secret");
    b.type_into("#kv-value-2", "cs_BROWSER");
    b.click(&format!("input[name=agents][value={support}]"));
    b.click("form[data-form=secret-new] button[type=submit]");
    b.wait_until("the kv secret's page", |b| b.url().ends_with("/secrets/booking_oauth"));
    let created = s.get(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth")).expect(200).clone();
    assert_eq!(created["keys"], json!(["client_id", "client_secret"]));
    assert_eq!(created["agents"], json!([support]));

    // A new version that changes one pair: the other keeps its value without being retyped.
    b.type_into("form[data-form=secret-update] tbody tr:nth-child(2) [data-kv-value]", "cs_ROTATED");
    b.click("form[data-form=secret-update] button[type=submit]");
    let version = |name: &str| s.get(&format!("/api/v1/workspaces/{ws}/secrets/{name}")).expect(200)["version"].clone();
    b.wait_until("the new version", |_| version("booking_oauth") == 2);
    b.wait_until("the page reloaded with version 2", |b| {
        let shown = b.script(
            "const d = [...document.querySelectorAll('dl.meta dt')].find(e => e.textContent == 'Version'); \
             return d ? d.nextElementSibling.textContent : null",
            json!([]),
        );
        shown == json!("2")
    });
    let revealed =
        s.post(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth/reveal"), json!({})).expect(200).clone();
    assert_eq!(revealed["value"], json!({"client_id": "cid_BROWSER", "client_secret": "cs_ROTATED"}));

    // The server's refusal beside the field; what was typed stays.
    b.goto(&format!("{}/w/{ws}/secrets/new", s.base));
    b.type_into("#secret-name", "stripe_api_key");
    b.type_into("#secret-description", "a second try");
    b.type_into("#secret-value", "sk_live_AGAIN");
    b.click("form[data-form=secret-new] button[type=submit]");
    b.wait_text("[data-error-for=name]", "already");
    assert_eq!(b.value("#secret-description"), "a second try");
    assert_eq!(b.value("#secret-value"), "", "a secret value stays on the page after an error");

    // The list: two secrets, searchable.
    b.goto(&format!("{}/w/{ws}/secrets", s.base));
    b.wait_text("#secrets-table", "booking_oauth");
    b.type_into("#secret-search", "book");
    b.wait_until("the search to hide stripe_api_key", |b| {
        b.script(
            "return Array.from(document.querySelectorAll('#secrets-table tbody tr')).filter(r => !r.hidden).length",
            json!([]),
        ) == json!(1)
    });
    b.screenshot("secrets");

    // Access from the details page: live at once.
    b.goto(&format!("{}/w/{ws}/secrets/stripe_api_key", s.base));
    b.click(&format!("input[name=agents][value={billing}]"));
    b.click(&format!("input[name=agents][value={support}]"));
    b.click("form[data-form=secret-access] button[type=submit]");
    b.wait_shown("the saved note", "[data-saved]");
    let now = s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).expect(200).clone();
    assert_eq!(now["agents"], json!([support]));

    // Revealing on focus shows the value, blurring masks it again; the reveal is audited.
    b.click("#secret-reveal");
    b.wait_until("the revealed value", |b| b.value("#secret-reveal") == "sk_live_BROWSER_1");
    b.click("main h1");
    b.wait_until("the value masked again", |b| b.value("#secret-reveal") == "••••••••••••");
    assert_eq!(s.audit(&ws, "action=secret.reveal&secret=stripe_api_key").len(), 1);

    // Delete, confirmed by typing the name.
    b.goto(&format!("{}/w/{ws}/secrets/booking_oauth", s.base));
    b.type_into("#confirm-name", "booking");
    b.click("form[data-form=secret-delete] button[type=submit]");
    b.wait_text("[data-error-for=confirm]", "type the secret's name");
    b.clear("#confirm-name");
    b.type_into("#confirm-name", "booking_oauth");
    b.click("form[data-form=secret-delete] button[type=submit]");
    b.wait_until("the list", |b| b.url().ends_with("/secrets"));
    s.get(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth")).expect_error(404, "secret_not_found");

    // Narrow screens.
    b.resize(390, 844);
    b.goto(&format!("{}/w/{ws}/secrets", s.base));
    b.wait_text("#secrets-table", "stripe_api_key");
    b.screenshot("secrets-narrow");
}

#[test]
fn a_member_never_sees_the_secrets_tab() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    s.create_agent(&ws, "Billing bot");
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    let b = Browser::start();
    b.sign_in(&s, "grace@example.com", "cobol compiler 1959");
    b.wait_text("main", "Billing bot");
    assert!(!b.exists("nav.tabs a[href$='/secrets']"), "a member sees the Secrets tab");
    b.goto(&format!("{}/w/{ws}/secrets", s.base));
    b.wait_text("main h1", "Not allowed");
    b.screenshot("member-secrets-forbidden");
    // The page answers 403 itself, not just a message.
    let (cookie, _) = s.login("grace@example.com", "cobol compiler 1959");
    for path in [format!("/w/{ws}/secrets"), format!("/w/{ws}/secrets/new"), format!("/w/{ws}/secrets/anything")] {
        let r = s.request_with("GET", &path, &[("Cookie", &cookie)], None);
        assert_eq!(r.status, 403, "{path}");
    }
    // Scripts come from this server only, never inline; every asset is embedded.
    let page = s.request_with("GET", &format!("/w/{ws}/agents"), &[("Cookie", &cookie)], None);
    let csp = page.header("content-security-policy").unwrap().to_owned();
    assert!(csp.contains("script-src 'self';") && csp.contains("default-src 'none'"), "{csp}");
    assert!(!page.text.contains("http://") && !page.text.contains("https://"), "an external reference: {}", page.text);
    for asset in ["console.js", "console.css", "editor.js"] {
        assert_eq!(s.request("GET", &format!("/assets/{asset}"), None, None).status, 200, "{asset}");
    }
    // Signed out: the console sends you to sign in.
    b.delete_cookies();
    b.goto(&format!("{}/w/{ws}/agents", s.base));
    b.wait_until("the sign-in page", |b| b.url().contains("/login?next="));
}

#[test]
fn the_function_editor_shows_granted_secrets_and_tests_with_redaction() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    let support = s.create_agent(&ws, "Support bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_EDITOR_9"), &[&billing]);
    s.create_secret(&ws, "zendesk_token", json!("zd_OTHER"), &[&support]);
    let b = Browser::signed_in_admin(&s);

    b.click(&format!("main a[href$='/agents/{billing}']"));
    b.wait_text("main h1", "Billing bot");
    b.click("main a[href$='/functions/new']");
    b.find(".cm-editor");
    b.type_into("#fn-name", "create_payment");
    b.type_into("#fn-description", "Charge the caller");
    b.click("[data-param-add]");
    b.type_into("[data-param-row] [data-param-name]", "amount");
    b.script("const s = document.querySelector('[data-param-row] [data-param-type]'); s.value = 'integer';", json!([]));
    let set_code = |code: &str| {
        b.script("document.querySelector('[data-code-editor]').agentvaultEditor.setValue(arguments[0])", json!([code]));
    };
    // A compile error is shown beside the code, with its line.
    set_code("def create_payment(conv: Conversation, amount):\n    return (\n");
    b.click("form[data-form=function-save] button[type=submit]");
    b.wait_text("[data-error-for=code]", "line 2");
    set_code(
        "def create_payment(conv: Conversation, amount):\n    key = conv.utils.get_secret('stripe_api_key')\n    conv.log.info('using ' + key)\n    conv.state.runs = (conv.state.runs or 0) + 1\n    return f'charged {amount} with {key}'\n",
    );
    b.click("form[data-form=function-save] button[type=submit]");
    b.wait_until("the saved function's page", |b| b.url().ends_with("/functions/create_payment"));

    // The Secrets box: exactly the secret this agent can read, with its snippet.
    b.wait_text("[data-secrets-box]", "stripe_api_key");
    let listed = b.script(
        "return Array.from(document.querySelectorAll('[data-secrets-box] li code')).map(c => c.textContent)",
        json!([]),
    );
    assert_eq!(listed, json!(["stripe_api_key"]));
    b.click("[data-secrets-box] button[data-copy]");
    b.wait_text("#toast", "conv.utils.get_secret('stripe_api_key')");
    b.script("document.querySelector('.editor-grid').scrollIntoView()", json!([]));
    b.screenshot("function-editor");

    // A test run: the value is redacted everywhere; the state carries over.
    b.clear("#test-args");
    b.type_into("#test-args", r#"{"amount": 5}"#);
    b.click("form[data-form=function-test] button[type=submit]");
    b.wait_text("[data-out=result]", "charged 5 with [redacted:stripe_api_key]");
    assert!(b.text("[data-out=logs]").contains("using [redacted:stripe_api_key]"));
    assert!(!b.text("main").contains("sk_live_EDITOR_9"));
    assert_eq!(b.value("#test-state"), r#"{"runs":1}"#);
    b.click("form[data-form=function-test] button[type=submit]");
    b.wait_until("the state to carry over", |b| b.value("#test-state") == r#"{"runs":2}"#);
    b.script("document.querySelector('#test-title').scrollIntoView()", json!([]));
    b.screenshot("function-test");

    // Revoking access in Secret details: the next run fails with MissingAccess.
    b.goto(&format!("{}/w/{ws}/secrets/stripe_api_key", s.base));
    b.click(&format!("input[name=agents][value={billing}]"));
    b.click("form[data-form=secret-access] button[type=submit]");
    b.wait_shown("the saved note", "[data-saved]");
    b.goto(&format!("{}/w/{ws}/agents/{billing}/functions/create_payment", s.base));
    b.find(".cm-editor");
    assert_eq!(b.script("return document.querySelectorAll('[data-secrets-box] li').length", json!([])), json!(0));
    b.clear("#test-args");
    b.type_into("#test-args", r#"{"amount": 5}"#);
    b.click("form[data-form=function-test] button[type=submit]");
    b.wait_text("[data-out=error]", "MissingAccess");
    assert!(
        b.text("[data-out=error]").contains("agent \"Billing bot\" has no access"),
        "{}",
        b.text("[data-out=error]")
    );
    b.script("document.querySelector('[data-test-output]').scrollIntoView()", json!([]));
    b.screenshot("function-test-missing-access");
    // The same action as in the editor: grant access from the failed run, and run again.
    b.click("[data-test-actions] [data-grant-secret=stripe_api_key]");
    b.wait_until("access granted", |_| {
        s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).body["agents"] == json!([billing])
    });
    b.wait_until("the page reloaded", |b| {
        b.script("const o = document.querySelector('[data-test-output]'); return !!o && o.hidden", json!([]))
            == json!(true)
    });
    b.find(".cm-editor");
    b.clear("#test-args");
    b.type_into("#test-args", r#"{"amount": 5}"#);
    b.click("form[data-form=function-test] button[type=submit]");
    b.wait_text("[data-out=result]", "charged 5 with [redacted:stripe_api_key]");
}

#[test]
fn first_run_setup_then_sign_out_and_in() {
    let s = Server::start();
    let code = setup_code(&s);
    let b = Browser::start();
    b.goto(&format!("{}/setup", s.base));
    b.type_into("#setup_code", &code);
    b.type_into("#email", "ada@example.com");
    b.type_into("#name", "Ada");
    b.type_into("#password", "short");
    b.screenshot("setup");
    // The browser's own check stops a short password; the server's rule is the same.
    b.script("document.querySelector('#password').removeAttribute('minlength')", json!([]));
    b.click("button[type=submit]");
    b.wait_text("#password-error", "12");
    assert_eq!(b.value("#email"), "ada@example.com", "the form keeps what was typed");
    b.type_into("#setup_code", &code);
    b.type_into("#password", "correct horse battery");
    b.click("button[type=submit]");
    b.wait_text("main", "agentvault is set up");
    b.click("main a.button");
    b.wait_until("the console, signed in", |b| b.url().contains("/agents"));
    b.wait_text("header .who", "ada@example.com");
    b.click("[data-sign-out]");
    b.wait_until("the sign-in page", |b| b.url().ends_with("/login"));
    b.sign_in(&s, "ada@example.com", "correct horse battery");
}

#[test]
fn users_api_keys_and_the_audit_log_in_the_console() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    let support = s.create_agent(&ws, "Support bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_AUDIT"), &[&billing]);
    let b = Browser::signed_in_admin(&s);

    // Users: invite one (the link is shown once), make them admin once they joined, then
    // remove them.
    b.click("nav.tabs a[href$='/users']");
    b.wait_text("#members-table", ADMIN_EMAIL);
    assert!(!b.exists("#member-password"), "admins do not choose passwords");
    b.type_into("#member-email", "not-an-email");
    b.click("form[data-form=member-add] button[type=submit]");
    b.wait_text("form[data-form=member-add] [data-error-for=email]", "email address");
    b.clear("#member-email");
    b.type_into("#member-email", "grace@example.com");
    b.click("form[data-form=member-add] button[type=submit]");
    b.wait_until("the invitation link", |b| b.value("#invitation-link").contains("/invite/avi_"));
    let link = b.value("#invitation-link");
    b.click("[data-new-invitation] a");
    b.wait_text("#invitations-table", "grace@example.com");
    assert!(!b.text("main").contains(&link), "the link is shown once");
    let code = link.rsplit('/').next().unwrap();
    s.accept(code, &[], json!({"name": "Grace", "password": "cobol compiler 1959"})).expect(201);
    b.goto(&format!("{}/w/{ws}/users", s.base));
    b.wait_text("#members-table", "grace@example.com");
    assert!(b.exists("#no-invitations"), "accepted: no longer pending");
    let grace = s.get(&format!("/api/v1/workspaces/{ws}/members")).expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "grace@example.com")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.script("document.querySelector(arguments[0]).value = 'admin'", json!([format!("#role-{grace}")]));
    b.click(&format!("form[data-form=member-role][data-user={grace}] button[type=submit]"));
    b.wait_shown("the role saved", &format!("form[data-user={grace}] [data-saved]"));
    b.screenshot("users");
    b.click(&format!("form[data-form=member-remove][data-user={grace}] button[type=submit]"));
    b.accept_dialog();
    b.wait_until("grace removed", |b| !b.text("#members-table").contains("grace@example.com"));

    // API keys: created for one agent with an expiry, shown once, then revoked.
    b.click("nav.tabs a[href$='/api-keys']");
    b.wait_text("main .empty", "No API keys yet");
    b.type_into("#key-name", "voice engine");
    b.click("input[name=scope][value=chosen]");
    b.click(&format!("input[name=agents][value={billing}]"));
    b.script("document.querySelector('#key-expires').value = '2030-01-31T12:00'", json!([]));
    b.script("document.querySelector('#key-env').value = 'live'", json!([]));
    b.click("form[data-form=key-create] button[type=submit]");
    b.wait_until("the new token", |b| b.value("#new-token").starts_with("avk_"));
    let token = b.value("#new-token");
    s.read(&token, &billing, "stripe_api_key").expect(200);
    // A key for live: it never reads another environment's value.
    let path = format!("/api/v1/agents/{billing}/secrets/stripe_api_key?env=sandbox");
    s.request("GET", &path, Some(&token), None).expect_error(403, "wrong_environment");
    b.screenshot("api-key-created");
    b.click("[data-new-token] a");
    b.wait_text("#keys-table", "voice engine");
    assert!(b.text("#keys-table").contains("Billing bot") && b.text("#keys-table").contains("2030-01-31T12:00:00"));
    assert!(b.text("#keys-table tbody tr:first-child").contains("live"));
    assert!(!b.text("main").contains(&token), "the token is shown again");
    b.click("form[data-form=key-revoke] button[type=submit]");
    b.accept_dialog();
    b.wait_text("#keys-table", "revoked");
    s.read(&token, &billing, "stripe_api_key").expect_error(401, "unauthenticated");

    // The audit log: newest first, filtered, exported.
    b.click("nav.tabs a[href$='/audit']");
    b.wait_text("#audit-table", "api_key.revoke");
    let first = b.text("#audit-table tbody tr:first-child");
    assert!(first.contains("api_key.revoke"), "{first}");
    b.script("document.querySelector('#f-action').value = 'secret.read'", json!([]));
    b.click("form.filters button[type=submit]");
    b.wait_until("the filtered view", |b| b.url().contains("action=secret.read"));
    b.wait_until("only the read with the key (the revoked key never got in)", |b| {
        let rows = b.script(
            "return Array.from(document.querySelectorAll('#audit-table tbody tr')).map(r => r.cells[2].textContent)",
            json!([]),
        );
        rows == json!(["secret.read"])
    });
    b.screenshot("audit");
    let (cookie, _) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let csv = s.request_with(
        "GET",
        &format!("/w/{ws}/audit/export?format=csv&action=secret.read"),
        &[("Cookie", &cookie)],
        None,
    );
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-disposition").unwrap().contains("attachment"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines[0], "id,at,actor_type,actor_id,action,outcome,secret,agent_id,target_id,detail");
    assert_eq!(lines.len(), 2, "{}", csv.text);
    assert!(lines[1..].iter().all(|l| l.contains(",secret.read,")));
    // One denied record: a key for Support bot asking for Billing bot's secret. The JSON export
    // filtered to denied holds exactly that record.
    let (_, support_key) = s.create_key(&ws, json!([support]));
    s.read(&support_key, &billing, "stripe_api_key").expect_error(403, "missing_access");
    let json_export = s.request_with(
        "GET",
        &format!("/w/{ws}/audit/export?format=json&outcome=denied"),
        &[("Cookie", &cookie)],
        None,
    );
    assert_eq!(json_export.status, 200, "{}", json_export.text);
    let denied = json_export.body.as_array().unwrap();
    assert_eq!(denied.len(), 1, "{}", json_export.text);
    assert!(denied.iter().all(|r| r["outcome"] == "denied"));
    assert_eq!(
        (&denied[0]["action"], &denied[0]["secret"], &denied[0]["agent_id"]),
        (&json!("secret.read"), &json!("stripe_api_key"), &json!(billing)),
        "{}",
        json_export.text
    );
    assert!(!csv.text.contains("sk_live_AUDIT") && !json_export.text.contains("sk_live_AUDIT"));
    // A bad filter is explained on the page.
    b.goto(&format!("{}/w/{ws}/audit?since=yesterday", s.base));
    b.wait_text("form.filters [role=alert]", "since");

    // A member sees the lists, without the management parts and without Audit.
    s.add_user(&ws, "alan@example.com", "member", "enigma machine 1939");
    b.delete_cookies();
    b.sign_in(&s, "alan@example.com", "enigma machine 1939");
    assert!(!b.exists("nav.tabs a[href$='/audit']"));
    b.goto(&format!("{}/w/{ws}/users", s.base));
    b.wait_text("#members-table", ADMIN_EMAIL);
    assert!(!b.exists("form[data-form=member-add]") && !b.exists("form[data-form=member-role]"));
    b.goto(&format!("{}/w/{ws}/api-keys", s.base));
    b.wait_text("#keys-table", "voice engine");
    assert!(!b.exists("form[data-form=key-create]"));
    let (member_cookie, _) = s.login("alan@example.com", "enigma machine 1939");
    for path in [format!("/w/{ws}/audit"), format!("/w/{ws}/audit/export?format=csv")] {
        assert_eq!(s.request_with("GET", &path, &[("Cookie", &member_cookie)], None).status, 403, "{path}");
    }
}

#[test]
fn an_invitee_opens_the_link_and_creates_their_account() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let b = Browser::signed_in_admin(&s);
    b.goto(&format!("{}/w/{ws}/users", s.base));
    b.type_into("#member-email", "alan@example.com");
    b.click("form[data-form=member-add] button[type=submit]");
    b.wait_until("the invitation link", |b| b.value("#invitation-link").contains("/invite/avi_"));
    let link = b.value("#invitation-link");
    assert!(link.starts_with(&s.base), "a link to this server: {link}");
    assert_eq!(b.text("[data-invited-email]"), "alan@example.com");
    b.screenshot("invitation-created");
    // The pending invitation is listed, and can be revoked (here: a second one, for Edsger).
    b.goto(&format!("{}/w/{ws}/users", s.base));
    b.wait_text("#invitations-table", "alan@example.com");
    let edsger = s.invite(&ws, "edsger@example.com", "member");
    b.goto(&format!("{}/w/{ws}/users", s.base));
    b.wait_text("#invitations-table", "edsger@example.com");
    b.click(&format!(
        "form[data-form=invitation-revoke][data-invitation={}] button[type=submit]",
        edsger["id"].as_str().unwrap()
    ));
    b.accept_dialog();
    b.wait_until("edsger's invitation revoked", |b| !b.text("#invitations-table").contains("edsger@example.com"));
    b.screenshot("invitations");

    // Alan, in a fresh browser session, opens the link and creates his account.
    b.delete_cookies();
    b.goto(&link);
    b.wait_text("main h1", "Join default");
    assert!(b.text("main").contains("alan@example.com") && b.text("main").contains("member"));
    b.type_into("#name", "Alan");
    b.type_into("#password", "short");
    b.script("document.querySelector('#password').removeAttribute('minlength')", json!([]));
    b.click("form[data-form=invite-create] button[type=submit]");
    b.wait_text("form[data-form=invite-create] [data-error-for=password]", "12");
    b.clear("#password");
    b.type_into("#password", "enigma machine 1939");
    b.screenshot("invitation-accept");
    b.click("form[data-form=invite-create] button[type=submit]");
    b.wait_until("the workspace, signed in", |b| b.url().ends_with(&format!("/w/{ws}/agents")));
    b.wait_text("header .who", "alan@example.com");
    // The link is used up.
    b.goto(&link);
    b.wait_text("main h1", "Invitation not valid");
    assert!(b.text("#invitation-error").contains("ask your workspace admin"));
    s.login("alan@example.com", "enigma machine 1939");

    // Invited to another workspace while signed in as the invited account: one Join button.
    let ws2 = s.post("/api/v1/workspaces", json!({"name": "research"})).expect(201)["id"].as_str().unwrap().to_owned();
    let second = s.invite(&ws2, "alan@example.com", "admin");
    b.goto(&format!("{}{}", s.base, second["path"].as_str().unwrap()));
    b.wait_text("main h1", "Join research");
    assert!(!b.exists("#password"), "no password needed when signed in as the invitee");
    b.screenshot("invitation-join");
    b.click("form[data-form=invite-join] button[type=submit]");
    b.wait_until("the joined workspace", |b| b.url().ends_with(&format!("/w/{ws2}/agents")));
    b.wait_text("nav.tabs", "Secrets");
}

/// An admin sets an agent's network policy and makes a secret injected only in the console.
#[test]
fn an_admin_sets_the_network_policy_and_an_injected_secret_in_the_console() {
    let (s, _tmp) =
        with_admin(Options { extra_env: vec![("AGENTVAULT_SANDBOX", "bwrap".into())], ..Options::default() });
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_CONSOLE_USE"), &[&agent]);
    let b = Browser::signed_in_admin(&s);

    b.goto(&format!("{}/w/{ws}/agents/{agent}", s.base));
    b.wait_text("#egress-mode", "Default");
    b.click("input[name=mode][value=allowlist]");
    // An allowlist without hosts is refused beside the field.
    b.click("form[data-form=agent-egress] button[type=submit]");
    b.wait_text("[data-form=agent-egress] [data-error-for=hosts]", "at least one host");
    b.type_into("#egress-hosts-input", "api.stripe.com\n*.googleapis.com");
    b.click("form[data-form=agent-egress] button[type=submit]");
    b.wait_text("#egress-mode", "Allowlist");
    assert!(b.text("#egress-hosts").contains("*.googleapis.com"));
    b.script("document.querySelector('#network').scrollIntoView()", json!([]));
    b.screenshot("agent-network");
    let policy = s.get(&format!("/api/v1/workspaces/{ws}/agents/{agent}/egress")).expect(200).clone();
    assert_eq!(policy["hosts"], json!(["api.stripe.com", "*.googleapis.com"]));

    b.goto(&format!("{}/w/{ws}/secrets/stripe_api_key", s.base));
    b.wait_text("#secret-use", "readable by functions");
    b.click("input[name=use][value=injected]");
    b.type_into("#injection-hosts", "api.stripe.com");
    b.click("form[data-form=secret-injection] button[type=submit]");
    b.wait_text("#secret-use", "injected only");
    assert!(b.text("#secret-use").contains("api.stripe.com"));
    let injection = s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key/injection")).expect(200).clone();
    assert_eq!(injection, json!({"injected_only": true, "hosts": ["api.stripe.com"]}));
}

/// An ended session sends the browser to sign in, and back where it was.
#[test]
fn an_ended_session_sends_the_browser_to_sign_in_and_back() {
    let ttl = std::time::Duration::from_secs(6);
    let (s, _tmp) =
        with_admin(Options { extra_env: vec![("AGENTVAULT_SESSION_TTL", "6s".into())], ..Options::default() });
    let ws = s.default_ws();
    let b = Browser::start();
    b.goto(&format!("{}/login", s.base));
    assert!(!b.exists("#needs-setup"), "setup is done: the sign-in page does not offer it");
    b.sign_in(&s, ADMIN_EMAIL, ADMIN_PASSWORD);
    // The session began before this instant, so it has ended a TTL after it.
    let signed_in = std::time::Instant::now();
    b.wait_text("main h1", "Agents");
    // The session expires while the page is open; the next form sent goes to sign in, not to an
    // error about headers.
    std::thread::sleep(ttl.saturating_sub(signed_in.elapsed()) + std::time::Duration::from_millis(500));
    b.type_into("#agent-name", "Late bot");
    b.click("form[data-form=agent-new] button[type=submit]");
    b.wait_until("the sign-in page", |b| b.url().contains("/login?expired=1"));
    b.wait_text("#session-ended", "Your session has ended");
    b.screenshot("session-ended");
    b.type_into("#email", ADMIN_EMAIL);
    b.type_into("#password", ADMIN_PASSWORD);
    b.click("form[data-form=login] button[type=submit]");
    b.wait_until("back where it was", |b| b.url().ends_with(&format!("/w/{ws}/agents")));

    // An unknown URL is a page, with the way back.
    b.goto(&format!("{}/w/{ws}/no-such-tab", s.base));
    b.wait_text("main h1", "Not found");
    assert!(b.text("main").contains("no page at this address"));
    b.screenshot("not-found");
}

#[test]
fn used_by_and_the_editors_marks_show_what_a_secret_change_breaks() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_USEDBY"), &[&billing]);
    s.create_secret(&ws, "booking_oauth", json!({"client_id": "cid", "client_secret": "cs"}), &[]);
    let code = "def create_payment(conv: Conversation, amount: int):\n    key = conv.utils.get_secret('stripe_api_key')\n    \
                oauth = conv.utils.get_secret('booking_oauth')\n    other = conv.utils.get_secret('no_such_secret')\n    \
                return f'charged {amount}'\n";
    crate::support::define(
        &s,
        &ws,
        &billing,
        "create_payment",
        json!([{"name": "amount", "type": "integer"}]),
        "def create_payment(conv: Conversation, amount: int):\n    return conv.utils.get_secret('stripe_api_key')[:3]\n",
    );
    let b = Browser::signed_in_admin(&s);

    // Saving in the editor finds the get_secret calls; each one the agent cannot read is marked
    // at its line.
    b.goto(&format!("{}/w/{ws}/agents/{billing}/functions/create_payment", s.base));
    b.find(".cm-editor");
    b.script("document.querySelector('[data-code-editor]').agentvaultEditor.setValue(arguments[0])", json!([code]));
    b.click("form[data-form=function-save] button[type=submit]");
    b.wait_shown("the saved note", "form[data-form=function-save] [data-saved]");
    b.goto(&format!("{}/w/{ws}/agents/{billing}/functions/create_payment", s.base));
    b.wait_text("[data-secret-marks]", "no_such_secret");
    let marks = b.script(
        "return Array.from(document.querySelectorAll('[data-secret-marks] li')).map(li => [li.dataset.markLine, li.dataset.markSecret, li.className])",
        json!([]),
    );
    assert_eq!(
        marks,
        json!([
            ["2", "stripe_api_key", "mark-ok"],
            ["3", "booking_oauth", "mark-missing"],
            ["4", "no_such_secret", "mark-missing"]
        ])
    );
    assert!(b.text("[data-mark-secret=booking_oauth]").contains("Billing bot has no access"));
    assert!(b.text("[data-mark-secret=no_such_secret]").contains("no secret named no_such_secret exists"));
    b.wait_until("the editor's line marks", |b| {
        b.script(
            "return Array.from(document.querySelectorAll('.cm-marked-line')).map(l => l.dataset.markedLine)",
            json!([]),
        ) == json!(["3", "4"])
    });
    b.script("document.querySelector('.editor-grid').scrollIntoView()", json!([]));
    b.screenshot("function-editor-marks");

    // Grant access in place: the agent is added to the secret's list, nobody removed.
    b.click("[data-grant-secret=booking_oauth]");
    b.wait_until("booking_oauth readable", |b| {
        b.try_text("[data-mark-secret=booking_oauth]").is_some_and(|t| t.contains("can read it"))
    });
    let booking = s.get(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth")).expect(200).clone();
    assert_eq!(booking["agents"], json!([billing]));
    // "Create it" opens the new-secret form filled in for this agent.
    b.click("[data-mark-secret=no_such_secret] a");
    b.wait_until("the new-secret form", |b| b.url().contains("/secrets/new?name=no_such_secret"));
    assert_eq!(b.value("#secret-name"), "no_such_secret");
    assert_eq!(
        b.script("return document.querySelector(arguments[0]).checked", json!([format!("input[value={billing}]")])),
        json!(true)
    );

    // One successful read by the function, then the secret's page: who uses it, and when the
    // agent last read it.
    let (_, key) = s.create_key(&ws, json!([billing]));
    s.read(&key, &billing, "stripe_api_key").expect(200);
    b.goto(&format!("{}/w/{ws}/secrets/stripe_api_key", s.base));
    b.wait_text("#used-by", "create_payment");
    let row = b.text("#used-by tbody tr");
    assert!(row.contains("Billing bot") && row.contains('2') && row.contains("can read"), "{row}");
    let last = b.text("#last-reads tbody tr");
    assert!(last.contains("Billing bot") && !last.contains("never"), "{last}");
    b.script("document.querySelector('#used-by').scrollIntoView()", json!([]));
    b.screenshot("secret-used-by");

    // Deleting asks first, naming the functions; cancelling keeps the secret.
    b.type_into("#confirm-name", "stripe_api_key");
    b.click("form[data-form=secret-delete] button[type=submit]");
    let text = b.dialog_text();
    assert!(text.contains("create_payment (Billing bot, line 2)"), "{text}");
    b.dismiss_dialog();
    s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).expect(200);
    b.click("form[data-form=secret-delete] button[type=submit]");
    b.accept_dialog();
    b.wait_until("the list", |b| b.url().ends_with("/secrets"));
    s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).expect_error(404, "secret_not_found");

    // A member sees which calls cannot be read, without telling a missing secret from one
    // without access, and no Grant button.
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    b.delete_cookies();
    b.sign_in(&s, "grace@example.com", "cobol compiler 1959");
    b.goto(&format!("{}/w/{ws}/agents/{billing}/functions/create_payment", s.base));
    b.wait_text("[data-mark-secret=no_such_secret]", "ask a workspace admin");
    assert!(b.text("[data-mark-secret=stripe_api_key]").contains("ask a workspace admin"));
    assert!(!b.exists("[data-grant-secret]"));
}

#[test]
fn the_console_shows_names_instead_of_ids_and_relative_times() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    let support = s.create_agent(&ws, "Support bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_NAMES"), &[&billing, &support]);
    let r = s.post(&format!("/api/v1/workspaces/{ws}/api-keys"), json!({"name": "voice engine", "agents": [billing]}));
    let key = r.expect(201).clone();
    s.read(key["token"].as_str().unwrap(), &billing, "stripe_api_key").expect(200);
    let b = Browser::signed_in_admin(&s);
    // A new version by the signed-in admin (the API calls above used the bootstrap token, which
    // setup made Ada's personal token).
    b.goto(&format!("{}/w/{ws}/secrets/stripe_api_key", s.base));
    b.type_into("#update-value", "sk_live_NAMES_2");
    b.click("form[data-form=secret-update] button[type=submit]");
    b.wait_text("#notice", "Saved as version 2.");

    // Versions: who wrote each, by name; the current one marked; times relative, exact on hover.
    let rows = b.script(
        "return Array.from(document.querySelectorAll('#versions tbody tr')).map(r => [r.cells[0].innerText, r.cells[3].innerText])",
        json!([]),
    );
    assert_eq!(rows, json!([["2 current", "Ada"], ["1", "Ada"]]));
    let created = b.script(
        "const t = document.querySelector('#versions tbody tr time'); return [t.textContent, t.title, t.getAttribute('datetime')]",
        json!([]),
    );
    assert_eq!(created[0], json!("just now"), "{created}");
    assert!(created[1].as_str().unwrap().contains(created[2].as_str().unwrap()), "the exact time on hover: {created}");
    b.screenshot("secret-versions-names");

    // The Secrets list names the agents, filters by agent and sorts by any column.
    s.create_secret(&ws, "alpha_token", json!("a"), &[&support]);
    b.goto(&format!("{}/w/{ws}/secrets", s.base));
    b.wait_text("#secrets-table", "Billing bot, Support bot");
    let names = |b: &Browser| {
        b.script(
            "return Array.from(document.querySelectorAll('#secrets-table tbody tr')).filter(r => !r.hidden).map(r => r.cells[0].innerText)",
            json!([]),
        )
    };
    b.click("#secrets-table th:first-child button.sort");
    assert_eq!(names(&b), json!(["alpha_token", "stripe_api_key"]));
    b.click("#secrets-table th:first-child button.sort");
    assert_eq!(names(&b), json!(["stripe_api_key", "alpha_token"]));
    b.script(
        "const s = document.querySelector('#secret-agent-filter'); s.value = arguments[0]; s.dispatchEvent(new Event('change', {bubbles: true}))",
        json!([billing]),
    );
    assert_eq!(names(&b), json!(["stripe_api_key"]));
    b.screenshot("secrets-sorted-filtered");

    // The audit log: actors and agents by name, the id on hover.
    b.goto(&format!("{}/w/{ws}/audit", s.base));
    b.wait_text("#audit-table", "secret.read");
    let cell = |action: &str, col: usize| {
        b.script(
            "const r = Array.from(document.querySelectorAll('#audit-table tbody tr')).find(r => r.cells[2].textContent == arguments[0]); \
             const c = r.cells[arguments[1]]; const n = c.querySelector('.named'); return [c.innerText, n ? n.title : null]",
            json!([action, col]),
        )
    };
    let read_actor = cell("secret.read", 1);
    assert_eq!(read_actor[0], json!("API key \"voice engine\""), "{read_actor}");
    assert!(read_actor[1].as_str().unwrap().contains(key["id"].as_str().unwrap()), "{read_actor}");
    assert_eq!(cell("secret.read", 5)[0], json!("agent \"Billing bot\""));
    assert_eq!(cell("secret.update", 1)[0], json!("Ada"));
    assert_eq!(cell("agent.create", 1)[0], json!("Ada"));
    assert_eq!(cell("api_key.create", 6)[0], json!("API key \"voice engine\""), "the target by name");
    assert!(!b.text("#audit-table").contains("usr_"), "a user id is shown instead of a name");
    b.screenshot("audit-names");
}

#[test]
fn the_account_page_manages_password_tokens_and_sessions() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let b = Browser::signed_in_admin(&s);
    b.click("header a.who");
    b.wait_until("the account page", |b| b.url().ends_with(&format!("/w/{ws}/account")));
    assert_eq!(b.text("#account-email"), ADMIN_EMAIL);

    // A personal access token: shown once, in a monospace field; it works, then is revoked.
    b.type_into("#token-name", "laptop terminal");
    b.click("form[data-form=token-create] button[type=submit]");
    b.wait_until("the new token", |b| b.value("#new-personal-token").starts_with("avp_"));
    let token = b.value("#new-personal-token");
    let font = b.script("return getComputedStyle(document.querySelector('#new-personal-token')).fontFamily", json!([]));
    assert!(font.as_str().unwrap().contains("monospace"), "{font}");
    assert_eq!(s.request("GET", "/api/v1/me", Some(&token), None).expect(200)["user"]["email"], json!(ADMIN_EMAIL));
    b.screenshot("account-token-created");
    b.click("[data-new-token] a");
    b.wait_text("#tokens-table", "laptop terminal");
    assert!(!b.text("main").contains(&token), "the token is shown again");
    // Active tokens come first, newest first: the new one, then the bootstrap token setup made.
    let status_of = |b: &Browser, name: &str| {
        b.script(
            "const r = Array.from(document.querySelectorAll('#tokens-table tbody tr')).find(r => r.cells[0].textContent == arguments[0]); \
             return r ? r.cells[2].textContent : null",
            json!([name]),
        )
    };
    assert_eq!(status_of(&b, "laptop terminal"), json!("active"));
    b.click("#tokens-table tbody tr:first-child form[data-form=token-revoke] button[type=submit]");
    assert!(b.dialog_text().contains("laptop terminal"));
    b.accept_dialog();
    b.wait_until("the token revoked", |b| status_of(b, "laptop terminal") == json!("revoked"));
    s.request("GET", "/api/v1/me", Some(&token), None).expect_error(401, "unauthenticated");

    // Sessions: another sign-in elsewhere is listed and can be ended from here.
    let (other_cookie, _) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    b.goto(&format!("{}/w/{ws}/account", s.base));
    // Setup signed Ada in too: that session, this browser's and the one just made.
    let sessions =
        |b: &Browser| b.script("return document.querySelectorAll('#sessions-table tbody tr').length", json!([]));
    b.wait_until("three sessions", |b| sessions(b) == json!(3));
    assert!(b.text("#sessions-table tbody tr:first-child").contains("this session"));
    b.script("document.querySelector('#tokens-title').scrollIntoView()", json!([]));
    b.screenshot("account");
    b.click("#sessions-table tbody tr:nth-child(2) form[data-form=session-end] button[type=submit]");
    b.wait_until("that session ended", |b| sessions(b) == json!(2));
    assert_eq!(s.request_with("GET", "/api/v1/me", &[("Cookie", &other_cookie)], None).status, 401);

    // The password: a wrong current one is refused beside its field; then changed, which ends
    // the other sessions and keeps this one.
    let (third_cookie, _) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    b.type_into("#current-password", "not my password");
    b.type_into("#new-password", "a brand new passphrase");
    b.click("form[data-form=password-change] button[type=submit]");
    b.wait_text("[data-error-for=current_password]", "wrong");
    b.clear("#current-password");
    b.type_into("#current-password", ADMIN_PASSWORD);
    b.click("form[data-form=password-change] button[type=submit]");
    b.wait_shown("the change confirmed", "form[data-form=password-change] [data-saved]");
    assert!(b.text("form[data-form=password-change] [data-saved]").contains("2 other sessions ended"));
    assert_eq!(s.request_with("GET", "/api/v1/me", &[("Cookie", &third_cookie)], None).status, 401);
    s.login(ADMIN_EMAIL, "a brand new passphrase");

    // A new workspace, from the same page.
    b.goto(&format!("{}/w/{ws}/account", s.base));
    b.type_into("#workspace-name", "research");
    b.click("form[data-form=workspace-create] button[type=submit]");
    b.wait_until("the new workspace", |b| b.url().ends_with("/agents") && !b.url().contains(&ws));
    b.wait_text("#workspace-switcher", "research");
}

#[test]
fn agents_and_functions_are_renamed_and_deleted_in_the_console() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    crate::support::define(&s, &ws, &billing, "refund", json!([]), "def refund(conv):\n    return 'ok'\n");
    crate::support::define(&s, &ws, &billing, "charge", json!([]), "def charge(conv):\n    return 'ok'\n");
    let b = Browser::signed_in_admin(&s);

    // Delete one function from its editor.
    b.goto(&format!("{}/w/{ws}/agents/{billing}/functions/refund", s.base));
    b.find(".cm-editor");
    b.click("form[data-form=function-delete] button[type=submit]");
    assert!(b.dialog_text().contains("refund"));
    b.accept_dialog();
    b.wait_until("the agent's page", |b| b.url().ends_with(&format!("/agents/{billing}")));
    let fns = s.get(&format!("/api/v1/workspaces/{ws}/agents/{billing}/functions")).expect(200)["items"].clone();
    assert_eq!(fns.as_array().unwrap().len(), 1);

    // Rename the agent.
    b.clear("#agent-rename");
    b.type_into("#agent-rename", "Payments bot");
    b.click("form[data-form=agent-update] button[type=submit]");
    b.wait_shown("saved", "form[data-form=agent-update] [data-saved]");
    assert_eq!(s.get(&format!("/api/v1/workspaces/{ws}/agents/{billing}")).expect(200)["name"], json!("Payments bot"));
    b.wait_text("main h1", "Payments bot");
    b.screenshot("agent-settings");

    // Delete it; cancelling first keeps it.
    b.click("form[data-form=agent-delete] button[type=submit]");
    b.dismiss_dialog();
    s.get(&format!("/api/v1/workspaces/{ws}/agents/{billing}")).expect(200);
    b.click("form[data-form=agent-delete] button[type=submit]");
    b.accept_dialog();
    b.wait_until("the agents list", |b| b.url().ends_with(&format!("/w/{ws}/agents")));
    s.get(&format!("/api/v1/workspaces/{ws}/agents/{billing}")).expect_error(404, "agent_not_found");
}

#[test]
fn key_values_are_revealed_and_copied_one_by_one_and_old_versions_restored() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    s.create_secret(&ws, "booking_oauth", json!({"client_id": "cid_ONE", "client_secret": "cs_ONE"}), &[]);
    let b = Browser::signed_in_admin(&s);
    b.goto(&format!("{}/w/{ws}/secrets/booking_oauth", s.base));

    // One masked row per key; focusing one reveals that key only (one audit record naming it).
    b.wait_text("#kv-values", "client_secret");
    let masked = "••••••••••••";
    assert_eq!((b.value("#reveal-key-1"), b.value("#reveal-key-2")), (masked.to_owned(), masked.to_owned()));
    b.click("#reveal-key-2");
    b.wait_until("client_secret revealed", |b| b.value("#reveal-key-2") == "cs_ONE");
    assert_eq!(b.value("#reveal-key-1"), masked);
    b.click("main h1");
    b.wait_until("masked again", |b| b.value("#reveal-key-2") == masked);
    let reveals = s.audit(&ws, "action=secret.reveal&secret=booking_oauth");
    assert_eq!(reveals.len(), 1);
    assert_eq!(reveals[0]["detail"], json!("version=1 key=client_secret"));
    // Copy copies without showing the value, and is audited as a reveal of that key.
    b.click("[data-copy-reveal=reveal-key-1]");
    b.wait_until("a second reveal record", |_| s.audit(&ws, "action=secret.reveal&secret=booking_oauth").len() == 2);
    assert_eq!(b.value("#reveal-key-1"), masked, "copying showed the value");
    assert_eq!(
        s.audit(&ws, "action=secret.reveal&secret=booking_oauth")[0]["detail"],
        json!("version=1 key=client_id")
    );
    assert!(!b.text("main").contains("cid_ONE"));

    // A new value typed into a masked field, shown on request.
    assert_eq!(b.script("return document.querySelector('#kv-value-2').type", json!([])), json!("password"));
    b.type_into("#kv-value-2", "cs_TWO");
    b.click("[data-show-hide-all]");
    assert_eq!(b.script("return document.querySelector('#kv-value-2').type", json!([])), json!("text"));
    b.click("form[data-form=secret-update] button[type=submit]");
    b.wait_text("#notice", "Saved as version 2.");
    b.click("#notice button");
    assert!(!b.exists("#notice"), "the notice is dismissed");

    // Restore version 1: a new version 3 with version 1's value, never shown.
    b.click("form[data-form=version-restore][data-version='1'] button[type=submit]");
    assert!(b.dialog_text().contains("Restore version 1"));
    b.accept_dialog();
    b.wait_text("#notice", "Version 1 restored as version 3.");
    b.wait_text("#versions tbody tr:first-child", "current");
    assert!(b.text("#versions tbody tr:first-child").starts_with('3'));
    assert!(!b.text("main").contains("cs_ONE"));
    b.screenshot("secret-restored");
    let revealed =
        s.post(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth/reveal"), json!({})).expect(200).clone();
    assert_eq!(revealed["value"], json!({"client_id": "cid_ONE", "client_secret": "cs_ONE"}));
    assert_eq!(revealed["version"], json!(3));
    let restored = s.audit(&ws, "action=secret.update&secret=booking_oauth");
    assert_eq!(restored[0]["detail"], json!("version=3 restored_from=1"));
}

#[test]
fn the_function_editor_guards_unsaved_changes_and_fits_390_px() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "booking_oauth", json!({"client_id": "cid", "client_secret": "cs"}), &[&billing]);
    crate::support::define(
        &s,
        &ws,
        &billing,
        "create_payment",
        json!([{"name": "amount", "description": "in cents", "type": "integer"}]),
        "def create_payment(conv: Conversation, amount: int):\n    return conv.utils.get_secret('booking_oauth')['client_id'] + ' and a long line that goes on and on'\n",
    );
    let b = Browser::signed_in_admin(&s);
    let page = format!("{}/w/{ws}/agents/{billing}/functions/create_payment", s.base);
    b.goto(&page);
    b.find(".cm-editor");
    // The Secrets box offers each key's snippet.
    let snippets = b.script(
        "return Array.from(document.querySelectorAll('[data-secrets-box] button[data-copy]')).map(b => b.dataset.copy)",
        json!([]),
    );
    assert_eq!(
        snippets,
        json!([
            "conv.utils.get_secret('booking_oauth')",
            "conv.utils.get_secret('booking_oauth')['client_id']",
            "conv.utils.get_secret('booking_oauth')['client_secret']"
        ])
    );

    // The agent's page says which of its functions use each secret it can read.
    b.goto(&format!("{}/w/{ws}/agents/{billing}", s.base));
    b.wait_text("#agent-secrets [data-secret=booking_oauth]", "create_payment");
    b.goto(&page);
    b.find(".cm-editor");

    // Nothing changed: leaving is not held up.
    let leaving_is_held = |b: &Browser| {
        b.script(
            "const e = new Event('beforeunload', {cancelable: true}); window.dispatchEvent(e); return e.defaultPrevented",
            json!([]),
        )
    };
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(leaving_is_held(&b), json!(false));
    assert!(b.script("return document.querySelector('[data-unsaved]').hidden", json!([])) == json!(true));
    // A change to the code: marked, and leaving asks first.
    b.script(
        "document.querySelector('[data-code-editor]').agentvaultEditor.setValue(arguments[0])",
        json!(["def create_payment(conv: Conversation, amount: int):\n    return 'changed'\n"]),
    );
    b.wait_shown("the unsaved mark", "[data-unsaved]");
    assert_eq!(leaving_is_held(&b), json!(true));
    b.screenshot("function-editor-unsaved");
    // Saved: no longer held.
    b.click("form[data-form=function-save] button[type=submit]");
    b.wait_shown("saved", "form[data-form=function-save] [data-saved]");
    assert_eq!(leaving_is_held(&b), json!(false));
    b.wait_until("the mark cleared", |b| {
        b.script("return document.querySelector('[data-unsaved]').hidden", json!([])) == json!(true)
    });

    // 390 px: nothing wider than the screen, and the parameter's type is readable.
    b.resize(390, 844);
    b.goto(&page);
    b.find(".cm-editor");
    let width = b.script("return document.documentElement.scrollWidth", json!([]));
    let inner = b.script("return window.innerWidth", json!([]));
    let wide = b.script(
        "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5) \
         .filter(e => !e.closest('.cm-scroller')).slice(0, 8) \
         .map(e => e.outerHTML.slice(0, 80) + ' ' + Math.round(e.getBoundingClientRect().right))",
        json!([]),
    );
    assert!(
        width.as_u64().unwrap() <= inner.as_u64().unwrap(),
        "the page is {width} px wide on a {inner} px screen: {wide}"
    );
    let select = b.script(
        "const s = document.querySelector('[data-param-type]'); const r = s.getBoundingClientRect(); return [s.value, r.width, r.right]",
        json!([]),
    );
    assert_eq!(select[0], json!("integer"));
    assert!(select[1].as_f64().unwrap() >= 80.0, "the type select is too narrow to read: {select}");
    assert!(select[2].as_f64().unwrap() <= inner.as_f64().unwrap(), "the type select is off screen: {select}");
    b.script("document.querySelector('[data-param-rows]').scrollIntoView()", json!([]));
    b.screenshot("function-editor-narrow");
}

#[test]
fn api_keys_users_keyboard_and_dark_mode_details() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    let b = Browser::signed_in_admin(&s);

    // A skip link is the first thing the keyboard reaches, and it leads to the content.
    b.goto(&format!("{}/w/{ws}/agents", s.base));
    b.wait_text("main h1", "Agents");
    b.press_tab();
    assert_eq!(b.script("return document.activeElement.textContent", json!([])), json!("Skip to content"));

    // API keys: "All agents" turns the agent choice off; a new key is listed at once, its token
    // shown once in a monospace field.
    b.goto(&format!("{}/w/{ws}/api-keys", s.base));
    let disabled = |b: &Browser| {
        b.script(&format!("return document.querySelector('input[name=agents][value={billing}]').disabled"), json!([]))
    };
    assert_eq!(disabled(&b), json!(true));
    b.click("input[name=scope][value=chosen]");
    assert_eq!(disabled(&b), json!(false));
    b.click("input[name=scope][value=all]");
    assert_eq!(disabled(&b), json!(true));
    b.type_into("#key-name", "voice engine");
    b.click("form[data-form=key-create] button[type=submit]");
    b.wait_until("the new token", |b| b.value("#new-token").starts_with("avk_"));
    b.wait_text("#keys-table", "voice engine");
    let font = b.script("return getComputedStyle(document.querySelector('#new-token')).fontFamily", json!([]));
    assert!(font.as_str().unwrap().contains("monospace"), "{font}");
    // Revoked keys can be hidden.
    let (old_id, _) = s.create_key(&ws, json!("all"));
    s.delete(&format!("/api/v1/workspaces/{ws}/api-keys/{old_id}")).expect(200);
    b.goto(&format!("{}/w/{ws}/api-keys", s.base));
    let visible = |b: &Browser| {
        b.script(
            "return Array.from(document.querySelectorAll('#keys-table tbody tr')).filter(r => !r.hidden).length",
            json!([]),
        )
    };
    b.wait_until("both keys listed", |b| visible(b) == json!(2));
    b.click("#hide-inactive");
    assert_eq!(visible(&b), json!(1));
    assert!(b.text("#keys-table").contains("voice engine"));

    // Users: refusing to demote the last admin puts the control back to what holds.
    let me = s.get("/api/v1/me").expect(200)["user"]["id"].as_str().unwrap().to_owned();
    b.goto(&format!("{}/w/{ws}/users", s.base));
    b.script("document.querySelector(arguments[0]).value = 'member'", json!([format!("#role-{me}")]));
    b.click(&format!("form[data-form=member-role][data-user={me}] button[type=submit]"));
    b.wait_text(&format!("form[data-form=member-role][data-user={me}] [data-error-for='']"), "admin");
    assert_eq!(b.value(&format!("#role-{me}")), "admin");

    // Dark mode follows the system setting.
    b.emulate_dark_mode();
    b.goto(&format!("{}/w/{ws}/api-keys", s.base));
    b.wait_text("#keys-table", "voice engine");
    let bg = b.script("return getComputedStyle(document.documentElement).backgroundColor", json!([]));
    assert_eq!(bg, json!("rgb(15, 20, 25)"), "the page is not dark");
    b.screenshot("api-keys-dark");
}

#[test]
fn the_secret_form_catches_duplicates_empty_values_and_stray_whitespace() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    s.create_secret(&ws, "stripe_api_key", json!("sk"), &[]);
    let b = Browser::signed_in_admin(&s);
    b.goto(&format!("{}/w/{ws}/secrets/new", s.base));

    // A taken name, as it is typed.
    b.type_into("#secret-name", "stripe_api_key");
    b.wait_text("[data-error-for=name]", "a secret named stripe_api_key already exists");
    b.clear("#secret-name");
    b.type_into("#secret-name", "booking_oauth");
    b.wait_until("the name error to clear", |b| b.text("[data-error-for=name]").is_empty());

    // Removing a pair keeps the keyboard focus among the pairs.
    b.click("input[name=kind][value=kv]");
    b.click("[data-kv-add]");
    b.click("[data-kv-rows] tbody tr:first-child [data-kv-remove]");
    assert_eq!(b.script("return document.activeElement.id", json!([])), json!("kv-key-2"));
    b.click("[data-kv-rows] tbody tr:first-child [data-kv-remove]");
    assert_eq!(b.script("return document.activeElement.matches('[data-kv-add]')", json!([])), json!(true));
    b.click("input[name=kind][value=single]");
    b.click("input[name=kind][value=kv]");

    // Key/value pairs: a key given twice, then a key without a value, are refused in the form.
    b.type_into("#secret-description", "Booking service");
    b.type_into("#kv-key-1", "client_id");
    b.type_into("#kv-value-1", "cid");
    b.click("[data-kv-add]");
    b.type_into("#kv-key-2", "client_id");
    b.type_into("#kv-value-2", "other");
    b.click("form[data-form=secret-new] button[type=submit]");
    b.wait_text("[data-error-for=value]", "the key client_id is given twice");
    assert!(b.text("form[data-form=secret-new] [data-error-for='']").contains("values were cleared"));
    assert_eq!((b.value("#kv-value-1"), b.value("#kv-key-2")), (String::new(), "client_id".to_owned()));
    assert_eq!(b.value("#secret-description"), "Booking service", "what was typed stays");
    b.clear("#kv-key-2");
    b.type_into("#kv-key-2", "client_secret");
    b.type_into("#kv-value-1", "cid");
    b.click("form[data-form=secret-new] button[type=submit]");
    b.wait_text("[data-error-for=value]", "give a value for the key client_secret");
    b.screenshot("secret-form-errors");

    // A value with a stray space asks first; cancelling creates nothing.
    b.type_into("#kv-value-1", "cid");
    b.type_into("#kv-value-2", "cs_with_space ");
    b.click("form[data-form=secret-new] button[type=submit]");
    assert!(b.dialog_text().contains("the value of client_secret starts or ends with spaces"));
    b.dismiss_dialog();
    s.get(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth")).expect_error(404, "secret_not_found");
    b.click("form[data-form=secret-new] button[type=submit]");
    b.accept_dialog();
    b.wait_until("the new secret's page", |b| b.url().ends_with("/secrets/booking_oauth"));
    let revealed =
        s.post(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth/reveal"), json!({})).expect(200).clone();
    assert_eq!(revealed["value"], json!({"client_id": "cid", "client_secret": "cs_with_space "}));
}

#[test]
fn secrets_are_imported_from_a_pasted_env_file_with_a_preview() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "taken_key", json!("t"), &[]);
    let b = Browser::signed_in_admin(&s);
    b.goto(&format!("{}/w/{ws}/secrets", s.base));
    b.click("details.import summary");
    let env = "# payments\nexport STRIPE_API_KEY=sk_live_ENV\nZENDESK_TOKEN=\"zd 1\"\nTAKEN_KEY=again\nnot a line\n";
    b.type_into("#import-text", env);
    let preview = |b: &Browser| {
        b.script(
            "return Array.from(document.querySelectorAll('#import-preview tbody tr')).map(r => [r.cells[0].textContent, r.cells[2].textContent])",
            json!([]),
        )
    };
    b.wait_until("the preview", |b| preview(b).as_array().is_some_and(|r| r.len() == 4));
    assert_eq!(
        preview(&b),
        json!([
            ["stripe_api_key", "ready"],
            ["zendesk_token", "ready"],
            ["taken_key", "a secret of this name exists"],
            ["not a line", "line 5 is not NAME=value"]
        ])
    );
    assert!(!b.text("main").contains("sk_live_ENV"), "the preview shows a value");
    assert_eq!(b.script("return document.querySelector('[data-import-submit]').disabled", json!([])), json!(true));
    b.screenshot("secrets-import-preview");

    // Fixed: both are created together, for the chosen agent.
    b.clear("#import-text");
    b.type_into("#import-text", "export STRIPE_API_KEY=sk_live_ENV\nZENDESK_TOKEN=\"zd 1\"\n");
    b.wait_text("[data-import-submit]", "Import 2 secrets");
    b.click(&format!("details.import input[name=agents][value={billing}]"));
    b.click("[data-import-submit]");
    b.wait_text("#notice", "2 secrets imported.");
    b.wait_text("#secrets-table", "zendesk_token");
    let revealed =
        s.post(&format!("/api/v1/workspaces/{ws}/secrets/zendesk_token/reveal"), json!({})).expect(200).clone();
    assert_eq!(revealed["value"], json!("zd 1"));
    let meta = s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).expect(200).clone();
    assert_eq!(meta["agents"], json!([billing]));
}

#[test]
fn a_member_requests_access_from_the_editor_and_an_admin_approves_it() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "booking_oauth", json!({"client_id": "cid", "client_secret": "cs"}), &[]);
    crate::support::define(
        &s,
        &ws,
        &billing,
        "book",
        json!([]),
        "def book(conv: Conversation):\n    return conv.utils.get_secret('booking_oauth')['client_id']\n",
    );
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");
    let b = Browser::start();
    b.sign_in(&s, "grace@example.com", "cobol compiler 1959");
    let editor = format!("{}/w/{ws}/agents/{billing}/functions/book", s.base);
    b.goto(&editor);
    b.click("[data-mark-secret=booking_oauth] [data-request-access]");
    b.wait_text("#notice", "Access to booking_oauth requested");
    b.wait_text("[data-mark-secret=booking_oauth] [data-request-status=pending]", "waiting for an admin");
    b.screenshot("function-editor-access-requested");

    // The admin sees it on the secret's page and approves it.
    b.delete_cookies();
    b.sign_in(&s, ADMIN_EMAIL, ADMIN_PASSWORD);
    b.goto(&format!("{}/w/{ws}/secrets/booking_oauth", s.base));
    b.wait_text("#access-requests", "Billing bot");
    let row = b.text("#access-requests tbody tr");
    assert!(row.contains("agent \"Billing bot\"") && row.to_lowercase().contains("grace"), "{row}");
    b.script("document.querySelector('#access-requests').scrollIntoView()", json!([]));
    b.screenshot("secret-access-requests");
    b.click("form[data-form=access-approve] button[type=submit]");
    b.wait_text("#notice", "Approved");
    b.wait_text("#access-requests", "approved by Ada");
    let meta = s.get(&format!("/api/v1/workspaces/{ws}/secrets/booking_oauth")).expect(200).clone();
    assert_eq!(meta["agents"], json!([billing]));

    // The member sees the outcome: the call is readable now.
    b.delete_cookies();
    b.sign_in(&s, "grace@example.com", "cobol compiler 1959");
    b.goto(&editor);
    b.wait_text("[data-mark-secret=booking_oauth]", "can read it");
}

#[test]
fn the_secrets_list_and_the_agent_page_say_when_each_secret_was_last_read() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    let support = s.create_agent(&ws, "Support bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_LASTREAD"), &[&billing, &support]);
    s.create_secret(&ws, "unused_token", json!("u"), &[&billing]);
    crate::support::define(
        &s,
        &ws,
        &billing,
        "charge",
        json!([]),
        "def charge(conv: Conversation):\n    return conv.utils.get_secret('stripe_api_key')[:3]\n",
    );
    let (_, key) = s.create_key(&ws, json!("all"));
    s.read(&key, &support, "stripe_api_key").expect(200);
    // A refused read is no read.
    s.read(&key, &support, "unused_token").expect_error(403, "missing_access");
    let b = Browser::signed_in_admin(&s);

    // The Secrets list: relative, the exact time on hover; "never" when no agent read it.
    b.goto(&format!("{}/w/{ws}/secrets", s.base));
    let last_read = |b: &Browser, table: &str, secret: &str| {
        b.script(
            "const r = document.querySelector(arguments[0] + ' tr[data-secret=\"' + arguments[1] + '\"]'); \
             const c = r.querySelector('td[data-label=\"Last read\"]'); const t = c.querySelector('time'); \
             return [c.innerText, t ? t.title : null, t ? t.getAttribute('datetime') : null]",
            json!([table, secret]),
        )
    };
    b.wait_text("#secrets-table", "stripe_api_key");
    let stripe = last_read(&b, "#secrets-table", "stripe_api_key");
    assert_eq!(stripe[0], json!("just now"), "{stripe}");
    assert!(stripe[1].as_str().unwrap().contains(stripe[2].as_str().unwrap()), "the exact time on hover: {stripe}");
    assert_eq!(last_read(&b, "#secrets-table", "unused_token")[0], json!("never"));
    b.screenshot("secrets-last-read");

    // The agent's page: each secret it can read, the functions naming it, its own last read.
    b.goto(&format!("{}/w/{ws}/agents/{billing}", s.base));
    b.wait_text("#agent-secrets [data-secret=stripe_api_key]", "charge");
    assert_eq!(
        last_read(&b, "#agent-secrets", "stripe_api_key")[0],
        json!("never"),
        "Support bot read it, not Billing bot"
    );
    crate::support::invoke(&s, Some(&key), &ws, &billing, "charge", json!({})).expect(200);
    b.goto(&format!("{}/w/{ws}/agents/{billing}", s.base));
    b.wait_text("#agent-secrets [data-secret=stripe_api_key]", "charge");
    assert_eq!(last_read(&b, "#agent-secrets", "stripe_api_key")[0], json!("just now"));
    assert_eq!(last_read(&b, "#agent-secrets", "unused_token")[0], json!("never"));
    assert!(b.text("#agent-secrets [data-secret=unused_token]").contains("no function of this agent names it"));
    b.screenshot("agent-secrets-last-read");

    // A member sees the agent's secrets, not when they were read (that is the audit log's).
    s.add_user(&ws, "member@example.com", "member", "quiet lantern orchard 42");
    b.click("[data-sign-out]");
    b.wait_until("the sign-in page", |b| b.url().ends_with("/login"));
    b.sign_in(&s, "member@example.com", "quiet lantern orchard 42");
    b.goto(&format!("{}/w/{ws}/agents/{billing}", s.base));
    b.wait_text("#agent-secrets [data-secret=stripe_api_key]", "charge");
    assert!(!b.text("#agent-secrets").contains("Last read"));
}

#[test]
fn form_pages_focus_their_first_field_and_removing_a_row_keeps_the_focus() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let b = Browser::start();
    let focused = |b: &Browser| b.script("return document.activeElement.id", json!([]));
    b.goto(&format!("{}/login", s.base));
    b.find("#email");
    assert_eq!(focused(&b), json!("email"));
    b.sign_in(&s, ADMIN_EMAIL, ADMIN_PASSWORD);
    // No agent yet: the Agents page is its create form.
    b.goto(&format!("{}/w/{ws}/agents", s.base));
    b.find("#agent-name");
    assert_eq!(focused(&b), json!("agent-name"));
    let billing = s.create_agent(&ws, "Billing bot");
    b.goto(&format!("{}/w/{ws}/secrets/new", s.base));
    b.find("#secret-name");
    assert_eq!(focused(&b), json!("secret-name"));
    // With the name given (the Function Editor's "Create it"), the next field.
    b.goto(&format!("{}/w/{ws}/secrets/new?name=stripe_api_key", s.base));
    b.find("#secret-name");
    assert_eq!(focused(&b), json!("secret-description"));
    b.goto(&format!("{}/w/{ws}/api-keys", s.base));
    b.find("#key-name");
    b.goto(&format!("{}/w/{ws}/agents/{billing}/functions/new", s.base));
    b.find(".cm-editor");
    assert_eq!(focused(&b), json!("fn-name"));

    // Parameters: removing one moves the focus to the next row, else the previous, else Add.
    for _ in 0..3 {
        b.click("[data-param-add]");
    }
    let rows = |b: &Browser| {
        b.script("return Array.from(document.querySelectorAll('[data-param-rows] tbody tr')).map(r => r.querySelector('[data-param-name]').id)", json!([]))
    };
    let ids = rows(&b);
    let ids: Vec<&str> = ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    b.click("[data-param-rows] tbody tr:nth-child(2) [data-param-remove]");
    assert_eq!(focused(&b), json!(ids[2]), "the next row");
    b.click("[data-param-rows] tbody tr:nth-child(2) [data-param-remove]");
    assert_eq!(focused(&b), json!(ids[0]), "the previous row");
    b.click("[data-param-rows] tbody tr:nth-child(1) [data-param-remove]");
    assert_eq!(b.script("return document.activeElement.matches('[data-param-add]')", json!([])), json!(true));
    b.screenshot("function-new-focus");
}

#[test]
fn long_emails_wrap_only_at_sensible_points_at_1280_and_390_px() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let email = "maximiliana.featherstonehaugh-smythe@research.example.org.uk";
    assert_eq!(email.len(), 60);
    s.add_user(&ws, email, "member", "quiet lantern orchard 42");
    s.invite(&ws, "another.long.invitee.address@subsidiary.example.co.uk", "member");
    let b = Browser::signed_in_admin(&s);
    // The text of each rendered line of the email's cell (characters grouped by their line box).
    let lines = |b: &Browser, table: &str, email: &str| -> Vec<String> {
        let v = b.script(
            "const td = Array.from(document.querySelectorAll(arguments[0] + ' td.email')).find(c => c.title == arguments[1]); \
             const lines = []; let top = null; \
             const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT); let n; \
             while ((n = walker.nextNode())) { for (let i = 0; i < n.length; i++) { \
               const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1); \
               const box = r.getClientRects()[0]; if (!box) continue; \
               if (top === null || box.top > top + 2) { lines.push(''); top = box.top; } \
               lines[lines.length - 1] += n.data[i]; } } \
             return lines",
            json!([table, email]),
        );
        v.as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect()
    };
    let check = |b: &Browser, width: u32| {
        b.resize(width, 900);
        b.goto(&format!("{}/w/{ws}/users", s.base));
        b.wait_text("#members-table", "featherstonehaugh");
        for (table, address) in
            [("#members-table", email), ("#invitations-table", "another.long.invitee.address@subsidiary.example.co.uk")]
        {
            let got = lines(b, table, address);
            assert_eq!(got.concat(), address, "{width} px: the whole address is shown: {got:?}");
            // Each line but the last ends after the @ or before a dot.
            for pair in got.windows(2) {
                assert!(
                    pair[0].ends_with('@') || pair[1].starts_with('.'),
                    "{width} px: {address} breaks mid-word: {got:?}"
                );
            }
            let right = b.script(
                "const td = Array.from(document.querySelectorAll(arguments[0] + ' td.email')).find(c => c.title == arguments[1]); \
                 return td.getBoundingClientRect().right",
                json!([table, address]),
            );
            assert!(right.as_f64().unwrap() <= width as f64, "{width} px: the cell ends at {right}");
            if width >= 1280 {
                assert_eq!(got.len(), 1, "room enough for one line at {width} px: {got:?}");
            }
        }
        let scroll = b.script("return [document.documentElement.scrollWidth, window.innerWidth]", json!([]));
        assert!(scroll[0].as_u64() <= scroll[1].as_u64(), "{width} px: the page scrolls sideways: {scroll}");
    };
    check(&b, 1280);
    b.screenshot("users-long-email");
    check(&b, 390);
    b.screenshot("users-long-email-narrow");
}

#[test]
fn the_audit_page_shows_newest_or_oldest_first() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    for i in 0..55 {
        s.create_agent(&ws, &format!("Agent {i:02}"));
    }
    let b = Browser::signed_in_admin(&s);
    b.goto(&format!("{}/w/{ws}/audit?action=agent.create", s.base));
    let agents = |b: &Browser| -> Vec<String> {
        let v = b.script(
            "return Array.from(document.querySelectorAll('#audit-table tbody tr')).map(r => r.cells[5].innerText)",
            json!([]),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().trim_start_matches("agent ").trim_matches('"').to_owned())
            .collect()
    };
    let sort =
        |b: &Browser| b.script("return document.querySelector('#audit-table th').getAttribute('aria-sort')", json!([]));
    b.wait_text("#audit-table", "agent.create");
    assert_eq!(sort(&b), json!("descending"));
    let first = agents(&b);
    assert_eq!((first.len(), first[0].as_str(), first[49].as_str()), (50, "Agent 54", "Agent 05"), "{first:?}");
    // The time column's toggle: oldest first, the filter kept; the next page goes on from there.
    b.click("#audit-order");
    b.wait_until("oldest first", |b| sort(b) == json!("ascending"));
    assert!(b.url().contains("order=oldest") && b.url().contains("action=agent.create"), "{}", b.url());
    let up = agents(&b);
    assert_eq!((up.len(), up[0].as_str(), up[49].as_str()), (50, "Agent 00", "Agent 49"), "{up:?}");
    assert_eq!(b.text("#audit-next"), "Newer");
    b.screenshot("audit-oldest-first");
    b.click("#audit-next");
    b.wait_until("the next page", |b| b.url().contains("cursor="));
    assert_eq!(agents(&b), ["Agent 50", "Agent 51", "Agent 52", "Agent 53", "Agent 54"]);
    // The filter form keeps the order; the toggle goes back to newest first.
    b.click("form.filters button[type=submit]");
    b.wait_until("the filtered page", |b| !b.url().contains("cursor="));
    assert_eq!(sort(&b), json!("ascending"));
    b.click("#audit-order");
    b.wait_until("newest first", |b| sort(b) == json!("descending"));
    assert_eq!(agents(&b)[0], "Agent 54");
}

#[test]
fn the_test_panel_runs_unsaved_changes_as_a_draft_and_says_which_it_ran() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let billing = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_DRAFT_UI"), &[&billing]);
    crate::support::define(
        &s,
        &ws,
        &billing,
        "charge",
        json!([]),
        "def charge(conv: Conversation):\n    return 'saved'\n",
    );
    let b = Browser::signed_in_admin(&s);
    b.goto(&format!("{}/w/{ws}/agents/{billing}/functions/charge", s.base));
    b.find(".cm-editor");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let run = |b: &Browser| {
        b.script("document.querySelector('[data-out=result]').textContent = ''", json!([]));
        b.click("form[data-form=function-test] button[type=submit]");
    };

    // Nothing changed: the saved version runs, and the panel says so.
    run(&b);
    b.wait_text("[data-out=result]", "saved");
    assert_eq!(b.text("[data-out=ran]"), "Ran the saved version 1.");

    // Changed in the editor: what is there runs as a draft, redacted like any run, not saved.
    b.script(
        "document.querySelector('[data-code-editor]').agentvaultEditor.setValue(arguments[0])",
        json!([
            "def charge(conv: Conversation):\n    return 'draft with ' + conv.utils.get_secret('stripe_api_key')\n"
        ]),
    );
    b.wait_shown("the note that Run runs the draft", "[data-test-unsaved]");
    assert_eq!(b.script("return document.querySelector('[data-test-note]').hidden", json!([])), json!(true));
    run(&b);
    b.wait_text("[data-out=result]", "draft with [redacted:stripe_api_key]");
    let ran = b.text("[data-out=ran]");
    assert!(ran.starts_with("Ran the unsaved draft in the editor (code SHA-256 "), "{ran}");
    assert!(ran.contains("not saved as a version"), "{ran}");
    assert!(!b.text("main").contains("sk_live_DRAFT_UI"));
    let f = s.get(&format!("/api/v1/workspaces/{ws}/agents/{billing}/functions/charge")).expect(200).clone();
    assert_eq!(f["version"], json!(1));
    assert!(
        b.script("return !document.querySelector('[data-unsaved]').hidden", json!([])) == json!(true),
        "still unsaved"
    );
    let audited = s.audit(&ws, "action=function.invoke");
    assert!(audited[0]["detail"].as_str().unwrap().contains("draft code_sha256="), "{audited:?}");
    b.script("document.querySelector('#test-title').scrollIntoView()", json!([]));
    b.screenshot("function-test-draft");

    // A draft that would not save does not run: the error at the code, and in the panel.
    b.script(
        "document.querySelector('[data-code-editor]').agentvaultEditor.setValue(arguments[0])",
        json!(["def charge(conv: Conversation):\n    return (\n"]),
    );
    run(&b);
    b.wait_text("form[data-form=function-test] [data-error-for='']", "The draft did not run");
    assert!(b.text("form[data-form=function-save] [data-error-for=code]").contains("line 2"));
    assert_eq!(s.audit(&ws, "action=function.invoke").len(), 2);
}

#[test]
fn an_admin_gives_a_secret_its_own_live_value_and_protects_it_in_the_console() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    s.create_secret(&ws, "stripe_api_key", json!("sk_DEFAULT_CONSOLE"), &[]);
    let b = Browser::signed_in_admin(&s);
    b.goto(&format!("{}/w/{ws}/secrets/stripe_api_key", s.base));
    b.wait_text("#env-values", "live");
    for env in ["sandbox", "pre-release", "live"] {
        assert!(b.text(&format!("#env-values tr[data-env='{env}']")).contains("reads the default value"));
    }

    // A live value of its own, typed into a masked field.
    b.script("document.querySelector('#env-value-env').value = 'live'", json!([]));
    assert_eq!(b.script("return document.querySelector('#env-value').type", json!([])), json!("password"));
    b.type_into("#env-value", "sk_LIVE_CONSOLE");
    b.click("form[data-form=secret-env-value] button[type=submit]");
    b.wait_text("#notice", "Saved the live value as its version 1.");
    assert!(b.text("#env-values tr[data-env='live']").contains("version 1"));
    assert!(b.text("#env-values tr[data-env='sandbox']").contains("reads the default value"));
    assert!(!b.text("main").contains("sk_LIVE_CONSOLE"), "the value stays masked");
    // Revealed on focus, for that environment only, and audited so.
    let masked = "••••••••••••";
    assert_eq!(b.value("#reveal-env-live"), masked);
    b.click("#reveal-env-live");
    b.wait_until("the live value revealed", |b| b.value("#reveal-env-live") == "sk_LIVE_CONSOLE");
    b.click("main h1");
    b.wait_until("masked again", |b| b.value("#reveal-env-live") == masked);
    let reveals = s.audit(&ws, "action=secret.reveal&secret=stripe_api_key");
    assert_eq!(reveals[0]["detail"], json!("version=1 env=live"));

    // Protected: the switch saves, and the page says so.
    b.click("#secret-protected");
    b.click("form[data-form=secret-protected] button[type=submit]");
    b.wait_text("#notice", "Protected.");
    assert!(b.text("#secret-protection").starts_with("yes"));
    let meta = s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).expect(200).clone();
    assert_eq!(meta["protected"], true);
    assert_eq!(meta["environments"][0]["env"], "live");
    b.screenshot("secret-environments");

    // Removing the live value (confirmed): live reads the default again.
    b.click("form[data-form=secret-env-remove][data-env=live] button[type=submit]");
    assert!(b.dialog_text().contains("reads the default value"));
    b.accept_dialog();
    b.wait_text("#notice", "Removed the live value");
    assert!(b.text("#env-values tr[data-env='live']").contains("reads the default value"));
    let meta = s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).expect(200).clone();
    assert_eq!(meta["environments"], json!([]));
}

#[test]
fn a_member_deploys_to_pre_release_and_an_admin_rolls_live_back_in_the_function_editor() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_DEFAULT_9"), &[&agent]);
    s.patch(
        &format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key"),
        json!({"values": {"live": "sk_LIVE_ONLY", "sandbox": "sk_T"}, "protected": true}),
    )
    .expect(200);
    let base = format!("/api/v1/workspaces/{ws}/agents/{agent}/functions");
    let code = |v: &str| {
        format!(
            "def answer(conv):\n    key = conv.utils.get_secret('stripe_api_key')\n    return '{v} ' + str(len(key))\n"
        )
    };
    s.post(&base, json!({"name": "answer", "description": "d", "parameters": [], "code": code("v1")})).expect(201);
    s.put(&format!("{base}/answer"), json!({"description": "d", "parameters": [], "code": code("v2")})).expect(200);
    s.add_user(&ws, "grace@example.com", "member", "cobol compiler 1959");

    let b = Browser::start();
    b.sign_in(&s, "grace@example.com", "cobol compiler 1959");
    b.goto(&format!("{}/w/{ws}/agents/{agent}/functions/answer", s.base));
    b.wait_text("#deployments", "nothing deployed");
    assert!(b.text("#deployments tr[data-env='sandbox']").contains("version 2"));
    // The Secrets box says which environments have their own value, and that it is protected.
    let secrets_box = b.text("[data-secrets-box]");
    assert!(secrets_box.contains("protected") && secrets_box.contains("live") && secrets_box.contains("sandbox"));
    // The diff between the two versions.
    let diff = b.text("#function-diff");
    assert!(diff.contains("- ") && diff.contains("'v1 '") && diff.contains("+ ") && diff.contains("'v2 '"), "{diff}");
    // A member deploys to pre-release; there is no way to deploy to live.
    assert!(!b.exists("form[data-form=function-deploy][data-env=live]"));
    b.click("#function-versions tr[data-version='1'] form[data-env=pre-release] button[type=submit]");
    assert!(b.dialog_text().contains("Deploy version 1 of answer to pre-release"));
    b.accept_dialog();
    b.wait_text("#notice", "Version 1 runs in pre-release now.");
    assert!(b.text("#deployments tr[data-env='pre-release']").contains("version 1"));
    // The Test panel's environment: live has nothing deployed, and says so.
    b.script(
        "const s = document.querySelector('#test-env'); s.value = 'live'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    );
    b.wait_text("[data-test-note]", "Nothing is deployed to live");
    b.click("form[data-form=function-test] button[type=submit]");
    b.wait_text("form[data-form=function-test] [data-error-for='']", "no version of answer is deployed to live");
    // In sandbox the protected secret's sandbox value is what the code gets.
    b.script(
        "const s = document.querySelector('#test-env'); s.value = 'sandbox'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    );
    b.click("form[data-form=function-test] button[type=submit]");
    b.wait_text("[data-out=result]", "v2 4");

    // An admin deploys version 2 to live, then rolls back to version 1.
    b.delete_cookies();
    b.sign_in(&s, ADMIN_EMAIL, ADMIN_PASSWORD);
    b.goto(&format!("{}/w/{ws}/agents/{agent}/functions/answer", s.base));
    b.click("#function-versions tr[data-version='2'] form[data-env=live] button[type=submit]");
    b.accept_dialog();
    b.wait_text("#notice", "Version 2 runs in live now.");
    b.click("#function-versions tr[data-version='1'] form[data-env=live] button[type=submit]");
    assert!(b.dialog_text().contains("Roll live back to version 1"));
    b.accept_dialog();
    b.wait_text("#notice", "Version 1 runs in live now.");
    assert!(b.text("#deployments tr[data-env='live']").contains("version 1"));
    b.screenshot("function-environments");
    b.script(
        "const s = document.querySelector('#test-env'); s.value = 'live'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    );
    b.wait_text("[data-test-note]", "Runs version 1, deployed to live");
    b.click("form[data-form=function-test] button[type=submit]");
    b.wait_text("[data-out=result]", &format!("v1 {}", "sk_LIVE_ONLY".len()));
    let deploys = s.audit(&ws, "action=function.deploy");
    assert_eq!(deploys.len(), 3);
    assert!(deploys[0]["detail"].as_str().unwrap().ends_with("rollback"));
}
