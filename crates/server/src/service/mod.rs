//! The use cases of agentvault, one function each: `(state, &Principal, input) -> Result<output>`.
//!
//! A service owns everything a use case means: the permission check, the write lock (mutations
//! are serialised so that the read model is updated in the order of the commits), the store
//! call, the read-model update, the audit record and the metrics. The JSON API and the web
//! console are two ways of calling the same services: neither repeats any of it.
//!
//! Inputs and outputs are the API's request and response shapes (plain serde types).

pub mod access;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod functions;
pub mod injection;
pub mod invitations;
pub mod keys;
pub mod me;
pub mod members;
pub mod read;
pub mod secrets;
pub mod workspaces;

use agentvault_core::model::{Perm, Principal, Workspace};
use agentvault_core::{Error, Result, validate};

use crate::AppState;

/// A request body as the transport parsed it. A service looks at it only after its permission
/// check, so that a caller without the permission learns nothing from a malformed body.
pub type Body<T> = Result<T>;

impl AppState {
    /// The workspace a request targets, once the caller is known to see it (404 otherwise) and
    /// to hold `perm` in it (403 otherwise). API keys are refused first: they manage nothing.
    pub fn workspace_for(&self, principal: &Principal, ws: &str, perm: Perm) -> Result<Workspace> {
        if let Principal::ApiKey { workspace_id, .. } = principal {
            principal.require(workspace_id, perm)?;
        }
        let workspace = self.visible_workspace(principal, ws)?;
        principal.require(&workspace.id, perm)?;
        Ok(workspace)
    }

    /// The workspace if the caller may see it; 404 otherwise (existence is not revealed).
    pub fn visible_workspace(&self, principal: &Principal, ws: &str) -> Result<Workspace> {
        self.model.workspace(ws).filter(|w| principal.sees_workspace(&w.id)).ok_or_else(|| {
            Error::not_found("workspace_not_found", format!("no workspace {} exists", ws.escape_default()))
        })
    }
}

/// Checks a list of agent ids: well-formed, de-duplicated, sorted.
pub fn agent_list(field: &'static str, agents: Vec<String>) -> Result<Vec<String>> {
    let mut agents = agents;
    for a in &agents {
        validate::id_with_prefix(field, agentvault_core::model::AGENT_PREFIX, a)?;
    }
    agents.sort();
    agents.dedup();
    Ok(agents)
}

/// A secret name from a URL, checked against the naming rule.
pub fn secret_name_param(name: &str) -> Result<()> {
    validate::secret_name(name)
}
