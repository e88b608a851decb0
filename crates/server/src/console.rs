//! The web console: server-rendered pages (askama templates) over the same handlers as the JSON
//! API, with a little JavaScript (`assets/console.js`) that sends forms to the API with the
//! session's CSRF token and shows each error beside its field. Every asset is embedded in the
//! binary; the Content-Security-Policy allows scripts and styles from this server only.

use agentvault_core::model::{Perm, Principal, Role};
use agentvault_core::{Error, ErrorKind};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::agents::AgentSecretOut;
use crate::api::audit::{AuditOut, AuditQuery};
use crate::api::functions::{FunctionOut, ParamBody};
use crate::api::people::UserOut;
use crate::api::people::{InvitationOut, MemberOut};
use crate::api::{AgentOut, SecretOut, agents as agents_api, functions as functions_api, secrets as secrets_api};
use crate::api::{AgentsScope, ApiKeyOut, audit as audit_api, keys as keys_api, people as people_api};
use crate::auth::Auth;
use crate::extract::{ApiPath, ApiQuery};
use crate::sign_in::{csrf_token, session_cookie};
use crate::{AppState, now_millis};

/// Scripts only from this server, never inline. Styles may be inline: the code editor
/// (CodeMirror) writes its theme into `<style>` elements at run time.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (outside the JSON API and its OpenAPI document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/invite/{code}", get(invite_page))
        .route("/assets/{file}", get(asset))
        .route("/w/{ws}", get(workspace_home))
        .route("/w/{ws}/agents", get(agents_page))
        .route("/w/{ws}/agents/{agent_id}", get(agent_page))
        .route("/w/{ws}/agents/{agent_id}/functions/new", get(new_function_page))
        .route("/w/{ws}/agents/{agent_id}/functions/{name}", get(function_page))
        .route("/w/{ws}/users", get(users_page))
        .route("/w/{ws}/api-keys", get(keys_page))
        .route("/w/{ws}/audit", get(audit_page))
        .route("/w/{ws}/audit/export", get(audit_export))
        .route("/w/{ws}/secrets", get(secrets_page))
        .route("/w/{ws}/secrets/new", get(new_secret_page))
        .route("/w/{ws}/secrets/{name}", get(secret_page))
}

/// Embedded assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("console.css", "text/css; charset=utf-8", include_bytes!("../assets/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../assets/console.js")),
    // CodeMirror 6 with Python, bundled by assets/editor/build.sh.
    ("editor.js", "text/javascript; charset=utf-8", include_bytes!("../assets/editor.js")),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
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

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "rendering a console page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// What every signed-in page shows around its content.
pub struct Chrome {
    pub user: UserOut,
    pub csrf: String,
    /// (id, name) of the user's workspaces.
    pub workspaces: Vec<(String, String)>,
    pub ws_id: String,
    pub ws_name: String,
    pub is_admin: bool,
    /// The active tab: agents, users, keys, secrets, audit.
    pub tab: &'static str,
}

/// The signed-in user of a console request, or where to send them.
struct Viewer {
    principal: Principal,
    user: UserOut,
    csrf: String,
    workspaces: Vec<(String, String, Role)>,
}

