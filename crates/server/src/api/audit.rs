use agentvault_core::audit::AuditRecord;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, query};
use crate::service::audit;
use crate::{AppState, Json, rfc3339};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// e.g. `secret.read`, `secret.create`, `api_key.revoke`
    pub action: Option<String>,
    /// A secret name, or the start of one followed by `*` (`stripe*`: every secret whose name
    /// starts with `stripe`).
    pub secret: Option<String>,
    /// An agent id.
    #[param(pattern = "^agt_[A-Za-z0-9]{1,60}$")]
    pub agent: Option<String>,
    /// The id of who did it: a user (`usr_…`), API key (`key_…`), admin token (`adm_…`), or an
    /// agent (`agt_…`) reading through a function.
    pub actor: Option<String>,
    /// `success`, `denied`, `not_found`, `invalid` or `failed`
    #[param(value_type = Option<crate::api::doc::Outcome>)]
    pub outcome: Option<String>,
    /// RFC 3339; records at or after this time.
    pub since: Option<String>,
    /// RFC 3339; records before this time.
    pub until: Option<String>,
    /// `newest` (the default): newest first; `oldest`: oldest first.
    #[param(value_type = Option<crate::api::doc::AuditOrder>)]
    pub order: Option<String>,
    /// `next_cursor` of the previous page (of the same order).
    pub cursor: Option<String>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
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
    /// Pass as `cursor` (with the same `order`) to get the next page: older records when newest
    /// first, newer ones when oldest first; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The audit log of a workspace, newest first (or oldest first), filtered and paginated by cursor.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/audit", tag = "audit",
    params(("ws" = String, Path), AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_audit(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(ws): ApiPath<String>,
    q: Result<ApiQuery<AuditQuery>, ApiError>,
) -> ApiResult<Json<AuditPage>> {
    Ok(Json(audit::list(&st, &p, &ws, query(q)).await?))
}
