//! The web console: server-rendered pages (askama templates) over the same services as the JSON
//! API, with a little JavaScript (`assets/console.js`) that sends forms to the API with the
//! session's CSRF token and shows each error beside its field. Every asset is embedded in the
//! binary; the Content-Security-Policy allows scripts and styles from this server only.

mod account;
mod agents;
pub mod assets;
mod audit;
mod auth;
pub mod names;
mod people;
mod secrets;
pub mod setup;

use agentvault_core::model::{Perm, Principal, Role};
use agentvault_core::{Error, ErrorKind};
use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::me::UserOut;
use crate::sign_in::{csrf_token, session_cookie};
use crate::{AppState, now_millis};

/// Scripts only from this server, never inline. Styles may be inline: the code editor
/// (CodeMirror) writes its theme into `<style>` elements at run time.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (outside the JSON API and its OpenAPI document). Each one is listed with
/// who may open it in the console matrix of tests/integration/authz.rs.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(auth::login_page))
        .route("/invite/{code}", get(auth::invite_page))
        .route("/assets/{file}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .route("/w/{ws}", get(workspace_home))
        .route("/w/{ws}/agents", get(agents::agents_page))
        .route("/w/{ws}/agents/{agent_id}", get(agents::agent_page))
        .route("/w/{ws}/agents/{agent_id}/functions/new", get(agents::new_function_page))
        .route("/w/{ws}/agents/{agent_id}/functions/{name}", get(agents::function_page))
        .route("/w/{ws}/account", get(account::account_page))
        .route("/w/{ws}/users", get(people::users_page))
        .route("/w/{ws}/api-keys", get(people::keys_page))
        .route("/w/{ws}/audit", get(audit::audit_page))
        .route("/w/{ws}/audit/export", get(audit::audit_export))
        .route("/w/{ws}/secrets", get(secrets::secrets_page))
        .route("/w/{ws}/secrets/new", get(secrets::new_secret_page))
        .route("/w/{ws}/secrets/{name}", get(secrets::secret_page))
}

