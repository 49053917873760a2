//! CNI networking end to end: a real `berth cri` running Debian's CNI
//! plugins (/usr/lib/cni) for pods of the busybox test image.
//!
//! Every test claims its own network: it creates the bridge `bcni<N>`
//! itself (creation fails if another test holds it) for the subnet
//! 10.201.N.0/24, and adds an `unreachable` route for that subnet with a
//! high metric, so traffic to pod addresses can only ever go to the test's
//! bridge. The server's default network uses that bridge and subnet.
//! Traffic goes only to 127.0.0.1 and to pod addresses. Drop removes the
//! pods (through the server), the bridge, the guard route, and any iptables
//! rule that mentions the subnet or a sandbox of the test.

use berth_tests::{block_on, http_status, image_spec, require_root, CriServer, CRI_IMAGE};
use cri_proto::v1 as cri;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

type Rt = RuntimeServiceClient<tonic::transport::Channel>;

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn ip(args: &[&str]) -> String {
    let (ok, out) = run("ip", args);
    assert!(ok, "ip {args:?}: {out}");
    out
}

/// The NAT and filter rules, as `iptables -S` prints them.
fn iptables_rules() -> String {
    ["nat", "filter"].iter().map(|t| run("iptables", &["-w", "-t", t, "-S"]).1).collect::<Vec<_>>().join("\n")
}

/// A claimed bridge and subnet with a guard route.
struct TestNet {
    bridge: String,
    cidr: String,
    /// `10.201.N.`
    prefix: String,
    /// Sandbox IDs whose leftovers Drop sweeps.
    ids: std::sync::Mutex<Vec<String>>,
}

/// The bridge plugin turns net.ipv4.ip_forward on (isGateway). The first
/// test bridge saves its value here and the last one puts it back, under
/// [`claim_lock`]. (The tests' traffic is never forwarded: it stays on one
/// bridge.)
const FORWARD_SAVED: &str = "/run/berth-cnitest.ip_forward";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Serialises claiming and releasing test networks between test processes.
fn claim_lock() -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/run/berth-cnitest.lock").expect("open the test network lock");
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).expect("lock the test network lock")
}

fn test_bridges() -> usize {
    std::fs::read_dir("/sys/class/net").map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("bcni")).count()).unwrap_or(0)
}

impl TestNet {
    fn claim() -> TestNet {
        let _lock = claim_lock();
        if test_bridges() == 0 && !Path::new(FORWARD_SAVED).exists() {
            std::fs::write(FORWARD_SAVED, std::fs::read_to_string(IP_FORWARD).unwrap()).unwrap();
        }
        let start = std::process::id() as usize;
        for k in 0..250 {
            let n = 1 + (start + k * 7) % 250;
            let prefix = format!("10.201.{n}.");
            let cidr = format!("10.201.{n}.0/24");
            // Someone else's addresses or routes in the subnet: not ours.
            if ip(&["-4", "-o", "addr"]).contains(&prefix) || ip(&["-4", "route", "show", "match", &format!("{prefix}1")]).lines().any(|l| !l.starts_with("default")) {
                continue;
            }
            let bridge = format!("bcni{n}");
            if !run("ip", &["link", "add", &bridge, "type", "bridge"]).0 {
                continue;
            }
            ip(&["route", "add", "unreachable", &cidr, "metric", "4242"]);
            return TestNet { bridge, cidr, prefix, ids: Default::default() };
        }
        panic!("no free test subnet in 10.201.0.0/16");
    }

    /// Server config: the default network on this bridge and subnet (an
    /// empty conf dir), or `conflist` as the only network configuration.
    fn config(&self, root: &Path, conflist: Option<&str>) -> String {
        let dir = root.join("net.d");
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(c) = conflist {
            std::fs::write(dir.join("10-test.conflist"), c).unwrap();
        }
        format!("[cni]\nconf_dir = {:?}\nbridge = {:?}\npod_cidr = {:?}\n", dir.display().to_string(), self.bridge, self.cidr)
    }

