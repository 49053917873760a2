//! Pod networking as a CRI runtime does it: every pod gets the loopback
//! network on `lo` and one network on `eth0` — the first configuration of
//! the conf dir, or Berth's default bridge network when there is none.

use crate::api::{Cni, RuntimeConf};
use crate::cache::Cache;
use crate::config::{load_conf_dir, parse_conflist, valid_ifname, NetworkConfigList};
use crate::error::{CniError, ConfigError};
use crate::invoke::Invoker;
use crate::result::{Cidr, CniResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

pub const LOOPBACK_NETWORK: &str = "cni-loopback";
/// The pod's interface on its network.
pub const POD_IFNAME: &str = "eth0";
/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "berth";
pub const DEFAULT_BRIDGE: &str = "berth0";
pub const DEFAULT_POD_CIDR: &str = "10.88.0.0/16";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where things are and what the default network looks like.
#[derive(Debug, Clone)]
pub struct Options {
    /// Network configurations (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Plugin binaries, searched in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Berth's CNI state: the attachment cache (`results/`), the default
    /// network's host-local leases (`networks/`), the pod CIDR set at run time.
    pub state_dir: PathBuf,
    /// Where pod network namespaces are bind-mounted.
    pub netns_dir: PathBuf,
    /// The default network's bridge.
    pub bridge: String,
    /// The default network's subnets, comma-separated (IPv4 and/or IPv6).
    pub pod_cidr: String,
    pub plugin_timeout: Duration,
}

/// One network of a pod, in ADD order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ifname: String,
}

/// `portMappings` capability entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// `bandwidth` capability: bits per second and bits of burst.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// `dns` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCapability {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// What a runtime knows of a pod that plugins may use.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// The sandbox ID (CNI_CONTAINERID).
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    /// Requested addresses (`ips` capability).
    pub ips: Vec<String>,
    /// Requested MAC (`mac` capability).
    pub mac: Option<String>,
    pub dns: Option<DnsCapability>,
    pub cgroup_path: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl PodSpec {
    /// CNI_ARGS, as containerd passes them.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), self.namespace.clone()),
            ("K8S_POD_NAME".into(), self.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), self.id.clone()),
            ("K8S_POD_UID".into(), self.uid.clone()),
        ]
    }

    /// Capability arguments (a plugin sees the ones it declares).
    pub fn capability_args(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.port_mappings.is_empty() {
            m.insert("portMappings".into(), json!(self.port_mappings));
        }
        if let Some(b) = &self.bandwidth {
            m.insert("bandwidth".into(), json!(b));
        }
        if !self.ips.is_empty() {
            m.insert("ips".into(), json!(self.ips));
        }
        if let Some(mac) = &self.mac {
            m.insert("mac".into(), json!(mac));
        }
        if let Some(d) = &self.dns {
            m.insert("dns".into(), json!(d));
        }
        if let Some(c) = &self.cgroup_path {
            m.insert("cgroupPath".into(), json!(c));
        }
        if !self.annotations.is_empty() {
            m.insert("io.kubernetes.cri.pod-annotations".into(), json!(self.annotations));
        }
        m
    }
}

/// A pod's networks after ADD.
#[derive(Debug, Clone, Default)]
pub struct SetupResult {
    pub results: Vec<(Attachment, CniResult)>,
    /// The pod's addresses on `eth0`, IPv4 first.
    pub ips: Vec<IpAddr>,
}

/// The networks every pod gets, as of now.
#[derive(Debug, Clone)]
pub struct Plan {
    pub networks: Vec<(NetworkConfigList, Attachment)>,
}

impl Plan {
    pub fn attachments(&self) -> Vec<Attachment> {
        self.networks.iter().map(|(_, a)| a.clone()).collect()
    }

    /// The network on `eth0`.
    pub fn main(&self) -> &NetworkConfigList {
        &self.networks.last().expect("a plan has the pod network").0
    }
}

