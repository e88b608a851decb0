//! The account page: the signed-in user's password, personal access tokens and sessions, over
//! the same services as `/api/v1/me`.

use agentvault_core::model::{Perm, Role};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{Chrome, OrRefuse, PageResult, Viewer, render};
use crate::AppState;
use crate::api::me::{SessionOut, TokenOut};
use crate::service::me;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Option<Chrome>,
    ws: String,
    tokens: Vec<TokenOut>,
    /// Active sessions first; `current` is the one showing this page.
    sessions: Vec<SessionOut>,
    current_session: String,
    /// (id, name, role) of the user's workspaces.
    workspaces: Vec<(String, String, &'static str)>,
    /// Admins (of any workspace) may create workspaces.
    may_create_workspace: bool,
}

pub(super) async fn account_page(State(st): State<AppState>, Path(ws): Path<String>, v: Viewer) -> PageResult {
    let chrome = v.open(&ws, "account", Perm::ViewAgents)?;
    let p = &v.principal;
    let mut tokens = me::tokens(&st, p).await.or_refuse(&chrome)?;
    tokens.sort_by_key(|t| (t.status != "active", std::cmp::Reverse(t.created_at.clone())));
    let mut sessions = me::sessions(&st, p).await.or_refuse(&chrome)?;
    // Ended sessions are history; the list is for ending the ones still open.
    sessions.retain(|s| s.status == "active");
    sessions.sort_by_key(|s| (s.id != v.session_id, std::cmp::Reverse(s.created_at.clone())));
    Ok(render(
        StatusCode::OK,
        &AccountPage {
            ws: chrome.ws_id.clone(),
            chrome: Some(chrome),
            tokens,
            sessions,
            current_session: v.session_id.clone(),
            workspaces: v
                .workspaces
                .iter()
                .map(|(id, name, role)| {
                    (id.clone(), name.clone(), if *role == Role::Admin { "admin" } else { "member" })
                })
                .collect(),
            may_create_workspace: p.may_create_workspace(),
        },
    ))
}