    fn remember(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    /// Panics unless traffic to `addr` is routed to this test's bridge.
    fn assert_routed_here(&self, addr: &str) {
        assert!(addr.starts_with(&self.prefix), "{addr} is not in {}", self.cidr);
        let r = ip(&["route", "get", addr]);
        assert!(r.contains(&format!("dev {} ", self.bridge)), "{addr} is not routed to {}: {r}", self.bridge);
    }

    /// Veths on the bridge.
    fn ports(&self) -> Vec<String> {
        std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge)).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    }

    /// Rules mentioning the subnet or one of the test's sandboxes.
    fn our_rules(&self) -> Vec<String> {
        let ids = self.ids.lock().unwrap().clone();
        iptables_rules().lines().filter(|l| l.contains(&self.prefix) || ids.iter().any(|id| l.contains(id.as_str()))).map(str::to_string).collect()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Rules left by a failed test, and the per-pod chains they jump to.
        for table in ["nat", "filter"] {
            let text = run("iptables", &["-w", "-t", table, "-S"]).1;
            let ids = self.ids.lock().unwrap().clone();
            let mut chains = Vec::new();
            for l in text.lines().filter(|l| l.starts_with("-A ") && (l.contains(&self.prefix) || ids.iter().any(|id| l.contains(id.as_str())))) {
                if let Some(target) = l.split(" -j ").nth(1).map(|t| t.split_whitespace().next().unwrap_or_default().to_string()) {
                    if target.starts_with("CNI-") && !target.starts_with("CNI-HOSTPORT-") {
                        chains.push(target);
                    }
                }
                let _ = Command::new("sh").arg("-c").arg(format!("iptables -w -t {table} -D {}", &l[3..])).status();
            }
            for c in chains {
                let _ = Command::new("iptables").args(["-w", "-t", table, "-F", &c]).status();
                let _ = Command::new("iptables").args(["-w", "-t", table, "-X", &c]).status();
            }
        }
        let _lock = claim_lock();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        let _ = Command::new("ip").args(["route", "del", "unreachable", &self.cidr, "metric", "4242"]).status();
        if test_bridges() == 0 {
            if let Ok(v) = std::fs::read_to_string(FORWARD_SAVED) {
                let _ = std::fs::write(IP_FORWARD, v);
                let _ = std::fs::remove_file(FORWARD_SAVED);
            }
        }
        cleanup_cgroups();
        remove_idle_portmap_chains();
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// A pod in its own cgroup (under the test's), with optional host ports.
fn pod(name: &str, ports: &[(i32, i32)]) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), namespace: "cnitest".into(), uid: format!("uid-{}-{name}", std::process::id()), attempt: 0 }),
        hostname: name.into(),
        linux: Some(cri::LinuxPodSandboxConfig { cgroup_parent: format!("/berth-cnitest-{}/{name}", std::process::id()), ..Default::default() }),
        port_mappings: ports
            .iter()
            .map(|(c, h)| cri::PortMapping { protocol: cri::Protocol::Tcp as i32, container_port: *c, host_port: *h, host_ip: "127.0.0.1".into() })
            .collect(),
        ..Default::default()
    }
}

/// httpd on port 80 serving `hello-from-<hostname>`, and on port 7000 an
/// nc that answers `nc-from-<hostname>`.
fn server_ctr() -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "srv".into(), attempt: 0 }),
        image: image_spec(CRI_IMAGE),
        command: sh("mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && httpd -p 80 -h /www && \
                     while true; do nc -l -p 7000 -e echo nc-from-$(hostname); done"),
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, net: &TestNet, config: &cri::PodSandboxConfig) -> (String, String) {
    let (sid, cid) = berth_tests::run_pod_with_container(rt, config, &server_ctr()).await;
    net.remember(&sid);
    (sid, cid)
}

async fn status(rt: &mut Rt, sid: &str) -> (cri::PodSandboxStatus, Value) {
    let r = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sid.into(), verbose: true }).await.unwrap().into_inner();
    let info = serde_json::from_str(&r.info["info"]).unwrap();
    (r.status.unwrap(), info)
}

