//! The first-run page: `/setup` creates the first admin with the setup code printed at the first
//! start. No script, a strict Content-Security-Policy. The setup code guards it (it is the secret
//! an attacker would need); once a user exists the page only says so.

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::render_into;
use crate::AppState;
use crate::api::auth::Peer;
use crate::service::auth::create_first_admin;

/// The page: the form (with the values typed, never the password, and the error by its field),
/// the note that setup is done, or why the server cannot tell.
#[derive(Template, Default)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    done: bool,
    unavailable: String,
    email: &'a str,
    name: &'a str,
    /// The form field the error is about; empty for an error about the whole form.
    error_field: &'static str,
    error: String,
}

fn page(status: StatusCode, view: &SetupPage<'_>) -> Response {
    render_into(view, |body| with_headers(status, body))
}

/// The page's own headers: stricter than the console's (no script at all, no referrer).
fn with_headers(status: StatusCode, body: String) -> Response {
    let mut resp = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

const DONE: SetupPage<'static> =
    SetupPage { done: true, unavailable: String::new(), email: "", name: "", error_field: "", error: String::new() };

/// The first-run page (HTML): a form to create the first admin with the setup code.
#[utoipa::path(get, path = "/setup", tag = "people", security(()),
    responses((status = 200, description = "the form, or a note that setup is done", content_type = "text/html")))]
pub async fn show(State(st): State<AppState>) -> Response {
    match st.store.count_users().await {
        Ok(0) => page(StatusCode::OK, &SetupPage::default()),
        Ok(_) => page(StatusCode::OK, &DONE),
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            &SetupPage { unavailable: e.message.to_string(), ..SetupPage::default() },
        ),
    }
}

/// The first-run form's fields.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetupForm {
    /// The setup code printed when agentvault started.
    #[serde(default)]
    setup_code: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    #[schema(value_type = String)]
    password: Zeroizing<String>,
}

/// Submits the first-run form (`application/x-www-form-urlencoded`): creates the first admin and
/// signs them in.
#[utoipa::path(post, path = "/setup", tag = "people", security(()),
    request_body(content = SetupForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "created; sets the session cookie", content_type = "text/html"),
        (status = 400, description = "the form again, with the error by its field, or a form that cannot be read", content_type = "text/html"),
        (status = 415, description = "the body is not a form (application/x-www-form-urlencoded)", content_type = "text/html"),
        (status = 401, description = "wrong setup code", content_type = "text/html"),
        (status = 409, description = "setup was already done", content_type = "text/html")))]
pub async fn submit(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    form: Result<Form<SetupForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(rej) => return unreadable(&rej),
    };
    let client = st.client_of(peer, &headers);
    match create_first_admin(&st, &client, &headers, Some(&f.setup_code), &f.email, &f.name, f.password).await {
        Ok((cookie, _)) => {
            let mut resp = page(StatusCode::CREATED, &DONE);
            resp.headers_mut().insert(header::SET_COOKIE, cookie);
            resp
        }
        Err(e) if e.code == "setup_done" => page(StatusCode::CONFLICT, &DONE),
        Err(e) => {
            let view = SetupPage {
                email: &f.email,
                name: &f.name,
                error_field: form_field(e.public_field().unwrap_or("")),
                error: e.message.to_string(),
                ..SetupPage::default()
            };
            page(crate::error::status_of(e.kind), &view)
        }
    }
}

/// The form again, saying why the submitted one could not be read (never quoting it: it holds
/// the password).
fn unreadable(rej: &FormRejection) -> Response {
    let (status, error) = match rej {
        FormRejection::InvalidFormContentType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the form was not sent as application/x-www-form-urlencoded; submit it from this page",
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "the form could not be read (a field given twice, or a malformed body); fill it in again",
        ),
    };
    page(status, &SetupPage { error: error.to_owned(), ..SetupPage::default() })
}

mod filters {
    /// HTML escaping with named entities (`&lt;`, `&amp;`, `&quot;`, ...): what this page has
    /// always sent, which askama's numeric escaping (`&#60;`) would change.
    #[askama::filter_fn]
    pub fn entities<T: std::fmt::Display>(value: T, _: &dyn askama::Values) -> askama::Result<String> {
        let value = value.to_string();
        let mut out = String::with_capacity(value.len());
        for c in value.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                _ => out.push(c),
            }
        }
        Ok(out)
    }
}

/// The form field an error is about, or "" for the form as a whole.
fn form_field(field: &str) -> &'static str {
    match field {
        "setup_code" => "setup_code",
        "email" => "email",
        "name" => "name",
        "password" => "password",
        _ => "",
    }
}
