//! Signing in and out, and the first admin.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Actor, Principal, SESSION_PREFIX, Session, USER_PREFIX, User};
use agentvault_core::{Error, Result, validate};
use axum::http::{HeaderMap, header};
use zeroize::Zeroizing;

use super::Body;
use crate::api::auth::{Login, SignedIn};
use crate::api::me::WorkspaceRoleOut;
use crate::auth::{generate_token, hash_token, new_id};
use crate::sign_in::{csrf_token, hash_password, session_set_cookie, verify_password};
use crate::{AppState, now_millis, rfc3339};
use agentvault_core::model::SESSION_TOKEN_PREFIX;

/// The purpose under which the setup code is stored.
pub const SETUP_CODE: &str = "setup";

impl AppState {
    /// The caller as a user, for routes about "me".
    pub(crate) fn user_id_of(p: &Principal) -> Result<&str> {
        match p {
            Principal::User { user_id, .. } => Ok(user_id),
            Principal::Setup { .. } => Err(Error::forbidden(
                "the bootstrap token only sets up the first admin (POST /api/v1/setup); sign in as a user for this",
            )),
            Principal::ApiKey { .. } => {
                Err(Error::forbidden("API keys do not belong to a person; use a personal access token"))
            }
        }
    }

    /// One audit record per workspace of the user (account events concern all of them).
    pub(crate) async fn user_events(
        &self,
        user_id: &str,
        actor: Actor,
        action: Action,
        outcome: Outcome,
        detail: &str,
    ) -> Result<Vec<AuditEvent>> {
        let now = now_millis();
        Ok(self
            .store
            .memberships_of(user_id)
            .await?
            .into_iter()
            .map(|(ws, _)| {
                AuditEvent::new(now, &ws, actor.clone(), action, outcome).target(user_id).detail(detail.to_owned())
            })
            .collect())
    }

