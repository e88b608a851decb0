//! The egress proxy: the only way out of a function's sandbox (docs/architecture.md, "Network").
//!
//! Each worker has a Unix socket of its own ([`agentvault_runtime::egress`]); every connection
//! on it is served here as an HTTP/1 proxy: `CONNECT host:port` tunnels (HTTPS) and absolute-form
//! `http://` requests. The agent is known by the socket, never from what the function sends.
//! The proxy resolves the host itself, checks every address it resolved to ([`policy`]) and
//! connects to an address it checked, so a name cannot resolve to a public address for the
//! check and a private one for the connection. A refusal is a `403` whose status line and body
//! say why. Every connection is audited (`egress.connect`) and counted.

pub mod inject;
pub mod policy;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Actor, EgressPolicy};
use agentvault_runtime::{EgressHandler, WorkerIdentity};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use self::policy::{OperatorAllow, Refusal, Rules};
use crate::{AppState, Shared, now_millis};

/// How long resolving a host and connecting to it may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, hyper::Error>;

/// (workspace, secret id) -> the hosts an injected-only secret's value may be sent to.
type InjectedSecrets = std::collections::HashMap<(String, String), Arc<Vec<String>>>;

/// The operator's egress settings and the addresses agentvault listens on.
#[derive(Default)]
pub struct Egress {
    allow: Vec<OperatorAllow>,
    own: OnceLock<Vec<SocketAddr>>,
    /// Injected-only secrets: (workspace, secret id) -> the hosts their values may be sent to.
    injected: std::sync::RwLock<InjectedSecrets>,
    /// Whether `injected` holds any (set under its write lock): an agent read of a server with
    /// none takes no lock for it.
    any_injected: AtomicBool,
}

impl Egress {
    pub fn new(allow: Vec<OperatorAllow>) -> Egress {
        Egress { allow, own: OnceLock::new(), injected: Default::default(), any_injected: AtomicBool::new(false) }
    }

    /// The hosts of an injected-only secret; None when functions may read it.
    pub fn injection(&self, workspace_id: &str, secret_id: &str) -> Option<Arc<Vec<String>>> {
        if !self.any_injected.load(Ordering::SeqCst) {
            return None;
        }
        self.injected.read().ok()?.get(&(workspace_id.to_owned(), secret_id.to_owned())).cloned()
    }

    /// Whether an injected-only secret of the workspace may be sent to `host:port`: then the
    /// proxy terminates TLS to that host, so that a connection opened before (or without) a
    /// placeholder still gets it swapped in a later request.
    pub fn injects_to(&self, workspace_id: &str, host: &str, port: u16) -> bool {
        let Ok(map) = self.injected.read() else { return false };
        map.iter().filter(|((ws, _), _)| ws == workspace_id).any(|(_, hosts)| {
            hosts.iter().filter_map(|h| policy::HostRule::parse(h).ok()).any(|r| r.matches(host, port))
        })
    }

    pub fn set_injection(&self, workspace_id: &str, secret_id: &str, hosts: Option<Vec<String>>) {
        if let Ok(mut m) = self.injected.write() {
            let key = (workspace_id.to_owned(), secret_id.to_owned());
            match hosts {
                Some(h) => m.insert(key, Arc::new(h)),
                None => m.remove(&key),
            };
            self.any_injected.store(!m.is_empty(), Ordering::SeqCst);
        }
    }

    /// Replaces every injected-only setting with `all` (`(workspace, secret id, hosts)`), as the
    /// database holds them: another server may have changed one.
    pub fn replace_injections(&self, all: Vec<(String, String, Vec<String>)>) {
        let fresh = all.into_iter().map(|(ws, secret, hosts)| ((ws, secret), Arc::new(hosts))).collect();
        if let Ok(mut m) = self.injected.write() {
            *m = fresh;
            self.any_injected.store(!m.is_empty(), Ordering::SeqCst);
        }
    }

    /// Where the server listens (set once, when it starts listening).
    pub fn set_listening(&self, addrs: Vec<SocketAddr>) {
        let _ = self.own.set(addrs);
    }

    fn rules(&self) -> Rules {
        Rules { allow: self.allow.clone(), own: self.own.get().cloned().unwrap_or_default() }
    }
}

/// Serves the workers' sockets. Holds the server's state weakly: the runtime it is set on
/// belongs to that state.
pub struct EgressProxy {
    st: Weak<Shared>,
}

impl EgressProxy {
    pub fn new(st: &AppState) -> EgressProxy {
        EgressProxy { st: Arc::downgrade(&st.0) }
    }
}

