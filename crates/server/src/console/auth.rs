//! The sign-in page and the page behind an invitation link.

use agentvault_core::ErrorKind;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::{Chrome, render};
use crate::service::invitations;
use crate::sign_in::{csrf_token, session_cookie};
use crate::{AppState, now_millis};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Option<Chrome>,
    next: String,
    /// No user exists yet: point to the setup page instead.
    needs_setup: bool,
    /// Sent here from a page whose session had ended.
    expired: bool,
}

pub(super) async fn login_page(State(st): State<AppState>, uri: Uri) -> Response {
    let param = |name: &str| {
        uri.query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned)))
    };
    let next = param("next").map(|n| percent_decode(&n)).filter(|n| is_local_path(n)).unwrap_or_else(|| "/".to_owned());
    let expired = param("expired").is_some();
    // When the count cannot be read, the sign-in form is what most visitors need.
    let needs_setup = st.store.count_users().await.is_ok_and(|n| n == 0);
    render(StatusCode::OK, &LoginPage { chrome: None, next, needs_setup, expired })
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
pub(super) async fn invite_page(State(st): State<AppState>, Path(code): Path<String>, headers: HeaderMap) -> Response {
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
    match invitations::pending(&st, &code).await {
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
