//! Network configurations: `.conflist` files (a list of plugins) and
//! single-plugin `.conf`/`.json` files, loaded from a conf dir where the
//! first file by name wins (as kubelet, containerd and CRI-O choose).

use crate::error::ConfigError;
use crate::version::{Version, SUPPORTED};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File extensions of network configurations.
pub const EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// One plugin of a network: its `type` and the rest of its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    pub plugin_type: String,
    /// `capabilities`: which `runtimeConfig` keys the plugin wants.
    pub capabilities: BTreeMap<String, bool>,
    /// The plugin's JSON object as written.
    pub raw: Map<String, Value>,
}

/// A network: a name, a spec version and its plugins in ADD order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub version: Version,
    pub disable_check: bool,
    pub plugins: Vec<PluginConf>,
    /// The whole configuration as JSON (kept in the attachment cache).
    pub raw: Value,
    /// The file it was loaded from.
    pub source: Option<PathBuf>,
}

/// Network and container names may only use these characters (libcni's rule).
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric()) && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Linux interface names: 1-15 bytes, no '/', ':' or whitespace, not `.`/`..`.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() < 16 && s != "." && s != ".." && !s.bytes().any(|c| c == b'/' || c == b':' || c.is_ascii_whitespace() || c == 0)
}

struct Ctx<'a> {
    path: Option<&'a Path>,
    network: Option<String>,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError { path: self.path.map(Path::to_path_buf), network: self.network.clone(), field: field.into(), reason: reason.into() }
    }
}

fn parse_version(ctx: &Ctx, v: Option<&Value>, field: &str) -> Result<(String, Version), ConfigError> {
    let s = match v {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ctx.err(field, "must be a string")),
        None => return Err(ctx.err(field, format!("missing (supported: {})", SUPPORTED.join(", ")))),
    };
    let ver: Version = s.parse().map_err(|e: String| ctx.err(field, e))?;
    if !ver.is_supported() {
        return Err(ctx.err(field, format!("version {s} is not supported (supported: {})", SUPPORTED.join(", "))));
    }
    Ok((s.clone(), ver))
}

fn parse_name(ctx: &Ctx, v: Option<&Value>) -> Result<String, ConfigError> {
    match v {
        Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
        Some(Value::String(s)) if s.is_empty() => Err(ctx.err("name", "must not be empty")),
        Some(Value::String(s)) => Err(ctx.err("name", format!("{s:?} may only contain letters, digits, '_', '.' and '-', starting with a letter or digit"))),
        Some(_) => Err(ctx.err("name", "must be a string")),
        None => Err(ctx.err("name", "missing")),
    }
}

fn parse_plugin(ctx: &Ctx, v: &Value, field: &str) -> Result<PluginConf, ConfigError> {
    let Value::Object(raw) = v else { return Err(ctx.err(field, "must be a JSON object")) };
    let plugin_type = match raw.get("type") {
        Some(Value::String(t)) if !t.is_empty() && !t.contains('/') && t != "." && t != ".." => t.clone(),
        Some(Value::String(t)) if t.is_empty() => return Err(ctx.err(format!("{field}.type"), "must not be empty")),
        Some(Value::String(t)) => return Err(ctx.err(format!("{field}.type"), format!("{t:?} is not a plugin name"))),
        Some(_) => return Err(ctx.err(format!("{field}.type"), "must be a string")),
        None => return Err(ctx.err(format!("{field}.type"), "missing")),
    };
    let mut capabilities = BTreeMap::new();
    match raw.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Value::Bool(b) = v else { return Err(ctx.err(format!("{field}.capabilities.{k}"), "must be true or false")) };
                capabilities.insert(k.clone(), *b);
            }
        }
        Some(_) => return Err(ctx.err(format!("{field}.capabilities"), "must be an object of booleans")),
    }
    Ok(PluginConf { plugin_type, capabilities, raw: raw.clone() })
}

fn parse_bool(ctx: &Ctx, v: Option<&Value>, field: &str) -> Result<bool, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // libcni accepts the strings too.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ctx.err(field, "must be true or false")),
    }
}

fn parse_json(ctx: &Ctx, bytes: &[u8]) -> Result<Map<String, Value>, ConfigError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ctx.err("file", "not a JSON object")),
        Err(e) => Err(ctx.err("file", format!("not valid JSON: {e}"))),
    }
}

