//! The worker's only way out: one Unix socket per worker, bound into its sandbox, through which
//! the server's egress proxy gets the connections it serves ([`EgressHandler`]).
//!
//! Inside the sandbox the worker has a network namespace of its own with nothing but a loopback
//! interface; `worker.py` listens on that loopback (and sets `HTTP_PROXY`/`HTTPS_PROXY` to it),
//! and hands each connection it accepts to the server over the socket (`SCM_RIGHTS`), so that
//! the proxy reads and writes the function's connection itself, with no copy in between. The
//! proxy learns which agent (and worker) a connection comes from by the socket it arrived on,
//! never from anything the function sends.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixListener, UnixStream};

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

/// Serves the connections a worker's function opens to its proxy: the egress proxy.
#[async_trait::async_trait]
pub trait EgressHandler: Send + Sync + 'static {
    async fn serve(&self, conn: TcpStream, worker: Arc<WorkerIdentity>);
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
                tokio::spawn(async move {
                    // One connection of the function's, handed over as a descriptor.
                    let Ok(Some(tcp)) = receive_connection(&conn).await else { return };
                    drop(conn);
                    handler.serve(tcp, id).await;
                });
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

/// Receives the one descriptor a worker sends on `conn` and checks that it is a TCP stream
/// socket; None when the worker sent none or something else (it is closed).
async fn receive_connection(conn: &UnixStream) -> std::io::Result<Option<TcpStream>> {
    let fd = loop {
        conn.readable().await?;
        match conn.try_io(Interest::READABLE, || receive_fd(conn.as_raw_fd())) {
            Ok(fd) => break fd,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    let Some(fd) = fd else { return Ok(None) };
    if !is_tcp_stream(fd.as_raw_fd()) {
        return Ok(None);
    }
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    let _ = std.set_nodelay(true);
    TcpStream::from_std(std).map(Some)
}

/// `recvmsg` with room for one descriptor (more are closed by the kernel).
fn receive_fd(sock: RawFd) -> std::io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // Aligned room for one cmsghdr carrying one int.
    let mut space = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer below points into live locals that outlive the
    // call, with the lengths given; CMSG_* only compute offsets within `space`.
    #[allow(unsafe_code)]
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Ok(None);
        }
        let fd: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// Whether `fd` is a connected-or-not TCP stream socket (IPv4 or IPv6).
fn is_tcp_stream(fd: RawFd) -> bool {
    let get = |opt: libc::c_int| -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a live c_int.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len) };
        (rc == 0).then_some(v)
    };
    get(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && matches!(get(libc::SO_DOMAIN), Some(libc::AF_INET) | Some(libc::AF_INET6))
        && get(libc::SO_ACCEPTCONN) == Some(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_stream_sockets_are_taken_as_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served, _) = listener.accept().unwrap();
        assert!(is_tcp_stream(client.as_raw_fd()) && is_tcp_stream(served.as_raw_fd()));
        assert!(!is_tcp_stream(listener.as_raw_fd()), "a listening socket is not a connection");
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_tcp_stream(file.as_raw_fd()));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!is_tcp_stream(a.as_raw_fd()));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!is_tcp_stream(udp.as_raw_fd()));
    }

    #[tokio::test]
    async fn a_connection_handed_over_is_received_and_anything_else_is_not() {
        let dir = SocketDir::create().unwrap();
        let path = dir.0.join("t.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (served, _) = tcp.accept().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        for (fd, expected) in [(served.as_raw_fd(), true), (file.as_raw_fd(), false)] {
            let sender = std::os::unix::net::UnixStream::connect(&path).unwrap();
            send_fd(sender.as_raw_fd(), fd);
            let (conn, _) = listener.accept().await.unwrap();
            assert_eq!(receive_connection(&conn).await.unwrap().is_some(), expected);
        }
        // A worker that sends no descriptor hands over nothing.
        let sender = std::os::unix::net::UnixStream::connect(&path).unwrap();
        std::io::Write::write_all(&mut &sender, b"c").unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        assert!(receive_connection(&conn).await.unwrap().is_none());
    }

    fn send_fd(sock: RawFd, fd: RawFd) {
        let mut byte = [b'c'];
        let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
        let mut space = [0u64; 8];
        #[allow(unsafe_code)]
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), fd);
            assert!(libc::sendmsg(sock, &msg, 0) >= 0);
        }
    }
}
