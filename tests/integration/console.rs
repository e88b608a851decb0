//! The console over plain HTTP: its assets (hashed names, compression, caching), the pages for
//! unknown URLs, ended sessions and the sign-in page before and after setup.

use std::io::Read;

use serde_json::json;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Options, Server, setup_code, with_admin};

/// The `src` or `href` of every `/assets/` reference in a page.
fn asset_links(page: &str) -> Vec<String> {
    page.split("\"/assets/").skip(1).filter_map(|rest| rest.split('"').next()).map(|p| format!("/assets/{p}")).collect()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body.gz");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
    assert!(out.status.success(), "not gzip: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A GET that returns the raw body (the harness's client would decode it as text).
fn get_raw(s: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
    let mut req = agent.get(format!("{}{path}", s.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let hs = resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let mut body = Vec::new();
    resp.body_mut().as_reader().read_to_end(&mut body).unwrap();
    (status, hs, body)
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn assets_have_hashed_names_are_compressed_and_cached_for_a_year() {
    let (s, _tmp) = with_admin(Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    let (cookie, _) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let page = s.request_with("GET", &format!("/w/{ws}/agents/{agent}/functions/new"), &[("Cookie", &cookie)], None);
    assert_eq!(page.status, 200);
    let links = asset_links(&page.text);
    let editor = links.iter().find(|l| l.starts_with("/assets/editor.")).expect("the editor is linked").clone();
    assert!(links.iter().any(|l| l.starts_with("/assets/console.") && l.ends_with(".css")), "{links:?}");
    assert!(links.iter().any(|l| l.starts_with("/assets/favicon.") && l.ends_with(".svg")), "{links:?}");
    let hash = editor.trim_start_matches("/assets/editor.").trim_end_matches(".js");
    assert!(hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit()), "not a content hash: {editor}");

    let plain = include_bytes!("../../crates/server/assets/editor.js");
    let (status, hs, body) = get_raw(&s, &editor, &[("Accept-Encoding", "gzip, deflate, br")]);
    assert_eq!(status, 200);
    assert_eq!(header(&hs, "content-encoding"), Some("gzip"));
    assert_eq!(header(&hs, "cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(header(&hs, "content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(header(&hs, "vary"), Some("Accept-Encoding"));
    assert!(body.len() * 2 < plain.len(), "compressed to {} of {} bytes", body.len(), plain.len());
    assert_eq!(gunzip(&body), plain.to_vec());
    // Revalidation by ETag.
    let etag = header(&hs, "etag").unwrap().to_owned();
    let (status, _, body) = get_raw(&s, &editor, &[("If-None-Match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));

    // A client that does not take gzip gets the file as it is.
    let (status, hs, body) = get_raw(&s, &editor, &[("Accept-Encoding", "identity")]);
    assert_eq!(status, 200);
    assert_eq!(header(&hs, "content-encoding"), None);
    assert_eq!(body, plain.to_vec());

    // The plain name still answers, revalidated each time; unknown names are 404.
    let (status, hs, _) = get_raw(&s, "/assets/editor.js", &[]);
    assert_eq!((status, header(&hs, "cache-control")), (200, Some("no-cache")));
    assert_eq!(get_raw(&s, "/assets/editor.000000000000.js", &[]).0, 404);
    // Pages themselves are never cached.
    assert_eq!(page.header("cache-control"), Some("no-store"));

    // The favicon.
    let (status, hs, body) = get_raw(&s, "/favicon.ico", &[]);
    assert_eq!((status, header(&hs, "content-type")), (200, Some("image/svg+xml")));
    assert!(String::from_utf8_lossy(&body).starts_with("<svg"));
}

#[test]
fn unknown_urls_get_a_page_and_ended_sessions_go_to_sign_in() {
    let (s, _tmp) = with_admin(Options::default());
    let html = [("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let r = s.request_with("GET", "/no/such/page", &html, None);
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"), "{:?}", r.headers);
    assert!(r.text.contains("no page at this address") && r.text.contains("href=\"/\""), "{}", r.text);
    // The API, and clients that do not ask for HTML, keep the JSON error.
    s.request_with("GET", "/api/v1/nothing-here", &html, None).expect_error(404, "no_route");
    s.request_with("GET", "/no/such/page", &[], None).expect_error(404, "no_route");

    // A session that has ended: its pages send the browser to sign in, saying why.
    let ws = s.default_ws();
    let (cookie, csrf) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    s.request_with("POST", "/api/v1/auth/logout", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], None).expect(204);
    let (status, hs, _) = get_raw(&s, &format!("/w/{ws}/secrets"), &[("Cookie", &cookie)]);
    assert_eq!(status, 303);
    assert_eq!(header(&hs, "location").unwrap(), format!("/login?expired=1&next=/w/{ws}/secrets"));
    let login = s.request("GET", "/login?expired=1&next=/", None, None);
    assert!(login.text.contains("Your session has ended"), "{}", login.text);
    // Without any cookie it is a plain sign-in.
    let (status, hs, _) = get_raw(&s, &format!("/w/{ws}/secrets"), &[]);
    assert_eq!(status, 303);
    assert_eq!(header(&hs, "location").unwrap(), format!("/login?next=/w/{ws}/secrets"));
}

#[test]
fn the_sign_in_page_offers_setup_only_until_the_first_admin_exists() {
    let s = Server::start();
    let before = s.request("GET", "/login", None, None);
    assert!(before.text.contains("href=\"/setup\""), "{}", before.text);
    let code = setup_code(&s);
    s.request(
        "POST",
        "/api/v1/setup",
        None,
        Some(&json!({"setup_code": code, "email": ADMIN_EMAIL, "name": "Ada", "password": ADMIN_PASSWORD})),
    )
    .expect(201);
    let after = s.request("GET", "/login", None, None);
    assert_eq!(after.status, 200);
    assert!(!after.text.contains("/setup"), "the sign-in page still offers setup: {}", after.text);
}

/// Every page's `<title>` is plain text: a page's content never ends up in its title block.
#[test]
fn page_titles_are_plain_text() {
    let (s, _data) = with_admin(Options::default());
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_TITLE"), &[&agent]);
    let (cookie, _) = s.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    for path in [
        format!("/w/{ws}/agents"),
        format!("/w/{ws}/agents/{agent}"),
        format!("/w/{ws}/secrets"),
        format!("/w/{ws}/secrets/stripe_api_key"),
        format!("/w/{ws}/users"),
        format!("/w/{ws}/api-keys"),
        format!("/w/{ws}/audit"),
        format!("/w/{ws}/account"),
    ] {
        let page = s.request_with("GET", &path, &[("Cookie", &cookie)], None);
        assert_eq!(page.status, 200, "{path}");
        let start = page.text.find("<title>").unwrap_or_else(|| panic!("{path} has no title")) + "<title>".len();
        let title = &page.text[start..start + page.text[start..].find("</title>").unwrap()];
        assert!(!title.contains('<') && !title.contains("&lt;") && title.len() < 120, "{path}: title {title:?}");
    }
}