/// Parses a network configuration list (`.conflist`).
pub fn parse_conflist(bytes: &[u8], path: Option<&Path>) -> Result<NetworkConfigList, ConfigError> {
    let mut ctx = Ctx { path, network: None };
    let obj = parse_json(&ctx, bytes)?;
    list_from_object(&mut ctx, obj)
}

fn list_from_object(ctx: &mut Ctx, obj: Map<String, Value>) -> Result<NetworkConfigList, ConfigError> {
    let name = parse_name(ctx, obj.get("name"))?;
    ctx.network = Some(name.clone());
    let (cni_version, version) = parse_version(ctx, obj.get("cniVersion"), "cniVersion")?;
    let disable_check = parse_bool(ctx, obj.get("disableCheck"), "disableCheck")?;
    let plugins = match obj.get("plugins") {
        Some(Value::Array(a)) if a.is_empty() => return Err(ctx.err("plugins", "must not be empty")),
        Some(Value::Array(a)) => a.iter().enumerate().map(|(i, p)| parse_plugin(ctx, p, &format!("plugins[{i}]"))).collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ctx.err("plugins", "must be an array of plugin objects")),
        None => return Err(ctx.err("plugins", "missing")),
    };
    Ok(NetworkConfigList { name, cni_version, version, disable_check, plugins, raw: Value::Object(obj), source: ctx.path.map(Path::to_path_buf) })
}

/// Parses a single-plugin configuration (`.conf`, `.json`) into a list of
/// one plugin. A file holding a `plugins` list is read as a conflist.
pub fn parse_conf(bytes: &[u8], path: Option<&Path>) -> Result<NetworkConfigList, ConfigError> {
    let mut ctx = Ctx { path, network: None };
    let obj = parse_json(&ctx, bytes)?;
    if !obj.contains_key("type") && obj.contains_key("plugins") {
        return list_from_object(&mut ctx, obj);
    }
    let name = parse_name(&ctx, obj.get("name"))?;
    ctx.network = Some(name.clone());
    let (cni_version, version) = parse_version(&ctx, obj.get("cniVersion"), "cniVersion")?;
    let plugin = parse_plugin(&ctx, &Value::Object(obj.clone()), "plugin")
        .map_err(|e| ConfigError { field: e.field.replacen("plugin.", "", 1), ..e })?;
    let raw = serde_json::json!({ "cniVersion": cni_version, "name": name, "plugins": [Value::Object(obj)] });
    Ok(NetworkConfigList { name, cni_version, version, disable_check: false, plugins: vec![plugin], raw, source: path.map(Path::to_path_buf) })
}

/// Parses a file by its extension.
pub fn load_file(path: &Path) -> Result<NetworkConfigList, ConfigError> {
    let ctx = Ctx { path: Some(path), network: None };
    let bytes = std::fs::read(path).map_err(|e| ctx.err("file", format!("cannot be read: {e}")))?;
    if path.extension().is_some_and(|e| e == "conflist") {
        parse_conflist(&bytes, Some(path))
    } else {
        parse_conf(&bytes, Some(path))
    }
}