/// Parses a comma-separated list of subnets (`10.88.0.0/16,fd00::/64`).
pub fn parse_pod_cidr(s: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let c: Cidr = part.parse()?;
        if !c.is_network() {
            return Err(format!("{part:?} has host bits set (want the network address, e.g. {})", network_of(c)));
        }
        let max = if c.addr.is_ipv4() { 30 } else { 126 };
        if c.prefix > max {
            return Err(format!("{part:?} is too small for pods"));
        }
        if out.iter().any(|o: &Cidr| o.addr.is_ipv4() == c.addr.is_ipv4()) {
            return Err(format!("{s:?}: at most one IPv4 and one IPv6 subnet"));
        }
        out.push(c);
    }
    Ok(out)
}

fn network_of(c: Cidr) -> Cidr {
    let addr = match c.addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & u32::MAX.checked_shl(32 - c.prefix as u32).unwrap_or(0)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & u128::MAX.checked_shl(128 - c.prefix as u32).unwrap_or(0)).into()),
    };
    Cidr { addr, prefix: c.prefix }
}

/// The loopback network every pod gets on `lo` (as containerd does).
pub fn loopback_network() -> NetworkConfigList {
    parse_conflist(br#"{"cniVersion":"1.0.0","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#, None).expect("the loopback network is valid")
}

/// Berth's default network: a bridge with host-local addresses from the
/// pod subnets (leases under `data_dir`), masquerading, and portmap.
pub fn default_network(bridge: &str, subnets: &[Cidr], data_dir: &Path) -> NetworkConfigList {
    let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s.to_string() }])).collect();
    let mut routes = Vec::new();
    if subnets.iter().any(|s| s.addr.is_ipv4()) {
        routes.push(json!({ "dst": "0.0.0.0/0" }));
    }
    if subnets.iter().any(|s| s.addr.is_ipv6()) {
        routes.push(json!({ "dst": "::/0" }));
    }
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": DEFAULT_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": { "type": "host-local", "ranges": ranges, "routes": routes, "dataDir": data_dir.display().to_string() }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    parse_conflist(&serde_json::to_vec(&conf).expect("json serializes"), None).expect("the default network is valid")
}

/// A plugin binary (path, mtime) and a network version.
type VersionKey = (PathBuf, SystemTime, String);

/// Pod networks: config loading, ADD/DEL/CHECK per pod, readiness.
pub struct PodNetworks {
    opts: Options,
    pub cni: Cni,
    /// The default network's subnets (UpdateRuntimeConfig may change them).
    pod_cidr: RwLock<String>,
    /// VERSION answers per plugin file (path, mtime, network version).
    versions: Mutex<HashMap<VersionKey, Result<(), String>>>,
}

fn cfg_err(field: &str, reason: String) -> CniError {
    CniError::Config(ConfigError { path: None, network: Some(DEFAULT_NETWORK.into()), field: field.into(), reason })
}

