//! Starting worker processes: the host's python3 with a cleared environment, resource limits, a
//! seccomp filter against new processes and debugging, and — when bubblewrap is installed — a
//! private mount, PID, IPC, UTS and network namespace with a read-only system, no view of
//! agentvault's files, and no way out but the worker's egress socket ([`crate::egress`]).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};
use serde::Deserialize;
use tokio::process::{Child, Command};

/// Whether workers run inside bubblewrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxMode {
    /// The default: bubblewrap, and functions are refused when it is missing or does not work
    /// (the same as `Required`; the sandbox never turns itself off).
    Auto,
    /// bubblewrap or nothing: functions are refused when it cannot be used.
    Required,
    /// Never bubblewrap (limits, the seccomp filter and the cleared environment still apply),
    /// chosen explicitly by the operator.
    Off,
}

impl SandboxMode {
    pub fn parse(s: &str) -> Option<SandboxMode> {
        match s {
            "auto" => Some(SandboxMode::Auto),
            "bwrap" | "required" => Some(SandboxMode::Required),
            "off" | "none" => Some(SandboxMode::Off),
            _ => None,
        }
    }
}

/// Resource limits of one worker process.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Address space (RLIMIT_AS).
    pub memory_bytes: u64,
    /// CPU seconds over the worker's life (RLIMIT_CPU); workers are recycled well before.
    pub cpu_seconds: u64,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file a function may write (RLIMIT_FSIZE), and the size of its private /tmp.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 512 << 20, cpu_seconds: 120, open_files: 256, file_bytes: 16 << 20 }
    }
}

/// What the interpreter said about itself.
#[derive(Deserialize, Debug)]
struct PythonInfo {
    executable: String,
    real: String,
    version: Vec<u32>,
    paths: Vec<String>,
}

/// Starts workers. Built once, at server start.
pub struct Launcher {
    python: PathBuf,
    pub(crate) version: String,
    bwrap: Option<Vec<String>>,
    limits: Limits,
    filter: Vec<seccompiler::sock_filter>,
}

/// Directories of the host bound read-only into the sandbox (when they exist).
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/// Files and directories of /etc that Python, DNS and TLS need; the rest of /etc stays out.
const ETC: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/ssl",
];

/// How to make functions run when the sandbox cannot.
const ENABLE_FUNCTIONS: &str = "Functions run only inside the bubblewrap sandbox: install it \
(apt-get install bubblewrap) and restart, or start agentvault with --sandbox off \
(AGENTVAULT_SANDBOX=off) to run them unsandboxed, where they can read the server's files";

const PROBE: &str = "import json, os, sys\n\
print(json.dumps({'executable': sys.executable, 'real': os.path.realpath(sys.executable), \
'version': list(sys.version_info[:3]), \
'paths': sorted({p for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, \
os.path.dirname(sys.executable), os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))] + sys.path \
if p and os.path.isdir(p)})}))";

