//! People: signing in and out, the first admin, the caller's own tokens and sessions, and the
//! members of a workspace.

use std::net::SocketAddr;

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{
    Actor, INVITATION_PREFIX, Invitation, Member, Millis, PERSONAL_TOKEN_PREFIX, Perm, PersonalToken, Principal, Role,
    SESSION_PREFIX, Session, USER_PREFIX, User, Workspace,
};
use agentvault_core::{Error, Result, validate};
use agentvault_store::{NewAccount, PasswordChange};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{List, credential_status};
use crate::auth::{Auth, SHOWN_PREFIX_LEN, generate_token, hash_token, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::sign_in::{
    PERSONAL_TOKEN_PREFIX as PAT_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, csrf_token, hash_password, session_cookie,
    session_set_cookie, verify_password,
};
use crate::{AppState, Json, now_millis, parse_rfc3339, rfc3339};

/// The peer address of the connection, when the server was started with connect info.
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

/// The purpose under which the setup code is stored.
pub const SETUP_CODE: &str = "setup";

#[derive(Serialize, ToSchema, Clone)]
pub struct UserOut {
    pub id: String,
    pub email: String,
    pub name: String,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        UserOut { id: u.id, email: u.email, name: u.name }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceRoleOut {
    pub id: String,
    pub name: String,
    /// `admin` or `member`
    pub role: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct MeOut {
    pub user: UserOut,
    pub workspaces: Vec<WorkspaceRoleOut>,
    /// For requests made with the session cookie: send it as `X-CSRF-Token` on every request
    /// that changes state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    #[schema(value_type = String)]
    pub password: Zeroizing<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignedIn {
    pub user: UserOut,
    pub workspaces: Vec<WorkspaceRoleOut>,
    /// Send as `X-CSRF-Token` on every request that changes state.
    pub csrf_token: String,
    pub expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The setup code printed when agentvault started (not needed with the bootstrap token).
    pub setup_code: Option<String>,
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[schema(value_type = String)]
    pub password: Zeroizing<String>,
}

impl AppState {
    /// The caller as a user, for routes about "me".
    fn user_id_of(p: &Principal) -> Result<&str> {
        match p {
            Principal::User { user_id, .. } => Ok(user_id),
            Principal::Setup { .. } => Err(Error::forbidden(
                "the bootstrap token only sets up the first admin (POST /api/v1/setup); sign in as a user for this",
            )),
            Principal::ApiKey { .. } => {
                Err(Error::forbidden("API keys do not belong to a person; use a personal access token"))
            }
        }
    }

    /// One audit record per workspace of the user (account events concern all of them).
    async fn user_events(
        &self,
        user_id: &str,
        actor: Actor,
        action: Action,
        outcome: Outcome,
        detail: &str,
    ) -> Result<Vec<AuditEvent>> {
        let now = now_millis();
        Ok(self
            .store
            .memberships_of(user_id)
            .await?
            .into_iter()
            .map(|(ws, _)| {
                AuditEvent::new(now, &ws, actor.clone(), action, outcome).target(user_id).detail(detail.to_owned())
            })
            .collect())
    }

    pub(crate) async fn workspaces_of(&self, user_id: &str) -> Result<Vec<WorkspaceRoleOut>> {
        let mut out: Vec<WorkspaceRoleOut> = self
            .store
            .memberships_of(user_id)
            .await?
            .into_iter()
            .filter_map(|(ws, role)| {
                self.model.workspace(&ws).map(|w| WorkspaceRoleOut { id: w.id, name: w.name, role: role.as_str() })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Starts a session for a user; returns the cookie header and the response body.
    async fn start_session(
        &self,
        user: User,
        client: &str,
        headers: &HeaderMap,
    ) -> Result<(header::HeaderValue, SignedIn)> {
        let now = now_millis();
        let token = generate_token(SESSION_TOKEN_PREFIX)?;
        let ttl = self.options.session_ttl;
        let session = Session {
            id: new_id(SESSION_PREFIX)?,
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            revoked_at: None,
            client: client.to_owned(),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        };
        let audit = self
            .user_events(&user.id, Actor::User(user.id.clone()), Action::SignIn, Outcome::Success, &session.id)
            .await?;
        self.store.create_session(&session, &hash_token(&token), &audit).await?;
        let body = SignedIn {
            workspaces: self.workspaces_of(&user.id).await?,
            user: user.into(),
            csrf_token: csrf_token(&token),
            expires_at: rfc3339(session.expires_at),
        };
        Ok((session_set_cookie(&token, ttl, self.options.secure_cookies), body))
    }

    /// The client address for rate limiting: the peer, or the nearest `X-Forwarded-For` entry
    /// when agentvault is configured to trust its reverse proxy.
    pub fn client_of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
        if self.options.trust_forwarded_for
            && let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
            && let Some(last) = forwarded.rsplit(',').map(str::trim).find(|s| !s.is_empty())
        {
            return last.parse::<std::net::IpAddr>().map(client_key).unwrap_or_else(|_| last.to_owned());
        }
        peer.map(|p| client_key(p.ip())).unwrap_or_else(|| "unknown".to_owned())
    }
}

/// The key a client is rate-limited by: its IPv4 address, or the /64 network of its IPv6 address
/// (one host usually holds a whole /64, and would otherwise get a fresh budget per address).
fn client_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod client_tests {
    use super::client_key;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()));
        let b = client_key("2001:db8:1:2:ffff:1:2:3".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()));
        let c = client_key("2001:db8:1:3::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into())), "192.0.2.7");
        assert_eq!(client_key("192.0.2.7".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into())), "192.0.2.7");
    }
}

fn with_cookie(status: StatusCode, cookie: header::HeaderValue, body: impl Serialize) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

fn wrong_credentials() -> Error {
    Error::unauthenticated("the email or password is wrong")
}

/// Signs in with email and password; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "people", request_body = Login, security(()),
    responses((status = 200, body = SignedIn), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<ApiJson<Login>, ApiError>,
) -> ApiResult<Response> {
    let ApiJson(body) = body?;
    let client = st.client_of(peer, &headers);
    let email = body.email.trim().to_owned();
    st.login_limiter.check(&client, &email)?;
    let found = if validate::email(&email).is_ok() { st.store.user_by_email(&email).await? } else { None };
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    if !verify_password(body.password, hash).await {
        st.login_limiter.failed(&client, &email);
        match &user {
            Some(u) => {
                let events = st
                    .user_events(&u.id, Actor::User(u.id.clone()), Action::SignIn, Outcome::Denied, "wrong_password")
                    .await?;
                for e in events {
                    st.audit.append(e).await?;
                }
            }
            None => tracing::info!(client = %client, "sign-in with an unknown email refused"),
        }
        return Err(wrong_credentials().into());
    }
    let Some(user) = user else { return Err(wrong_credentials().into()) };
    st.login_limiter.succeeded(&client, &email);
    let (cookie, body) = st.start_session(user, &client, &headers).await?;
    Ok(with_cookie(StatusCode::OK, cookie, body))
}

/// Signs out: ends the session of the cookie and clears it.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "people",
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(st): State<AppState>, Auth(p): Auth, headers: HeaderMap) -> ApiResult<Response> {
    let user_id = AppState::user_id_of(&p)?.to_owned();
    let now = now_millis();
    if let Some(token) = session_cookie(&headers) {
        let session = st.session_of(&token, now).await?;
        let audit = st.user_events(&user_id, p.actor(), Action::SignOut, Outcome::Success, &session.id).await?;
        st.store.revoke_session(&user_id, &session.id, now, &audit).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_set_cookie("", std::time::Duration::ZERO, st.options.secure_cookies));
    Ok(resp)
}

/// Creates the first admin, once: with the setup code printed at the first start, or the
/// bootstrap token. The admin becomes admin of every workspace and is signed in; the bootstrap
/// token becomes their personal access token.
#[utoipa::path(post, path = "/api/v1/setup", tag = "people", request_body = Setup, security(()),
    responses((status = 201, body = SignedIn), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn setup(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<ApiJson<Setup>, ApiError>,
) -> ApiResult<Response> {
    let ApiJson(body) = body?;
    let client = st.client_of(peer, &headers);
    let (cookie, signed_in) =
        create_first_admin(&st, &client, &headers, body.setup_code.as_deref(), &body.email, &body.name, body.password)
            .await?;
    Ok(with_cookie(StatusCode::CREATED, cookie, signed_in))
}

/// Creates the first admin (the API's `POST /api/v1/setup` and the `/setup` page): guarded by
/// the setup code or the bootstrap token, and rate-limited like a sign-in.
pub async fn create_first_admin(
    st: &AppState,
    client: &str,
    headers: &HeaderMap,
    setup_code: Option<&str>,
    email: &str,
    name: &str,
    password: Zeroizing<String>,
) -> Result<(header::HeaderValue, SignedIn)> {
    if st.store.count_users().await? > 0 {
        return Err(Error::conflict("setup_done", "the first admin already exists; sign in instead"));
    }
    // Guarded like a sign-in: the setup code is short enough to be worth guessing otherwise.
    st.login_limiter.check(client, "setup")?;
    let by_token = headers.contains_key(header::AUTHORIZATION)
        && matches!(
            st.authenticate(&axum::http::Method::POST, headers, now_millis()).await,
            Ok(Principal::Setup { .. })
        );
    let by_code = match (setup_code.filter(|c| !c.trim().is_empty()), st.store.one_time_code(SETUP_CODE).await?) {
        (Some(code), Some(stored)) => agentvault_crypto::constant_time_eq(&hash_token(&normalize_code(code)), &stored),
        _ => false,
    };
    if !by_token && !by_code {
        st.login_limiter.failed(client, "setup");
        return Err(Error::unauthenticated(
            "give the setup code printed when agentvault started, or send the bootstrap token as Authorization: Bearer",
        )
        .with_field("setup_code"));
    }
    let email = validate::email(email)?;
    validate::password("password", &password, &email)?;
    let name = if name.trim().is_empty() { String::new() } else { validate::display_name("name", name)? };
    let now = now_millis();
    let user = User { id: new_id(USER_PREFIX)?, email, name, created_at: now, updated_at: now };
    let hash = hash_password(password).await?;
    let audit: Vec<AuditEvent> = st
        .model
        .workspaces()
        .iter()
        .map(|ws| {
            AuditEvent::new(now, &ws.id, Actor::System, Action::UserCreate, Outcome::Success)
                .target(&user.id)
                .detail("first admin")
        })
        .collect();
    {
        let _w = st.write_lock.lock().await;
        st.store.setup_first_admin(&user, &hash, &audit).await?;
        st.model.clear_admin_tokens();
    }
    st.start_session(user, client, headers).await
}

/// Setup codes are shown grouped (`ABCDE-FGHIJ`); accept them with or without the dash.
pub fn normalize_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// The caller: user, workspaces and roles.
#[utoipa::path(get, path = "/api/v1/me", tag = "people",
    responses((status = 200, body = MeOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn me(State(st): State<AppState>, Auth(p): Auth, headers: HeaderMap) -> ApiResult<Json<MeOut>> {
    let user_id = AppState::user_id_of(&p)?;
    let user =
        st.store.get_user(user_id).await?.ok_or_else(|| Error::unauthenticated("your account no longer exists"))?;
    let csrf = if headers.contains_key(header::AUTHORIZATION) {
        None
    } else {
        session_cookie(&headers).map(|t| csrf_token(&t))
    };
    Ok(Json(MeOut { workspaces: st.workspaces_of(user_id).await?, user: user.into(), csrf_token: csrf }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String)]
    pub current_password: Zeroizing<String>,
    #[schema(value_type = String)]
    pub new_password: Zeroizing<String>,
    /// Also revoke your personal access tokens (except the one making this request).
    #[serde(default)]
    pub revoke_tokens: bool,
}

#[derive(Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Your other console sessions, now ended (the one making this request stays).
    pub sessions_ended: u64,
    /// Personal access tokens revoked (with `revoke_tokens`).
    pub tokens_revoked: u64,
}

/// Changes the caller's password. Every other session of the caller ends; with
/// `revoke_tokens`, their personal access tokens are revoked too. Wrong current passwords are
/// rate-limited like sign-ins.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "people", request_body = ChangePassword,
    responses((status = 200, body = PasswordChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn change_password(
    State(st): State<AppState>,
    Auth(p): Auth,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<ApiJson<ChangePassword>, ApiError>,
) -> ApiResult<Json<PasswordChanged>> {
    let user_id = AppState::user_id_of(&p)?;
    let ApiJson(body) = body?;
    let user =
        st.store.get_user(user_id).await?.ok_or_else(|| Error::unauthenticated("your account no longer exists"))?;
    let client = st.client_of(peer, &headers);
    st.login_limiter.check(&client, &user.email)?;
    let hash = st.store.user_by_email(&user.email).await?.map(|(_, h)| h);
    if !verify_password(body.current_password, hash).await {
        st.login_limiter.failed(&client, &user.email);
        for e in st.user_events(user_id, p.actor(), Action::PasswordChange, Outcome::Denied, "wrong_password").await? {
            st.audit.append(e).await?;
        }
        return Err(Error::invalid("current_password", "the current password is wrong").into());
    }
    st.login_limiter.succeeded(&client, &user.email);
    validate::password("new_password", &body.new_password, &user.email)?;
    let hash = hash_password(body.new_password).await?;
    let now = now_millis();
    // The credential of this request stays: its session, or its personal access token.
    let (keep_session, keep_token) = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let token = value.to_str().ok().and_then(|v| v.split_once(' ')).map(|(_, t)| t.trim());
            let keep = match token {
                Some(t) => st.store.personal_token_by_hash(&hash_token(t)).await?.map(|t| t.id),
                None => None,
            };
            (None, keep)
        }
        None => match session_cookie(&headers) {
            Some(cookie) => (Some(st.session_of(&cookie, now).await?.id), None),
            None => (None, None),
        },
    };
    let detail = if body.revoke_tokens { "other_sessions_ended,tokens_revoked" } else { "other_sessions_ended" };
    let audit = st.user_events(user_id, p.actor(), Action::PasswordChange, Outcome::Success, detail).await?;
    let change = PasswordChange {
        user_id,
        password_hash: &hash,
        now,
        keep_session: keep_session.as_deref(),
        revoke_tokens: body.revoke_tokens,
        keep_token: keep_token.as_deref(),
    };
    let (sessions_ended, tokens_revoked) = st.store.set_password(&change, &audit).await?;
    Ok(Json(PasswordChanged { sessions_ended, tokens_revoked }))
}

#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    pub id: String,
    pub name: String,
    pub prefix: String,
    /// `active`, `expired` or `revoked`
    pub status: &'static str,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl TokenOut {
    fn new(t: PersonalToken, now: Millis) -> TokenOut {
        let status = credential_status(t.revoked_at.is_some(), t.is_usable(now));
        TokenOut {
            status,
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            last_used_at: t.last_used_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// RFC 3339; optional.
    pub expires_at: Option<String>,
}

/// A new personal access token; the token is shown here once.
#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub info: TokenOut,
    pub token: String,
}

/// The caller's personal access tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/me/tokens", tag = "people",
    responses((status = 200, body = List<TokenOut>), (status = 401, body = ErrorBody)))]
pub async fn list_tokens(State(st): State<AppState>, Auth(p): Auth) -> ApiResult<Json<List<TokenOut>>> {
    let user_id = AppState::user_id_of(&p)?;
    let now = now_millis();
    let tokens = st.store.list_personal_tokens(user_id).await?;
    Ok(Json(tokens.into_iter().map(|t| TokenOut::new(t, now)).collect::<Vec<_>>().into()))
}

/// Creates a personal access token that acts as the caller.
#[utoipa::path(post, path = "/api/v1/me/tokens", tag = "people", request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody)))]
pub async fn create_token(
    State(st): State<AppState>,
    Auth(p): Auth,
    body: Result<ApiJson<CreateToken>, ApiError>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let user_id = AppState::user_id_of(&p)?;
    let ApiJson(body) = body?;
    let name = validate::display_name("name", &body.name)?;
    let now = now_millis();
    let expires_at = body.expires_at.as_deref().map(|t| parse_rfc3339("expires_at", t)).transpose()?;
    if expires_at.is_some_and(|t| t <= now) {
        return Err(Error::invalid("expires_at", "expires_at is in the past; give a time in the future").into());
    }
    let token = generate_token(PAT_TOKEN_PREFIX)?;
    let record = PersonalToken {
        id: new_id(PERSONAL_TOKEN_PREFIX)?,
        user_id: user_id.to_owned(),
        name,
        prefix: token[..SHOWN_PREFIX_LEN].to_owned(),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    let audit = st.user_events(user_id, p.actor(), Action::TokenCreate, Outcome::Success, &record.id).await?;
    st.store.create_personal_token(&record, &hash_token(&token), &audit).await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { info: TokenOut::new(record, now), token })))
}