#[async_trait::async_trait]
impl EgressHandler for EgressProxy {
    async fn serve(&self, conn: TcpStream, worker: Arc<WorkerIdentity>) {
        let Some(st) = self.st.upgrade() else { return };
        let ctx = Arc::new(Conn { st: AppState(st), worker, upstream: Mutex::new(None) });
        let service = hyper::service::service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(Conn::handle(ctx, req).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(conn), service)
            .with_upgrades()
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "egress connection ended");
        }
    }
}

/// One connection from a worker.
struct Conn {
    st: AppState,
    worker: Arc<WorkerIdentity>,
    /// The upstream connection of plain-HTTP requests, kept for the next request to the same
    /// host and port.
    upstream: Mutex<Option<(String, u16, hyper::client::conn::http1::SendRequest<Incoming>)>>,
}

impl Conn {
    async fn handle(this: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
        if req.method() == Method::CONNECT {
            return Conn::connect(this, req).await;
        }
        this.forward(req).await
    }

    /// The injections of the invocation running in the worker now.
    fn injections(&self) -> Vec<Arc<inject::Injection>> {
        self.worker.current().map(|inv| self.st.injections.of(&inv.invocation_id)).unwrap_or_default()
    }

    /// `CONNECT host:port`: a tunnel, never decrypted — unless a credential may be injected toward
    /// that host: then the proxy terminates TLS with its own CA's certificate.
    async fn connect(this: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
        let Some((host, port)) = req.uri().authority().and_then(|a| policy::authority(a.as_str(), 443)) else {
            return this.refused("?", 0, bad_request("CONNECT needs a host:port"));
        };
        let tcp = match this.open(&host, port).await {
            Ok(tcp) => tcp,
            Err(resp) => return resp,
        };
        let intercept = this.st.egress_tls.clone().filter(|_| {
            this.injections().iter().any(|i| i.allows(&host, port))
                || this.st.egress.injects_to(&this.worker.workspace_id, &host, port)
        });
        if let Some(tls) = intercept {
            let server = match tls.server_config(&host) {
                Ok(c) => c,
                Err(e) => return gateway_error(&format!("cannot present a certificate for {host}: {}", e.message)),
            };
            tokio::spawn(async move {
                let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
                this.intercept(upgraded, server, tls, tcp, host, port).await;
            });
            return Response::new(empty());
        }
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let mut client = TokioIo::new(upgraded);
            let mut tcp = tcp;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut tcp).await;
        });
        Response::new(empty())
    }

    /// An absolute-form `http://` request: sent on to the host over a connection of the proxy's.
    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let uri = req.uri().clone();
        if uri.scheme_str() != Some("http") {
            return self.refused(
                "?",
                0,
                bad_request(
                    "send an absolute http:// URL to this proxy, and tunnel https:// with CONNECT (HTTPS_PROXY)",
                ),
            );
        }
        let Some((host, port)) = uri.authority().and_then(|a| policy::authority(a.as_str(), 80)) else {
            return self.refused("?", 0, bad_request("the URL has no valid host"));
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(origin_form) = path.parse::<hyper::Uri>() else {
            return self.refused(&host, port, bad_request("the URL's path is not valid"));
        };
        *req.uri_mut() = origin_form;
        let headers = req.headers_mut();
        for h in ["proxy-connection", "proxy-authorization", "keep-alive"] {
            headers.remove(h);
        }
        // The Host header names the host the proxy connects to, whatever the function wrote.
        if let Some(authority) = uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(header::HOST, v);
        }
        // Values are sent only over TLS: a plain-HTTP request that carries a placeholder is
        // refused, whatever its host.
        let injections = self.injections();
        let mut probe = req.headers().clone();
        let found = inject::swap_headers(&mut probe, &injections, &host, port);
        if let Some((secret, header)) = found.refused.or_else(|| found.injected.into_iter().next()) {
            self.record_injection(&secret, &header, &host, port, Outcome::Denied);
            let r = Refusal {
                code: "injection_host",
                message: format!(
                    "the request carries a placeholder of secret '{secret}' (in {header}) over plain HTTP; \
                     agentvault sends a secret's value only over HTTPS to the secret's hosts"
                ),
            };
            return self.refused(&host, port, r);
        }
        let reused = self.upstream.lock().ok().and_then(|mut u| match u.take() {
            Some((h, p, sender)) if h == host && p == port && sender.is_ready() => Some(sender),
            _ => None,
        });
        let mut sender = match reused {
            Some(s) => {
                // The agent's policy may have changed since the connection was opened.
                if let Err(resp) = self.recheck(&host, port).await {
                    return resp;
                }
                s
            }
            None => {
                let tcp = match self.open(&host, port).await {
                    Ok(tcp) => tcp,
                    Err(resp) => return resp,
                };
                match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
                    Ok((sender, conn)) => {
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        sender
                    }
                    Err(e) => return gateway_error(&format!("talking HTTP to {host}:{port} failed: {e}")),
                }
            }
        };
        match sender.send_request(req).await {
            Ok(resp) => {
                if let Ok(mut u) = self.upstream.lock() {
                    *u = Some((host, port, sender));
                }
                resp.map(BodyExt::boxed)
            }
            Err(e) => gateway_error(&format!("{host}:{port} did not answer: {e}")),
        }
    }

    /// Serves the function's requests inside an intercepted tunnel: swaps placeholders for
    /// values, and sends each request on over the proxy's own verified TLS connection.
    async fn intercept(
        self: Arc<Self>,
        upgraded: hyper::upgrade::Upgraded,
        server: Arc<rustls::ServerConfig>,
        tls: Arc<inject::EgressTls>,
        tcp: TcpStream,
        host: String,
        port: u16,
    ) {
        let Ok(client_side) = tokio_rustls::TlsAcceptor::from(server).accept(TokioIo::new(upgraded)).await else {
            return;
        };
        let upstream = match rustls::pki_types::ServerName::try_from(host.clone()) {
            Ok(name) => {
                tokio_rustls::TlsConnector::from(tls.client.clone()).connect(name, tcp).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let sender = match upstream {
            Ok(stream) => match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok((sender, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(sender)
                }
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e),
        };
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        let this = self.clone();
        // What the requests inside the tunnel say in Host: the host the tunnel goes to.
        let authority = match (host.contains(':'), port) {
            (true, 443) => format!("[{host}]"),
            (true, p) => format!("[{host}]:{p}"),
            (false, 443) => host.clone(),
            (false, p) => format!("{host}:{p}"),
        };
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let (this, sender, host, authority) = (this.clone(), sender.clone(), host.clone(), authority.clone());
            async move {
                // Origin-form, the tunnel's host in Host, no proxy headers: the request goes to
                // the host the tunnel was opened (and checked) for, whatever it says.
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                if let Ok(uri) = path.parse::<hyper::Uri>() {
                    *req.uri_mut() = uri;
                }
                let headers = req.headers_mut();
                for h in ["proxy-connection", "proxy-authorization"] {
                    headers.remove(h);
                }
                if let Ok(v) = HeaderValue::from_str(&authority) {
                    headers.insert(header::HOST, v);
                }
                if let Some(resp) = this.inject(req.headers_mut(), &host, port) {
                    return Ok::<_, Infallible>(resp);
                }
                let mut sender = sender.lock().await;
                let resp = match &mut *sender {
                    Ok(s) => match s.send_request(req).await {
                        Ok(resp) => resp.map(BodyExt::boxed),
                        Err(e) => gateway_error(&format!("{host}:{port} did not answer: {e}")),
                    },
                    Err(e) => gateway_error(&format!("TLS to {host}:{port} failed: {e}")),
                };
                Ok(resp)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client_side), service).await;
    }

    /// Swaps the invocation's placeholders for values in a request to `host:port`, auditing each
    /// injection; refuses a request that carries a placeholder the host may not receive.
    /// Returns the refusal to answer with, if any.
    fn inject(&self, headers: &mut hyper::HeaderMap, host: &str, port: u16) -> Option<Response<Body>> {
        let injections = self.injections();
        let swapped = inject::swap_headers(headers, &injections, host, port);
        for (secret, header) in &swapped.injected {
            self.record_injection(secret, header, host, port, Outcome::Success);
        }
        if let Some((secret, header)) = swapped.refused {
            self.record_injection(&secret, &header, host, port, Outcome::Denied);
            let r = Refusal {
                code: "injection_host",
                message: format!(
                    "the request carries a placeholder of secret '{secret}' (in {header}), which may not be sent to \
                     {host}:{port}; it is sent only to the secret's hosts"
                ),
            };
            return Some(self.refused(host, port, r));
        }
        None
    }

    fn record_injection(&self, secret: &str, header: &str, host: &str, port: u16, outcome: Outcome) {
        let inv = self.worker.current();
        let mut detail = String::new();
        if let Some(inv) = &inv {
            detail.push_str(&format!("function={} invocation={} ", inv.function, inv.invocation_id));
        }
        detail.push_str(&format!("host={} port={port} header={header}", host.escape_default()));
        let mut event = AuditEvent::new(
            now_millis(),
            &self.worker.workspace_id,
            Actor::Agent(self.worker.agent_id.clone()),
            Action::EgressInject,
            outcome,
        )
        .agent(&self.worker.agent_id)
        .detail(detail);
        if agentvault_core::validate::secret_name(secret).is_ok() {
            event = event.secret(secret);
        }
        if let Some(inv) = &inv {
            event = event.target(&inv.invocation_id);
        }
        self.st.audit.append_nowait(event);
        self.st.metrics.egress_injection(if outcome == Outcome::Success { "injected" } else { "refused" });
    }

    async fn policy(&self) -> std::result::Result<EgressPolicy, Refusal> {
        match self.st.store.get_egress_policy(&self.worker.workspace_id, &self.worker.agent_id).await {
            Ok(p) => Ok(p.unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, agent = %self.worker.agent_id, "reading an agent's egress policy failed");
                Err(Refusal {
                    code: "no_network",
                    message: "the agent's egress policy could not be read; try again".into(),
                })
            }
        }
    }

    async fn recheck(&self, host: &str, port: u16) -> std::result::Result<(), Response<Body>> {
        let rules = self.st.egress.rules();
        let policy = self.policy().await.map_err(|r| self.refused(host, port, r))?;
        rules.check_host(&policy, host, port).map_err(|r| self.refused(host, port, r))
    }

    /// Checks the policy, resolves `host`, checks every address, and connects to one of them.
    async fn open(&self, host: &str, port: u16) -> std::result::Result<TcpStream, Response<Body>> {
        let rules = self.st.egress.rules();
        let policy = self.policy().await.map_err(|r| self.refused(host, port, r))?;
        rules.check_host(&policy, host, port).map_err(|r| self.refused(host, port, r))?;
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(_)) | Err(_) => {
                    let r = Refusal { code: "resolve", message: format!("{host} could not be resolved") };
                    return Err(self.refused(host, port, r));
                }
            },
        };
        rules.check_addresses(&policy, host, port, &addrs).map_err(|r| self.refused(host, port, r))?;
        let mut last = String::from("no address");
        for addr in &addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    self.record(host, port, Some(*addr), Outcome::Success, None);
                    return Ok(tcp);
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        self.record(host, port, None, Outcome::Failed, Some("connect_failed"));
        Err(gateway_error(&format!("connecting to {host}:{port} failed: {last}")))
    }

    fn refused(&self, host: &str, port: u16, r: Refusal) -> Response<Body> {
        self.record(host, port, None, Outcome::Denied, Some(r.code));
        if let Some(inv) = self.worker.current() {
            self.st.injections.refused(&inv.invocation_id, format!("agentvault egress refused: {}", r.message));
        }
        self.st.metrics.egress_refusal(r.code);
        refusal_response(&r)
    }

    /// The audit record and the counters of one connection.
    fn record(&self, host: &str, port: u16, addr: Option<SocketAddr>, outcome: Outcome, reason: Option<&str>) {
        let inv = self.worker.current();
        let mut detail = String::with_capacity(160);
        if let Some(inv) = &inv {
            detail.push_str(&format!(
                "function={} invocation={} conversation={} ",
                inv.function,
                inv.invocation_id,
                inv.conversation_id.escape_default()
            ));
        }
        detail.push_str(&format!("host={} port={port}", host.escape_default()));
        if let Some(a) = addr {
            detail.push_str(&format!(" address={a}"));
        }
        if let Some(r) = reason {
            detail.push_str(&format!(" reason={r}"));
        }
        let mut event = AuditEvent::new(
            now_millis(),
            &self.worker.workspace_id,
            Actor::Agent(self.worker.agent_id.clone()),
            Action::EgressConnect,
            outcome,
        )
        .agent(&self.worker.agent_id)
        .detail(detail);
        if let Some(inv) = &inv {
            event = event.target(&inv.invocation_id);
        }
        self.st.audit.append_nowait(event);
        self.st.metrics.egress_connection(match outcome {
            Outcome::Success => "allowed",
            Outcome::Denied => "refused",
            _ => "failed",
        });
    }
}

fn bad_request(message: &str) -> Refusal {
    Refusal { code: "bad_request", message: message.to_owned() }
}

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

fn json_error(status: StatusCode, code: &str, message: &str, reason: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The status line carries the reason too: it is what a client shows for a refused CONNECT
    // (requests: "ProxyError ... Tunnel connection failed: 403 ...").
    let phrase: String = reason.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if let Ok(p) = hyper::ext::ReasonPhrase::try_from(phrase) {
        resp.extensions_mut().insert(p);
    }
    resp
}

fn refusal_response(r: &Refusal) -> Response<Body> {
    let message = format!("agentvault egress refused: {}", r.message);
    json_error(StatusCode::FORBIDDEN, "egress_refused", &message, &format!("Forbidden ({message})"))
}

fn gateway_error(message: &str) -> Response<Body> {
    let message = format!("agentvault egress: {message}");
    json_error(StatusCode::BAD_GATEWAY, "egress_failed", &message, &format!("Bad Gateway ({message})"))
}
