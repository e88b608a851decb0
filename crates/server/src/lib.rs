//! The agentvault server: the JSON API and the console over one service layer, authentication,
//! the audit writer and the in-memory read model (docs/architecture.md). Services call the
//! [`Store`]; nothing here sees SQL, and the crypto crate never sees HTTP.

pub mod api;
pub mod audit_upkeep;
pub mod audit_writer;
pub mod auth;
pub mod connections;
pub mod console;
pub mod egress;
pub mod error;
pub mod extract;
pub mod front;
pub mod metrics;
pub mod read_model;
pub mod replication;
pub mod service;
pub mod sign_in;

use std::convert::Infallible;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{
    ADMIN_TOKEN_ID_PREFIX, ADMIN_TOKEN_PREFIX, Actor, AdminToken, Binding, Millis, WORKSPACE_PREFIX, Workspace,
};
use agentvault_core::{Error, Result, SecretValue};
use agentvault_crypto::Keyring;
use agentvault_store::Store;
pub use axum::Json;
use axum::Router;
use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum_server::accept::DefaultAcceptor;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    access, agents, audit as audit_api, auth as auth_api, functions, invoke, keys, me, members, ops, read, secrets,
    workspaces,
};
use crate::audit_writer::AuditWriter;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::read_model::{ReadModel, SecretEntry};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 in UTC with exactly three fractional digits, e.g. `2026-11-24T15:57:49.960Z`.
pub fn rfc3339(ms: Millis) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time given in `field`.
pub fn parse_rfc3339(field: &'static str, text: &str) -> Result<Millis> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        Error::invalid(
            field,
            format!("{field} must be an RFC 3339 time such as 2027-01-31T12:00:00Z; got '{}'", text.escape_default()),
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| Error::invalid(field, format!("{field} is out of range")))
}

/// Settings of the server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How long a console session lasts.
    pub session_ttl: Duration,
    /// How long an invitation to a workspace can be accepted.
    pub invitation_ttl: Duration,
    /// Mark cookies `Secure` (when serving HTTPS, or behind a proxy that does).
    pub secure_cookies: bool,
    /// Take the client address for rate limiting from `X-Forwarded-For` (behind a reverse proxy).
    pub trust_forwarded_for: bool,
    pub login_limits: sign_in::LoginLimits,
    /// How agents' functions run.
    pub runtime: agentvault_runtime::RuntimeOptions,
    /// Timeouts and the cap on client connections.
    pub connections: connections::ConnectionOptions,
    /// `/readyz` fails while the read model has been behind the database for longer.
    pub max_read_model_lag: Duration,
    /// Destinations the operator opened to functions (`--egress-allow host:port`), private
    /// ones included.
    pub egress_allow: Vec<egress::policy::OperatorAllow>,
    /// CA certificates (PEM files) the egress proxy trusts upstream besides the system's, when
    /// it opens TLS itself (injected credentials).
    pub egress_ca: Vec<std::path::PathBuf>,
    /// Audit records older than this are dropped (whole segments); none: kept for ever.
    pub audit_retention: Option<Duration>,
    /// Where the audit export stream goes, if anywhere.
    pub audit_export: Option<audit_upkeep::ExportTarget>,
}

/// How long audit records are kept by default: longer than the twelve months auditors ask for.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(400 * 86_400);

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            session_ttl: Duration::from_secs(12 * 3600),
            invitation_ttl: Duration::from_secs(7 * 86_400),
            secure_cookies: false,
            trust_forwarded_for: false,
            login_limits: sign_in::LoginLimits::default(),
            runtime: agentvault_runtime::RuntimeOptions::default(),
            connections: connections::ConnectionOptions::default(),
            max_read_model_lag: Duration::from_secs(5),
            egress_allow: Vec::new(),
            egress_ca: Vec::new(),
            audit_retention: Some(DEFAULT_AUDIT_RETENTION),
            audit_export: None,
        }
    }
}