    pub(crate) async fn workspaces_of(&self, user_id: &str) -> Result<Vec<WorkspaceRoleOut>> {
        let mut out: Vec<WorkspaceRoleOut> = self
            .store
            .memberships_of(user_id)
            .await?
            .into_iter()
            .filter_map(|(ws, role)| {
                self.model.workspace(&ws).map(|w| WorkspaceRoleOut { id: w.id, name: w.name, role: role.as_str() })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Starts a session for a user; returns the cookie header and the response body.
    pub(crate) async fn start_session(
        &self,
        user: User,
        client: &str,
        headers: &HeaderMap,
    ) -> Result<(header::HeaderValue, SignedIn)> {
        let now = now_millis();
        let token = generate_token(SESSION_TOKEN_PREFIX)?;
        let ttl = self.options.session_ttl;
        let session = Session {
            id: new_id(SESSION_PREFIX)?,
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            revoked_at: None,
            client: client.to_owned(),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        };
        let audit = self
            .user_events(&user.id, Actor::User(user.id.clone()), Action::SignIn, Outcome::Success, &session.id)
            .await?;
        self.store.create_session(&session, &hash_token(&token), &audit).await?;
        let body = SignedIn {
            workspaces: self.workspaces_of(&user.id).await?,
            user: user.into(),
            csrf_token: csrf_token(&token),
            expires_at: rfc3339(session.expires_at),
        };
        Ok((session_set_cookie(&token, ttl, self.options.secure_cookies), body))
    }
}

fn wrong_credentials() -> Error {
    Error::unauthenticated("the email or password is wrong")
}

/// Signs in with email and password from `client` (rate-limited per client and per account);
/// returns the session cookie and what the caller may see.
pub async fn login(
    st: &AppState,
    client: &str,
    headers: &HeaderMap,
    body: Body<Login>,
) -> Result<(header::HeaderValue, SignedIn)> {
    let body = body?;
    let email = body.email.trim().to_owned();
    st.login_limiter.check(client, &email)?;
    let found = if validate::email(&email).is_ok() { st.store.user_by_email(&email).await? } else { None };
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    if !verify_password(body.password, hash).await {
        st.login_limiter.failed(client, &email);
        match &user {
            Some(u) => st.audit_wrong_password(&u.id).await?,
            None => tracing::info!(client = %client, "sign-in with an unknown email refused"),
        }
        return Err(wrong_credentials());
    }
    let Some(user) = user else { return Err(wrong_credentials()) };
    st.login_limiter.succeeded(client, &email);
    st.start_session(user, client, headers).await
}

impl AppState {
    /// Audits a sign-in refused for a wrong password, in every workspace of the account.
    pub(crate) async fn audit_wrong_password(&self, user_id: &str) -> Result<()> {
        let actor = Actor::User(user_id.to_owned());
        for e in self.user_events(user_id, actor, Action::SignIn, Outcome::Denied, "wrong_password").await? {
            self.audit.append(e).await?;
        }
        Ok(())
    }
}

/// Signs out: ends the session of `session_token` (the request's cookie), if any.
pub async fn logout(st: &AppState, p: &Principal, session_token: Option<&str>) -> Result<()> {
    let user_id = AppState::user_id_of(p)?.to_owned();
    let now = now_millis();
    if let Some(token) = session_token {
        let session = st.session_of(token, now).await?;
        let audit = st.user_events(&user_id, p.actor(), Action::SignOut, Outcome::Success, &session.id).await?;
        st.store.revoke_session(&user_id, &session.id, now, &audit).await?;
    }
    Ok(())
}

/// Creates the first admin (the API's `POST /api/v1/setup` and the `/setup` page): guarded by
/// the setup code or the bootstrap token, and rate-limited like a sign-in.
pub async fn create_first_admin(
    st: &AppState,
    client: &str,
    headers: &HeaderMap,
    setup_code: Option<&str>,
    email: &str,
    name: &str,
    password: Zeroizing<String>,
) -> Result<(header::HeaderValue, SignedIn)> {
    if st.store.count_users().await? > 0 {
        return Err(Error::conflict("setup_done", "the first admin already exists; sign in instead"));
    }
    // Guarded like a sign-in: the setup code is short enough to be worth guessing otherwise.
    st.login_limiter.check(client, "setup")?;
    let by_token = headers.contains_key(header::AUTHORIZATION)
        && matches!(
            st.authenticate(&axum::http::Method::POST, headers, now_millis()).await,
            Ok(Principal::Setup { .. })
        );
    let by_code = match (setup_code.filter(|c| !c.trim().is_empty()), st.store.one_time_code(SETUP_CODE).await?) {
        (Some(code), Some(stored)) => agentvault_crypto::constant_time_eq(&hash_token(&normalize_code(code)), &stored),
        _ => false,
    };
    if !by_token && !by_code {
        st.login_limiter.failed(client, "setup");
        return Err(Error::unauthenticated(
            "give the setup code printed when agentvault started, or send the bootstrap token as Authorization: Bearer",
        )
        .with_field("setup_code"));
    }
    let email = validate::email(email)?;
    validate::password("password", &password, &email)?;
    let name = if name.trim().is_empty() { String::new() } else { validate::display_name("name", name)? };
    let now = now_millis();
    let user = User { id: new_id(USER_PREFIX)?, email, name, created_at: now, updated_at: now };
    let hash = hash_password(password).await?;
    let audit: Vec<AuditEvent> = st
        .model
        .workspaces()
        .iter()
        .map(|ws| {
            AuditEvent::new(now, &ws.id, Actor::System, Action::UserCreate, Outcome::Success)
                .target(&user.id)
                .detail("first admin")
        })
        .collect();
    {
        let _w = st.write_lock.lock().await;
        st.store.setup_first_admin(&user, &hash, &audit).await?;
        st.model.clear_admin_tokens();
    }
    st.start_session(user, client, headers).await
}

/// Setup codes are shown grouped (`ABCDE-FGHIJ`); accept them with or without the dash.
pub fn normalize_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}
