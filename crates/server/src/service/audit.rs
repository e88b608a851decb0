//! The audit log of a workspace, as admins read it.

use agentvault_core::audit::{Action, AuditFilter, Outcome};
use agentvault_core::model::{Perm, Principal};
use agentvault_core::{Error, Result, validate};

use super::Body;
use crate::api::audit::{AuditOut, AuditPage, AuditQuery, DEFAULT_LIMIT, MAX_LIMIT};
use crate::{AppState, parse_rfc3339};

fn filter_from(q: AuditQuery) -> Result<AuditFilter> {
    let action = q
        .action
        .map(|a| {
            Action::parse(&a).ok_or_else(|| {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                Error::invalid(
                    "action",
                    format!("unknown action '{}'; known actions: {}", a.escape_default(), known.join(", ")),
                )
            })
        })
        .transpose()?;
    let outcome = q
        .outcome
        .map(|o| {
            Outcome::parse(&o).ok_or_else(|| {
                Error::invalid("outcome", "outcome must be one of success, denied, not_found, invalid, failed")
            })
        })
        .transpose()?;
    // `name*` is a prefix: every secret whose name starts with `name`.
    let (secret_name, secret_prefix) = match q.secret {
        Some(s) => match s.strip_suffix('*') {
            Some(prefix) => (Some(prefix.to_owned()), true),
            None => (Some(s), false),
        },
        None => (None, false),
    };
    if let Some(s) = &secret_name {
        validate::secret_name(s).map_err(|_| {
            Error::invalid(
                "secret",
                "secret is a secret name, or the start of one followed by * (e.g. stripe*): a-z, 0-9 and _, starting with a letter",
            )
        })?;
    }
    if let Some(a) = &q.agent {
        validate::id_with_prefix("agent", agentvault_core::model::AGENT_PREFIX, a)?;
    }
    if let Some(a) = &q.actor
        && (a.is_empty() || a.len() > 64 || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(Error::invalid("actor", "actor is an id such as usr_…, key_…, adm_… or agt_…"));
    }
    let oldest_first = match q.order.as_deref() {
        None | Some("newest") => false,
        Some("oldest") => true,
        Some(_) => return Err(Error::invalid("order", "order must be newest (the default) or oldest")),
    };
    let cursor = q
        .cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::invalid("cursor", "the cursor is not one this server handed out"))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid("limit", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    Ok(AuditFilter {
        action,
        secret_name,
        secret_prefix,
        agent_id: q.agent,
        actor_id: q.actor,
        outcome,
        since: q.since.as_deref().map(|t| parse_rfc3339("since", t)).transpose()?,
        until: q.until.as_deref().map(|t| parse_rfc3339("until", t)).transpose()?,
        before_seq: cursor.filter(|_| !oldest_first),
        after_seq: cursor.filter(|_| oldest_first),
        oldest_first,
        limit,
    })
}

/// The audit log of a workspace, newest first (or oldest first), filtered and paginated by cursor.
pub async fn list(st: &AppState, p: &Principal, ws: &str, q: Body<AuditQuery>) -> Result<AuditPage> {
    let ws = st.workspace_for(p, ws, Perm::ReadAudit)?;
    let filter = filter_from(q?)?;
    // Records queued without waiting (denied reads) are written before the query sees the log.
    st.audit.flush().await;
    let records = st.store.list_audit(&ws.id, &filter).await?;
    let next_cursor =
        (records.len() == filter.limit as usize).then(|| records.last().map(|r| r.seq.to_string())).flatten();
    Ok(AuditPage { items: records.into_iter().map(AuditOut::from).collect(), next_cursor })
}