/// The state every handler shares.
pub struct Shared {
    pub options: ServerOptions,
    pub login_limiter: sign_in::LoginLimiter,
    pub store: Arc<dyn Store>,
    pub keyring: Keyring,
    pub model: ReadModel,
    pub audit: AuditWriter,
    /// Serialises mutations, so that the read model is updated in the order of the commits.
    pub write_lock: tokio::sync::Mutex<()>,
    /// Where the read model stands in the change feed (see [`replication`]).
    pub feed: replication::Feed,
    pub metrics: Arc<Metrics>,
    /// Agents' functions: warm Python workers.
    pub runtime: Arc<agentvault_runtime::Runtime>,
    /// The egress proxy's settings: the functions' only way out.
    pub egress: egress::Egress,
    /// Placeholders handed to running invocations for injected-only secrets.
    pub injections: egress::inject::Injections,
    /// The egress CA (None when it could not be loaded: injected secrets are then refused).
    pub egress_tls: Option<Arc<egress::inject::EgressTls>>,
    pub openapi_json: OnceLock<axum::body::Bytes>,
    /// Every route's request counters.
    pub routes: OnceLock<metrics::RouteMetrics>,
}

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Loads the read model from the store and starts the audit writer.
    pub async fn start(store: Arc<dyn Store>, keyring: Keyring, options: ServerOptions) -> Result<AppState> {
        // The first server on a database records its key; every later one must hold that key
        // (several servers on one PostgreSQL need the same root key file).
        let recorded = store.claim_root_key(keyring.active_id()).await?;
        if !keyring.contains(&recorded) {
            return Err(Error::unavailable(format!(
                "the database's data is sealed under root key {recorded}, which the configured keyring does not hold \
                 (it holds {}); give this server the root key file (or AGENTVAULT_ROOT_KEY) the database was set up with",
                keyring.ids().join(", ")
            )));
        }
        // The feed's position first: the snapshot holds at least every change up to it.
        let applied = store.latest_change().await?;
        let snapshot = replication::load_snapshot(store.as_ref()).await?;
        if let Some(s) = snapshot.secrets.iter().find(|s| !keyring.contains(&s.sealed.root_key_id)) {
            return Err(Error::unavailable(format!(
                "secret '{}' is sealed under root key {}, which the configured keyring does not hold (it holds {}); \
                 add root key {} to this server's keyring (AGENTVAULT_ROOT_KEY or the root key file): it is the key \
                 the data was created with, or a new key other servers already seal with",
                s.meta.name,
                s.sealed.root_key_id,
                keyring.ids().join(", "),
                s.sealed.root_key_id
            )));
        }
        let metrics = Arc::new(Metrics::new());
        let audit = AuditWriter::new(store.clone(), metrics.clone());
        let runtime = agentvault_runtime::Runtime::start(options.runtime.clone()).await;
        let egress = egress::Egress::new(options.egress_allow.clone());
        for (ws, secret_id, hosts) in store.load_injections().await? {
            egress.set_injection(&ws, &secret_id, Some(hosts));
        }
        let egress_tls = match egress::inject::EgressTls::load(store.as_ref(), &keyring, &options.egress_ca).await {
            Ok(t) => Some(Arc::new(t)),
            Err(e) if e.kind == agentvault_core::ErrorKind::Unavailable => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e.message, "the egress CA is not available; injected-only secrets are refused");
                None
            }
        };
        let state = AppState(Arc::new(Shared {
            runtime,
            egress,
            injections: egress::inject::Injections::default(),
            egress_tls,
            login_limiter: sign_in::LoginLimiter::new(options.login_limits.clone()),
            options,
            model: ReadModel::load(snapshot),
            store,
            keyring,
            audit,
            write_lock: tokio::sync::Mutex::new(()),
            feed: replication::Feed::new(applied),
            metrics,
            openapi_json: OnceLock::new(),
            routes: OnceLock::new(),
        }));
        state.refresh_gauges();
        tokio::spawn(replication::follow(state.clone()));
        let ca = state.egress_tls.as_ref().map(|t| t.ca_pem.clone());
        if let Err(e) = state.runtime.set_egress(Arc::new(egress::EgressProxy::new(&state)), ca.as_deref()) {
            tracing::warn!(error = %e, "the egress proxy could not be set up; functions will have no network");
        }
        match state.runtime.sandboxed() {
            Some(true) => tracing::info!(
                allowed = ?state.options.egress_allow.iter().map(|a| format!("{}:{}", a.host, a.port)).collect::<Vec<_>>(),
                "functions reach the network only through the egress proxy"
            ),
            Some(false) => tracing::warn!(
                "egress policies are NOT enforced: with --sandbox off a function shares the server's network and can \
                 connect anywhere the server can, around the egress proxy (agentvault's own port, the cloud \
                 metadata service, the private network). Run functions in bubblewrap (--sandbox bwrap)"
            ),
            None => {}
        }
        Ok(state)
    }

    /// Opens the current version of a secret's default value.
    pub fn open(&self, entry: &SecretEntry) -> Result<SecretValue> {
        self.open_value(entry, entry.default_value())
    }

    /// Opens the current version of one of a secret's values (the default, or an environment's).
    pub fn open_value(&self, entry: &SecretEntry, v: read_model::ValueRef<'_>) -> Result<SecretValue> {
        let binding = Binding { workspace_id: &entry.workspace_id, secret_id: v.binding_id, version: v.version };
        let failed =
            |e| open_failed(e, format_args!("secret {} value {} version {}", entry.id, v.binding_id, v.version));
        let key = v.key.get_or_unwrap(|| self.keyring.data_key(binding, v.sealed)).map_err(failed)?;
        let plaintext = key.open(binding, v.sealed).map_err(failed)?;
        SecretValue::decode(v.kind, &plaintext)
    }

    pub fn refresh_gauges(&self) {
        let (agents, secrets) = self.model.counts();
        self.metrics.agents.set(agents as i64);
        self.metrics.secrets.set(secrets as i64);
    }

    /// Writes API key last-use times that changed since the previous flush.
    pub async fn flush_key_use(&self) -> Result<()> {
        let pending: Vec<_> = self
            .model
            .api_keys()
            .into_iter()
            .filter_map(|k| {
                let used = k.last_used.load(Ordering::Relaxed);
                (used > k.last_flushed.load(Ordering::Relaxed)).then_some((k, used))
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let uses: Vec<(String, Millis)> = pending.iter().map(|(k, t)| (k.meta.id.clone(), *t)).collect();
        self.store.record_api_key_use(&uses).await?;
        for (k, t) in pending {
            k.last_flushed.fetch_max(t, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The error of a sealed value that did not open. One sealed under a root key this server's
/// keyring lacks (another server sealed it with a key this one was not given: a rotation whose
/// first step missed this server) is a 503 naming the key, never anything of the value.
pub(crate) fn open_failed(e: agentvault_crypto::CryptoError, what: std::fmt::Arguments<'_>) -> Error {
    match e {
        agentvault_crypto::CryptoError::UnknownRootKey(id) => {
            tracing::error!(
                value = %what,
                root_key_id = %id,
                "a value is sealed under a root key this server's keyring does not hold; add the key to this \
                 server's keyring and restart it"
            );
            Error::unavailable(format!(
                "this server cannot open the value: it is sealed under root key {id}, which this server's keyring \
                 does not hold; an operator must add root key {id} to this server's keyring (AGENTVAULT_ROOT_KEY \
                 or the root key file) and restart it"
            ))
        }
        e => Error::internal(format!("opening {what} failed: {e}")),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "agentvault", description = "A secrets vault for conversational AI agents. Authenticate with `Authorization: Bearer <token>`."),
    modifiers(&BearerAuth),
    components(schemas(api::doc::Outcome, api::doc::AuditOrder)),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route with its OpenAPI description. The router and the document come from this one list.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(workspaces::list_workspaces, workspaces::create_workspace))
        .routes(routes!(agents::list_agents, agents::create_agent))
        .routes(routes!(agents::get_agent, agents::update_agent, agents::delete_agent))
        .routes(routes!(agents::agent_secrets))
        .routes(routes!(agents::get_egress, agents::set_egress))
        .routes(routes!(functions::list_functions, functions::create_function))
        .routes(routes!(functions::get_function, functions::replace_function, functions::delete_function))
        .routes(routes!(functions::function_versions))
        .routes(routes!(functions::deploy_function))
        .routes(routes!(invoke::invoke_function))
        .routes(routes!(invoke::run_draft))
        .routes(routes!(secrets::list_secrets, secrets::create_secret))
        .routes(routes!(secrets::get_secret, secrets::update_secret, secrets::delete_secret))
        .routes(routes!(secrets::set_access))
        .routes(routes!(secrets::reveal_secret))
        .routes(routes!(api::injection::get_injection, api::injection::set_injection))
        .routes(routes!(secrets::list_versions))
        .routes(routes!(secrets::secret_usage))
        .routes(routes!(secrets::restore_version))
        .routes(routes!(secrets::import_secrets))
        .routes(routes!(access::request_access))
        .routes(routes!(access::list_access_requests))
        .routes(routes!(access::approve_access_request))
        .routes(routes!(access::decline_access_request))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::get_key, keys::revoke_key))
        .routes(routes!(audit_api::list_audit))
        .routes(routes!(read::read_secret))
        .routes(routes!(auth_api::login))
        .routes(routes!(auth_api::logout))
        .routes(routes!(auth_api::setup))
        .routes(routes!(console::setup::show, console::setup::submit))
        .routes(routes!(me::me))
        .routes(routes!(me::change_password))
        .routes(routes!(me::list_tokens, me::create_token))
        .routes(routes!(me::revoke_token))
        .routes(routes!(me::list_sessions))
        .routes(routes!(me::revoke_session))
        .routes(routes!(members::list_members, members::add_member))
        .routes(routes!(members::change_role, members::remove_member))
        .routes(routes!(members::list_invitations))
        .routes(routes!(members::revoke_invitation))
        .routes(routes!(members::show_invitation))
        .routes(routes!(members::accept_invitation))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts()
}

/// The complete application.
pub fn app(state: AppState) -> Router {
    let (router, doc) = routes();
    let json = serde_json::to_vec_pretty(&api::doc::complete(&doc)).unwrap_or_default();
    let _ = state.openapi_json.set(json.into());
    let _ = state.routes.set(metrics::RouteMetrics::new(doc.paths.paths.keys().cloned()));
    router
        .merge(console::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(EdgeLayer(state.clone()))
        .with_state(state)
}

/// An unknown URL: a page for a browser outside the API, JSON for everything else.
async fn no_route(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/html")));
    if wants_html && !uri.path().starts_with("/api/") {
        return console::not_found_page();
    }
    ApiError(Error::not_found("no_route", "no such route; the API is described at /api/v1/openapi.json"))
        .into_response()
}

async fn method_not_allowed() -> Response {
    let mut resp =
        ApiError(Error::invalid("method", "this route does not accept that HTTP method; see /api/v1/openapi.json"))
            .into_response();
    *resp.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    resp
}

/// What every request passes through, as one layer: the body limit (`extract::read_body`; a
/// refused request is answered at once), then read-your-writes (`replication::await_index`); and
/// around those, each request is counted per route and status, every response marked as not
/// cacheable unless it says otherwise (the console's content-hashed assets are cached for a
/// year), and every answer to a change given the change index (`replication::mark_change`).
///
/// A layer of its own rather than `axum::middleware::from_fn`: a request with no body and no
/// index to wait for (every agent read) goes straight to its route, with no clone of the route,
/// no boxed future and no extra task state.
#[derive(Clone)]
struct EdgeLayer(AppState);

impl<S> tower_layer::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { st: self.0.clone(), inner }
    }
}

#[derive(Clone)]
struct Edge<S> {
    st: AppState,
    inner: S,
}

/// What the edge adds to the route's answer.
pub(crate) struct Answer {
    /// The method's index in `metrics::METHODS`.
    method: usize,
    /// The route's index in [`AppState::routes`].
    route: usize,
    changes: bool,
}

impl Answer {
    fn new(st: &AppState, req: &Request) -> Answer {
        let template = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        Answer::for_route(req.method(), route_index(st, template))
    }

    /// The answer of a request with `method` to the route at `route` in [`AppState::routes`].
    pub(crate) fn for_route(method: &axum::http::Method, route: usize) -> Answer {
        Answer { method: metrics::method_index(method), route, changes: replication::changes(method) }
    }

    /// `routed`: the route answered (not a refusal of the index header).
    pub(crate) fn finish(self, st: &AppState, mut resp: Response, routed: bool) -> Response {
        if routed && self.changes {
            replication::mark_change(st, &mut resp);
        }
        if let Some(routes) = st.routes.get() {
            routes.count(self.route, &st.metrics.requests, self.method, resp.status().as_u16());
        }
        let h = resp.headers_mut();
        h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        resp
    }
}

/// The index in [`AppState::routes`] of the route with this template (0: unmatched).
pub(crate) fn route_index(st: &AppState, template: Option<&str>) -> usize {
    st.routes.get().map_or(0, |r| r.find(template))
}

type Answered = std::result::Result<Response, Infallible>;

impl<S> tower_service::Service<Request> for Edge<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + Unpin + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let answer = Answer::new(&self.st, &req);
        if req.body().size_hint().exact() == Some(0) && !req.headers().contains_key(replication::INDEX_HEADER) {
            return EdgeFuture::Route { route: self.inner.call(req), answer: Some((answer, self.st.clone())) };
        }
        // The ready service goes with the request; this one is replaced by a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let st = self.st.clone();
        EdgeFuture::Waiting(Box::pin(async move {
            let req = match extract::read_body(&st, req).await {
                Ok(req) => req,
                Err(refused) => return Ok(refused),
            };
            if let Some(refused) = replication::await_index(&st, req.headers()).await {
                return Ok(answer.finish(&st, refused, false));
            }
            let resp = inner.call(req).await?;
            Ok(answer.finish(&st, resp, true))
        }))
    }
}