async fn pod_ip(rt: &mut Rt, sid: &str) -> String {
    status(rt, sid).await.0.network.unwrap().ip
}

async fn exec(rt: &mut Rt, cid: &str, script: &str) -> (String, i32) {
    let r = rt.exec_sync(cri::ExecSyncRequest { container_id: cid.into(), cmd: sh(script), timeout: 20 }).await.unwrap().into_inner();
    (format!("{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr)), r.exit_code)
}

/// Polls `GET /` until it answers 200 (httpd starting in the container).
fn wait_http(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http_status(addr, "/") {
            Ok(200) => return,
            r if Instant::now() > deadline => panic!("http://{addr}/ never answered 200: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What one line of a TCP service says.
fn read_tcp(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match got {
            Ok(s) if !s.is_empty() => return s.trim().to_string(),
            r if Instant::now() > deadline => panic!("{addr} never answered: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What a pod's network is made of on the host, from its CNI results.
struct PodNet {
    ip: String,
    veths: Vec<String>,
    lease: PathBuf,
    netns: PathBuf,
}

async fn pod_net(rt: &mut Rt, net: &TestNet, server: &CriServer, sid: &str) -> PodNet {
    let (st, info) = status(rt, sid).await;
    let ip = st.network.unwrap().ip;
    let results = info["cniResults"].as_array().expect("cniResults");
    let main = results.iter().find(|r| r["ifname"] == "eth0").expect("eth0 attachment");
    let veths: Vec<String> = main["result"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("sandbox").is_none() && i["name"] != net.bridge.as_str())
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    let netns = PathBuf::from(info["record"]["network"]["netns"].as_str().expect("netns path"));
    PodNet { ip: ip.clone(), veths, lease: server.root.path().join("cni/networks/berth").join(&ip), netns }
}

fn is_mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()))
}

fn assert_network_gone(sid: &str, pn: &PodNet) {
    assert_network_gone_but_masquerade(pn);
    let rules: Vec<String> = iptables_rules().lines().filter(|l| l.contains(sid) || l.contains(&format!("{}/32", pn.ip))).map(str::to_string).collect();
    assert!(rules.is_empty(), "iptables rules left for {sid}: {rules:#?}");
}

/// The lease, the veths and the namespace are gone.
fn assert_network_gone_but_masquerade(pn: &PodNet) {
    assert!(!pn.lease.exists(), "host-local lease {} not released", pn.lease.display());
    for v in &pn.veths {
        assert!(!Path::new("/sys/class/net").join(v).exists(), "veth {v} left");
    }
    assert!(!is_mounted(&pn.netns) && !pn.netns.exists(), "netns {} left", pn.netns.display());
}

fn start(net: &TestNet, conflist: Option<&str>) -> CriServer {
    let server = CriServer::start_with(|root| net.config(root, conflist));
    server.import_busybox();
    server
}

/// Removes the test's cgroup tree (the pods' cgroups are gone with them).
fn cleanup_cgroups() {
    let parent = format!("berth-cnitest-{}", std::process::id());
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir() && !p.is_symlink()));
    }
    for r in roots {
        let d = r.join(&parent);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&d);
    }
}

#[test]
fn pods_get_addresses_on_the_bridge_and_talk_tcp() {
    require_root();
    let net = TestNet::claim();
    let server = start(&net, None);
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
        let ready = st.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").unwrap();
        assert!(ready.status, "{ready:?}");

        let (sa, ca) = run_pod(&mut rt, &net, &pod("a", &[])).await;
        let (sb, _cb) = run_pod(&mut rt, &net, &pod("b", &[])).await;
        let (ia, ib) = (pod_ip(&mut rt, &sa).await, pod_ip(&mut rt, &sb).await);
        assert_ne!(ia, ib, "two pods, two addresses");
        net.assert_routed_here(&ia);
        net.assert_routed_here(&ib);
        // The bridge is the gateway; each pod has a veth on it.
        assert!(ip(&["-4", "-o", "addr", "show", "dev", &net.bridge]).contains(&format!("{}1/24", net.prefix)));
        assert_eq!(net.ports().len(), 2, "{:?}", net.ports());
        // Inside: eth0 with the address, a default route via the bridge, and /etc/hosts.
        let (out, code) = exec(&mut rt, &ca, "ip -4 -o addr show eth0; ip route; cat /etc/hosts").await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("inet {ia}/24")), "{out}");
        assert!(out.contains(&format!("default via {}1", net.prefix)), "{out}");
        assert!(out.contains(&format!("{ia}\ta")), "{out}");

        // host -> pod: HTTP and a plain TCP service.
        wait_http(&format!("{ia}:80"));
        wait_http(&format!("{ib}:80"));
        assert_eq!(read_tcp(&format!("{ib}:7000")), "nc-from-b");
        // pod -> pod.
        let (out, code) = exec(&mut rt, &ca, &format!("wget -q -O - http://{ib}/")).await;
        assert_eq!((out.trim(), code), ("hello-from-b", 0));
        let (out, code) = exec(&mut rt, &ca, &format!("nc {ib} 7000 </dev/null")).await;
        assert_eq!((out.trim(), code), ("nc-from-b", 0));

        // DEL (at StopPodSandbox) releases the lease, the veth, the rules and the namespace.
        let pa = pod_net(&mut rt, &net, &server, &sa).await;
        assert!(pa.lease.exists(), "lease {}", pa.lease.display());
        assert_eq!(pa.veths.len(), 1, "{:?}", pa.veths);
        assert!(Path::new("/sys/class/net").join(&pa.veths[0]).exists());
        assert!(is_mounted(&pa.netns));
        assert!(iptables_rules().contains(&sa), "masquerade rules of {sa}");
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sa.clone() }).await.unwrap();
        assert_network_gone(&sa, &pa);
        assert_eq!(net.ports().len(), 1);
        // The stopped pod still reports its address; stop again is fine.
        assert_eq!(pod_ip(&mut rt, &sa).await, ia);
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sa.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sa.clone() }).await.unwrap();

        // RemovePodSandbox of a running pod deletes its network too; no cache entries stay.
        let pb = pod_net(&mut rt, &net, &server, &sb).await;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb.clone() }).await.unwrap();
        assert_network_gone(&sb, &pb);
        assert!(net.ports().is_empty());
        assert_eq!(std::fs::read_dir(server.root.path().join("cni/results")).unwrap().count(), 0);
        assert!(net.our_rules().is_empty(), "{:#?}", net.our_rules());
    });
}

