use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{List, WorkspaceOut};
use crate::auth::Auth;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{JsonBody, body};
use crate::service::workspaces;
use crate::{AppState, Json};

/// The workspaces the credential can see.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = List<WorkspaceOut>), (status = 401, body = ErrorBody)))]
pub async fn list_workspaces(State(st): State<AppState>, Auth(p): Auth) -> ApiResult<Json<List<WorkspaceOut>>> {
    Ok(Json(workspaces::list(&st, &p).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
}

/// Creates a workspace (admin).
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = WorkspaceOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_workspace(
    State(st): State<AppState>,
    Auth(p): Auth,
    b: JsonBody<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<WorkspaceOut>)> {
    Ok((StatusCode::CREATED, Json(workspaces::create(&st, &p, body(b)).await?)))
}