/// The answer of [`Edge`]: the route's own future, or (with a body to read or an index to wait
/// for) the whole request's.
enum EdgeFuture<F> {
    Route { route: F, answer: Option<(Answer, AppState)> },
    Waiting(Pin<Box<dyn Future<Output = Answered> + Send>>),
}

impl<F: Future<Output = Answered> + Unpin> Future for EdgeFuture<F> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        match self.get_mut() {
            EdgeFuture::Route { route, answer } => Pin::new(route).poll(cx).map(|resp| {
                let resp = resp?;
                Ok(match answer.take() {
                    Some((answer, st)) => answer.finish(&st, resp, true),
                    None => resp,
                })
            }),
            EdgeFuture::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

/// HTTPS settings: a certificate chain and key loaded with rustls.
pub type TlsConfig = axum_server::tls_rustls::RustlsConfig;

/// Loads a PEM certificate chain and private key for HTTPS. Only HTTP/1.1 is offered (ALPN): the
/// server's timeouts on slow and idle clients are HTTP/1's.
pub async fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> std::result::Result<TlsConfig, String> {
    let loaded = TlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| format!("cannot use the TLS certificate {} and key {}: {e}", cert.display(), key.display()))?;
    let mut config = (*loaded.get_inner()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConfig::from_config(Arc::new(config)))
}

