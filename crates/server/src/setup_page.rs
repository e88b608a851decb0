//! The first-run page: `/setup` creates the first admin with the setup code printed at the first
//! start. Plain HTML, no script, a strict Content-Security-Policy. The setup code guards it (it
//! is the secret an attacker would need); once a user exists the page only says so.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::AppState;
use crate::api::people::{Peer, create_first_admin};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>agentvault · first admin</title><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body><main><section class=\"card narrow\">{body}</section></main></body></html>"
    );
    let mut resp = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// What the form showed last time: the values typed (never the password) and the errors.
#[derive(Default)]
struct Shown<'a> {
    email: &'a str,
    name: &'a str,
    error: Option<(&'a str, String)>,
}

fn form(shown: &Shown<'_>) -> String {
    let error_for = |field: &str| match &shown.error {
        Some((f, msg)) if *f == field => {
            format!("<p role=\"alert\" class=\"field-error\" id=\"{field}-error\">{}</p>", esc(msg))
        }
        _ => String::new(),
    };
    let general = match &shown.error {
        Some((f, msg)) if !["setup_code", "email", "name", "password"].contains(f) => {
            format!("<p role=\"alert\" class=\"form-error\">{}</p>", esc(msg))
        }
        _ => String::new(),
    };
    format!(
        "<h1>Create the first admin</h1>\
         <p>agentvault printed a setup code when it started. The admin you create here manages every workspace.</p>\
         {general}\
         <form method=\"post\" action=\"/setup\">\
         <div class=\"field\"><label for=\"setup_code\">Setup code</label><input id=\"setup_code\" name=\"setup_code\" required autocomplete=\"off\">{}</div>\
         <div class=\"field\"><label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" required value=\"{}\">{}</div>\
         <div class=\"field\"><label for=\"name\">Name</label><input id=\"name\" name=\"name\" value=\"{}\">{}</div>\
         <div class=\"field\"><label for=\"password\">Password (at least 12 characters)</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required minlength=\"12\" autocomplete=\"new-password\">{}</div>\
         <p><button type=\"submit\" class=\"primary\">Create admin</button></p></form>",
        error_for("setup_code"),
        esc(shown.email),
        error_for("email"),
        esc(shown.name),
        error_for("name"),
        error_for("password"),
    )
}

const DONE: &str = "<h1>agentvault is set up</h1><p>The first admin exists.</p>\
                    <p><a class=\"button primary\" href=\"/\">Open the console</a></p>";

/// The first-run page (HTML): a form to create the first admin with the setup code.
#[utoipa::path(get, path = "/setup", tag = "people", security(()),
    responses((status = 200, description = "the form, or a note that setup is done", content_type = "text/html")))]
pub async fn show(State(st): State<AppState>) -> Response {
    match st.store.count_users().await {
        Ok(0) => page(StatusCode::OK, &form(&Shown::default())),
        Ok(_) => page(StatusCode::OK, DONE),
        Err(e) => page(StatusCode::SERVICE_UNAVAILABLE, &format!("<p role=\"alert\">{}</p>", esc(&e.message))),
    }
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    setup_code: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: Zeroizing<String>,
}

/// Submits the first-run form (`application/x-www-form-urlencoded`): creates the first admin and
/// signs them in.
#[utoipa::path(post, path = "/setup", tag = "people", security(()),
    responses((status = 201, description = "created; sets the session cookie", content_type = "text/html"),
        (status = 400, description = "the form again, with the error by its field", content_type = "text/html"),
        (status = 401, description = "wrong setup code", content_type = "text/html"),
        (status = 409, description = "setup was already done", content_type = "text/html")))]
pub async fn submit(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(f): Form<SetupForm>,
) -> Response {
    let client = st.client_of(peer, &headers);
    match create_first_admin(&st, &client, &headers, Some(&f.setup_code), &f.email, &f.name, f.password).await {
        Ok((cookie, _)) => {
            let mut resp = page(StatusCode::CREATED, DONE);
            resp.headers_mut().insert(header::SET_COOKIE, cookie);
            resp
        }
        Err(e) if e.code == "setup_done" => page(StatusCode::CONFLICT, DONE),
        Err(e) => {
            let status = crate::error::status_of(e.kind);
            let field = e.public_field().unwrap_or("").to_owned();
            let shown =
                Shown { email: &f.email, name: &f.name, error: Some((leak_field(&field), e.message.to_string())) };
            page(status, &form(&shown))
        }
    }
}

/// The form's field names, as `'static` strings for [`Shown`].
fn leak_field(field: &str) -> &'static str {
    match field {
        "setup_code" => "setup_code",
        "email" => "email",
        "name" => "name",
        "password" => "password",
        _ => "",
    }
}
