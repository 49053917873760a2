//! Typed ADD results (spec 1.0.0, and 0.3.x/0.4.0 whose IPs carry a
//! `version` field). The plugins' JSON is what is chained and cached; these
//! types are what Berth reads from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// An address with a prefix length (`10.88.0.5/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("{s:?} is not an address/prefix"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: {a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: prefix {p:?} is not 0-{max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether the address's host bits are all zero (a network, not a host).
    pub fn is_network(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => self.prefix == 0 || u32::from(a) << self.prefix == 0,
            IpAddr::V6(a) => self.prefix == 0 || u128::from(a) << self.prefix == 0,
        }
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => self.prefix == 0 || (u32::from(n) ^ u32::from(a)) >> (32 - self.prefix as u32) == 0,
            (IpAddr::V6(n), IpAddr::V6(a)) => self.prefix == 0 || (u128::from(n) ^ u128::from(a)) >> (128 - self.prefix as u32) == 0,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; empty on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, rename = "socketPath", skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// "4" or "6": 0.3.x/0.4.0 results only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// An ADD result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads and checks a result: addresses are `ip/prefix`, gateways IPs,
    /// interface indexes in range, route destinations networks.
    pub fn from_value(v: &Value) -> Result<CniResult, String> {
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        let r: CniResult = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if let Some(ver) = v.get("cniVersion").and_then(Value::as_str) {
            let parsed: crate::Version = ver.parse().map_err(|e| format!("cniVersion: {e}"))?;
            if !parsed.is_supported() {
                return Err(format!("cniVersion {ver} is not supported"));
            }
        }
        for (i, ip) in r.ips.iter().enumerate() {
            ip.address.parse::<Cidr>().map_err(|e| format!("ips[{i}].address: {e}"))?;
            if let Some(g) = &ip.gateway {
                g.parse::<IpAddr>().map_err(|_| format!("ips[{i}].gateway: {g:?} is not an IP address"))?;
            }
            if let Some(n) = ip.interface {
                if n >= r.interfaces.len() {
                    return Err(format!("ips[{i}].interface: {n} is out of range ({} interfaces)", r.interfaces.len()));
                }
            }
        }
        for (i, rt) in r.routes.iter().enumerate() {
            rt.dst.parse::<Cidr>().map_err(|e| format!("routes[{i}].dst: {e}"))?;
            if let Some(g) = &rt.gw {
                g.parse::<IpAddr>().map_err(|_| format!("routes[{i}].gw: {g:?} is not an IP address"))?;
            }
        }
        Ok(r)
    }

    pub fn parse(bytes: &[u8]) -> Result<CniResult, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        Self::from_value(&v)
    }

    /// The addresses of the container interface `ifname` (addresses without
    /// an interface index count too), IPv4 first, as containerd picks the
    /// pod IP.
    pub fn ips_of(&self, ifname: &str) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                Some(intf) => intf.name == ifname && !intf.sandbox.is_empty(),
                None => ip.interface.is_none(),
            })
            .filter_map(|ip| ip.address.parse::<Cidr>().ok().map(|c| c.addr))
            .collect();
        out.sort_by_key(|a| a.is_ipv6());
        out
    }

    /// Interfaces created on the host side (veths, bridges).
    pub fn host_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces.iter().filter(|i| i.sandbox.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x", "mtu": 1500}
        ],
        "ips": [
            {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
            {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.2.0.0/16", "gw": "10.1.0.1", "priority": 10}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    }"#;

    #[test]
    fn parses_a_1_0_0_result() {
        let r = CniResult::parse(V1.as_bytes()).unwrap();
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.interfaces[2].mtu, Some(1500));
        assert_eq!(r.routes[1].priority, Some(10));
        assert_eq!(r.dns.nameservers, vec!["10.96.0.10"]);
        assert_eq!(r.ips_of("eth0"), vec!["10.1.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        assert!(r.ips_of("lo").is_empty());
        assert_eq!(r.host_interfaces().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["cni0", "veth1234"]);
    }

    #[test]
    fn parses_a_0_3_1_result() {
        let r = CniResult::parse(
            br#"{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/proc/1/ns/net"}],
                "ips":[{"version":"4","interface":0,"address":"10.0.0.2/8"},{"version":"4","address":"10.9.0.2/8"}],"dns":{}}"#,
        )
        .unwrap();
        assert_eq!(r.ips[0].version.as_deref(), Some("4"));
        assert_eq!(r.ips_of("eth0").len(), 2);
    }

    #[test]
    fn a_loopback_result_has_no_pod_ip() {
        let r = CniResult::parse(
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"lo","mac":"00:00:00:00:00:00","sandbox":"/run/netns/x"}],
                "ips":[{"interface":0,"address":"127.0.0.1/8"},{"interface":0,"address":"::1/128"}],"dns":{}}"#,
        )
        .unwrap();
        assert!(r.ips_of("eth0").is_empty());
        assert_eq!(r.ips_of("lo").len(), 2);
    }

    #[test]
    fn bad_results_say_what_is_wrong() {
        for (text, want) in [
            (r#"[]"#, "not a JSON object"),
            (r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.1/8"}}"#, "not supported"),
            (r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1"}]}"#, "ips[0].address"),
            (r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/33"}]}"#, "prefix"),
            (r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/8","gateway":"x"}]}"#, "ips[0].gateway"),
            (r#"{"cniVersion":"1.0.0","ips":[{"interface":1,"address":"10.0.0.1/8"}]}"#, "out of range"),
            (r#"{"cniVersion":"1.0.0","routes":[{"dst":"default"}]}"#, "routes[0].dst"),
            (r#"{"cniVersion":"1.0.0","interfaces":"eth0"}"#, "invalid type"),
            (r#"{"#, "not valid JSON"),
        ] {
            let e = CniResult::parse(text.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.88.0.0/16".parse().unwrap();
        assert!(c.is_network());
        assert!(c.contains("10.88.255.1".parse().unwrap()));
        assert!(!c.contains("10.89.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(!"10.88.0.1/16".parse::<Cidr>().unwrap().is_network());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!("fd00::/64".parse::<Cidr>().unwrap().contains("fd00::5".parse().unwrap()));
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert_eq!(c.to_string(), "10.88.0.0/16");
    }
}
