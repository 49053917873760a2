//! Test harness for end-to-end tests of the berth binary: a throwaway
//! `docker-registry` on 127.0.0.1, a per-test state root, and helpers to run
//! the real `berth` binary. Everything cleans up in `Drop`, so a failing
//! test leaves no processes or temp dirs behind.

pub mod cgroup;
pub mod containerd;
pub mod standalone;

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use berth_runtime::image::builder;

pub mod streaming;

/// The registry binary from Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A `docker-registry` serving plain HTTP on 127.0.0.1 with its own storage.
/// Dropping it kills the process and removes its directory.
pub struct Registry {
    // Dropped first: the process dies before its directory is removed.
    proc: Proc,
    addr: String,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` over HTTP/1.0; returns the status code.
pub fn http_status(addr: &str, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head = String::from_utf8_lossy(&buf);
    let status = head.split_whitespace().nth(1).context("empty HTTP response")?;
    Ok(status.parse()?)
}

/// `GET path` over HTTP/1.0; returns the whole response.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

impl Registry {
    /// Starts an anonymous registry; panics with the registry's log on failure.
    pub fn start() -> Registry {
        Self::try_start(None).expect("start docker-registry")
    }

    /// Starts a registry that requires HTTP basic auth with these credentials.
    pub fn start_with_auth(user: &str, pass: &str) -> Registry {
        Self::try_start(Some((user, pass))).expect("start docker-registry with auth")
    }

    pub fn try_start(auth: Option<(&str, &str)>) -> Result<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            bail!("{REGISTRY_BIN} is missing: install the docker-registry package (hack/setup.sh)");
        }
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir()?;
        let auth_yaml = match auth {
            Some((user, pass)) => {
                let hash = bcrypt::hash(pass, 4).context("bcrypt")?;
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
                format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", htpasswd.display())
            }
            None => String::new(),
        };
        let mut last_log = String::new();
        // A port can be taken between releasing it and the registry binding it: retry.
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n  secret: berth-test-secret\n{auth_yaml}",
                    dir.path().join("storage").display()
                ),
            )?;
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path)?;
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawn {REGISTRY_BIN}"))?;
            // From here on, Drop kills the child whatever happens.
            let mut proc = Proc(child);
            match wait_ready(&mut proc.0, &addr, if auth.is_some() { 401 } else { 200 }) {
                Ok(()) => {
                    let auth = auth.map(|(u, p)| (u.into(), p.into()));
                    return Ok(Registry { proc, addr, dir, auth });
                }
                Err(e) => {
                    drop(proc);
                    last_log = format!("{e:#}; log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
                }
            }
        }
        bail!("docker-registry did not start: {last_log}")
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The process id of the registry.
    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// The registry's temp dir (config, log, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The filesystem storage root: blobs live under
    /// `docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Path of the stored data of a blob (for tampering tests).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage_dir().join("docker/registry/v2/blobs/sha256").join(&hex[..2.min(hex.len())]).join(hex).join("data")
    }

    /// The credentials of an auth registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `ADDR/repo` — a reference prefix for this registry.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// The registry's log so far (warnings and the access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many `GET path` requests the registry answered with `status`,
    /// from its access log (e.g. `/v2/test/busybox/blobs/sha256:...`).
    pub fn count_requests(&self, method: &str, path: &str, status: u16) -> usize {
        let request = format!("\"{method} {path} HTTP/");
        let status = format!("\" {status} ");
        self.log().lines().filter(|l| l.contains(&request) && l.contains(&status)).count()
    }
}

/// A child process killed (by its pid) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // Ignore "already exited".
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `GET /v2/` until it answers `want` or the registry exits.
fn wait_ready(child: &mut Child, addr: &str, want: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("docker-registry exited with {status}");
        }
        match http_status(addr, "/v2/") {
            Ok(s) if s == want => return Ok(()),
            Ok(s) => bail!("GET /v2/ answered {s}, expected {want}"),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.context("registry not answering")),
        }
    }
}

