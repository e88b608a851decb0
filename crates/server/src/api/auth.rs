//! Signing in and out, and creating the first admin.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::me::{UserOut, WorkspaceRoleOut};
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{JsonBody, body};
use crate::service::auth::{self as auth_service, create_first_admin};
use crate::sign_in::{session_cookie, session_set_cookie};
use crate::{AppState, Json};

/// The peer address of the connection, when the server was started with connect info.
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
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
    /// An email address such as `ada@example.com`.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)+$"
    )]
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[schema(value_type = String)]
    pub password: Zeroizing<String>,
}

/// A JSON response that sets (or clears) the session cookie.
pub(crate) fn with_cookie(status: StatusCode, cookie: header::HeaderValue, body: impl Serialize) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

/// Signs in with email and password; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "people", request_body = Login, security(()),
    responses((status = 200, body = SignedIn), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    b: JsonBody<Login>,
) -> ApiResult<Response> {
    let client = st.client_of(peer, &headers);
    let (cookie, signed_in) = auth_service::login(&st, &client, &headers, body(b)).await?;
    Ok(with_cookie(StatusCode::OK, cookie, signed_in))
}

/// Signs out: ends the session of the cookie and clears it.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "people",
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(st): State<AppState>, Auth(p): Auth, headers: HeaderMap) -> ApiResult<Response> {
    auth_service::logout(&st, &p, session_cookie(&headers).as_deref()).await?;
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
    b: JsonBody<Setup>,
) -> ApiResult<Response> {
    let b = body(b)?;
    let client = st.client_of(peer, &headers);
    let (cookie, signed_in) =
        create_first_admin(&st, &client, &headers, b.setup_code.as_deref(), &b.email, &b.name, b.password).await?;
    Ok(with_cookie(StatusCode::CREATED, cookie, signed_in))
}