/// Revokes one of the caller's personal access tokens.
#[utoipa::path(delete, path = "/api/v1/me/tokens/{token_id}", tag = "people",
    params(("token_id" = String, Path)),
    responses((status = 200, body = TokenOut), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(token_id): ApiPath<String>,
) -> ApiResult<Json<TokenOut>> {
    let user_id = AppState::user_id_of(&p)?;
    let now = now_millis();
    let audit = st.user_events(user_id, p.actor(), Action::TokenRevoke, Outcome::Success, &token_id).await?;
    let token = st.store.revoke_personal_token(user_id, &token_id, now, &audit).await?;
    Ok(Json(TokenOut::new(token, now)))
}

#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    /// `active`, `expired` or `revoked`
    pub status: &'static str,
    pub client: String,
    pub user_agent: String,
}

/// The caller's console sessions.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "people",
    responses((status = 200, body = List<SessionOut>), (status = 401, body = ErrorBody)))]
pub async fn list_sessions(State(st): State<AppState>, Auth(p): Auth) -> ApiResult<Json<List<SessionOut>>> {
    let user_id = AppState::user_id_of(&p)?;
    let now = now_millis();
    let items = st
        .store
        .list_sessions(user_id)
        .await?
        .into_iter()
        .map(|s| SessionOut {
            status: credential_status(s.revoked_at.is_some(), s.is_usable(now)),
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            id: s.id,
            client: s.client,
            user_agent: s.user_agent,
        })
        .collect::<Vec<_>>();
    Ok(Json(items.into()))
}