#[test]
fn a_host_port_reaches_the_pod() {
    require_root();
    let net = TestNet::claim();
    let server = start(&net, None);
    let port = berth_tests::free_port().unwrap() as i32;
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, _cid) = run_pod(&mut rt, &net, &pod("hp", &[(80, port), (7000, 0)])).await;
        let ip = pod_ip(&mut rt, &sid).await;
        net.assert_routed_here(&ip);
        wait_http(&format!("{ip}:80"));
        // 127.0.0.1:<port> is DNATed to the pod by portmap.
        wait_http(&format!("127.0.0.1:{port}"));
        let rules = iptables_rules();
        assert!(rules.lines().any(|l| l.contains(&sid) && l.contains(&format!("--dports {port}"))), "no portmap rule for {port}:\n{rules}");
        let pn = pod_net(&mut rt, &net, &server, &sid).await;
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        assert_network_gone(&sid, &pn);
        assert!(!iptables_rules().contains(&format!("--dports {port}")), "portmap rule for {port} left");
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
    });
}

/// portmap's shared chains stay after DEL (as on any node); remove them
/// when no pod uses them any more.
fn remove_idle_portmap_chains() {
    let nat = run("iptables", &["-w", "-t", "nat", "-S"]).1;
    let busy = nat.lines().any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT") || l.starts_with("-A CNI-DN-"));
    if busy {
        return;
    }
    for l in nat.lines().filter(|l| l.starts_with("-A ") && l.contains("-j CNI-HOSTPORT-")) {
        let _ = Command::new("sh").arg("-c").arg(format!("iptables -w -t nat -D {}", &l[3..])).status();
    }
    for c in ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"] {
        let _ = Command::new("iptables").args(["-w", "-t", "nat", "-F", c]).status();
        let _ = Command::new("iptables").args(["-w", "-t", "nat", "-X", c]).status();
    }
}

