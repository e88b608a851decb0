//! The members of a workspace, and the invitations that make people members.

use agentvault_core::model::{Invitation, Member};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::List;
use super::auth::{Peer, with_cookie};
use super::me::{UserOut, WorkspaceRoleOut};
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::{invitations, members};
use crate::{AppState, Json, rfc3339};

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
    /// An email address such as `ada@example.com`.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)+$"
    )]
    pub email: String,
    /// `admin` or `member`
    #[schema(value_type = super::doc::Role)]
    pub role: String,
    /// Refused: the invitee chooses their own password when they accept.
    #[serde(default)]
    #[schema(ignore)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    /// `admin` or `member`
    #[schema(value_type = super::doc::Role)]
    pub role: String,
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
    Ok(Json(members::list(&st, &p, &ws).await?.into()))
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
    b: JsonBody<AddMember>,
) -> ApiResult<(StatusCode, Json<InvitationCreated>)> {
    Ok((StatusCode::CREATED, Json(invitations::create(&st, &p, &ws, body(b)).await?)))
}

/// Changes a member's role. The last admin cannot be demoted.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/members/{user_id}", tag = "people", request_body = ChangeRole,
    params(("ws" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = MemberOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn change_role(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, user_id)): ApiPath<(String, String)>,
    b: JsonBody<ChangeRole>,
) -> ApiResult<Json<MemberOut>> {
    Ok(Json(members::change_role(&st, &p, &ws, &user_id, body(b)).await?))
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
    members::remove(&st, &p, &ws, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
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
    Ok(Json(invitations::list(&st, &p, &ws).await?.into()))
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
    invitations::revoke(&st, &p, &ws, &invitation_id).await?;
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

/// Shows an invitation to the holder of its code (no credential needed: the code is the
/// credential).
#[utoipa::path(get, path = "/api/v1/invitations/{code}", tag = "people", security(()),
    params(("code" = String, Path)),
    responses((status = 200, body = InvitationInfo), (status = 404, body = ErrorBody)))]
pub async fn show_invitation(
    State(st): State<AppState>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<InvitationInfo>> {
    Ok(Json(invitations::show(&st, &code).await?))
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
    b: JsonBody<AcceptInvitation>,
) -> ApiResult<Response> {
    let client = st.client_of(peer, &headers);
    let accepted = invitations::accept(&st, &client, &headers, &code, body(b)).await?;
    let status = if accepted.new_account { StatusCode::CREATED } else { StatusCode::OK };
    Ok(match accepted.cookie {
        Some(cookie) => with_cookie(status, cookie, accepted.out),
        None => (status, Json(accepted.out)).into_response(),
    })
}
