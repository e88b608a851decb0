//! Names instead of ids: what a person reads where the API has an id (an audit record's actor and
//! target, a version's author). The id stays on hover (`title`) and in the exports.

use std::collections::HashMap;

use agentvault_core::Result;
use agentvault_core::model::{
    ADMIN_TOKEN_ID_PREFIX, AGENT_PREFIX, API_KEY_PREFIX, FUNCTION_PREFIX, INVITATION_PREFIX, PERSONAL_TOKEN_ID_PREFIX,
    SECRET_PREFIX, SESSION_PREFIX, USER_PREFIX,
};

use crate::AppState;

/// How a person is named: their name, or their email when they gave none.
fn person(name: String, email: String) -> String {
    if name.trim().is_empty() { email } else { name }
}

/// A thing named for a person, with its id.
#[derive(Clone, Debug)]
pub struct Named {
    pub label: String,
    pub id: String,
}

/// The names of a workspace's users, agents, API keys and secrets, by id.
pub struct Names {
    by_id: HashMap<String, String>,
}

impl Names {
    /// Loads the workspace's names; users who left it are looked up one by one as they appear.
    pub async fn load(st: &AppState, ws: &str) -> Result<Names> {
        let mut by_id = HashMap::new();
        for m in st.store.list_members(ws).await? {
            by_id.insert(m.user.id, person(m.user.name, m.user.email));
        }
        for a in st.store.list_agents(ws).await? {
            by_id.insert(a.id, format!("agent \"{}\"", a.name));
        }
        for k in st.store.list_api_keys(ws).await? {
            by_id.insert(k.id, format!("API key \"{}\"", k.name));
        }
        for s in st.store.list_secrets(ws).await? {
            by_id.insert(s.id, format!("secret {}", s.name));
        }
        Ok(Names { by_id })
    }

    /// Adds the users among `ids` that are not members (any more), from their accounts.
    pub async fn add_users(&mut self, st: &AppState, ids: Vec<String>) {
        for id in ids {
            if !id.starts_with(USER_PREFIX) || self.by_id.contains_key(&id) {
                continue;
            }
            if let Ok(Some(u)) = st.store.get_user(&id).await {
                self.by_id.insert(u.id, person(u.name, u.email));
            }
        }
    }

    /// The name of whatever `id` is; a description of its kind when it is not known by name.
    pub fn of(&self, id: &str) -> Named {
        let label = match self.by_id.get(id) {
            Some(name) => name.clone(),
            None => {
                let kinds = [
                    (USER_PREFIX, "a former user"),
                    (AGENT_PREFIX, "a deleted agent"),
                    (API_KEY_PREFIX, "a deleted API key"),
                    (SECRET_PREFIX, "a deleted secret"),
                    (ADMIN_TOKEN_ID_PREFIX, "the bootstrap admin token"),
                    (PERSONAL_TOKEN_ID_PREFIX, "a personal access token"),
                    (SESSION_PREFIX, "a session"),
                    (INVITATION_PREFIX, "an invitation"),
                    (FUNCTION_PREFIX, "a function"),
                ];
                kinds.iter().find(|(p, _)| id.starts_with(p)).map_or_else(|| id.to_owned(), |(_, k)| (*k).to_owned())
            }
        };
        Named { label, id: id.to_owned() }
    }

    /// An audit record's actor: `kind` as the API names it (`system` has no id).
    pub fn actor(&self, kind: &str, id: &str) -> Named {
        match kind {
            "system" => Named { label: "agentvault".into(), id: "system".into() },
            "admin_token" => Named { label: "the bootstrap admin token".into(), id: id.to_owned() },
            _ => self.of(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_say_what_they_were() {
        let names = Names { by_id: HashMap::from([("agt_1".to_owned(), "agent \"Billing bot\"".to_owned())]) };
        assert_eq!(names.of("agt_1").label, "agent \"Billing bot\"");
        assert_eq!(names.of("agt_2").label, "a deleted agent");
        assert_eq!(names.of("key_9").label, "a deleted API key");
        assert_eq!(names.of("whatever").label, "whatever");
        assert_eq!(names.actor("system", "").label, "agentvault");
    }
}