#[test]
fn check_reports_a_deleted_veth() {
    require_root();
    let net = TestNet::claim();
    let server = start(&net, None);
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, _cid) = run_pod(&mut rt, &net, &pod("chk", &[])).await;
        let (_, info) = status(&mut rt, &sid).await;
        assert_eq!(info["networkCheck"], "ok", "{info:#}");
        let pn = pod_net(&mut rt, &net, &server, &sid).await;
        ip(&["link", "del", &pn.veths[0]]);
        let (_, info) = status(&mut rt, &sid).await;
        let check = info["networkCheck"].as_str().unwrap();
        assert!(check.contains("bridge (CHECK)") && check.contains("failed"), "{check}");
        // DEL copes with the missing veth. (The bridge plugin of Debian 12,
        // 1.1.1, finds the addresses to unmasquerade on the pod's interface:
        // with that gone, it leaves its masquerade rules; Drop sweeps them.)
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        assert_network_gone_but_masquerade(&pn);
        let left: Vec<String> = net.our_rules().into_iter().filter(|l| !(l.contains("MASQUERADE") || l.contains("-d ") && l.contains("-j ACCEPT") || l.contains("-A POSTROUTING"))).collect();
        assert!(left.is_empty(), "{left:#?}");
    });
}

#[test]
fn remove_after_kill_9_of_the_daemon_cleans_up_the_network() {
    require_root();
    let net = TestNet::claim();
    let mut server = start(&net, None);
    let (sid, ip, pn) = block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, _) = run_pod(&mut rt, &net, &pod("crash", &[])).await;
        let ip = pod_ip(&mut rt, &sid).await;
        let pn = pod_net(&mut rt, &net, &server, &sid).await;
        (sid, ip, pn)
    });
    server.kill9();
    // The pod's network outlives the daemon.
    net.assert_routed_here(&ip);
    wait_http(&format!("{ip}:80"));
    server.restart();
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        assert_eq!(pod_ip(&mut rt, &sid).await, ip);
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        assert_network_gone(&sid, &pn);
        assert!(net.ports().is_empty());
    });

    // The same with the pause gone too (everything of the pod crashed).
    let (sid, pn, pause) = block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, _) = run_pod(&mut rt, &net, &pod("crash2", &[])).await;
        let pn = pod_net(&mut rt, &net, &server, &sid).await;
        let pause = status(&mut rt, &sid).await.1["pid"].as_i64().unwrap() as i32;
        (sid, pn, pause)
    });
    server.kill9();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause), nix::sys::signal::Signal::SIGKILL).unwrap();
    server.restart();
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        assert_network_gone(&sid, &pn);
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
    });
}

