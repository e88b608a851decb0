//! `agentvault user create`: the headless way to create users, working on the data directory
//! (with the server stopped).

use std::io::{BufRead, IsTerminal};

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Actor, Role, USER_PREFIX, User};
use agentvault_core::validate;
use agentvault_store::Store;
use clap::Args;
use zeroize::Zeroizing;

use crate::config::{Config, ConfigArgs};

#[derive(Args)]
pub struct CreateUser {
    /// The user's email address (their sign-in name)
    #[arg(long)]
    email: String,
    /// Display name
    #[arg(long, default_value = "")]
    name: String,
    /// admin or member
    #[arg(long, default_value = "member")]
    role: String,
    /// The workspace (name or id) to add the user to [default: default]. The first admin becomes
    /// admin of every workspace.
    #[arg(long)]
    workspace: Option<String>,
    /// Read the password from the first line of standard input instead of prompting
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

fn read_password(from_stdin: bool) -> Result<Zeroizing<String>, String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the password from stdin: {e}"))?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        return Ok(trimmed);
    }
    let first = Zeroizing::new(rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?);
    let second = Zeroizing::new(rpassword::prompt_password("Password again: ").map_err(|e| e.to_string())?);
    if first != second {
        return Err("the two passwords differ; nothing was created".into());
    }
    Ok(first)
}

pub async fn create(args: CreateUser) -> Result<(), String> {
    let config = Config::resolve(args.config)?;
    crate::serve::init_logging(&config.log);
    crate::serve::harden_process();
    let email = validate::email(&args.email).map_err(crate::describe)?;
    let role = Role::parse(&args.role).ok_or("--role must be admin or member")?;
    let name = if args.name.trim().is_empty() {
        String::new()
    } else {
        validate::display_name("name", &args.name).map_err(crate::describe)?
    };
    if !config.database_exists() {
        return Err(format!(
            "there is no agentvault database in {}; start `agentvault serve` once first",
            config.data_dir.display()
        ));
    }
    let password = read_password(args.password_stdin)?;
    validate::password("password", &password, &email).map_err(crate::describe)?;
    let _lock = crate::root_key::lock_data_dir(&config.data_dir)?;
    let store = config.open_store().await?;
    let result = create_in(store.as_ref(), email, name, role, args.workspace, password).await;
    store.close().await;
    let (user, where_) = result?;
    println!("created {} ({}) as {} of {where_}", user.email, user.id, role.as_str());
    Ok(())
}

async fn create_in(
    store: &dyn Store,
    email: String,
    name: String,
    role: Role,
    workspace: Option<String>,
    password: Zeroizing<String>,
) -> Result<(User, String), String> {
    let err = crate::describe;
    let now = agentvault_server::now_millis();
    let user = User {
        id: agentvault_server::auth::new_id(USER_PREFIX).map_err(err)?,
        email,
        name,
        created_at: now,
        updated_at: now,
    };
    let hash = agentvault_server::sign_in::hash_password(password).await.map_err(err)?;
    let workspaces = store.list_workspaces().await.map_err(err)?;
    let audit_for = |ws: &str, detail: &str| {
        AuditEvent::new(now, ws, Actor::System, Action::UserCreate, Outcome::Success)
            .target(&user.id)
            .detail(detail.to_owned())
    };
    if store.count_users().await.map_err(err)? == 0 {
        if role != Role::Admin {
            return Err("the first user must be an admin (--role admin)".into());
        }
        let audit: Vec<_> = workspaces.iter().map(|w| audit_for(&w.id, "first admin, from the command line")).collect();
        store.setup_first_admin(&user, &hash, &audit).await.map_err(err)?;
        return Ok((user, "every workspace".into()));
    }
    let wanted = workspace.unwrap_or_else(|| "default".to_owned());
    let ws = workspaces
        .iter()
        .find(|w| w.id == wanted || w.name == wanted)
        .ok_or_else(|| format!("no workspace named or with the id '{wanted}'"))?;
    let audit = [audit_for(&ws.id, &format!("role={}, from the command line", role.as_str()))];
    store.create_user(&user, &hash, &[(ws.id.clone(), role)], &audit).await.map_err(err)?;
    Ok((user, format!("workspace '{}'", ws.name)))
}