/// Panics with a clear message unless running as root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (namespaces, mounts, cgroups): run it as root, e.g. `sudo -E cargo test -p berth-tests`");
    }
}

/// The built `berth` binary: `$BERTH_BIN`, else `$CARGO_TARGET_DIR/debug/berth`,
/// else `<workspace>/target/debug/berth`.
pub fn berth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/berth")
}

/// A per-test state directory for berth (`--root`), removed on drop.
pub struct TestRoot {
    dir: tempfile::TempDir,
}

impl Default for TestRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRoot {
    pub fn new() -> TestRoot {
        let dir = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("create test root");
        TestRoot { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `berth --root <root>`, ready for more args.
    pub fn command(&self) -> Command {
        let bin = berth_bin();
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build -p berth-kubelet --bin berth` or set BERTH_BIN",
            bin.display()
        );
        let mut c = Command::new(bin);
        c.arg("--root").arg(self.dir.path());
        c
    }

    /// Runs `berth --root <root> args...` and returns its output.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.command().args(args).stdin(Stdio::null()).output().expect("run berth")
    }

    /// Like [`TestRoot::berth`], panicking with stdout/stderr unless it succeeds.
    pub fn berth_ok(&self, args: &[&str]) -> Output {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Runs a future on a fresh current-thread runtime (for sync tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(f)
}

/// A `berth cri` server on its own socket, state root and config file;
/// killed (by pid) and cleaned up on drop.
pub struct CriServer {
    child: Child,
    pub root: TestRoot,
    pub socket: PathBuf,
    pub config: PathBuf,
    /// More `berth cri` arguments, kept for restarts.
    args: Vec<String>,
}

/// The network of [`CriServer::start`]: CNI's loopback plugin only, so
/// parallel tests share no bridge or addresses.
pub const LOOPBACK_CONFLIST: &str = r#"{"cniVersion":"1.0.0","name":"berth-test-lo","plugins":[{"type":"loopback"}]}"#;

/// The loopback-only network config of [`CriServer::start`].
fn loopback_config(root: &Path) -> String {
    let dir = root.join("net.d");
    std::fs::create_dir_all(&dir).expect("create net.d");
    std::fs::write(dir.join("10-loopback.conflist"), LOOPBACK_CONFLIST).expect("write loopback conflist");
    format!("[cni]\nconf_dir = {:?}\n", dir.display().to_string())
}

impl CriServer {
    /// A server whose pods get only a loopback interface (a CNI config of
    /// the loopback plugin in `<root>/net.d`).
    pub fn start() -> CriServer {
        Self::start_with_args(&[])
    }

    /// A loopback-network server with more `berth cri` arguments.
    pub fn start_with_args(args: &[&str]) -> CriServer {
        Self::start_with_config_and_args(loopback_config, args)
    }

    /// A server with the config file `config(root)` returns (TOML; `root`
    /// and `run_root` come from `--root`).
    pub fn start_with(config: impl FnOnce(&Path) -> String) -> CriServer {
        Self::start_with_config_and_args(config, &[])
    }

    fn start_with_config_and_args(config: impl FnOnce(&Path) -> String, args: &[&str]) -> CriServer {
        let root = TestRoot::new();
        let socket = root.path().join("berth.sock");
        let cfg = root.path().join("config.toml");
        std::fs::write(&cfg, config(root.path())).expect("write config.toml");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = Self::spawn(&root, &socket, &cfg, &args);
        CriServer { child, root, socket, config: cfg, args }
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again over the same state.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.root, &self.socket, &self.config, &self.args);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(root: &TestRoot, socket: &Path, config: &Path, args: &[String]) -> Child {
        let _ = std::fs::remove_file(socket);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(root.path().join("cri.log")).expect("cri log");
        let child = Command::new(berth_bin())
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(root.path())
            .args(["--log-level", "debug", "cri", "--socket"])
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start berth cri");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "berth cri did not create {}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// A gRPC channel to the server's socket.
    pub async fn channel(&self) -> tonic::transport::Channel {
        connect_unix(&self.socket).await.expect("connect to berth cri")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("cri.log")).unwrap_or_default()
    }
}

impl CriServer {
    /// Removes every pod sandbox and container through the API, so a test
    /// that fails halfway leaves no processes, mounts or cgroups.
    fn remove_everything(&self) {
        use cri_proto::v1 as cri;
        use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
        let _ = block_on(async {
            let mut rt = RuntimeServiceClient::new(self.channel().await);
            if let Ok(list) = rt.list_containers(cri::ListContainersRequest::default()).await {
                for c in list.into_inner().containers {
                    let _ = rt.remove_container(cri::RemoveContainerRequest { container_id: c.id }).await;
                }
            }
            if let Ok(list) = rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await {
                for p in list.into_inner().items {
                    let _ = rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p.id }).await;
                }
            }
            Ok::<(), ()>(())
        });
    }
}

impl Drop for CriServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.remove_everything();
        }
        // SIGTERM for a clean shutdown, then make sure it is gone.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gRPC channel to a CRI server on a unix socket.
pub async fn connect_unix(socket: &Path) -> Result<tonic::transport::Channel> {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to {}", socket.display()))
}

/// The busybox test image's name in [`CriServer::start_with_busybox`].
pub const CRI_IMAGE: &str = "cri/busybox:1";

/// A CRI image spec naming `image`.
pub fn image_spec(image: &str) -> Option<cri_proto::v1::ImageSpec> {
    Some(cri_proto::v1::ImageSpec { image: image.into(), ..Default::default() })
}

impl CriServer {
    /// A server with the busybox test image imported as [`CRI_IMAGE`].
    pub fn start_with_busybox() -> CriServer {
        Self::start_with_busybox_and(&[])
    }

    /// [`CriServer::start_with_busybox`] with more `berth cri` arguments.
    pub fn start_with_busybox_and(args: &[&str]) -> CriServer {
        let server = CriServer::start_with_args(args);
        server.import_busybox();
        server
    }

    /// Imports the busybox test image as [`CRI_IMAGE`].
    pub fn import_busybox(&self) {
        let layout = tempfile::tempdir().expect("temp dir");
        let img = builder::busybox_image().expect("busybox image");
        builder::write_oci_layout(layout.path(), &[(CRI_IMAGE, (&img).into())]).expect("oci layout");
        let out = self.root.berth(&["images", "import", layout.path().to_str().unwrap(), "--name", CRI_IMAGE]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// RunPodSandbox, CreateContainer and StartContainer; returns the sandbox
/// and container IDs.
pub async fn run_pod_with_container(
    rt: &mut cri_proto::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pod: &cri_proto::v1::PodSandboxConfig,
    ctr: &cri_proto::v1::ContainerConfig,
) -> (String, String) {
    use cri_proto::v1 as cri;
    let sid = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: String::new() })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let cid = rt
        .create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.clone(), config: Some(ctr.clone()), sandbox_config: Some(pod.clone()) })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.expect("StartContainer");
    (sid, cid)
}

/// Detaches a mount the test made when dropped.
pub struct MountGuard(pub PathBuf);

impl MountGuard {
    /// Bind-mounts `dir` onto itself with the propagation `flag` (MS_SHARED,
    /// MS_PRIVATE, ...), so the test controls how its mount propagates.
    pub fn bind_self(dir: &Path, flag: nix::mount::MsFlags) -> MountGuard {
        std::fs::create_dir_all(dir).expect("create mount point");
        nix::mount::mount(Some(dir), dir, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).expect("bind mount");
        let guard = MountGuard(dir.to_path_buf());
        nix::mount::mount(None::<&str>, dir, None::<&str>, flag, None::<&str>).expect("set propagation");
        guard
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