/// Nothing of a pod that failed to start: no records, namespaces, leases,
/// cache entries, veths.
fn assert_nothing_left(server: &CriServer, net: &TestNet) {
    let root = server.root.path();
    let count = |p: PathBuf| std::fs::read_dir(p).map(|rd| rd.count()).unwrap_or(0);
    assert_eq!(count(root.join("sandboxes")), 0, "sandbox records left");
    assert_eq!(count(root.join("run/netns")), 0, "network namespaces left");
    assert_eq!(count(root.join("cni/results")), 0, "CNI cache entries left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(root.to_str().unwrap()), "mounts left under {}", root.display());
    assert!(net.ports().is_empty(), "veths left on {}: {:?}", net.bridge, net.ports());
}

#[test]
fn broken_configs_and_missing_plugins_give_clear_errors_and_leave_nothing() {
    require_root();
    let net = TestNet::claim();
    let server = start(&net, Some(r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"bridge":"x"}]}"#));
    let conf = server.root.path().join("net.d/10-test.conflist");
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let network_ready = |st: cri::StatusResponse| st.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").unwrap();

        // A broken file.
        let c = network_ready(rt.status(cri::StatusRequest::default()).await.unwrap().into_inner());
        assert!(!c.status && c.reason == "NetworkPluginNotReady", "{c:?}");
        assert!(c.message.contains(&conf.display().to_string()) && c.message.contains("plugins[0].type"), "{c:?}");
        let e = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod("broken", &[])), runtime_handler: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("10-test.conflist") && e.message().contains("plugins[0].type"), "{e:?}");
        assert_nothing_left(&server, &net);
        // Host-network pods need no CNI.
        let mut host = pod("hostnet", &[]);
        host.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption { network: cri::NamespaceMode::Node as i32, ..Default::default() }),
            ..Default::default()
        });
        let sid = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(host), runtime_handler: String::new() }).await.unwrap().into_inner().pod_sandbox_id;
        let (st, _) = status(&mut rt, &sid).await;
        assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
        assert_eq!(st.network.unwrap().ip, "");
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid }).await.unwrap();

        // A plugin that is not installed.
        std::fs::write(&conf, r#"{"cniVersion":"1.0.0","name":"missing","plugins":[{"type":"no-such-plugin"}]}"#).unwrap();
        let c = network_ready(rt.status(cri::StatusRequest::default()).await.unwrap().into_inner());
        assert!(!c.status && c.message.contains("\"no-such-plugin\"") && c.message.contains("/usr/lib/cni"), "{c:?}");
        let e = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod("missing", &[])), runtime_handler: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("no-such-plugin"), "{e:?}");
        assert_nothing_left(&server, &net);

        // A plugin that fails after the bridge plugin did its part: the
        // half-done ADD is deleted (veth, lease) and nothing is left.
        let ipam = server.root.path().join("ipam");
        std::fs::write(
            &conf,
            serde_json::json!({
                "cniVersion": "1.0.0", "name": "halfnet",
                "plugins": [
                    {"type": "bridge", "bridge": net.bridge, "isGateway": true,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": net.cidr}]], "dataDir": ipam.display().to_string()}},
                    {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such_setting": "1"}}
                ]
            })
            .to_string(),
        )
        .unwrap();
        let c = network_ready(rt.status(cri::StatusRequest::default()).await.unwrap().into_inner());
        assert!(c.status, "{c:?}");
        let e = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod("half", &[])), runtime_handler: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), Code::Unknown, "{e:?}");
        assert!(e.message().contains("tuning (ADD)") && e.message().contains("halfnet"), "{e:?}");
        assert_nothing_left(&server, &net);
        let leases: Vec<_> = std::fs::read_dir(ipam.join("halfnet")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(&net.prefix)).collect();
        assert!(leases.is_empty(), "leases left: {leases:?}");
        assert!(rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await.unwrap().into_inner().items.is_empty());
    });
}

#[test]
fn update_runtime_config_sets_the_pod_cidr() {
    require_root();
    let net = TestNet::claim();
    // A second subnet, claimed the same way, as the configured one.
    let other = TestNet::claim();
    let server = CriServer::start_with(|root| {
        let cfg = net.config(root, None);
        cfg.replace(&format!("pod_cidr = {:?}", net.cidr), &format!("pod_cidr = {:?}", other.cidr))
    });
    server.import_busybox();
    let mut server = server;
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let update = |cidr: &str| cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig { network_config: Some(cri::NetworkConfig { pod_cidr: cidr.into() }) }),
        };
        let e = rt.update_runtime_config(update("10.201.0.1/33")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("pod_cidr"), "{e:?}");
        rt.update_runtime_config(update(&net.cidr)).await.unwrap();
        let (sid, _) = run_pod(&mut rt, &net, &pod("cidr", &[])).await;
        let ip = pod_ip(&mut rt, &sid).await;
        net.assert_routed_here(&ip);
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid }).await.unwrap();
    });
    // Kept across a restart.
    server.kill9();
    server.restart();
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, _) = run_pod(&mut rt, &net, &pod("cidr2", &[])).await;
        net.assert_routed_here(&pod_ip(&mut rt, &sid).await);
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid }).await.unwrap();
    });
}
