//! Network operations as the CNI spec defines them for a runtime: ADD runs
//! the plugins of a network in order, each getting the previous one's
//! result as `prevResult`; CHECK and DEL get the cached ADD result, DEL runs
//! in reverse order; STATUS (1.1.0) and VERSION.

use crate::cache::{Cache, CachedAttachment, KIND};
use crate::config::{valid_ifname, valid_name, NetworkConfigList, PluginConf};
use crate::error::{CniError, ConfigError};
use crate::invoke::{Invocation, Invoker};
use crate::result::CniResult;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// One attachment of a container to a network: everything besides the
/// network configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    /// The network namespace; `None` when it is gone (DEL only).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS.
    pub args: Vec<(String, String)>,
    /// Capability arguments; a plugin gets those it lists in `capabilities`
    /// under `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

/// What a plugin's VERSION reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

/// Runs networks' plugins and keeps the attachment cache.
#[derive(Debug, Clone)]
pub struct Cni {
    pub invoker: Invoker,
    pub cache: Cache,
}

/// The stdin of one plugin: its config with the network's `name` and
/// `cniVersion`, `prevResult` when given, and the `runtimeConfig` entries
/// its capabilities ask for.
pub fn plugin_config(list: &NetworkConfigList, plugin: &PluginConf, prev_result: Option<&Value>, capability_args: &Map<String, Value>) -> Vec<u8> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    match prev_result {
        Some(r) => {
            conf.insert("prevResult".into(), r.clone());
        }
        None => {
            conf.remove("prevResult");
        }
    }
    let rc: Map<String, Value> = plugin
        .capabilities
        .iter()
        .filter(|(_, on)| **on)
        .filter_map(|(k, _)| capability_args.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    serde_json::to_vec(&Value::Object(conf)).expect("plugin config serializes")
}

fn check_rt(list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
    let err = |field: &str, reason: String| CniError::Config(ConfigError { path: None, network: Some(list.name.clone()), field: field.into(), reason });
    if !valid_name(&rt.container_id) {
        return Err(err("containerID", format!("{:?} is not a valid container ID", rt.container_id)));
    }
    if !valid_ifname(&rt.ifname) {
        return Err(err("ifName", format!("{:?} is not a valid interface name", rt.ifname)));
    }
    Ok(())
}

impl Cni {
    pub fn new(invoker: Invoker, cache: Cache) -> Self {
        Self { invoker, cache }
    }

    fn netns_str(rt: &RuntimeConf) -> String {
        rt.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }

    fn run(&self, list: &NetworkConfigList, plugin: &PluginConf, command: &str, rt: &RuntimeConf, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let path = self.invoker.find(&plugin.plugin_type, &list.name)?;
        let netns = Self::netns_str(rt);
        let inv = Invocation { command, container_id: &rt.container_id, netns: &netns, ifname: &rt.ifname, args: &rt.args };
        self.invoker.exec(&path, &plugin.plugin_type, &list.name, &inv, stdin)
    }

    /// Finds every plugin of the network; the first missing one is the error.
    pub fn find_plugins(&self, list: &NetworkConfigList) -> Result<Vec<PathBuf>, CniError> {
        list.plugins.iter().map(|p| self.invoker.find(&p.plugin_type, &list.name)).collect()
    }

