//! Whether functions may read a secret, or only use it through the egress proxy.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, JsonBody, body};
use crate::service::injection;
use crate::{AppState, Json};

/// How functions use a secret.
#[derive(Serialize, ToSchema)]
pub struct InjectionOut {
    /// True: `get_secret` gives functions a placeholder, never the value, and agentvault's egress
    /// proxy swaps in the value in the headers of requests to `hosts` only; the agent read path
    /// answers 403 `injection_only`. False: functions and agents read the value.
    pub injected_only: bool,
    /// Hosts the value may be sent to: `api.stripe.com`, `*.stripe.com`, optionally `:port`.
    pub hosts: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetInjection {
    pub injected_only: bool,
    /// With `injected_only`, 1 to 100 hosts.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub hosts: Vec<String>,
}

/// How functions use a secret (admins).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/secrets/{name}/injection", tag = "secrets",
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = InjectionOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_injection(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<InjectionOut>> {
    Ok(Json(injection::get(&st, &p, &ws, &name).await?))
}

/// Makes a secret injected only, with the hosts its value may be sent to, or readable by
/// functions again (admins). Applies to `get_secret` calls from then on.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/secrets/{name}/injection", tag = "secrets", request_body = SetInjection,
    params(("ws" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = InjectionOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_injection(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    b: JsonBody<SetInjection>,
) -> ApiResult<Json<InjectionOut>> {
    Ok(Json(injection::set(&st, &p, &ws, &name, body(b)).await?))
}