impl Launcher {
    /// Finds the interpreter and, unless `mode` is `Off`, a working bubblewrap. `hidden` are
    /// paths workers must never see (the data directory, the root key file).
    pub async fn detect(
        python: &str,
        mode: SandboxMode,
        hidden: &[PathBuf],
        limits: Limits,
    ) -> Result<Launcher, String> {
        // The interpreter is asked with the server's environment (a pyenv shim needs it); the
        // workers then run the real executable with an empty one.
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            Command::new(python).args(["-I", "-c", PROBE]).stdin(Stdio::null()).kill_on_drop(true).output(),
        )
        .await
        .map_err(|_| format!("{python} did not answer within 20 s"))?
        .map_err(|e| format!("cannot run {python}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{python} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let info: PythonInfo = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{python} gave an unexpected answer ({e}); is it CPython 3.10 or newer?"))?;
        if info.version.len() < 2 || (info.version[0], info.version[1]) < (3, 10) {
            return Err(format!("{python} is Python {:?}; functions need 3.10 or newer", info.version));
        }
        let version = info.version.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
        let filter = seccomp_filter()?;
        let mut launcher = Launcher { python: PathBuf::from(&info.executable), version, bwrap: None, limits, filter };
        if mode == SandboxMode::Off {
            return Ok(launcher);
        }
        // Fail closed: without a working bubblewrap a function could read the data directory and
        // the root key, so functions are refused until the operator installs it or says `off`.
        let bwrap = which("bwrap").ok_or_else(|| format!("bubblewrap (bwrap) is not installed. {ENABLE_FUNCTIONS}"))?;
        launcher.bwrap = Some(bwrap_args(&bwrap, &info, hidden, &launcher.limits));
        launcher.smoke_test().await.map_err(|e| format!("bubblewrap does not work here ({e}). {ENABLE_FUNCTIONS}"))?;
        Ok(launcher)
    }

    /// Whether workers run inside bubblewrap.
    pub fn sandboxed(&self) -> bool {
        self.bwrap.is_some()
    }

    async fn smoke_test(&self) -> Result<(), String> {
        let (mut cmd, filter_fd) = self.command(&["-c", "import json"])?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| e.to_string());
        drop(filter_fd);
        let out = tokio::time::timeout(Duration::from_secs(20), child?.wait_with_output())
            .await
            .map_err(|_| "no answer within 20 s".to_owned())?
            .map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
    }

    /// Starts a worker running `script`, with stdin and stdout as its channel. `egress` is the
    /// worker's socket to the egress proxy: bound into the sandbox at
    /// [`crate::egress::SANDBOX_SOCKET`], and named to the worker with the port its relay
    /// listens on (as arguments, so that nothing of agentvault's is in its environment).
    /// `ca_bundle` (with `egress`) is the CA bundle the worker trusts.
    pub fn spawn(&self, script: &str, egress: Option<&Path>, ca_bundle: Option<&Path>) -> std::io::Result<Child> {
        use crate::egress::{SANDBOX_CA_BUNDLE, SANDBOX_PROXY_PORT, SANDBOX_SOCKET};
        let mut args: Vec<String> = vec!["-c".into(), script.into()];
        let sandboxed = self.bwrap.is_some();
        match (egress, sandboxed) {
            (Some(_), true) => args.extend([SANDBOX_SOCKET.to_owned(), SANDBOX_PROXY_PORT.to_string()]),
            // Unsandboxed, the relay listens on a free port of the host's loopback; nothing
            // keeps the function from going around it.
            (Some(socket), false) => args.extend([socket.display().to_string(), "0".into()]),
            (None, _) => {}
        }
        let ca_bundle = ca_bundle.filter(|_| egress.is_some());
        if let Some(bundle) = ca_bundle {
            args.push(if sandboxed { SANDBOX_CA_BUNDLE.to_owned() } else { bundle.display().to_string() });
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (mut cmd, filter_fd) = self.command_with(&args, egress, ca_bundle).map_err(std::io::Error::other)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let child = cmd.spawn();
        // The child has its copy of the filter pipe (or failed to start); ours is closed now.
        drop(filter_fd);
        child
    }

    /// The command, and the read end of the seccomp filter pipe to close once it is spawned.
    fn command(&self, python_args: &[&str]) -> Result<(Command, Option<OwnedFd>), String> {
        self.command_with(python_args, None, None)
    }

    fn command_with(
        &self,
        python_args: &[&str],
        egress: Option<&Path>,
        ca_bundle: Option<&Path>,
    ) -> Result<(Command, Option<OwnedFd>), String> {
        // -I: ignore PYTHON* variables and the user's site-packages; -B: write no bytecode.
        let mut argv: Vec<String> = Vec::new();
        let seccomp = match &self.bwrap {
            Some(bwrap) => {
                argv.extend(bwrap.iter().cloned());
                if let Some(socket) = egress {
                    let host = socket.display().to_string();
                    argv.extend(["--bind", &host, crate::egress::SANDBOX_SOCKET].map(String::from));
                }
                if let Some(bundle) = ca_bundle {
                    let host = bundle.display().to_string();
                    argv.extend(["--ro-bind", &host, crate::egress::SANDBOX_CA_BUNDLE].map(String::from));
                }
                argv.extend(["--seccomp", "3", "--"].map(String::from));
                Some(filter_pipe(&self.filter)?)
            }
            None => None,
        };
        argv.push(self.python.display().to_string());
        argv.extend(["-I", "-B"].map(String::from));
        argv.extend(python_args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear().current_dir("/").kill_on_drop(true);
        if self.bwrap.is_none() {
            cmd.env("PATH", "/usr/bin:/bin").env("LANG", "C.UTF-8").env("HOME", "/nonexistent");
        }
        let limits = self.limits.clone();
        let filter = if self.bwrap.is_none() { Some(self.filter.clone()) } else { None };
        let seccomp_fd = seccomp.as_ref().map(|fd| fd.as_raw_fd());
        // SAFETY: the closure runs in the child between fork and exec. It only makes system
        // calls (setrlimit, prctl, dup2) on values prepared before the fork; it allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || child_setup(&limits, filter.as_deref(), seccomp_fd));
        }
        Ok((cmd, seccomp))
    }
}