/// An HTML response with the console's security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The response `respond` makes of a rendered template, or a plain 500 when rendering fails.
fn render_into(t: &impl Template, respond: impl FnOnce(String) -> Response) -> Response {
    match t.render() {
        Ok(body) => respond(body),
        Err(e) => {
            tracing::error!(error = %e, "rendering a console page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

fn render(status: StatusCode, t: &impl Template) -> Response {
    render_into(t, |body| html(status, body))
}

/// What every signed-in page shows around its content.
#[derive(Clone)]
pub struct Chrome {
    pub user: UserOut,
    pub csrf: String,
    /// (id, name) of the user's workspaces.
    pub workspaces: Vec<(String, String)>,
    pub ws_id: String,
    pub ws_name: String,
    pub is_admin: bool,
    /// The active tab: agents, users, keys, secrets, audit, account.
    pub tab: &'static str,
}

/// Why a page is not shown.
pub enum PageError {
    /// Not signed in: to the sign-in page, then back to this URL; `true` when a session cookie
    /// was sent but its session has ended (expired, signed out elsewhere).
    SignIn(String, bool),
    /// An error page, in the chrome of the page's workspace when it is known.
    Refused(Option<Box<Chrome>>, Error),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn(next, ended) => {
                let flag = if ended { "expired=1&" } else { "" };
                Redirect::to(&format!("/login?{flag}next={}", encode(&next))).into_response()
            }
            PageError::Refused(chrome, e) => error_page(chrome.map(|c| *c), &e),
        }
    }
}

type PageResult = Result<Response, PageError>;

/// A service's refusal, shown as an error page in the chrome of the page.
trait OrRefuse<T> {
    fn or_refuse(self, chrome: &Chrome) -> Result<T, PageError>;
}

impl<T> OrRefuse<T> for agentvault_core::Result<T> {
    fn or_refuse(self, chrome: &Chrome) -> Result<T, PageError> {
        self.map_err(|e| PageError::Refused(Some(Box::new(chrome.clone())), e))
    }
}

/// The signed-in user of a console request, or where to send them.
struct Viewer {
    principal: Principal,
    user: UserOut,
    csrf: String,
    /// The id of the session showing the page.
    session_id: String,
    workspaces: Vec<(String, String, Role)>,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Viewer, PageError> {
        Viewer::of(st, &parts.headers, &parts.uri).await
    }
}

impl Viewer {
    async fn of(st: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Viewer, PageError> {
        let here = || uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
        let to_login = || PageError::SignIn(here(), false);
        let Some(cookie) = session_cookie(headers) else { return Err(to_login()) };
        let session = st.session_of(&cookie, now_millis()).await.map_err(|_| PageError::SignIn(here(), true))?;
        let principal = st.user_principal(&session.user_id).await.map_err(|e| PageError::Refused(None, e))?;
        let user = match st.store.get_user(&session.user_id).await {
            Ok(Some(u)) => UserOut::from(u),
            _ => return Err(to_login()),
        };
        let workspaces = st
            .workspaces_of(&session.user_id)
            .await
            .map_err(|e| PageError::Refused(None, e))?
            .into_iter()
            .map(|w| (w.id, w.name, if w.role == "admin" { Role::Admin } else { Role::Member }))
            .collect();
        Ok(Viewer { principal, user, csrf: csrf_token(&cookie), session_id: session.id, workspaces })
    }

    /// The chrome of a page in workspace `ws`; 404 when the user is not in it.
    fn chrome(&self, ws: &str, tab: &'static str) -> Result<Chrome, PageError> {
        let Some((id, name, role)) = self.workspaces.iter().find(|(id, _, _)| id == ws) else {
            let e = Error::not_found("workspace_not_found", "no such workspace, or you are not a member of it");
            return Err(PageError::Refused(None, e));
        };
        Ok(Chrome {
            user: self.user.clone(),
            csrf: self.csrf.clone(),
            workspaces: self.workspaces.iter().map(|(i, n, _)| (i.clone(), n.clone())).collect(),
            ws_id: id.clone(),
            ws_name: name.clone(),
            is_admin: *role == Role::Admin,
            tab,
        })
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Option<Chrome>,
    status: u16,
    heading: &'static str,
    message: String,
}

fn error_page(chrome: Option<Chrome>, e: &Error) -> Response {
    let (status, heading) = match e.kind {
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "Not allowed"),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "Not found"),
        ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "Sign in"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "the server could not show this page; try again".to_owned()
    } else {
        e.message.to_string()
    };
    render(status, &ErrorPage { chrome, status: status.as_u16(), heading, message })
}

/// The page for a URL the console does not have.
pub fn not_found_page() -> Response {
    error_page(
        None,
        &Error::not_found("no_page", "there is no page at this address; check the link, or go back to the console"),
    )
}

impl Viewer {
    /// The chrome of a page in workspace `ws`; pages that need a permission (admins only)
    /// answer 403 before anything is loaded.
    fn open(&self, ws: &str, tab: &'static str, perm: Perm) -> Result<Chrome, PageError> {
        let chrome = self.chrome(ws, tab)?;
        self.principal.require(&chrome.ws_id, perm).or_refuse(&chrome)?;
        Ok(chrome)
    }
}

async fn home(v: Viewer) -> PageResult {
    match v.workspaces.first() {
        Some((id, _, _)) => Ok(Redirect::to(&format!("/w/{id}/agents")).into_response()),
        None => Err(PageError::Refused(
            None,
            Error::not_found("no_workspace", "you are not a member of any workspace yet; ask an admin to add you"),
        )),
    }
}

async fn workspace_home(Path(ws): Path<String>) -> Response {
    Redirect::to(&format!("/w/{}/agents", encode(&ws))).into_response()
}
