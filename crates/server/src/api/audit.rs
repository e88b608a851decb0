use agentvault_core::audit::{Action, AuditFilter, AuditRecord, Outcome};
use agentvault_core::model::Perm;
use agentvault_core::{Error, validate};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::{AppState, Json, parse_rfc3339, rfc3339};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// e.g. `secret.read`, `secret.create`, `api_key.revoke`
    pub action: Option<String>,
    /// A secret name.
    pub secret: Option<String>,
    /// An agent id.
    pub agent: Option<String>,
    /// The id of who did it: a user (`usr_…`), API key (`key_…`), admin token (`adm_…`), or an
    /// agent (`agt_…`) reading through a function.
    pub actor: Option<String>,
    /// `success`, `denied`, `not_found`, `invalid` or `failed`
    pub outcome: Option<String>,
    /// RFC 3339; records at or after this time.
    pub since: Option<String>,
    /// RFC 3339; records before this time.
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1–500, default 50.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ActorOut {
    /// `admin_token`, `api_key` or `system`
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditOut {
    pub id: i64,
    pub at: String,
    pub actor: ActorOut,
    pub action: &'static str,
    pub outcome: &'static str,
    pub secret: Option<String>,
    pub agent_id: Option<String>,
    pub target_id: Option<String>,
    pub detail: Option<String>,
}

impl From<AuditRecord> for AuditOut {
    fn from(r: AuditRecord) -> Self {
        let e = r.event;
        AuditOut {
            id: r.seq,
            at: rfc3339(e.at),
            actor: ActorOut { kind: e.actor.kind(), id: e.actor.id().to_owned() },
            action: e.action.as_str(),
            outcome: e.outcome.as_str(),
            secret: e.secret_name,
            agent_id: e.agent_id,
            target_id: e.target_id,
            detail: e.detail,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditOut>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn filter_from(q: AuditQuery) -> Result<AuditFilter, Error> {
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
            Outcome::parse(&o)
                .ok_or_else(|| Error::invalid("outcome", "outcome must be one of success, denied, not_found, invalid"))
        })
        .transpose()?;
    if let Some(s) = &q.secret {
        validate::secret_name(s).map_err(|e| e.with_field("secret"))?;
    }
    if let Some(a) = &q.agent {
        validate::id_with_prefix("agent", agentvault_core::model::AGENT_PREFIX, a)?;
    }
    if let Some(a) = &q.actor
        && (a.is_empty() || a.len() > 64 || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(Error::invalid("actor", "actor is an id such as usr_…, key_…, adm_… or agt_…"));
    }
    let before_seq = q
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
        secret_name: q.secret,
        agent_id: q.agent,
        actor_id: q.actor,
        outcome,
        since: q.since.as_deref().map(|t| parse_rfc3339("since", t)).transpose()?,
        until: q.until.as_deref().map(|t| parse_rfc3339("until", t)).transpose()?,
        before_seq,
        limit,
    })
}

/// The audit log of a workspace, newest first, filtered and paginated by cursor.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/audit", tag = "audit",
    params(("ws" = String, Path), AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_audit(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    q: Result<ApiQuery<AuditQuery>, ApiError>,
) -> ApiResult<Json<AuditPage>> {
    let ws = st.workspace_for(&p, &ws, Perm::ReadAudit)?;
    let ApiQuery(q) = q?;
    let filter = filter_from(q)?;
    // Records queued without waiting (denied reads) are written before the query sees the log.
    st.audit.flush().await;
    let records = st.store.list_audit(&ws.id, &filter).await?;
    let next_cursor =
        (records.len() == filter.limit as usize).then(|| records.last().map(|r| r.seq.to_string())).flatten();
    Ok(Json(AuditPage { items: records.into_iter().map(AuditOut::from).collect(), next_cursor }))
}
