//! Invitations: how people become members of a workspace. Nobody is added until the invitee
//! accepts: a new person chooses their own password; the holder of an existing account proves it.

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{
    Actor, INVITATION_CODE_PREFIX, INVITATION_PREFIX, Invitation, Perm, Principal, Role, USER_PREFIX, User, Workspace,
};
use agentvault_core::{Error, Result, validate};
use agentvault_store::NewAccount;
use axum::http::{HeaderMap, HeaderValue, Method, header};

use super::Body;
use super::members::role_param;
use crate::api::auth::SignedIn;
use crate::api::me::WorkspaceRoleOut;
use crate::api::members::{
    AcceptInvitation, AddMember, InvitationAccepted, InvitationCreated, InvitationInfo, InvitationOut,
};
use crate::auth::{generate_token, hash_token, new_id};
use crate::sign_in::{hash_password, session_cookie, verify_password};
use crate::{AppState, now_millis, rfc3339};

/// Invites a person to the workspace with a role. A new invitation for the same email replaces
/// the pending one.
pub async fn create(st: &AppState, p: &Principal, ws: &str, body: Body<AddMember>) -> Result<InvitationCreated> {
    let ws = st.workspace_for(p, ws, Perm::ManageMembers)?;
    if matches!(p, Principal::Setup { .. }) {
        // The bootstrap token lives only until the first admin exists; an invitation accepted
        // first would make a user without ending it (and perhaps without any admin).
        return Err(Error::conflict(
            "setup_first",
            "create the first admin first (POST /api/v1/setup or the /setup page), then invite people as that admin",
        ));
    }
    let body = body?;
    if body.password.is_some() {
        return Err(Error::invalid(
            "password",
            "passwords are now chosen by the invitee: leave the password out, and give the invitation link this \
             request returns to the person you invite",
        ));
    }
    let email = validate::email(&body.email)?;
    let role = role_param(&body.role)?;
    let now = now_millis();
    let code = generate_token(INVITATION_CODE_PREFIX)?;
    let ttl = i64::try_from(st.options.invitation_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let invitation = Invitation {
        id: new_id(INVITATION_PREFIX)?,
        workspace_id: ws.id.clone(),
        email,
        role,
        invited_by: p.actor().id().to_owned(),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        revoked_at: None,
        accepted_at: None,
    };
    let target = invitation_target(st, &invitation.email).await?;
    let _w = st.write_lock.lock().await;
    let mut audit: Vec<AuditEvent> = st
        .store
        .list_invitations(&ws.id, now)
        .await?
        .into_iter()
        .filter(|i| i.email.eq_ignore_ascii_case(&invitation.email))
        .map(|i| {
            AuditEvent::new(now, &ws.id, p.actor(), Action::InvitationRevoke, Outcome::Success)
                .target(&target)
                .detail(format!("{} replaced by {}", i.id, invitation.id))
        })
        .collect();
    audit.push(
        AuditEvent::new(now, &ws.id, p.actor(), Action::InvitationCreate, Outcome::Success)
            .target(&target)
            .detail(format!("{} role={}", invitation.id, role.as_str())),
    );
    st.store.create_invitation(&invitation, &hash_token(&code), &audit).await?;
    let path = format!("/invite/{code}");
    Ok(InvitationCreated { info: invitation.into(), code, path })
}

/// The audit target of an invitation: the invited account's id when it exists, else the email.
async fn invitation_target(st: &AppState, email: &str) -> Result<String> {
    Ok(st.store.user_by_email(email).await?.map(|(u, _)| u.id).unwrap_or_else(|| email.to_owned()))
}

/// The workspace's pending invitations (never their codes).
pub async fn list(st: &AppState, p: &Principal, ws: &str) -> Result<Vec<InvitationOut>> {
    let ws = st.workspace_for(p, ws, Perm::ManageMembers)?;
    let items = st.store.list_invitations(&ws.id, now_millis()).await?;
    Ok(items.into_iter().map(InvitationOut::from).collect())
}

/// Revokes a pending invitation: its link stops working.
pub async fn revoke(st: &AppState, p: &Principal, ws: &str, invitation_id: &str) -> Result<()> {
    let ws = st.workspace_for(p, ws, Perm::ManageMembers)?;
    let now = now_millis();
    let _w = st.write_lock.lock().await;
    let invitation = st.store.list_invitations(&ws.id, now).await?.into_iter().find(|i| i.id == invitation_id);
    let Some(invitation) = invitation else {
        return Err(Error::not_found(
            "invitation_not_found",
            "no pending invitation with that id in this workspace (it may have been accepted, revoked or expired)",
        ));
    };
    let target = invitation_target(st, &invitation.email).await?;
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::InvitationRevoke, Outcome::Success)
        .target(&target)
        .detail(invitation.id.clone());
    st.store.revoke_invitation(&ws.id, &invitation.id, now, &[audit]).await?;
    Ok(())
}

/// A pending invitation by its code, with its workspace and whether its account exists.
pub async fn pending(st: &AppState, code: &str) -> Result<(Invitation, Workspace, Option<(User, String)>)> {
    let now = now_millis();
    let invitation = st
        .store
        .invitation_by_hash(&hash_token(code.trim()))
        .await?
        .filter(|i| i.is_pending(now))
        .ok_or_else(Invitation::unusable)?;
    let ws = st.model.workspace(&invitation.workspace_id).ok_or_else(Invitation::unusable)?;
    let account = st.store.user_by_email(&invitation.email).await?;
    Ok((invitation, ws, account))
}