impl PodNetworks {
    /// Checks the default network's settings; a pod CIDR set earlier by
    /// UpdateRuntimeConfig (kept in the state dir) wins over the configured one.
    pub fn new(opts: Options) -> Result<Self, CniError> {
        if !valid_ifname(&opts.bridge) {
            return Err(cfg_err("bridge", format!("{:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)", opts.bridge)));
        }
        parse_pod_cidr(&opts.pod_cidr).map_err(|e| cfg_err("pod_cidr", e))?;
        let saved = std::fs::read_to_string(opts.state_dir.join("pod-cidr")).ok().map(|s| s.trim().to_string()).filter(|s| parse_pod_cidr(s).is_ok());
        let pod_cidr = saved.unwrap_or_else(|| opts.pod_cidr.clone());
        let cni = Cni::new(Invoker::new(opts.plugin_dirs.clone(), opts.plugin_timeout), Cache::new(opts.state_dir.clone()));
        Ok(Self { opts, cni, pod_cidr: RwLock::new(pod_cidr), versions: Mutex::default() })
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the default network's subnets (CRI UpdateRuntimeConfig) for pods
    /// started from now on; kept across restarts. Empty is ignored.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), CniError> {
        let cidr = cidr.trim();
        if cidr.is_empty() {
            return Ok(());
        }
        let parsed = parse_pod_cidr(cidr).map_err(|e| cfg_err("pod_cidr", e))?;
        let canonical = parsed.iter().map(Cidr::to_string).collect::<Vec<_>>().join(",");
        let mut cur = self.pod_cidr.write().unwrap_or_else(|e| e.into_inner());
        if *cur == canonical {
            return Ok(());
        }
        let p = self.opts.state_dir.join("pod-cidr");
        let err = |source| CniError::Cache { path: p.clone(), source };
        std::fs::create_dir_all(&self.opts.state_dir).map_err(err)?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, format!("{canonical}\n")).map_err(err)?;
        std::fs::rename(&tmp, &p).map_err(err)?;
        tracing::info!(pod_cidr = %canonical, "pod CIDR updated");
        *cur = canonical;
        Ok(())
    }

    /// Host-local leases of the default network.
    pub fn ipam_dir(&self) -> PathBuf {
        self.opts.state_dir.join("networks")
    }

    /// The pod network: the conf dir's first configuration, else the default.
    pub fn main_network(&self) -> Result<NetworkConfigList, CniError> {
        if let Some(l) = load_conf_dir(&self.opts.conf_dir)? {
            return Ok(l);
        }
        let subnets = parse_pod_cidr(&self.pod_cidr()).map_err(|e| cfg_err("pod_cidr", e))?;
        Ok(default_network(&self.opts.bridge, &subnets, &self.ipam_dir()))
    }

    /// The networks a pod gets now, with every plugin present.
    pub fn plan(&self) -> Result<Plan, CniError> {
        let main = self.main_network()?;
        if main.name == LOOPBACK_NETWORK {
            return Err(CniError::Config(ConfigError {
                path: main.source.clone(),
                network: Some(main.name.clone()),
                field: "name".into(),
                reason: format!("{LOOPBACK_NETWORK:?} is reserved for the pod's loopback network"),
            }));
        }
        let lo = loopback_network();
        for l in [&lo, &main] {
            self.cni.find_plugins(l)?;
        }
        Ok(Plan {
            networks: vec![
                (lo, Attachment { network: LOOPBACK_NETWORK.into(), ifname: "lo".into() }),
                (main.clone(), Attachment { network: main.name.clone(), ifname: POD_IFNAME.into() }),
            ],
        })
    }

    /// Whether pods can be networked: the configuration loads, every plugin
    /// is there and supports its version (VERSION, remembered per binary),
    /// and 1.1.0 networks pass STATUS.
    pub fn status(&self) -> Result<(), CniError> {
        let plan = self.plan()?;
        for (list, _) in &plan.networks {
            for (plugin, path) in list.plugins.iter().zip(self.cni.find_plugins(list)?) {
                let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                let key = (path.clone(), mtime, list.cni_version.clone());
                let known = self.versions.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
                let res = match known {
                    Some(r) => r,
                    None => {
                        let one = NetworkConfigList { plugins: vec![plugin.clone()], ..list.clone() };
                        let r = match self.cni.validate(&one) {
                            Ok(()) => Ok(()),
                            // A plugin that failed to run is not remembered.
                            Err(e @ (CniError::Exec { .. } | CniError::Timeout { .. })) => return Err(e),
                            Err(e) => Err(e.to_string()),
                        };
                        self.versions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, r.clone());
                        r
                    }
                };
                if let Err(msg) = res {
                    return Err(CniError::Config(ConfigError { path: list.source.clone(), network: Some(list.name.clone()), field: format!("plugin {}", plugin.plugin_type), reason: msg }));
                }
            }
            self.cni.status(list)?;
        }
        Ok(())
    }

    /// Where the pod's network namespace is bind-mounted.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.opts.netns_dir.join(id)
    }

    fn rt(spec: &PodSpec, netns: Option<&Path>, a: &Attachment) -> RuntimeConf {
        RuntimeConf { container_id: spec.id.clone(), netns: netns.map(Path::to_path_buf), ifname: a.ifname.clone(), args: spec.cni_args(), capability_args: spec.capability_args() }
    }

    /// ADD of every network of the plan, in order. On error, what was done
    /// stays for [`PodNetworks::teardown`] (the cache knows it).
    pub fn setup(&self, spec: &PodSpec, netns: &Path, plan: &Plan) -> Result<SetupResult, CniError> {
        let mut out = SetupResult::default();
        for (list, a) in &plan.networks {
            let r = self.cni.add(list, &Self::rt(spec, Some(netns), a))?;
            if a.ifname == POD_IFNAME {
                out.ips.extend(r.ips_of(POD_IFNAME));
            }
            out.results.push((a.clone(), r));
        }
        Ok(out)
    }

    /// DEL of every attachment, last first, with the configuration each ADD
    /// used (from the cache; an attachment without an entry never ran).
    /// `netns` is `None` once the namespace is gone. Every attachment is
    /// tried; the first error is returned.
    pub fn teardown(&self, id: &str, netns: Option<&Path>, attachments: &[Attachment]) -> Result<(), CniError> {
        let mut all: Vec<Attachment> = attachments.to_vec();
        // Entries the record does not know of (should not happen): DEL them too.
        for c in self.cni.cache.list(id) {
            let a = Attachment { network: c.network_name, ifname: c.if_name };
            if !all.contains(&a) {
                all.push(a);
            }
        }
        let netns = netns.filter(|p| crate::netns::exists(p)).map(Path::to_path_buf);
        let mut first = None;
        for a in all.iter().rev() {
            if let Err(e) = self.cni.del_cached(&a.network, id, &a.ifname, netns.clone()) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK of every attachment.
    pub fn check(&self, id: &str, netns: &Path, attachments: &[Attachment]) -> Result<(), CniError> {
        for a in attachments {
            self.cni.check_cached(&a.network, id, &a.ifname, Some(netns.to_path_buf()))?;
        }
        Ok(())
    }

    /// The cached ADD results of a pod's attachments.
    pub fn results(&self, id: &str, attachments: &[Attachment]) -> Vec<(Attachment, Option<Value>)> {
        attachments.iter().map(|a| (a.clone(), self.cni.cache.get(&a.network, id, &a.ifname).ok().flatten().and_then(|c| c.result))).collect()
    }
}

/// Kubernetes quantity (`10M`, `1Gi`, `500k`, `1e6`) to a number, for the
/// bandwidth annotations.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then(|| v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(d: &Path) -> Options {
        Options {
            conf_dir: d.join("net.d"),
            plugin_dirs: vec![d.join("bin")],
            state_dir: d.join("state"),
            netns_dir: d.join("netns"),
            bridge: "berthtest0".into(),
            pod_cidr: "10.201.0.0/24".into(),
            plugin_timeout: Duration::from_secs(5),
        }
    }

    fn plugins(d: &Path, names: &[&str]) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(d.join("bin")).unwrap();
        for n in names {
            let p = d.join("bin").join(n);
            std::fs::write(&p, "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}'\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn default_network_when_the_conf_dir_is_empty() {
        let d = tempfile::tempdir().unwrap();
        plugins(d.path(), &["loopback", "bridge", "host-local", "portmap"]);
        let n = PodNetworks::new(opts(d.path())).unwrap();
        let plan = n.plan().unwrap();
        assert_eq!(plan.attachments(), vec![Attachment { network: "cni-loopback".into(), ifname: "lo".into() }, Attachment { network: "berth".into(), ifname: "eth0".into() }]);
        let main = plan.main();
        assert_eq!(main.plugins.iter().map(|p| p.plugin_type.as_str()).collect::<Vec<_>>(), vec!["bridge", "portmap"]);
        assert_eq!(main.plugins[0].raw["bridge"], "berthtest0");
        assert_eq!(main.plugins[0].raw["ipam"]["ranges"], json!([[{"subnet": "10.201.0.0/24"}]]));
        assert_eq!(main.plugins[0].raw["ipam"]["dataDir"], d.path().join("state/networks").display().to_string());
        assert_eq!(main.plugins[1].capabilities.get("portMappings"), Some(&true));
        n.status().unwrap();

        // UpdateRuntimeConfig: used from now on, and kept.
        n.set_pod_cidr("10.202.0.0/24, fd00:1::/64").unwrap();
        let main = n.plan().unwrap().main().clone();
        assert_eq!(main.plugins[0].raw["ipam"]["ranges"], json!([[{"subnet": "10.202.0.0/24"}], [{"subnet": "fd00:1::/64"}]]));
        assert_eq!(main.plugins[0].raw["ipam"]["routes"], json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]));
        assert_eq!(PodNetworks::new(opts(d.path())).unwrap().pod_cidr(), "10.202.0.0/24,fd00:1::/64");
        assert!(n.set_pod_cidr("10.202.0.1/24").unwrap_err().to_string().contains("host bits"));
        n.set_pod_cidr("").unwrap();
        assert_eq!(n.pod_cidr(), "10.202.0.0/24,fd00:1::/64");
    }

    #[test]
    fn a_config_file_wins_and_problems_are_reported() {
        let d = tempfile::tempdir().unwrap();
        plugins(d.path(), &["loopback", "bridge", "host-local"]);
        let n = PodNetworks::new(opts(d.path())).unwrap();
        // The default needs portmap.
        let e = n.status().unwrap_err();
        assert!(e.is_not_ready() && e.to_string().contains("\"portmap\""), "{e}");
        std::fs::create_dir_all(d.path().join("net.d")).unwrap();
        std::fs::write(d.path().join("net.d/10-mine.conflist"), r#"{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"bridge"}]}"#).unwrap();
        assert_eq!(n.plan().unwrap().main().name, "mine");
        n.status().unwrap();
        std::fs::write(d.path().join("net.d/10-mine.conflist"), r#"{"cniVersion":"0.4.0","name":"mine","plugins":[{"type":"bridge"}]}"#).unwrap();
        let e = n.status().unwrap_err();
        assert!(e.is_not_ready() && e.to_string().contains("does not support cniVersion 0.4.0"), "{e}");
        std::fs::write(d.path().join("net.d/05-broken.conf"), r#"{"cniVersion":"1.0.0","name":"b"}"#).unwrap();
        let e = n.plan().unwrap_err();
        assert!(e.is_not_ready() && e.to_string().contains("05-broken.conf") && e.to_string().contains("type"), "{e}");
        std::fs::write(d.path().join("net.d/05-broken.conf"), r#"{"cniVersion":"1.0.0","name":"cni-loopback","type":"loopback"}"#).unwrap();
        assert!(n.plan().unwrap_err().to_string().contains("reserved"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts(d.path());
        o.bridge = "this-name-is-too-long".into();
        assert!(PodNetworks::new(o).err().unwrap().to_string().contains("bridge"));
        let mut o = opts(d.path());
        o.pod_cidr = "10.0.0.0/31".into();
        assert!(PodNetworks::new(o).err().unwrap().to_string().contains("pod_cidr"));
        assert!(parse_pod_cidr("10.0.0.0/8,10.1.0.0/16").is_err());
        assert!(parse_pod_cidr("banana").is_err());
    }

    #[test]
    fn pod_arguments() {
        let spec = PodSpec {
            id: "abc".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            port_mappings: vec![PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: String::new() }],
            bandwidth: Some(Bandwidth { ingress_rate: Some(1_000_000), ingress_burst: Some(u32::MAX as u64), ..Default::default() }),
            ips: vec!["10.1.0.9/24".into()],
            mac: Some("aa:bb:cc:dd:ee:ff".into()),
            dns: None,
            cgroup_path: Some("/berth/podabc".into()),
            annotations: [("a".to_string(), "b".to_string())].into(),
        };
        assert_eq!(crate::invoke::cni_args(&spec.cni_args()), "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1");
        let c = spec.capability_args();
        assert_eq!(c["portMappings"], json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]));
        assert_eq!(c["bandwidth"], json!({"ingressRate": 1_000_000, "ingressBurst": 4294967295u64}));
        assert_eq!(c["ips"], json!(["10.1.0.9/24"]));
        assert_eq!(c["mac"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(c["cgroupPath"], "/berth/podabc");
        assert_eq!(c["io.kubernetes.cri.pod-annotations"], json!({"a": "b"}));
        assert!(!c.contains_key("dns"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("500k"), Some(500_000));
        assert_eq!(parse_quantity("1.5M"), Some(1_500_000));
        assert_eq!(parse_quantity("1e6"), Some(1_000_000));
        assert_eq!(parse_quantity("123"), Some(123));
        assert_eq!(parse_quantity("10X"), None);
        assert_eq!(parse_quantity("-1"), None);
        assert_eq!(parse_quantity(""), None);
    }
}