/// Serves (HTTPS when `tls` is given) until `shutdown` resolves, then finishes in-flight
/// requests and writes every queued audit record and API key use.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Option<TlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flusher = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                if let Err(e) = st.flush_key_use().await {
                    tracing::warn!(error = %e, "recording API key use failed");
                }
            }
        })
    };
    let (stop_upkeep, upkeep_stop) = tokio::sync::watch::channel(false);
    let upkeep = tokio::spawn(audit_upkeep::run(state.clone(), upkeep_stop));
    if let Ok(addr) = listener.local_addr() {
        state.egress.set_listening(vec![addr]);
    }
    {
        // Functions saved by an earlier agentvault: what the code check finds is recorded now.
        let st = state.clone();
        tokio::spawn(async move {
            match service::functions::recheck_saved(&st).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(functions = n, "recorded the secrets and required parameters of saved functions")
                }
                Err(e) => tracing::warn!(error = %e, "checking saved functions again failed"),
            }
        });
    }
    let service = front::MakeFront::new(state.clone(), app(state.clone()));
    let limits = &state.options.connections;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let mut server = axum_server::from_tcp(listener.into_std()?)?
        .handle(handle)
        // HTTP/1 only: the header timeout below is HTTP/1's, and HTTP/2 would let an idle client
        // hold its connection (and a slot under the cap) for ever.
        .http1_only()
        // A connection that never completes its first request is closed like a slow one.
        .first_request_timeout(limits.header_timeout)
        .accept_error_handler(|_, e| tracing::debug!(error = %e, "connection not served"));
    let mut http1 = server.http_builder().http1();
    match connections::CoarseTimer::start() {
        Ok(timer) => http1.timer(timer),
        Err(e) => {
            tracing::warn!(error = %e, "request-head deadlines use tokio's timer instead");
            http1.timer(hyper_util::rt::TokioTimer::new())
        }
    };
    http1.header_read_timeout(limits.header_timeout);
    let max_connections = connections::fit_connections(limits.max_connections);
    let capped = |plain| connections::CapAcceptor::new(DefaultAcceptor, max_connections, plain);
    let result = match tls {
        None => server.acceptor(capped(true)).serve(service).await,
        Some(config) => {
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(limits.header_timeout)
                .acceptor(capped(false));
            server.acceptor(tls).serve(service).await
        }
    };
    flusher.abort();
    state.audit.flush().await;
    // The export stream writes what is left, whole batches only.
    let _ = stop_upkeep.send(true);
    if tokio::time::timeout(Duration::from_secs(10), upkeep).await.is_err() {
        tracing::warn!(
            "the audit export stream did not finish in time; it goes on from its position at the next start"
        );
    }
    if let Err(e) = state.flush_key_use().await {
        tracing::warn!(error = %e, "recording API key use failed at shutdown");
    }
    result
}

