//! The caller's own account: who they are, their password, personal access tokens and sessions.

use agentvault_core::model::{Millis, PersonalToken, User};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::auth::Peer;
use super::{List, credential_status};
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::me;
use crate::sign_in::{csrf_token, session_cookie};
use crate::{AppState, Json, rfc3339};

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

/// The caller: user, workspaces and roles.
#[utoipa::path(get, path = "/api/v1/me", tag = "people",
    responses((status = 200, body = MeOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn me(State(st): State<AppState>, Auth(p): Auth, headers: HeaderMap) -> ApiResult<Json<MeOut>> {
    // The CSRF token goes to requests made with the session cookie only.
    let csrf = if headers.contains_key(header::AUTHORIZATION) {
        None
    } else {
        session_cookie(&headers).map(|t| csrf_token(&t))
    };
    Ok(Json(me::me(&st, &p, csrf).await?))
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
    b: JsonBody<ChangePassword>,
) -> ApiResult<Json<PasswordChanged>> {
    let client = st.client_of(peer, &headers);
    Ok(Json(me::change_password(&st, &p, &client, &headers, body(b)).await?))
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
    pub fn new(t: PersonalToken, now: Millis) -> TokenOut {
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
    Ok(Json(me::tokens(&st, &p).await?.into()))
}

/// Creates a personal access token that acts as the caller.
#[utoipa::path(post, path = "/api/v1/me/tokens", tag = "people", request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody)))]
pub async fn create_token(
    State(st): State<AppState>,
    Auth(p): Auth,
    b: JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    Ok((StatusCode::CREATED, Json(me::create_token(&st, &p, body(b)).await?)))
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
    Ok(Json(me::revoke_token(&st, &p, &token_id).await?))
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
    Ok(Json(me::sessions(&st, &p).await?.into()))
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
    me::revoke_session(&st, &p, &session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