impl Viewer {
    async fn of(st: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Viewer, Box<Response>> {
        let to_login = || {
            let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Box::new(Redirect::to(&format!("/login?next={}", encode(next))).into_response())
        };
        let Some(cookie) = session_cookie(headers) else { return Err(to_login()) };
        let session = st.session_of(&cookie, now_millis()).await.map_err(|_| to_login())?;
        let principal = st.user_principal(&session.user_id).await.map_err(|e| Box::new(error_page(None, &e)))?;
        let user = match st.store.get_user(&session.user_id).await {
            Ok(Some(u)) => UserOut::from(u),
            _ => return Err(to_login()),
        };
        let workspaces = st
            .workspaces_of(&session.user_id)
            .await
            .map_err(|e| Box::new(error_page(None, &e)))?
            .into_iter()
            .map(|w| (w.id, w.name, if w.role == "admin" { Role::Admin } else { Role::Member }))
            .collect();
        Ok(Viewer { principal, user, csrf: csrf_token(&cookie), workspaces })
    }

    /// The chrome of a page in workspace `ws`; 404 when the user is not in it.
    fn chrome(&self, ws: &str, tab: &'static str) -> Result<Chrome, Box<Response>> {
        let Some((id, name, role)) = self.workspaces.iter().find(|(id, _, _)| id == ws) else {
            let e = Error::not_found("workspace_not_found", "no such workspace, or you are not a member of it");
            return Err(Box::new(error_page(None, &e)));
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

    fn auth(&self) -> Auth {
        Auth(self.principal.clone())
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

/// An API handler's refusal as a page in the console's chrome.
fn refused(chrome: Chrome, e: crate::error::ApiError) -> Response {
    error_page(Some(chrome), &e.0)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Option<Chrome>,
    next: String,
}

async fn login_page(uri: Uri) -> Response {
    let next = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("next=")))
        .map(percent_decode)
        .filter(|n| is_local_path(n))
        .unwrap_or_else(|| "/".to_owned());
    render(StatusCode::OK, &LoginPage { chrome: None, next })
}

/// Whether `next` is a path of this console: exactly one leading slash, and no whitespace, control
/// character or backslash anywhere (browsers drop tabs and newlines from URLs and read a backslash
/// as a slash, so `/<tab>/evil.example` would leave the site).
fn is_local_path(next: &str) -> bool {
    next.strip_prefix('/').is_some_and(|rest| !rest.starts_with('/'))
        && !next.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\')
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The signed-in viewer of a page in workspace `ws` and the page's chrome; pages that need a
/// permission (admins only) answer 403 before anything is loaded.
async fn open_page(
    st: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    ws: &str,
    tab: &'static str,
    perm: Perm,
) -> Result<(Viewer, Chrome), Box<Response>> {
    let v = Viewer::of(st, headers, uri).await?;
    let chrome = v.chrome(ws, tab)?;
    match v.principal.require(&chrome.ws_id, perm) {
        Ok(()) => Ok((v, chrome)),
        Err(e) => Err(Box::new(error_page(Some(chrome), &e))),
    }
}

async fn home(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let v = match Viewer::of(&st, &headers, &uri).await {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match v.workspaces.first() {
        Some((id, _, _)) => Redirect::to(&format!("/w/{id}/agents")).into_response(),
        None => error_page(
            None,
            &Error::not_found("no_workspace", "you are not a member of any workspace yet; ask an admin to add you"),
        ),
    }
}

async fn workspace_home(Path(ws): Path<String>) -> Response {
    Redirect::to(&format!("/w/{}/agents", encode(&ws))).into_response()
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    chrome: Option<Chrome>,
    ws: String,
    agents: Vec<AgentOut>,
}

async fn agents_page(State(st): State<AppState>, Path(ws): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "agents", Perm::ViewAgents).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match agents_api::list_agents(State(st.clone()), v.auth(), ApiPath(ws)).await {
        Ok(list) => {
            render(StatusCode::OK, &AgentsPage { ws: chrome.ws_id.clone(), chrome: Some(chrome), agents: list.0.items })
        }
        Err(e) => refused(chrome, e),
    }
}

/// A row of the Secrets table.
pub struct SecretRow {
    pub s: SecretOut,
    pub kind: &'static str,
    pub agents: usize,
}

#[derive(Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    chrome: Option<Chrome>,
    ws: String,
    secrets: Vec<SecretRow>,
}

fn kind_label(s: &SecretOut) -> &'static str {
    if s.keys.is_some() { "Key/value pairs" } else { "Single value" }
}

async fn secrets_page(State(st): State<AppState>, Path(ws): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "secrets", Perm::ManageSecrets).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match secrets_api::list_secrets(State(st.clone()), v.auth(), ApiPath(ws)).await {
        Ok(list) => {
            let secrets = list
                .0
                .items
                .into_iter()
                .map(|s| SecretRow { kind: kind_label(&s), agents: s.agents.len(), s })
                .collect();
            render(StatusCode::OK, &SecretsPage { ws: chrome.ws_id.clone(), chrome: Some(chrome), secrets })
        }
        Err(e) => refused(chrome, e),
    }
}

#[derive(Template)]
#[template(path = "secret_new.html")]
struct NewSecretPage {
    chrome: Option<Chrome>,
    ws: String,
    agents: Vec<AgentOut>,
}

async fn new_secret_page(State(st): State<AppState>, Path(ws): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "secrets", Perm::ManageSecrets).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match agents_api::list_agents(State(st.clone()), v.auth(), ApiPath(ws)).await {
        Ok(list) => render(
            StatusCode::OK,
            &NewSecretPage { ws: chrome.ws_id.clone(), chrome: Some(chrome), agents: list.0.items },
        ),
        Err(e) => refused(chrome, e),
    }
}

/// An agent with whether it may read the secret shown.
pub struct AccessRow {
    pub agent: AgentOut,
    pub granted: bool,
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    chrome: Option<Chrome>,
    ws: String,
    secret: SecretOut,
    kind: &'static str,
    access: Vec<AccessRow>,
    versions: Vec<crate::api::VersionOut>,
}

