//! The Users page (members and invitations) and the API Keys page.

use agentvault_core::model::Perm;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{Chrome, OrRefuse, PageResult, Viewer, render};
use crate::AppState;
use crate::api::members::{InvitationOut, MemberOut};
use crate::api::{AgentOut, AgentsScope, ApiKeyOut};
use crate::service::{agents, invitations, keys, members};

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

/// An email address in pieces that may end a line: after the `@`, and before each `.` (the
/// template keeps each piece on one line and puts a `<wbr>` between them), so a long address
/// wraps there and never mid-word, nor after a hyphen.
fn email_pieces(email: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in email.char_indices() {
        let cut = match c {
            '@' => i + 1,
            '.' if i > start => i,
            _ => continue,
        };
        if cut > start {
            pieces.push(&email[start..cut]);
            start = cut;
        }
    }
    pieces.push(&email[start..]);
    pieces
}

pub(super) async fn users_page(State(st): State<AppState>, Path(ws): Path<String>, v: Viewer) -> PageResult {
    let chrome = v.open(&ws, "users", Perm::ViewPeople)?;
    let invitations =
        if chrome.is_admin { invitations::list(&st, &v.principal, &ws).await.or_refuse(&chrome)? } else { Vec::new() };
    let members = members::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
    Ok(render(
        StatusCode::OK,
        &UsersPage {
            ws: chrome.ws_id.clone(),
            admin: chrome.is_admin,
            me: v.user.id.clone(),
            chrome: Some(chrome),
            members,
            invitations,
        },
    ))
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

impl KeysPage {
    /// Whether any key is revoked or expired (then they can be hidden).
    fn any_inactive(&self) -> bool {
        self.keys.iter().any(|r| r.key.status != "active")
    }
}

pub(super) async fn keys_page(State(st): State<AppState>, Path(ws): Path<String>, v: Viewer) -> PageResult {
    let chrome = v.open(&ws, "keys", Perm::ViewPeople)?;
    let agents = agents::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
    let keys = keys::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
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
    Ok(render(
        StatusCode::OK,
        &KeysPage { ws: chrome.ws_id.clone(), admin: chrome.is_admin, chrome: Some(chrome), keys, agents },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_break_after_the_at_and_before_dots() {
        assert_eq!(
            super::email_pieces("ada.lovelace@mail.example.org"),
            ["ada", ".lovelace@", "mail", ".example", ".org"]
        );
        assert_eq!(super::email_pieces("plain"), ["plain"]);
        assert_eq!(super::email_pieces(".x@y"), [".x@", "y"]);
        assert_eq!(super::email_pieces("a@"), ["a@", ""]);
    }
}