/// What an invitation offers to the holder of its code (the code is the credential).
pub async fn show(st: &AppState, code: &str) -> Result<InvitationInfo> {
    let (invitation, ws, account) = pending(st, code).await?;
    Ok(InvitationInfo {
        workspace_id: ws.id,
        workspace_name: ws.name,
        email: invitation.email,
        role: invitation.role.as_str(),
        account_exists: account.is_some(),
        expires_at: rfc3339(invitation.expires_at),
    })
}

/// An accepted invitation.
pub struct Accepted {
    /// The invitation created the account.
    pub new_account: bool,
    /// The session cookie, when accepting signed the invitee in.
    pub cookie: Option<HeaderValue>,
    pub out: InvitationAccepted,
}

fn signed_in_as(new_account: bool, cookie: HeaderValue, signed_in: SignedIn, workspace: WorkspaceRoleOut) -> Accepted {
    let out = InvitationAccepted {
        user: signed_in.user,
        workspace,
        csrf_token: Some(signed_in.csrf_token),
        expires_at: Some(signed_in.expires_at),
    };
    Accepted { new_account, cookie: Some(cookie), out }
}

/// Accepts an invitation (single use) from `client`. With no account for the invited email, the
/// body's `name` and `password` create it, and the invitee is signed in. With an existing
/// account, the caller must be that account: signed in as it (the credential in `headers`), or
/// sending its current `password` (rate-limited like a sign-in). Anyone else is refused.
pub async fn accept(
    st: &AppState,
    client: &str,
    headers: &HeaderMap,
    code: &str,
    body: Body<AcceptInvitation>,
) -> Result<Accepted> {
    let (invitation, ws, account) = pending(st, code).await?;
    let body = body?;
    let joined = |role: Role| WorkspaceRoleOut { id: ws.id.clone(), name: ws.name.clone(), role: role.as_str() };
    let now = now_millis();
    let Some((user, hash)) = account else {
        // A new account: the invitee chooses the password.
        let password = body.password.ok_or_else(|| {
            Error::invalid("password", "choose a password for your new account (at least 12 characters)")
        })?;
        validate::password("password", &password, &invitation.email)?;
        let name = match body.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => validate::display_name("name", n)?,
            _ => String::new(),
        };
        let user =
            User { id: new_id(USER_PREFIX)?, email: invitation.email.clone(), name, created_at: now, updated_at: now };
        let hash = hash_password(password).await?;
        let actor = Actor::User(user.id.clone());
        let audit = [
            AuditEvent::new(now, &ws.id, actor.clone(), Action::UserCreate, Outcome::Success)
                .target(&user.id)
                .detail(format!("role={}", invitation.role.as_str())),
            AuditEvent::new(now, &ws.id, actor, Action::InvitationAccept, Outcome::Success)
                .target(&user.id)
                .detail(invitation.id.clone()),
        ];
        {
            let _w = st.write_lock.lock().await;
            let account = NewAccount { user: &user, password_hash: &hash };
            st.store.accept_invitation(&invitation, &user.id, Some(account), now, &audit).await?;
        }
        let (cookie, signed_in) = st.start_session(user, client, headers).await?;
        return Ok(signed_in_as(true, cookie, signed_in, joined(invitation.role)));
    };
    // An existing account: only its holder may accept.
    if body.name.as_deref().is_some_and(|n| !n.trim().is_empty()) {
        return Err(Error::invalid("name", "this account already exists and keeps its name; leave the name out"));
    }
    let accept = |how: &'static str| {
        let audit =
            [AuditEvent::new(now, &ws.id, Actor::User(user.id.clone()), Action::InvitationAccept, Outcome::Success)
                .target(&user.id)
                .detail(format!("{} {how}", invitation.id))];
        let st = st.clone();
        let invitation = invitation.clone();
        let user_id = user.id.clone();
        async move {
            let _w = st.write_lock.lock().await;
            st.store.accept_invitation(&invitation, &user_id, None, now, &audit).await
        }
    };
    if let Some(password) = body.password {
        st.login_limiter.check(client, &user.email)?;
        if !verify_password(password, Some(hash)).await {
            st.login_limiter.failed(client, &user.email);
            st.audit_wrong_password(&user.id).await?;
            return Err(Error::unauthenticated(format!(
                "the password is wrong for {}; accepting this invitation needs that account's current password",
                user.email
            ))
            .with_field("password"));
        }
        st.login_limiter.succeeded(client, &user.email);
        accept("password").await?;
        let (cookie, signed_in) = st.start_session(user, client, headers).await?;
        return Ok(signed_in_as(false, cookie, signed_in, joined(invitation.role)));
    }
    if !headers.contains_key(header::AUTHORIZATION) && session_cookie(headers).is_none() {
        return Err(Error::unauthenticated(format!(
            "{} already has an account: sign in as it, or give its current password, to accept this invitation",
            user.email
        ))
        .with_field("password"));
    }
    match st.authenticate(&Method::POST, headers, now).await? {
        Principal::User { user_id, .. } if user_id == user.id => {}
        Principal::User { .. } => {
            return Err(Error::forbidden(format!(
                "this invitation is for {}, and you are signed in as another account; sign in as {} (or give its \
                 password) to accept it",
                user.email, user.email
            )));
        }
        _ => {
            return Err(Error::forbidden(format!(
                "only the holder of the account {} can accept this invitation: sign in as it, or give its password",
                user.email
            )));
        }
    }
    accept("signed_in").await?;
    let out = InvitationAccepted {
        user: user.into(),
        workspace: joined(invitation.role),
        csrf_token: None,
        expires_at: None,
    };
    Ok(Accepted { new_account: false, cookie: None, out })
}