async fn secret_page(
    State(st): State<AppState>,
    Path((ws, name)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "secrets", Perm::ManageSecrets).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let secret = match secrets_api::get_secret(State(st.clone()), v.auth(), ApiPath((ws.clone(), name.clone()))).await {
        Ok(s) => s.0,
        Err(e) => return refused(chrome, e),
    };
    let agents = match agents_api::list_agents(State(st.clone()), v.auth(), ApiPath(ws.clone())).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    let versions = match secrets_api::list_versions(State(st.clone()), v.auth(), ApiPath((ws, name))).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    let access = agents.into_iter().map(|a| AccessRow { granted: secret.agents.contains(&a.id), agent: a }).collect();
    render(
        StatusCode::OK,
        &SecretPage {
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            kind: kind_label(&secret),
            secret,
            access,
            versions,
        },
    )
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    chrome: Option<Chrome>,
    ws: String,
    agent: AgentOut,
    functions: Vec<FunctionOut>,
    secrets: Vec<AgentSecretOut>,
}

async fn agent_page(
    State(st): State<AppState>,
    Path((ws, agent_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "agents", Perm::ViewAgents).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let path = ApiPath((ws.clone(), agent_id));
    let agent = match agents_api::get_agent(State(st.clone()), v.auth(), path.clone()).await {
        Ok(a) => a.0,
        Err(e) => return refused(chrome, e),
    };
    let functions = match functions_api::list_functions(State(st.clone()), v.auth(), path.clone()).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    let secrets = match agents_api::agent_secrets(State(st.clone()), v.auth(), path).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    render(StatusCode::OK, &AgentPage { ws: chrome.ws_id.clone(), chrome: Some(chrome), agent, functions, secrets })
}

#[derive(Template)]
#[template(path = "function.html")]
struct FunctionPage {
    chrome: Option<Chrome>,
    ws: String,
    agent: AgentOut,
    /// None for a new function.
    function: Option<FunctionOut>,
    name: String,
    description: String,
    parameters: Vec<ParamBody>,
    code: String,
    timeout_ms: String,
    secrets: Vec<AgentSecretOut>,
}

const NEW_FUNCTION_CODE: &str =
    "def my_function(conv: Conversation):\n    # key = conv.utils.get_secret('stripe_api_key')\n    return \"Done\"\n";

async fn function_editor(
    st: AppState,
    headers: HeaderMap,
    uri: Uri,
    ws: String,
    agent_id: String,
    name: Option<String>,
) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "agents", Perm::ViewAgents).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let path = ApiPath((ws.clone(), agent_id.clone()));
    let agent = match agents_api::get_agent(State(st.clone()), v.auth(), path.clone()).await {
        Ok(a) => a.0,
        Err(e) => return refused(chrome, e),
    };
    let secrets = match agents_api::agent_secrets(State(st.clone()), v.auth(), path).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    let function = match name {
        Some(name) => {
            match functions_api::get_function(State(st.clone()), v.auth(), ApiPath((ws, agent_id, name))).await {
                Ok(f) => Some(f.0),
                Err(e) => return refused(chrome, e),
            }
        }
        None => None,
    };
    let page = match &function {
        Some(f) => FunctionPage {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters: f.parameters.clone(),
            code: f.code.clone(),
            timeout_ms: f.timeout_ms.map(|t| t.to_string()).unwrap_or_default(),
            function,
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            agent,
            secrets,
        },
        None => FunctionPage {
            name: String::new(),
            description: String::new(),
            parameters: Vec::new(),
            code: NEW_FUNCTION_CODE.to_owned(),
            timeout_ms: String::new(),
            function: None,
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            agent,
            secrets,
        },
    };
    render(StatusCode::OK, &page)
}

