//! The Audit page and its CSV and JSON export.

use std::collections::HashMap;

use agentvault_core::ErrorKind;
use agentvault_core::model::Perm;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use super::names::{Named, Names};
use super::{Chrome, OrRefuse, PageResult, Viewer, encode, render};
use crate::AppState;
use crate::api::AgentOut;
use crate::api::audit::{AuditOut, AuditQuery, MAX_LIMIT};
use crate::service::{agents, audit};

/// The audit filters of the page's query string, as the API takes them. Times from the
/// browser's `datetime-local` fields (no zone) are UTC.
fn audit_query(q: &HashMap<String, String>, limit: u32) -> AuditQuery {
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
        // The page's Secret field matches names by their start.
        secret: get("secret").map(|s| if s.ends_with('*') { s } else { format!("{s}*") }),
        agent: get("agent"),
        actor: get("actor"),
        outcome: get("outcome"),
        since: time("since"),
        until: time("until"),
        order: get("order"),
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
    /// Oldest first (`?order=oldest`) rather than newest first.
    pub oldest_first: bool,
    /// The query string without the cursor and the order (for the order toggle).
    pub query_without_order: String,
}

/// An audit record with names for its ids.
pub struct AuditRow {
    pub i: AuditOut,
    pub actor: Named,
    pub agent: Option<Named>,
    pub target: Option<Named>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPageView {
    chrome: Option<Chrome>,
    ws: String,
    items: Vec<AuditRow>,
    next_cursor: Option<String>,
    filters: AuditFilters,
    actions: Vec<&'static str>,
    outcomes: [&'static str; 5],
    agents: Vec<AgentOut>,
    error: Option<String>,
}

fn filters_of(q: &HashMap<String, String>) -> AuditFilters {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut pairs: Vec<(&String, &String)> = q.iter().filter(|(k, v)| *k != "cursor" && !v.is_empty()).collect();
    pairs.sort();
    let join = |pairs: &[&(&String, &String)]| {
        pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
    };
    let query = join(&pairs.iter().collect::<Vec<_>>());
    let query_without_order = join(&pairs.iter().filter(|(k, _)| *k != "order").collect::<Vec<_>>());
    AuditFilters {
        action: get("action"),
        secret: get("secret"),
        agent: get("agent"),
        actor: get("actor"),
        outcome: get("outcome"),
        since: get("since"),
        until: get("until"),
        query,
        oldest_first: q.get("order").map(|o| o.trim()) == Some("oldest"),
        query_without_order,
    }
}

pub(super) async fn audit_page(
    State(st): State<AppState>,
    Path(ws): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    v: Viewer,
) -> PageResult {
    let chrome = v.open(&ws, "audit", Perm::ReadAudit)?;
    let agents = agents::list(&st, &v.principal, &ws).await.or_refuse(&chrome)?;
    let page = audit::list(&st, &v.principal, &ws, Ok(audit_query(&q, 50))).await;
    // A bad filter is shown beside the form, not as an error page.
    let (items, next_cursor, error) = match page {
        Ok(p) => (p.items, p.next_cursor, None),
        Err(e) if e.kind == ErrorKind::InvalidInput => (Vec::new(), None, Some(e.message.to_string())),
        Err(e) => return Err(e).or_refuse(&chrome),
    };
    let mut names = Names::load(&st, &chrome.ws_id).await.or_refuse(&chrome)?;
    let ids = items.iter().flat_map(|i| [Some(i.actor.id.clone()), i.target_id.clone()]).flatten().collect();
    names.add_users(&st, ids).await;
    let items = items
        .into_iter()
        .map(|i| AuditRow {
            actor: names.actor(i.actor.kind, &i.actor.id),
            agent: i.agent_id.as_deref().map(|a| names.of(a)),
            // The target is worth a column when it is not the agent or secret already shown.
            target: i
                .target_id
                .as_deref()
                .filter(|t| Some(*t) != i.agent_id.as_deref() && !t.starts_with(agentvault_core::model::SECRET_PREFIX))
                .map(|t| names.of(t)),
            i,
        })
        .collect();
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
    Ok(render(StatusCode::OK, &view))
}

/// Most records one export holds.
const EXPORT_MAX: usize = 100_000;

/// The filtered audit log as a CSV or JSON download, in the page's order (newest first unless
/// `order=oldest`).
pub(super) async fn audit_export(
    State(st): State<AppState>,
    Path(ws): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    v: Viewer,
) -> PageResult {
    let chrome = v.open(&ws, "audit", Perm::ReadAudit)?;
    let csv = q.get("format").map(String::as_str) != Some("json");
    let mut items: Vec<AuditOut> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        // The whole filtered view, from the newest record (the page's own cursor is ignored).
        let query = AuditQuery { cursor: cursor.take(), ..audit_query(&q, MAX_LIMIT) };
        let page = audit::list(&st, &v.principal, &ws, Ok(query)).await.or_refuse(&chrome)?;
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
    Ok(resp)
}

/// A CSV field: quoted when needed, and never read as a formula by a spreadsheet.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}