    /// ADD: the cache entry first (config and arguments), then the plugins
    /// in order, then the result in the cache. On failure the entry stays
    /// so that [`Cni::del_cached`] undoes what the plugins did.
    pub fn add(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        check_rt(list, rt)?;
        self.find_plugins(list)?;
        let mut entry = CachedAttachment {
            kind: KIND.into(),
            container_id: rt.container_id.clone(),
            network_name: list.name.clone(),
            if_name: rt.ifname.clone(),
            netns: Self::netns_str(rt),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            config: list.raw.clone(),
            result: None,
        };
        self.cache.put(&entry)?;
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let stdin = plugin_config(list, plugin, prev.as_ref(), &rt.capability_args);
            let out = self.run(list, plugin, "ADD", rt, &stdin)?;
            let bad = |reason: String| CniError::BadResult { plugin: plugin.plugin_type.clone(), network: list.name.clone(), command: "ADD".into(), reason };
            let v: Value = serde_json::from_slice(&out).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            CniResult::from_value(&v).map_err(bad)?;
            prev = Some(v);
        }
        let v = prev.expect("a network has at least one plugin");
        let result = CniResult::from_value(&v).expect("checked above");
        entry.result = Some(v);
        self.cache.put(&entry)?;
        Ok(result)
    }

    /// CHECK with the cached result as `prevResult` (0.4.0 and later; a
    /// network with `disableCheck` passes).
    pub fn check(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
        check_rt(list, rt)?;
        if !list.version.has_check() {
            return Err(CniError::Unsupported { network: list.name.clone(), version: list.cni_version.clone(), command: "CHECK".into() });
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self.cache.get(&list.name, &rt.container_id, &rt.ifname)?.and_then(|c| c.result);
        for plugin in &list.plugins {
            let stdin = plugin_config(list, plugin, cached.as_ref(), &rt.capability_args);
            self.run(list, plugin, "CHECK", rt, &stdin)?;
        }
        Ok(())
    }

    /// DEL in reverse order, with the cached result as `prevResult` (0.4.0
    /// and later). Every plugin is tried; the first error is returned and
    /// the cache entry kept for a retry. Success removes the entry.
    pub fn del(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
        check_rt(list, rt)?;
        let cached = if list.version.has_check() { self.cache.get(&list.name, &rt.container_id, &rt.ifname).ok().flatten().and_then(|c| c.result) } else { None };
        let mut first_err = None;
        for plugin in list.plugins.iter().rev() {
            let stdin = plugin_config(list, plugin, cached.as_ref(), &rt.capability_args);
            if let Err(e) = self.run(list, plugin, "DEL", rt, &stdin) {
                tracing::warn!(network = %list.name, plugin = %plugin.plugin_type, container = %rt.container_id, error = %e, "CNI DEL failed");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => self.cache.remove(&list.name, &rt.container_id, &rt.ifname),
        }
    }

    /// DEL of a cached attachment with the configuration and arguments its
    /// ADD used; nothing to do without an entry. `netns` is where the
    /// namespace is now (`None` when it is gone).
    pub fn del_cached(&self, network: &str, container_id: &str, ifname: &str, netns: Option<PathBuf>) -> Result<(), CniError> {
        let Some(entry) = self.cache.get(network, container_id, ifname)? else { return Ok(()) };
        let (list, rt) = Self::from_entry(&entry, netns)?;
        self.del(&list, &rt)
    }

    /// CHECK of a cached attachment.
    pub fn check_cached(&self, network: &str, container_id: &str, ifname: &str, netns: Option<PathBuf>) -> Result<(), CniError> {
        let entry = self.cache.get(network, container_id, ifname)?.ok_or_else(|| CniError::Cache {
            path: self.cache.path(network, container_id, ifname),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no cached attachment to check"),
        })?;
        let (list, rt) = Self::from_entry(&entry, netns)?;
        self.check(&list, &rt)
    }

    fn from_entry(entry: &CachedAttachment, netns: Option<PathBuf>) -> Result<(NetworkConfigList, RuntimeConf), CniError> {
        let bytes = serde_json::to_vec(&entry.config).expect("json serializes");
        let list = crate::config::parse_conflist(&bytes, None)?;
        let rt = RuntimeConf {
            container_id: entry.container_id.clone(),
            netns,
            ifname: entry.if_name.clone(),
            args: entry.cni_args.clone(),
            capability_args: entry.capability_args.clone(),
        };
        Ok((list, rt))
    }

    /// STATUS of every plugin (1.1.0 networks; older ones have no STATUS and pass).
    pub fn status(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        if !list.version.has_status() {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for plugin in &list.plugins {
            let stdin = plugin_config(list, plugin, None, &Map::new());
            self.run(list, plugin, "STATUS", &rt, &stdin)?;
        }
        Ok(())
    }

    /// VERSION of a plugin.
    pub fn version(&self, list: &NetworkConfigList, plugin: &PluginConf) -> Result<VersionInfo, CniError> {
        let stdin = serde_json::to_vec(&serde_json::json!({ "cniVersion": list.cni_version })).expect("json serializes");
        let out = self.run(list, plugin, "VERSION", &RuntimeConf::default(), &stdin)?;
        serde_json::from_slice(&out).map_err(|e| CniError::BadResult {
            plugin: plugin.plugin_type.clone(),
            network: list.name.clone(),
            command: "VERSION".into(),
            reason: e.to_string(),
        })
    }

    /// Checks that every plugin exists and supports the network's version.
    pub fn validate(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        for plugin in &list.plugins {
            let info = self.version(list, plugin)?;
            if !info.supported_versions.contains(&list.cni_version) {
                return Err(CniError::VersionMismatch {
                    plugin: plugin.plugin_type.clone(),
                    network: list.name.clone(),
                    version: list.cni_version.clone(),
                    supported: info.supported_versions.join(", "),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_conflist;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::Duration;

    /// A plugin that logs its command and stdin to `<dir>/log` and prints
    /// a result naming itself (or its prevResult, passed through).
    fn fake_plugin(dir: &Path, name: &str, extra: &str) {
        let p = dir.join(name);
        let log = dir.join("log");
        std::fs::write(
            &p,
            format!(
                r#"#!/bin/sh
in=$(cat)
echo "{name} $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $in" >> {log}
{extra}
case "$CNI_COMMAND" in
ADD) echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"'$CNI_NETNS'"}}],"ips":[{{"interface":0,"address":"10.9.0.{n}/24"}}]}}' ;;
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
esac
"#,
                log = log.display(),
                n = name.len()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn log(dir: &Path) -> Vec<(String, String, Value)> {
        std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut it = l.splitn(5, ' ');
                let (p, c, _, _, j) = (it.next().unwrap(), it.next().unwrap(), it.next(), it.next(), it.next().unwrap_or("{}"));
                (p.to_string(), c.to_string(), serde_json::from_str(j).unwrap_or(Value::Null))
            })
            .collect()
    }

    fn setup() -> (tempfile::TempDir, Cni, NetworkConfigList, RuntimeConf) {
        let d = tempfile::tempdir().unwrap();
        fake_plugin(d.path(), "one", "");
        fake_plugin(d.path(), "three", "");
        let cni = Cni::new(Invoker::new(vec![d.path().into()], Duration::from_secs(10)), Cache::new(d.path().join("cache")));
        let list = parse_conflist(
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[
                {"type":"one","opt":1,"capabilities":{"portMappings":true,"mac":false}},
                {"type":"three","capabilities":{"bandwidth":true}}]}"#,
            None,
        )
        .unwrap();
        let mut caps = Map::new();
        caps.insert("portMappings".into(), serde_json::json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]));
        caps.insert("mac".into(), serde_json::json!("aa:bb:cc:dd:ee:ff"));
        let rt = RuntimeConf { container_id: "c1".into(), netns: Some("/run/netns/c1".into()), ifname: "eth0".into(), args: vec![("IgnoreUnknown".into(), "1".into())], capability_args: caps };
        (d, cni, list, rt)
    }

    #[test]
    fn add_chains_results_and_del_runs_in_reverse_with_the_cached_result() {
        let (d, cni, list, rt) = setup();
        let r = cni.add(&list, &rt).unwrap();
        assert_eq!(r.ips[0].address, "10.9.0.5/24", "the last plugin's result");
        let l = log(d.path());
        assert_eq!(l.iter().map(|(p, c, _)| format!("{p} {c}")).collect::<Vec<_>>(), vec!["one ADD", "three ADD"]);
        let (one, three) = (&l[0].2, &l[1].2);
        assert_eq!(one["name"], "net");
        assert_eq!(one["cniVersion"], "1.0.0");
        assert_eq!(one["opt"], 1);
        assert!(one.get("prevResult").is_none());
        // Only the capabilities the plugin asked for, and only those set to true.
        assert_eq!(one["runtimeConfig"], serde_json::json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}));
        assert!(three.get("runtimeConfig").is_none());
        assert_eq!(three["prevResult"]["ips"][0]["address"], "10.9.0.3/24");
        let cached = cni.cache.get("net", "c1", "eth0").unwrap().unwrap();
        assert_eq!(cached.result.as_ref().unwrap()["ips"][0]["address"], "10.9.0.5/24");

        std::fs::remove_file(d.path().join("log")).unwrap();
        cni.check_cached("net", "c1", "eth0", rt.netns.clone()).unwrap();
        cni.del_cached("net", "c1", "eth0", None).unwrap();
        let l = log(d.path());
        assert_eq!(l.iter().map(|(p, c, _)| format!("{p} {c}")).collect::<Vec<_>>(), vec!["one CHECK", "three CHECK", "three DEL", "one DEL"]);
        for (_, _, conf) in &l {
            assert_eq!(conf["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
        }
        // DEL again: no entry, nothing to do.
        assert!(cni.cache.get("net", "c1", "eth0").unwrap().is_none());
        cni.del_cached("net", "c1", "eth0", None).unwrap();
        assert_eq!(log(d.path()).len(), 4);
    }

    #[test]
    fn a_half_failed_add_is_still_deleted() {
        let (d, cni, list, rt) = setup();
        fake_plugin(d.path(), "three", r#"[ "$CNI_COMMAND" = ADD ] && { echo '{"code":11,"msg":"busy"}'; exit 1; }"#);
        let e = cni.add(&list, &rt).unwrap_err();
        assert!(e.to_string().contains("busy") && e.to_string().contains("three (ADD)"), "{e}");
        let cached = cni.cache.get("net", "c1", "eth0").unwrap().unwrap();
        assert!(cached.result.is_none());
        cni.del_cached("net", "c1", "eth0", rt.netns.clone()).unwrap();
        let l = log(d.path());
        assert_eq!(l.iter().map(|(p, c, _)| format!("{p} {c}")).collect::<Vec<_>>(), vec!["one ADD", "three ADD", "three DEL", "one DEL"]);
        assert!(l[2].2.get("prevResult").is_none());
    }

    #[test]
    fn del_tries_every_plugin_and_keeps_the_entry_on_failure() {
        let (d, cni, list, rt) = setup();
        cni.add(&list, &rt).unwrap();
        fake_plugin(d.path(), "three", r#"[ "$CNI_COMMAND" = DEL ] && { echo '{"code":5,"msg":"io"}'; exit 1; }"#);
        let e = cni.del_cached("net", "c1", "eth0", None).unwrap_err();
        assert!(matches!(&e, CniError::Plugin { error, .. } if error.code == Some(5)), "{e}");
        let l = log(d.path());
        assert_eq!(l.iter().map(|(p, c, _)| format!("{p} {c}")).collect::<Vec<_>>(), vec!["one ADD", "three ADD", "three DEL", "one DEL"]);
        assert!(cni.cache.get("net", "c1", "eth0").unwrap().is_some());
        fake_plugin(d.path(), "three", "");
        cni.del_cached("net", "c1", "eth0", None).unwrap();
        assert!(cni.cache.get("net", "c1", "eth0").unwrap().is_none());
    }

    #[test]
    fn missing_plugins_and_bad_results_fail_before_or_during_add() {
        let (d, cni, _, rt) = setup();
        let list = parse_conflist(br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"one"},{"type":"nope"}]}"#, None).unwrap();
        let e = cni.add(&list, &rt).unwrap_err();
        assert!(matches!(e, CniError::PluginNotFound { .. }) && e.is_not_ready(), "{e}");
        assert!(log(d.path()).is_empty(), "no plugin ran");
        assert!(cni.cache.get("net", "c1", "eth0").unwrap().is_none());

        std::fs::write(d.path().join("garbage"), "#!/bin/sh\necho not-json\n").unwrap();
        std::fs::set_permissions(d.path().join("garbage"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let list = parse_conflist(br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"garbage"}]}"#, None).unwrap();
        let e = cni.add(&list, &rt).unwrap_err();
        assert!(matches!(e, CniError::BadResult { .. }) && e.to_string().contains("not valid JSON"), "{e}");

        let bad = RuntimeConf { container_id: "../x".into(), ..rt.clone() };
        assert!(cni.add(&list, &bad).unwrap_err().to_string().contains("containerID"));
        let bad = RuntimeConf { ifname: "way-too-long-ifname".into(), ..rt };
        assert!(cni.add(&list, &bad).unwrap_err().to_string().contains("ifName"));
    }

    #[test]
    fn versions_check_and_status() {
        let (_d, cni, list, rt) = setup();
        cni.validate(&list).unwrap();
        let old = parse_conflist(br#"{"cniVersion":"0.3.1","name":"net","plugins":[{"type":"one"}]}"#, None).unwrap();
        let e = cni.validate(&old).unwrap_err();
        assert!(matches!(e, CniError::VersionMismatch { .. }) && e.to_string().contains("0.4.0, 1.0.0"), "{e}");
        let e = cni.check(&old, &rt).unwrap_err();
        assert!(matches!(e, CniError::Unsupported { .. }), "{e}");
        // No STATUS before 1.1.0.
        cni.status(&list).unwrap();
    }
}