async fn new_function_page(
    State(st): State<AppState>,
    Path((ws, agent_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    function_editor(st, headers, uri, ws, agent_id, None).await
}

async fn function_page(
    State(st): State<AppState>,
    Path((ws, agent_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    function_editor(st, headers, uri, ws, agent_id, Some(name)).await
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Option<Chrome>,
    ws: String,
    admin: bool,
    members: Vec<MemberOut>,
    invitations: Vec<InvitationOut>,
    me: String,
}

async fn users_page(State(st): State<AppState>, Path(ws): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "users", Perm::ViewPeople).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let invitations = if chrome.is_admin {
        match people_api::list_invitations(State(st.clone()), v.auth(), ApiPath(ws.clone())).await {
            Ok(list) => list.0.items,
            Err(e) => return refused(chrome, e),
        }
    } else {
        Vec::new()
    };
    match people_api::list_members(State(st.clone()), v.auth(), ApiPath(ws)).await {
        Ok(list) => render(
            StatusCode::OK,
            &UsersPage {
                ws: chrome.ws_id.clone(),
                admin: chrome.is_admin,
                me: v.user.id.clone(),
                chrome: Some(chrome),
                members: list.0.items,
                invitations,
            },
        ),
        Err(e) => refused(chrome, e),
    }
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    chrome: Option<Chrome>,
    /// The CSRF token of the viewer's session, when signed in.
    csrf: Option<String>,
    code: String,
    /// None when the code is not (or no longer) valid.
    invitation: Option<InviteView>,
    error: String,
}

struct InviteView {
    email: String,
    role: &'static str,
    ws_id: String,
    ws_name: String,
    account_exists: bool,
    /// Signed in as the invited account: a Join button is enough.
    signed_in_as_invitee: bool,
    /// Signed in as someone else (shown, so the person knows why the page asks to sign in).
    signed_in_as: Option<String>,
}

/// The page behind an invitation link: create the account, or sign in as the existing one,
/// and join.
async fn invite_page(State(st): State<AppState>, Path(code): Path<String>, headers: HeaderMap) -> Response {
    let session = match session_cookie(&headers) {
        Some(cookie) => match st.session_of(&cookie, now_millis()).await {
            Ok(s) => Some((s, csrf_token(&cookie))),
            Err(_) => None,
        },
        None => None,
    };
    let viewer = match &session {
        Some((s, _)) => st.store.get_user(&s.user_id).await.ok().flatten(),
        None => None,
    };
    let csrf = session.map(|(_, c)| c);
    match people_api::pending_invitation(&st, &code).await {
        Ok((invitation, ws, account)) => {
            let account_id = account.as_ref().map(|(u, _)| u.id.clone());
            let signed_in_as_invitee = viewer.as_ref().is_some_and(|v| Some(&v.id) == account_id.as_ref());
            let view = InviteView {
                role: invitation.role.as_str(),
                email: invitation.email,
                ws_id: ws.id,
                ws_name: ws.name,
                account_exists: account.is_some(),
                signed_in_as_invitee,
                signed_in_as: viewer.filter(|_| !signed_in_as_invitee).map(|v| v.email),
            };
            render(
                StatusCode::OK,
                &InvitePage { chrome: None, csrf, code, invitation: Some(view), error: String::new() },
            )
        }
        Err(e) => {
            let status =
                if e.kind == ErrorKind::NotFound { StatusCode::NOT_FOUND } else { StatusCode::INTERNAL_SERVER_ERROR };
            let error = if status == StatusCode::NOT_FOUND {
                e.message.to_string()
            } else {
                "the server could not look up this invitation; try again".to_owned()
            };
            render(status, &InvitePage { chrome: None, csrf, code: String::new(), invitation: None, error })
        }
    }
}

/// An API key as the list shows it: its scope by agent name.
pub struct KeyRow {
    pub key: ApiKeyOut,
    pub scope: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Option<Chrome>,
    ws: String,
    admin: bool,
    keys: Vec<KeyRow>,
    agents: Vec<AgentOut>,
}

async fn keys_page(State(st): State<AppState>, Path(ws): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "keys", Perm::ViewPeople).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let agents = match agents_api::list_agents(State(st.clone()), v.auth(), ApiPath(ws.clone())).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    let keys = match keys_api::list_keys(State(st.clone()), v.auth(), ApiPath(ws)).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    let name_of = |id: &String| agents.iter().find(|a| &a.id == id).map_or_else(|| id.clone(), |a| a.name.clone());
    let keys = keys
        .into_iter()
        .map(|key| {
            let scope = match &key.agents {
                AgentsScope::All(_) => "All agents".to_owned(),
                AgentsScope::Agents(ids) => ids.iter().map(name_of).collect::<Vec<_>>().join(", "),
            };
            KeyRow { key, scope }
        })
        .collect();
    render(
        StatusCode::OK,
        &KeysPage { ws: chrome.ws_id.clone(), admin: chrome.is_admin, chrome: Some(chrome), keys, agents },
    )
}

/// The audit filters of the page's query string, as the API takes them. Times from the
/// browser's `datetime-local` fields (no zone) are UTC.
fn audit_query(q: &std::collections::HashMap<String, String>, limit: u32) -> AuditQuery {
    let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let time = |k: &str| {
        get(k).map(|t| match t.len() {
            16 => format!("{t}:00Z"),
            19 => format!("{t}Z"),
            _ => t,
        })
    };
    AuditQuery {
        action: get("action"),
        secret: get("secret"),
        agent: get("agent"),
        actor: get("actor"),
        outcome: get("outcome"),
        since: time("since"),
        until: time("until"),
        cursor: get("cursor"),
        limit: Some(limit),
    }
}

/// The filter form's values, to show them again.
pub struct AuditFilters {
    pub action: String,
    pub secret: String,
    pub agent: String,
    pub actor: String,
    pub outcome: String,
    pub since: String,
    pub until: String,
    /// The query string without the cursor (for the export links and the next page).
    pub query: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPageView {
    chrome: Option<Chrome>,
    ws: String,
    items: Vec<AuditOut>,
    next_cursor: Option<String>,
    filters: AuditFilters,
    actions: Vec<&'static str>,
    outcomes: [&'static str; 5],
    agents: Vec<AgentOut>,
    error: Option<String>,
}

fn filters_of(q: &std::collections::HashMap<String, String>) -> AuditFilters {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut pairs: Vec<(&String, &String)> = q.iter().filter(|(k, v)| *k != "cursor" && !v.is_empty()).collect();
    pairs.sort();
    let query = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
    AuditFilters {
        action: get("action"),
        secret: get("secret"),
        agent: get("agent"),
        actor: get("actor"),
        outcome: get("outcome"),
        since: get("since"),
        until: get("until"),
        query,
    }
}

async fn audit_page(
    State(st): State<AppState>,
    Path(ws): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "audit", Perm::ReadAudit).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let agents = match agents_api::list_agents(State(st.clone()), v.auth(), ApiPath(ws.clone())).await {
        Ok(list) => list.0.items,
        Err(e) => return refused(chrome, e),
    };
    let page = audit_api::list_audit(State(st.clone()), v.auth(), ApiPath(ws), Ok(ApiQuery(audit_query(&q, 50)))).await;
    // A bad filter is shown beside the form, not as an error page.
    let (items, next_cursor, error) = match page {
        Ok(p) => (p.0.items, p.0.next_cursor, None),
        Err(e) if e.0.kind == ErrorKind::InvalidInput => (Vec::new(), None, Some(e.0.message.to_string())),
        Err(e) => return refused(chrome, e),
    };
    let view = AuditPageView {
        ws: chrome.ws_id.clone(),
        chrome: Some(chrome),
        items,
        next_cursor,
        filters: filters_of(&q),
        actions: agentvault_core::audit::Action::ALL.iter().map(|a| a.as_str()).collect(),
        outcomes: ["success", "denied", "not_found", "invalid", "failed"],
        agents,
        error,
    };
    render(StatusCode::OK, &view)
}

/// Most records one export holds.
const EXPORT_MAX: usize = 100_000;

/// The filtered audit log as a CSV or JSON download (newest first).
async fn audit_export(
    State(st): State<AppState>,
    Path(ws): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (v, chrome) = match open_page(&st, &headers, &uri, &ws, "audit", Perm::ReadAudit).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let csv = q.get("format").map(String::as_str) != Some("json");
    let mut items: Vec<AuditOut> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        // The whole filtered view, from the newest record (the page's own cursor is ignored).
        let query = AuditQuery { cursor: cursor.take(), ..audit_query(&q, audit_api::MAX_LIMIT) };
        let page =
            match audit_api::list_audit(State(st.clone()), v.auth(), ApiPath(ws.clone()), Ok(ApiQuery(query))).await {
                Ok(p) => p.0,
                Err(e) => return refused(chrome, e),
            };
        items.extend(page.items);
        match page.next_cursor {
            Some(c) if items.len() < EXPORT_MAX => cursor = Some(c),
            _ => break,
        }
    }
    let (body, kind, ext) = if csv {
        let mut out = String::from("id,at,actor_type,actor_id,action,outcome,secret,agent_id,target_id,detail\n");
        for i in &items {
            let row = [
                i.id.to_string(),
                i.at.clone(),
                i.actor.kind.to_owned(),
                i.actor.id.clone(),
                i.action.to_owned(),
                i.outcome.to_owned(),
                i.secret.clone().unwrap_or_default(),
                i.agent_id.clone().unwrap_or_default(),
                i.target_id.clone().unwrap_or_default(),
                i.detail.clone().unwrap_or_default(),
            ];
            out.push_str(&row.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        (out, "text/csv; charset=utf-8", "csv")
    } else {
        (serde_json::to_string_pretty(&items).unwrap_or_default(), "application/json", "json")
    };
    let disposition = format!("attachment; filename=\"agentvault-audit-{ws}.{ext}\"");
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, kind)], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A CSV field: quoted when needed, and never read as a formula by a spreadsheet.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}