/// The part of starting a worker that runs in the child process.
fn child_setup(
    limits: &Limits,
    filter: Option<&[seccompiler::sock_filter]>,
    seccomp_fd: Option<i32>,
) -> std::io::Result<()> {
    let set = |resource, value: u64| -> std::io::Result<()> {
        let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: setrlimit reads a live, initialised struct.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setrlimit(resource, &lim) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    };
    set(libc::RLIMIT_AS, limits.memory_bytes)?;
    set(libc::RLIMIT_CPU, limits.cpu_seconds)?;
    set(libc::RLIMIT_NOFILE, limits.open_files)?;
    set(libc::RLIMIT_FSIZE, limits.file_bytes)?;
    set(libc::RLIMIT_CORE, 0)?;
    #[allow(unsafe_code)]
    // SAFETY: plain system calls with integer arguments, and a pointer to a filter program
    // that outlives the call.
    unsafe {
        // A new session: the worker gets no controlling terminal and no signals of ours.
        libc::setsid();
        // Die with the server.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(fd) = seccomp_fd {
            // bubblewrap reads the filter from descriptor 3 (`--seccomp 3`); dup2 clears
            // CLOEXEC, except when the descriptor already is 3.
            let rc = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(filter) = filter {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
            if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Kernel interfaces a Python function never needs, denied in the spirit of container runtimes'
/// default profiles: new namespaces and mounts, io_uring (which bypasses this filter), the kernel
/// keyring, BPF, userfaultfd, perf events, loading kernels and modules, and reading or writing
/// other processes.
const DENIED_CALLS: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_userfaultfd,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
];

/// `clone` flags that make new namespaces.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The seccomp filter of workers: no new processes (fork, vfork, clone without CLONE_THREAD,
/// clone3 — which makes the C library fall back to clone, so threads still work), no clone into
/// new namespaces, and none of [`DENIED_CALLS`]. Such calls fail with ENOSYS. Arguments are
/// compared as 64-bit values under a mask, so high bits cannot smuggle a flag past a rule.
fn seccomp_filter() -> Result<Vec<seccompiler::sock_filter>, String> {
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    #[cfg(target_arch = "x86_64")]
    {
        rules.insert(libc::SYS_fork, vec![]);
        rules.insert(libc::SYS_vfork, vec![]);
    }
    for call in DENIED_CALLS {
        rules.insert(*call, vec![]);
    }
    // clone(flags, ...): refused unless it makes a thread, and whenever it asks for a namespace.
    let flags_masked = |mask: libc::c_int, value: libc::c_int| -> Result<SeccompRule, String> {
        let cond = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(mask as u64), value as u64)
            .map_err(|e| e.to_string())?;
        SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
    };
    let mut clone_rules = vec![flags_masked(libc::CLONE_THREAD, 0)?];
    for flag in NAMESPACE_FLAGS {
        clone_rules.push(flags_masked(*flag, *flag)?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)
        .map_err(|e| e.to_string())?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
    Ok(program)
}

/// A pipe holding the filter program, for bubblewrap's `--seccomp`.
fn filter_pipe(filter: &[seccompiler::sock_filter]) -> Result<OwnedFd, String> {
    let mut bytes = Vec::with_capacity(filter.len() * 8);
    for f in filter {
        bytes.extend_from_slice(&f.code.to_ne_bytes());
        bytes.push(f.jt);
        bytes.push(f.jf);
        bytes.extend_from_slice(&f.k.to_ne_bytes());
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into a live array; each is owned exactly once below.
    #[allow(unsafe_code)]
    let (read, write) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let mut file = std::fs::File::from(write);
    std::io::Write::write_all(&mut file, &bytes).map_err(|e| format!("writing the seccomp filter: {e}"))?;
    Ok(read)
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

fn under(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// bubblewrap's arguments, up to the interpreter.
fn bwrap_args(bwrap: &Path, info: &PythonInfo, hidden: &[PathBuf], limits: &Limits) -> Vec<String> {
    let mut args: Vec<String> = vec![bwrap.display().to_string()];
    let mut push = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));
    // --unshare-all includes the network: the worker's namespace has only a loopback interface.
    push(&["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
    push(&["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]);
    push(&["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"]);
    let mut bound: Vec<PathBuf> = Vec::new();
    for dir in SYSTEM_DIRS.iter().chain(ETC) {
        push(&["--ro-bind-try", dir, dir]);
        bound.push(PathBuf::from(dir));
    }
    let mut python_dirs: Vec<PathBuf> = info.paths.iter().map(PathBuf::from).collect();
    python_dirs.push(PathBuf::from(&info.real).parent().map(Path::to_path_buf).unwrap_or_default());
    python_dirs.sort();
    python_dirs.dedup();
    for dir in python_dirs {
        if dir.as_os_str().is_empty() || dir == Path::new("/") || bound.iter().any(|b| under(&dir, b)) {
            continue;
        }
        let d = dir.display().to_string();
        push(&["--ro-bind", &d, &d]);
        bound.push(dir);
    }
    // agentvault's own files are covered over wherever a bound directory would show them.
    for path in hidden {
        let Ok(path) = std::fs::canonicalize(path) else { continue };
        if !bound.iter().any(|b| under(&path, b)) {
            continue;
        }
        let p = path.display().to_string();
        if path.is_dir() {
            push(&["--tmpfs", &p]);
        } else {
            push(&["--ro-bind", "/dev/null", &p]);
        }
    }
    let size = limits.file_bytes.to_string();
    push(&["--proc", "/proc", "--dev", "/dev", "--size", &size, "--tmpfs", "/tmp", "--chdir", "/tmp"]);
    // The worker's egress socket and `--seccomp 3 --` follow, per worker (`Launcher::command_with`).
    args
}