/// The network configuration files of `dir`, sorted by name. A missing
/// directory has none.
pub fn conf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e)))
        // Symlinks to files count (metadata follows them).
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The network of a conf dir: its first configuration file by name, or
/// `None` when there is none. A broken first file is an error (another
/// file is not silently used instead).
pub fn load_conf_dir(dir: &Path) -> Result<Option<NetworkConfigList>, ConfigError> {
    let files = conf_files(dir).map_err(|e| ConfigError {
        path: Some(dir.to_path_buf()),
        network: None,
        field: "directory".into(),
        reason: format!("cannot be read: {e}"),
    })?;
    match files.first() {
        Some(f) => load_file(f).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = r#"{
        "cniVersion": "1.0.0", "name": "pods",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
        ]
    }"#;

    #[test]
    fn parses_a_conflist() {
        let l = parse_conflist(BRIDGE.as_bytes(), None).unwrap();
        assert_eq!(l.name, "pods");
        assert_eq!(l.version, Version(1, 0, 0));
        assert_eq!(l.plugins.len(), 2);
        assert_eq!(l.plugins[0].plugin_type, "bridge");
        assert_eq!(l.plugins[0].raw["bridge"], "cni0");
        assert_eq!(l.plugins[1].capabilities.get("portMappings"), Some(&true));
        assert_eq!(l.plugins[1].capabilities.get("bandwidth"), Some(&false));
        assert!(!l.disable_check);
    }

    #[test]
    fn a_conf_is_a_list_of_one() {
        let l = parse_conf(br#"{"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}"#, None).unwrap();
        assert_eq!((l.name.as_str(), l.cni_version.as_str(), l.plugins.len()), ("lo", "0.4.0", 1));
        assert_eq!(l.plugins[0].plugin_type, "loopback");
        assert_eq!(l.raw["plugins"][0]["type"], "loopback");
        // A list in a .conf file is read as a list.
        assert_eq!(parse_conf(BRIDGE.as_bytes(), None).unwrap().plugins.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let p = Path::new("/x/10-net.conflist");
        let cases: &[(&str, &str, &str)] = &[
            ("{", "file", "not valid JSON"),
            ("[]", "file", "not a JSON object"),
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#, "name", "missing"),
            (r#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"bridge"}]}"#, "name", "may only contain"),
            (r#"{"name":"n","plugins":[{"type":"bridge"}]}"#, "cniVersion", "missing"),
            (r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]}"#, "cniVersion", "not supported"),
            (r#"{"cniVersion":"one","name":"n","plugins":[{"type":"bridge"}]}"#, "cniVersion", "not a version"),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "plugins", "missing"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "plugins", "must not be empty"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"bridge":"x"}]}"#, "plugins[1].type", "missing"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../bin/sh"}]}"#, "plugins[0].type", "not a plugin name"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"p","capabilities":{"portMappings":1}}]}"#, "plugins[0].capabilities.portMappings", "true or false"),
            (r#"{"cniVersion":"1.0.0","name":"n","disableCheck":3,"plugins":[{"type":"p"}]}"#, "disableCheck", "true or false"),
        ];
        for (text, field, reason) in cases {
            let e = parse_conflist(text.as_bytes(), Some(p)).unwrap_err();
            assert_eq!(e.field, *field, "{text}: {e}");
            assert!(e.reason.contains(reason), "{text}: {e}");
            assert!(e.to_string().contains("/x/10-net.conflist"), "{e}");
        }
        let e = parse_conf(br#"{"cniVersion":"1.0.0","name":"n"}"#, None).unwrap_err();
        assert_eq!(e.field, "type");
        assert!(e.to_string().contains("network \"n\""), "{e}");
        assert!(parse_conflist(br#"{"cniVersion":"1.0.0","name":"n","disableCheck":"true","plugins":[{"type":"p"}]}"#, None).unwrap().disable_check);
    }

    #[test]
    fn first_file_by_name_wins() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load_conf_dir(&d.path().join("missing")).unwrap(), None);
        assert_eq!(load_conf_dir(d.path()).unwrap(), None);
        std::fs::write(d.path().join("20-b.conflist"), BRIDGE).unwrap();
        std::fs::write(d.path().join("30-a.conf"), r#"{"cniVersion":"1.0.0","name":"a","type":"loopback"}"#).unwrap();
        std::fs::write(d.path().join("00-ignored.txt"), "not a config").unwrap();
        std::fs::create_dir(d.path().join("05-dir.conf")).unwrap();
        let l = load_conf_dir(d.path()).unwrap().unwrap();
        assert_eq!(l.name, "pods");
        assert_eq!(l.source.as_deref(), Some(d.path().join("20-b.conflist").as_path()));
        std::fs::write(d.path().join("10-broken.json"), "{").unwrap();
        let e = load_conf_dir(d.path()).unwrap_err();
        assert!(e.to_string().contains("10-broken.json"), "{e}");
        assert_eq!(conf_files(d.path()).unwrap().len(), 3);
    }

    #[test]
    fn names() {
        assert!(valid_name("cni-loopback") && valid_name("a.b_c") && !valid_name("-a") && !valid_name("") && !valid_name("a/b"));
        assert!(valid_ifname("eth0") && !valid_ifname("") && !valid_ifname("a/b") && !valid_ifname("0123456789abcdef"));
    }
}