/// Ends one of the caller's sessions (e.g. on a lost laptop).
#[utoipa::path(delete, path = "/api/v1/me/sessions/{session_id}", tag = "people",
    params(("session_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_session(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(session_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let user_id = AppState::user_id_of(&p)?;
    let audit = st.user_events(user_id, p.actor(), Action::SessionRevoke, Outcome::Success, &session_id).await?;
    st.store.revoke_session(user_id, &session_id, now_millis(), &audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct MemberOut {
    pub user_id: String,
    pub email: String,
    pub name: String,
    /// `admin` or `member`
    pub role: &'static str,
    pub joined_at: String,
}

impl From<Member> for MemberOut {
    fn from(m: Member) -> Self {
        MemberOut {
            user_id: m.user.id,
            email: m.user.email,
            name: m.user.name,
            role: m.role.as_str(),
            joined_at: rfc3339(m.joined_at),
        }
    }
}

/// An invitation to the workspace: who, with which role, until when.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub email: String,
    /// `admin` or `member`
    pub role: String,
    /// Refused: the invitee chooses their own password when they accept.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub password: Option<serde::de::IgnoredAny>,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationOut {
    pub id: String,
    pub email: String,
    /// `admin` or `member`
    pub role: &'static str,
    /// The id of the admin who sent it.
    pub invited_by: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<Invitation> for InvitationOut {
    fn from(i: Invitation) -> Self {
        InvitationOut {
            id: i.id,
            email: i.email,
            role: i.role.as_str(),
            invited_by: i.invited_by,
            created_at: rfc3339(i.created_at),
            expires_at: rfc3339(i.expires_at),
        }
    }
}

/// A new invitation; its code (and the console path `/invite/<code>`) is shown here once. Give
/// the link to the invitee: they choose their password, or sign in to their existing account,
/// to join.
#[derive(Serialize, ToSchema)]
pub struct InvitationCreated {
    #[serde(flatten)]
    pub info: InvitationOut,
    pub code: String,
    /// The console page that accepts it, e.g. `/invite/avi_...`.
    pub path: String,
}

/// Prefix of invitation codes.
pub const INVITATION_CODE_PREFIX: &str = "avi_";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    /// `admin` or `member`
    pub role: String,
}

fn role_param(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| Error::invalid("role", "role must be admin or member"))
}

/// The members of a workspace with their roles.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/members", tag = "people",
    params(("ws" = String, Path)),
    responses((status = 200, body = List<MemberOut>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_members(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
) -> ApiResult<Json<List<MemberOut>>> {
    let ws = st.workspace_for(&p, &ws, Perm::ViewPeople)?;
    let members = st.store.list_members(&ws.id).await?;
    Ok(Json(members.into_iter().map(MemberOut::from).collect::<Vec<_>>().into()))
}

/// Invites a person to the workspace with a role. Nobody is added until the invitee accepts:
/// a new person chooses their own password; the holder of an existing account proves it. A new
/// invitation for the same email replaces the pending one.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/members", tag = "people", request_body = AddMember,
    params(("ws" = String, Path)),
    responses((status = 201, body = InvitationCreated), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_member(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    body: Result<ApiJson<AddMember>, ApiError>,
) -> ApiResult<(StatusCode, Json<InvitationCreated>)> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageMembers)?;
    if matches!(p, Principal::Setup { .. }) {
        // The bootstrap token lives only until the first admin exists; an invitation accepted
        // first would make a user without ending it (and perhaps without any admin).
        return Err(Error::conflict(
            "setup_first",
            "create the first admin first (POST /api/v1/setup or the /setup page), then invite people as that admin",
        )
        .into());
    }
    let ApiJson(body) = body?;
    if body.password.is_some() {
        return Err(Error::invalid(
            "password",
            "passwords are now chosen by the invitee: leave the password out, and give the invitation link this \
             request returns to the person you invite",
        )
        .into());
    }
    let email = validate::email(&body.email)?;
    let role = role_param(&body.role)?;
    let now = now_millis();
    let code = generate_token(INVITATION_CODE_PREFIX)?;
    let ttl = i64::try_from(st.options.invitation_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let invitation = Invitation {
        id: new_id(INVITATION_PREFIX)?,
        workspace_id: ws.id.clone(),
        email,
        role,
        invited_by: p.actor().id().to_owned(),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        revoked_at: None,
        accepted_at: None,
    };
    let target = invitation_target(&st, &invitation.email).await?;
    let _w = st.write_lock.lock().await;
    let mut audit: Vec<AuditEvent> = st
        .store
        .list_invitations(&ws.id, now)
        .await?
        .into_iter()
        .filter(|i| i.email.eq_ignore_ascii_case(&invitation.email))
        .map(|i| {
            AuditEvent::new(now, &ws.id, p.actor(), Action::InvitationRevoke, Outcome::Success)
                .target(&target)
                .detail(format!("{} replaced by {}", i.id, invitation.id))
        })
        .collect();
    audit.push(
        AuditEvent::new(now, &ws.id, p.actor(), Action::InvitationCreate, Outcome::Success)
            .target(&target)
            .detail(format!("{} role={}", invitation.id, role.as_str())),
    );
    st.store.create_invitation(&invitation, &hash_token(&code), &audit).await?;
    let path = format!("/invite/{code}");
    Ok((StatusCode::CREATED, Json(InvitationCreated { info: invitation.into(), code, path })))
}

/// The audit target of an invitation: the invited account's id when it exists, else the email.
async fn invitation_target(st: &AppState, email: &str) -> Result<String> {
    Ok(st.store.user_by_email(email).await?.map(|(u, _)| u.id).unwrap_or_else(|| email.to_owned()))
}

/// The workspace's pending invitations (never their codes).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/invitations", tag = "people",
    params(("ws" = String, Path)),
    responses((status = 200, body = List<InvitationOut>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_invitations(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
) -> ApiResult<Json<List<InvitationOut>>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageMembers)?;
    let items = st.store.list_invitations(&ws.id, now_millis()).await?;
    Ok(Json(items.into_iter().map(InvitationOut::from).collect::<Vec<_>>().into()))
}

/// Revokes a pending invitation: its link stops working.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/invitations/{invitation_id}", tag = "people",
    params(("ws" = String, Path), ("invitation_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_invitation(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, invitation_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageMembers)?;
    let now = now_millis();
    let _w = st.write_lock.lock().await;
    let invitation = st.store.list_invitations(&ws.id, now).await?.into_iter().find(|i| i.id == invitation_id);
    let Some(invitation) = invitation else {
        return Err(Error::not_found(
            "invitation_not_found",
            "no pending invitation with that id in this workspace (it may have been accepted, revoked or expired)",
        )
        .into());
    };
    let target = invitation_target(&st, &invitation.email).await?;
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::InvitationRevoke, Outcome::Success)
        .target(&target)
        .detail(invitation.id.clone());
    st.store.revoke_invitation(&ws.id, &invitation.id, now, &[audit]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What an invitation link offers, for the person who holds it.
#[derive(Serialize, ToSchema)]
pub struct InvitationInfo {
    pub workspace_id: String,
    pub workspace_name: String,
    pub email: String,
    /// `admin` or `member`
    pub role: &'static str,
    /// Whether an account with this email exists: then accepting needs that account (signed
    /// in, or its password); otherwise the invitee chooses a name and a password.
    pub account_exists: bool,
    pub expires_at: String,
}

/// A pending invitation by its code, with its workspace and whether its account exists.
pub async fn pending_invitation(st: &AppState, code: &str) -> Result<(Invitation, Workspace, Option<(User, String)>)> {
    let now = now_millis();
    let invitation = st
        .store
        .invitation_by_hash(&hash_token(code.trim()))
        .await?
        .filter(|i| i.is_pending(now))
        .ok_or_else(Invitation::unusable)?;
    let ws = st.model.workspace(&invitation.workspace_id).ok_or_else(Invitation::unusable)?;
    let account = st.store.user_by_email(&invitation.email).await?;
    Ok((invitation, ws, account))
}

/// Shows an invitation to the holder of its code (no credential needed: the code is the
/// credential).
#[utoipa::path(get, path = "/api/v1/invitations/{code}", tag = "people", security(()),
    params(("code" = String, Path)),
    responses((status = 200, body = InvitationInfo), (status = 404, body = ErrorBody)))]
pub async fn show_invitation(
    State(st): State<AppState>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<InvitationInfo>> {
    let (invitation, ws, account) = pending_invitation(&st, &code).await?;
    Ok(Json(InvitationInfo {
        workspace_id: ws.id,
        workspace_name: ws.name,
        email: invitation.email,
        role: invitation.role.as_str(),
        account_exists: account.is_some(),
        expires_at: rfc3339(invitation.expires_at),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    /// For a new account: your name (optional).
    pub name: Option<String>,
    /// For a new account: the password you choose. For an existing account, when you are not
    /// signed in as it: its current password.
    #[schema(value_type = Option<String>)]
    pub password: Option<Zeroizing<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationAccepted {
    pub user: UserOut,
    /// The workspace joined, with your role in it.
    pub workspace: WorkspaceRoleOut,
    /// When accepting signed you in (a new account, or with a password): send as
    /// `X-CSRF-Token` on requests that change state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Accepts an invitation (single use). With no account for the invited email, the body's `name`
/// and `password` create it, and you are signed in. With an existing account, you must be that
/// account: signed in as it (session with CSRF token, or a personal access token), or sending
/// its current `password` (rate-limited like a sign-in). Anyone else is refused.
#[utoipa::path(post, path = "/api/v1/invitations/{code}/accept", tag = "people", request_body = AcceptInvitation,
    security(()), params(("code" = String, Path)),
    responses((status = 201, body = InvitationAccepted), (status = 200, body = InvitationAccepted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn accept_invitation(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    ApiPath(code): ApiPath<String>,
    body: Result<ApiJson<AcceptInvitation>, ApiError>,
) -> ApiResult<Response> {
    let (invitation, ws, account) = pending_invitation(&st, &code).await?;
    let ApiJson(body) = body?;
    let client = st.client_of(peer, &headers);
    let joined = |role: Role| WorkspaceRoleOut { id: ws.id.clone(), name: ws.name.clone(), role: role.as_str() };
    let now = now_millis();
    let Some((user, hash)) = account else {
        // A new account: the invitee chooses the password.
        let password = body.password.ok_or_else(|| {
            Error::invalid("password", "choose a password for your new account (at least 12 characters)")
        })?;
        validate::password("password", &password, &invitation.email)?;
        let name = match body.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => validate::display_name("name", n)?,
            _ => String::new(),
        };
        let user =
            User { id: new_id(USER_PREFIX)?, email: invitation.email.clone(), name, created_at: now, updated_at: now };
        let hash = hash_password(password).await?;
        let actor = Actor::User(user.id.clone());
        let audit = [
            AuditEvent::new(now, &ws.id, actor.clone(), Action::UserCreate, Outcome::Success)
                .target(&user.id)
                .detail(format!("role={}", invitation.role.as_str())),
            AuditEvent::new(now, &ws.id, actor, Action::InvitationAccept, Outcome::Success)
                .target(&user.id)
                .detail(invitation.id.clone()),
        ];
        {
            let _w = st.write_lock.lock().await;
            let account = NewAccount { user: &user, password_hash: &hash };
            st.store.accept_invitation(&invitation, &user.id, Some(account), now, &audit).await?;
        }
        let (cookie, signed_in) = st.start_session(user, &client, &headers).await?;
        let out = InvitationAccepted {
            user: signed_in.user,
            workspace: joined(invitation.role),
            csrf_token: Some(signed_in.csrf_token),
            expires_at: Some(signed_in.expires_at),
        };
        return Ok(with_cookie(StatusCode::CREATED, cookie, out));
    };
    // An existing account: only its holder may accept.
    if body.name.as_deref().is_some_and(|n| !n.trim().is_empty()) {
        return Err(Error::invalid("name", "this account already exists and keeps its name; leave the name out").into());
    }
    let accept = |how: &'static str| {
        let audit =
            [AuditEvent::new(now, &ws.id, Actor::User(user.id.clone()), Action::InvitationAccept, Outcome::Success)
                .target(&user.id)
                .detail(format!("{} {how}", invitation.id))];
        let st = st.clone();
        let invitation = invitation.clone();
        let user_id = user.id.clone();
        async move {
            let _w = st.write_lock.lock().await;
            st.store.accept_invitation(&invitation, &user_id, None, now, &audit).await
        }
    };
    if let Some(password) = body.password {
        st.login_limiter.check(&client, &user.email)?;
        if !verify_password(password, Some(hash)).await {
            st.login_limiter.failed(&client, &user.email);
            let events = st
                .user_events(&user.id, Actor::User(user.id.clone()), Action::SignIn, Outcome::Denied, "wrong_password")
                .await?;
            for e in events {
                st.audit.append(e).await?;
            }
            return Err(Error::unauthenticated(format!(
                "the password is wrong for {}; accepting this invitation needs that account's current password",
                user.email
            ))
            .with_field("password")
            .into());
        }
        st.login_limiter.succeeded(&client, &user.email);
        accept("password").await?;
        let (cookie, signed_in) = st.start_session(user, &client, &headers).await?;
        let out = InvitationAccepted {
            user: signed_in.user,
            workspace: joined(invitation.role),
            csrf_token: Some(signed_in.csrf_token),
            expires_at: Some(signed_in.expires_at),
        };
        return Ok(with_cookie(StatusCode::OK, cookie, out));
    }
    if !headers.contains_key(header::AUTHORIZATION) && session_cookie(&headers).is_none() {
        return Err(Error::unauthenticated(format!(
            "{} already has an account: sign in as it, or give its current password, to accept this invitation",
            user.email
        ))
        .with_field("password")
        .into());
    }
    match st.authenticate(&Method::POST, &headers, now).await? {
        Principal::User { user_id, .. } if user_id == user.id => {}
        Principal::User { .. } => {
            return Err(Error::forbidden(format!(
                "this invitation is for {}, and you are signed in as another account; sign in as {} (or give its \
                 password) to accept it",
                user.email, user.email
            ))
            .into());
        }
        _ => {
            return Err(Error::forbidden(format!(
                "only the holder of the account {} can accept this invitation: sign in as it, or give its password",
                user.email
            ))
            .into());
        }
    }
    accept("signed_in").await?;
    let out = InvitationAccepted {
        user: user.into(),
        workspace: joined(invitation.role),
        csrf_token: None,
        expires_at: None,
    };
    Ok((StatusCode::OK, Json(out)).into_response())
}

/// Changes a member's role. The last admin cannot be demoted.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/members/{user_id}", tag = "people", request_body = ChangeRole,
    params(("ws" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = MemberOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn change_role(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, user_id)): ApiPath<(String, String)>,
    body: Result<ApiJson<ChangeRole>, ApiError>,
) -> ApiResult<Json<MemberOut>> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageMembers)?;
    let ApiJson(body) = body?;
    let role = role_param(&body.role)?;
    let audit = AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::MemberRoleChange, Outcome::Success)
        .target(&user_id)
        .detail(format!("role={}", role.as_str()));
    let _w = st.write_lock.lock().await;
    st.store.set_role(&ws.id, &user_id, role, &audit).await?;
    let member = st
        .store
        .list_members(&ws.id)
        .await?
        .into_iter()
        .find(|m| m.user.id == user_id)
        .ok_or_else(|| Error::not_found("member_not_found", "that user is not a member of this workspace"))?;
    Ok(Json(member.into()))
}

/// Removes a member from the workspace. The last admin cannot be removed.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/members/{user_id}", tag = "people",
    params(("ws" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_member(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, user_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let ws = st.workspace_for(&p, &ws, Perm::ManageMembers)?;
    let audit =
        AuditEvent::new(now_millis(), &ws.id, p.actor(), Action::MemberRemove, Outcome::Success).target(&user_id);
    let _w = st.write_lock.lock().await;
    st.store.remove_member(&ws.id, &user_id, &audit).await?;
    Ok(StatusCode::NO_CONTENT)
}
