//! Injected-only secrets: functions get a placeholder, and the egress proxy swaps in the value
//! in requests to the secret's hosts ([`crate::egress::inject`]).

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Perm, Principal};
use agentvault_core::{Error, Result};

use super::Body;
use crate::api::injection::{InjectionOut, SetInjection};
use crate::egress::policy::{HostRule, MAX_HOSTS};
use crate::{AppState, now_millis};

fn unfit(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::unprocessable("invalid_injection", message).with_field("hosts")
}

/// How functions use a secret.
pub async fn get(st: &AppState, p: &Principal, ws: &str, name: &str) -> Result<InjectionOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let meta = st.secret_of(&ws.id, name).await?;
    Ok(match st.egress.injection(&ws.id, &meta.id) {
        Some(hosts) => InjectionOut { injected_only: true, hosts: hosts.to_vec() },
        None => InjectionOut { injected_only: false, hosts: Vec::new() },
    })
}

/// Makes a secret injected only (with its hosts) or readable again.
pub async fn set(st: &AppState, p: &Principal, ws: &str, name: &str, body: Body<SetInjection>) -> Result<InjectionOut> {
    let ws = st.workspace_for(p, ws, Perm::ManageSecrets)?;
    let body = body?;
    let hosts = if body.injected_only {
        if body.hosts.is_empty() {
            return Err(unfit("an injected-only secret needs at least one host its value may be sent to"));
        }
        if body.hosts.len() > MAX_HOSTS {
            return Err(unfit(format!("{} hosts given; the limit is {MAX_HOSTS}", body.hosts.len())));
        }
        let mut out: Vec<String> = Vec::with_capacity(body.hosts.len());
        for h in &body.hosts {
            let c = HostRule::parse(h).map_err(unfit)?.canonical();
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Some(out)
    } else {
        if !body.hosts.is_empty() {
            return Err(unfit("hosts are given only with injected_only: true"));
        }
        None
    };
    let _w = st.write_lock.lock().await;
    let meta = st.secret_of(&ws.id, name).await?;
    let now = now_millis();
    let detail = match &hosts {
        Some(h) => format!("injected_only hosts={}", h.join(",")),
        None => "readable".to_owned(),
    };
    let audit = AuditEvent::new(now, &ws.id, p.actor(), Action::SecretInjectionSet, Outcome::Success)
        .secret(&meta.name)
        .target(&meta.id)
        .detail(detail);
    st.store.set_injection(&ws.id, &meta.id, hosts.as_deref(), now, &audit).await?;
    st.egress.set_injection(&ws.id, &meta.id, hosts.clone());
    Ok(InjectionOut { injected_only: hosts.is_some(), hosts: hosts.unwrap_or_default() })
}
