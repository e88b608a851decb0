//! The worker's only way out: one Unix socket per worker, bound into its sandbox, whose
//! connections the server's egress proxy serves ([`EgressHandler`]).
//!
//! Inside the sandbox the worker has a network namespace of its own with nothing but a loopback
//! interface; `worker.py` listens on that loopback and relays each connection to the socket, and
//! sets `HTTP_PROXY`/`HTTPS_PROXY` to it. The proxy learns which agent (and worker) a connection
//! comes from by the socket it arrived on, never from anything the function sends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::{UnixListener, UnixStream};

/// Where the worker's socket appears inside the sandbox.
pub const SANDBOX_SOCKET: &str = "/run/agentvault/egress.sock";
/// Where the CA bundle workers trust appears inside the sandbox.
pub const SANDBOX_CA_BUNDLE: &str = "/run/agentvault/ca.pem";
/// The port the worker's relay listens on, on the sandbox's private loopback.
pub const SANDBOX_PROXY_PORT: u16 = 3128;

/// The invocation a worker is running now.
#[derive(Debug, Clone)]
pub struct InvocationTag {
    pub invocation_id: String,
    pub function: String,
    pub conversation_id: String,
}

/// Who a connection on a worker's socket belongs to: set by the runtime, never by the worker.
#[derive(Debug)]
pub struct WorkerIdentity {
    pub workspace_id: String,
    pub agent_id: String,
    /// The worker's place in the order workers were started.
    pub worker: u64,
    current: Mutex<Option<Arc<InvocationTag>>>,
}

impl WorkerIdentity {
    pub fn new(workspace_id: &str, agent_id: &str, worker: u64) -> WorkerIdentity {
        WorkerIdentity {
            workspace_id: workspace_id.to_owned(),
            agent_id: agent_id.to_owned(),
            worker,
            current: Mutex::new(None),
        }
    }

    /// The invocation running in the worker now (None between invocations: whatever a function
    /// left running in the background).
    pub fn current(&self) -> Option<Arc<InvocationTag>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    pub(crate) fn set_current(&self, tag: Option<InvocationTag>) {
        if let Ok(mut c) = self.current.lock() {
            *c = tag.map(Arc::new);
        }
    }
}

/// Serves the connections a worker opens on its socket: the egress proxy.
#[async_trait::async_trait]
pub trait EgressHandler: Send + Sync + 'static {
    async fn serve(&self, conn: UnixStream, worker: Arc<WorkerIdentity>);
}

/// A worker's socket: listened on while the worker lives, removed when it goes.
pub(crate) struct WorkerSocket {
    pub(crate) path: PathBuf,
    pub(crate) identity: Arc<WorkerIdentity>,
    accept: tokio::task::JoinHandle<()>,
}

impl WorkerSocket {
    pub(crate) fn open(
        dir: &Path,
        identity: WorkerIdentity,
        handler: Arc<dyn EgressHandler>,
    ) -> std::io::Result<WorkerSocket> {
        let nonce = u64::from_ne_bytes(random8());
        let path = dir.join(format!("w{}-{nonce:016x}.sock", identity.worker));
        let listener = UnixListener::bind(&path)?;
        let identity = Arc::new(identity);
        let id = identity.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    // Out of descriptors, most likely: wait instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let handler = handler.clone();
                let id = id.clone();
                tokio::spawn(async move { handler.serve(conn, id).await });
            }
        });
        Ok(WorkerSocket { path, identity, accept })
    }
}

impl Drop for WorkerSocket {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A private directory for the workers' sockets (mode 0700), removed with the runtime.
pub(crate) struct SocketDir(pub(crate) PathBuf);

impl SocketDir {
    pub(crate) fn create() -> std::io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        remove_stale(&std::env::temp_dir());
        let nonce = u64::from_ne_bytes(random8());
        // Short: a Unix socket's path is at most 107 bytes.
        let dir = std::env::temp_dir().join(format!("agentvault-egress-{}-{nonce:016x}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(SocketDir(dir))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the socket directories of agentvault processes that no longer run (a server killed
/// without a chance to clean up), if they are ours.
fn remove_stale(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    // SAFETY: getuid has no preconditions.
    #[allow(unsafe_code)]
    let uid = unsafe { libc::getuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("agentvault-egress-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        if !meta.is_dir() || meta.uid() != uid || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

fn random8() -> [u8; 8] {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into a live 8-byte buffer.
    #[allow(unsafe_code)]
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // Only uniqueness matters here (the directory is private); fall back to the clock.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.as_nanos() as u64).to_ne_bytes();
    }
    b
}

/// Writes the bundle workers trust: the system's roots and `ca_pem`. Returns its path.
pub(crate) fn write_ca_bundle(dir: &Path, ca_pem: &str) -> std::io::Result<PathBuf> {
    let system = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];
    let mut bundle = system.iter().find_map(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    let path = dir.join("ca-bundle.pem");
    std::fs::write(&path, bundle)?;
    Ok(path)
}