/// What the start set up.
pub enum Bootstrap {
    /// Nothing new: the data directory was already initialised and no user exists yet.
    Existing,
    /// A new admin token was generated; show it once.
    NewToken(String),
    /// The admin token is the value given in the environment.
    TokenFromEnv,
    /// Users exist, so no bootstrap token exists or is honoured any more.
    UsersExist {
        /// `AGENTVAULT_BOOTSTRAP_TOKEN` was set and has been ignored.
        ignored_env: bool,
        /// Admin tokens that were still stored and have been removed.
        removed: u64,
    },
}

/// The minimum length of a bootstrap token given by the operator.
pub const BOOTSTRAP_TOKEN_MIN_LEN: usize = 24;

/// Creates the `default` workspace and, while no user exists, the bootstrap admin token.
///
/// The bootstrap token is admin of every workspace, so it exists only until the first user does:
/// setup turns it into the first admin's personal token. Once a user exists, a start never
/// creates, prints or honours one, and removes any admin token still stored.
pub async fn bootstrap(store: &dyn Store, given_token: Option<&str>) -> Result<Bootstrap> {
    if store.list_workspaces().await?.is_empty() {
        let now = now_millis();
        let ws = Workspace { id: auth::new_id(WORKSPACE_PREFIX)?, name: "default".into(), created_at: now };
        let audit =
            AuditEvent::new(now, &ws.id, Actor::System, Action::WorkspaceCreate, Outcome::Success).target(&ws.id);
        match store.create_workspace(&ws, None, &audit).await {
            // Another server on the same database made it first.
            Err(e) if e.code == "workspace_exists" => {}
            r => r?,
        }
    }
    if store.count_users().await? > 0 {
        let removed = store.delete_admin_tokens().await?;
        return Ok(Bootstrap::UsersExist { ignored_env: given_token.is_some(), removed });
    }
    if store.has_admin_tokens().await? {
        return Ok(Bootstrap::Existing);
    }
    let (token, outcome) = match given_token {
        Some(t) => {
            if t.len() < BOOTSTRAP_TOKEN_MIN_LEN || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid(
                    "AGENTVAULT_BOOTSTRAP_TOKEN",
                    format!(
                        "AGENTVAULT_BOOTSTRAP_TOKEN must be at least {BOOTSTRAP_TOKEN_MIN_LEN} characters without spaces; generate one with `openssl rand -base64 32`"
                    ),
                ));
            }
            (t.to_owned(), Bootstrap::TokenFromEnv)
        }
        None => {
            let t = auth::generate_token(ADMIN_TOKEN_PREFIX)?;
            (t.clone(), Bootstrap::NewToken(t))
        }
    };
    let record = AdminToken {
        id: auth::new_id(ADMIN_TOKEN_ID_PREFIX)?,
        name: "bootstrap".into(),
        created_at: now_millis(),
        revoked_at: None,
    };
    if let Err(e) = store.create_admin_token(&record, &auth::hash_token(&token)).await {
        // Another server on the same database, started at the same moment, made one first.
        if store.has_admin_tokens().await? {
            return Ok(Bootstrap::Existing);
        }
        return Err(e);
    }
    Ok(outcome)
}
