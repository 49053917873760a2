//! Pod volumes end to end: files read from inside containers of `berth run`
//! pods — configMap, secret, downwardAPI, projected and service account
//! tokens, emptyDir and hostPath — their modes and owners, updates,
//! subPath safety, eviction, and what is left on the node afterwards.

use base64::Engine;
use berth_tests::standalone::{container, running, waiting_reason, Standalone};
use berth_tests::MountGuard;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const IMG: &str = berth_tests::standalone::IMAGE;
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

/// `sh -c CMD` in a container; its stdout.
fn sh(s: &Standalone, pod: &str, c: &str, cmd: &str) -> String {
    s.berth_ok(&["exec", pod, "-c", c, "--", "sh", "-c", cmd])
}

/// `sh -c CMD` in a container; exit code and stdout+stderr.
fn sh_status(s: &Standalone, pod: &str, c: &str, cmd: &str) -> (i32, String) {
    let out = s.berth(&["exec", pod, "-c", c, "--", "sh", "-c", cmd]);
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Polls until `ok` holds; panics with `what` after `secs`.
fn wait_until(s: &Standalone, what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen in {secs}s\nrun output:\n{}", s.output());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replaces a manifest in one rename, so the watcher never reads half a file.
fn replace(s: &Standalone, name: &str, text: &str) {
    let tmp = s.write(&format!("{name}.new"), text);
    std::fs::rename(tmp, s.dir.path().join(name)).unwrap();
}

fn pod_dir(s: &Standalone, uid: &str) -> PathBuf {
    s.root.path().join("pods").join(uid)
}

/// The filesystem type and super options of the mount at `path`.
fn mount_at(path: &Path) -> Option<(String, String)> {
    let want = path.display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4) != Some(&want.as_str()) {
            return None;
        }
        let dash = f.iter().position(|x| *x == "-")?;
        Some((f.get(dash + 1)?.to_string(), f.get(dash + 3).unwrap_or(&"").to_string()))
    })
}

/// Regular files under `root` on its filesystem (mounts are not entered)
/// whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let dev = std::fs::metadata(root).unwrap().dev();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                if let Ok(data) = std::fs::read(e.path()) {
                    if data.windows(needle.len()).any(|w| w == needle) {
                        out.push(e.path());
                    }
                }
            }
        }
    }
    out
}

/// The key Berth publishes in `<root>/issuer/jwks.json`, and its kid.
fn published_key(s: &Standalone) -> (jsonwebtoken::DecodingKey, String) {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&std::fs::read(s.root.path().join("issuer/jwks.json")).unwrap()).unwrap();
    let jwk = &set.keys[0];
    (jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), jwk.common.key_id.clone().unwrap())
}

/// Verifies a token's signature, issuer and audience (not its expiry);
/// returns the header's kid and the claims.
fn verify(s: &Standalone, token: &str, issuer: &str, audience: &str) -> (String, Value) {
    let (key, _) = published_key(s);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    v.validate_exp = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).unwrap_or_else(|e| panic!("token does not verify ({e}): {token}"));
    (data.header.kid.unwrap_or_default(), data.claims)
}

#[test]
fn api_data_volumes_have_their_files_and_secrets_stay_off_disk() {
    let mut s = Standalone::new();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let secret = format!("berth-distinctive-secret-{}-{nanos}", std::process::id());
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let m = s.write(
        "files.yaml",
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{a.conf: alpha, b.conf: beta}}
binaryData: {{blob: {blob}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
data: {{password: {pw}, user: {user}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: files
  labels: {{app: files, tier: "1"}}
  annotations: {{note: hello}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
    resources: {{limits: {{memory: 64Mi, cpu: 500m}}, requests: {{memory: 32Mi, cpu: 250m}}}}
    volumeMounts:
    - {{name: all, mountPath: /cfg/all}}
    - {{name: some, mountPath: /cfg/some}}
    - {{name: secret, mountPath: /secret}}
    - {{name: missing, mountPath: /missing}}
    - {{name: down, mountPath: /down}}
    - {{name: proj, mountPath: /proj}}
    - {{name: all, mountPath: /single.conf, subPath: a.conf}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: scratch, mountPath: /mine, subPathExpr: "pods/$(POD_NAME)"}}
    - {{name: scratch, mountPath: /ro, readOnly: true}}
  volumes:
  - {{name: all, configMap: {{name: cfg}}}}
  - name: some
    configMap: {{name: cfg, defaultMode: 0600, items: [{{key: b.conf, path: dir/b}}, {{key: a.conf, path: a, mode: 0444}}]}}
  - name: secret
    secret: {{secretName: creds, defaultMode: 0400, items: [{{key: password, path: pw}}]}}
  - name: missing
    secret: {{secretName: nope, optional: true}}
  - name: down
    downwardAPI:
      items:
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: ns, fieldRef: {{fieldPath: metadata.namespace}}}}
      - {{path: uid, fieldRef: {{fieldPath: metadata.uid}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: annotations, fieldRef: {{fieldPath: metadata.annotations}}}}
      - {{path: mem, resourceFieldRef: {{containerName: c, resource: limits.memory, divisor: 1Mi}}}}
      - {{path: cpu, resourceFieldRef: {{containerName: c, resource: requests.cpu, divisor: 1m}}, mode: 0400}}
  - name: proj
    projected:
      defaultMode: 0440
      sources:
      - configMap: {{name: cfg, items: [{{key: a.conf, path: conf/a}}]}}
      - secret: {{name: creds, items: [{{key: user, path: user}}]}}
      - downwardAPI: {{items: [{{path: podname, fieldRef: {{fieldPath: metadata.name}}}}]}}
      - serviceAccountToken: {{path: token, audience: vault, expirationSeconds: 600}}
  - {{name: scratch, emptyDir: {{}}}}
"#,
            blob = b64(&[0, 1, 2, 255]),
            pw = b64(secret.as_bytes()),
            user = b64(b"admin"),
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("files", "running", 60, |p| running(p, "c"));
    let u = uid(&p);
    let x = |cmd: &str| sh(&s, "files", "c", cmd);

    // configMap: every key, binaryData too, defaultMode 0644.
    assert_eq!(x("cat /cfg/all/a.conf; echo; cat /cfg/all/b.conf"), "alpha\nbeta");
    assert_eq!(x("od -An -tx1 /cfg/all/blob").split_whitespace().collect::<Vec<_>>(), ["00", "01", "02", "ff"]);
    assert_eq!(x("stat -L -c %a /cfg/all/a.conf"), "644\n");
    assert_eq!(x("readlink /cfg/all/a.conf; readlink /cfg/all/..data | cut -c1-4"), "..data/a.conf\n..20\n");
    // items: key → path, per-item mode over defaultMode.
    assert_eq!(x("ls /cfg/some"), "a\ndir\n");
    assert_eq!(x("cat /cfg/some/dir/b; echo; stat -L -c %a /cfg/some/dir/b /cfg/some/a"), "beta\n600\n444\n");
    // secret: items, defaultMode; an optional missing one is an empty directory.
    assert_eq!(x("ls /secret; cat /secret/pw; echo; stat -L -c %a /secret/pw"), format!("pw\n{secret}\n400\n"));
    assert_eq!(x("ls /missing | wc -l"), "0\n");
    // downwardAPI: pod fields and container resources in divisor units.
    assert_eq!(x("cat /down/name; echo; cat /down/ns; echo; cat /down/uid"), format!("files\ndefault\n{u}"));
    assert_eq!(x("cat /down/labels"), "app=\"files\"\ntier=\"1\"");
    assert!(x("cat /down/annotations").contains("note=\"hello\""));
    assert_eq!(x("cat /down/mem; echo; cat /down/cpu; echo; stat -L -c %a /down/mem /down/cpu"), "64\n250\n644\n400\n");
    // projected: a mix of sources under one defaultMode.
    assert_eq!(x("cat /proj/conf/a; echo; cat /proj/user; echo; cat /proj/podname"), "alpha\nadmin\nfiles");
    assert_eq!(x("stat -L -c %a /proj/conf/a /proj/user"), "440\n440\n");
    let (_, claims) = verify(&s, &x("cat /proj/token"), berth_kubelet_issuer(), "vault");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], u.as_str());
    // The default service account volume.
    assert_eq!(x(&format!("ls {SA_DIR}")), "ca.crt\nnamespace\ntoken\n");
    // subPath of a configMap key; subPathExpr with the container's env.
    assert_eq!(x("cat /single.conf"), "alpha");
    x("echo mine > /mine/f");
    assert_eq!(x("cat /scratch/pods/files/f"), "mine\n");
    // API data and readOnly mounts cannot be written.
    for path in ["/cfg/all/new", "/secret/new", "/proj/new", "/down/new", "/ro/new", &format!("{SA_DIR}/new")] {
        let (code, out) = sh_status(&s, "files", "c", &format!("touch {path}"));
        assert_ne!(code, 0, "{path} is writable");
        assert!(out.contains("Read-only file system"), "{path}: {out}");
    }

    // On the node: secrets and tokens on tmpfs, configMaps on disk.
    let vols = pod_dir(&s, &u).join("volumes");
    assert_eq!(mount_at(&vols.join("kubernetes.io~secret/secret")).map(|m| m.0).as_deref(), Some("tmpfs"));
    assert_eq!(mount_at(&vols.join("kubernetes.io~projected/proj")).map(|m| m.0).as_deref(), Some("tmpfs"));
    assert!(mount_at(&vols.join("kubernetes.io~configmap/all")).is_none());
    assert_eq!(std::fs::read_to_string(vols.join("kubernetes.io~empty-dir/scratch/pods/files/f")).unwrap(), "mine\n");
    // The secret's bytes are nowhere on the disk under the state root.
    let found = files_containing(s.root.path(), secret.as_bytes());
    assert!(found.is_empty(), "the secret is on disk in {found:?}");
    // ...though the mounted tmpfs has it.
    assert_eq!(std::fs::read_to_string(vols.join("kubernetes.io~secret/secret/pw")).unwrap(), secret);

    let st = s.interrupt();
    assert!(st.success(), "{st}\n{}", s.output());
    s.assert_clean();
    assert!(!pod_dir(&s, &u).exists(), "the pod directory is removed");
}

fn berth_kubelet_issuer() -> &'static str {
    "https://kubernetes.default.svc.cluster.local"
}

#[test]
fn ownership_follows_fs_group_and_run_as_user() {
    let mut s = Standalone::new();
    let m = s.write(
        "own.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{pw: hunter2}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{k: v}}
---
apiVersion: v1
kind: Pod
metadata: {{name: grouped}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}}
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    volumeMounts:
    - {{name: s, mountPath: /s}}
    - {{name: e, mountPath: /e}}
    - {{name: cm, mountPath: /cm}}
  volumes:
  - {{name: s, secret: {{secretName: creds, defaultMode: 0400}}}}
  - {{name: e, emptyDir: {{}}}}
  - {{name: cm, configMap: {{name: cfg}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: user}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 1000}}
  containers:
  - {{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: cm, mountPath: /cm}}]}}
  volumes:
  - {{name: cm, configMap: {{name: cfg}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: mixed}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: a, image: {IMG}, command: ["sleep", "1000"], securityContext: {{runAsUser: 1000}}}}
  - {{name: b, image: {IMG}, command: ["sleep", "1000"]}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    for p in ["grouped", "user"] {
        s.wait_pod(p, "running", 60, |p| running(p, "c"));
    }
    s.wait_pod("mixed", "running", 60, |p| running(p, "a") && running(p, "b"));
    let g = |cmd: &str| sh(&s, "grouped", "c", cmd);
    assert_eq!(g("id -u"), "1000\n");
    assert!(g("id -G").split_whitespace().any(|x| x == "2000"), "fsGroup is a supplemental group");
    // fsGroup: group ownership, group read on read-only volumes, setgid dirs.
    assert_eq!(g("stat -L -c '%a %u %g' /s/pw /cm/k"), "440 0 2000\n644 0 2000\n");
    assert_eq!(g("cat /s/pw"), "hunter2");
    assert_eq!(g("stat -c '%a %g' /e"), "2777 2000\n");
    assert_eq!(g("touch /e/f && stat -c '%u %g' /e/f"), "1000 2000\n");
    // The token: owned by the pod's user, group-readable through fsGroup.
    assert_eq!(g(&format!("stat -L -c '%a %u %g' {SA_DIR}/token {SA_DIR}/ca.crt")), "640 1000 2000\n644 0 2000\n");
    assert!(g(&format!("cat {SA_DIR}/token")).starts_with("ey"));
    // runAsUser without fsGroup: the token is the user's alone.
    let u = |cmd: &str| sh(&s, "user", "c", cmd);
    assert_eq!(u(&format!("stat -L -c '%a %u %g' {SA_DIR}/token {SA_DIR}/namespace /cm/k")), "600 1000 0\n644 0 0\n644 0 0\n");
    assert!(u(&format!("cat {SA_DIR}/token")).starts_with("ey"));
    // Containers with different users: the token keeps the volume's mode.
    assert_eq!(sh(&s, "mixed", "b", &format!("stat -L -c '%a %u %g' {SA_DIR}/token")), "644 0 0\n");
    assert!(sh(&s, "mixed", "a", &format!("cat {SA_DIR}/token")).starts_with("ey"));
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn updates_reach_running_pods_atomically() {
    let mut s = Standalone::new();
    let big = |v: &str| vec![v; 20_000].join(" ");
    let cm = |v: &str, with_c: bool| {
        let c = if with_c { format!("\n  c: {v}") } else { String::new() };
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: live}}\ndata:\n  a: {v}\n  b: {v}{c}\n  big: {}\n", big(v))
    };
    let secret = |v: &str| format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: live-s}}\nstringData: {{token: {v}}}\n");
    s.write("cm.yaml", &cm("v1", true));
    s.write("secret.yaml", &secret("s1"));
    // The reader resolves ..data once per round and reads both keys through
    // it: a mix of versions would show a != b. `big` is read through the
    // user-visible link and must always be one version, whole.
    let reader = r#"
      torn=0; reads=0; last=
      while [ ! -f /tmp/stop ]; do
        d=$(readlink /cfg/..data) || continue
        a=$(cat /cfg/$d/a 2>/dev/null) || continue
        b=$(cat /cfg/$d/b 2>/dev/null) || continue
        [ "$a" = "$b" ] || { torn=$((torn+1)); echo "torn $a $b" >> /tmp/log; }
        n=$(tr ' ' '\n' < /cfg/big 2>/dev/null | sort -u | wc -l)
        [ "$n" -le 1 ] || { torn=$((torn+1)); echo "big has $n values" >> /tmp/log; }
        [ "$a" = "$last" ] || { echo "$a" >> /tmp/seen; last=$a; }
        reads=$((reads+1))
      done
      echo "$reads $torn" > /tmp/result
      exec sleep 1000"#;
    s.write(
        "pod.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command:
    - sh
    - -c
    - |{reader}
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: cfg, mountPath: /fixed-a, subPath: a}}
    - {{name: sec, mountPath: /sec}}
  volumes:
  - {{name: cfg, configMap: {{name: live}}}}
  - {{name: sec, secret: {{secretName: live-s}}}}
"#
        ),
    );
    let dir = s.dir.path().to_str().unwrap().to_string();
    s.start(&["--manifest-dir", &dir]);
    s.wait_pod("live", "running", 60, |p| running(p, "c"));
    let x = |cmd: &str| sh(&s, "live", "c", cmd);
    wait_until(&s, "the reader's first round", 30, || x("cat /tmp/seen 2>/dev/null") == "v1\n");
    assert_eq!(x("ls /cfg"), "a\nb\nbig\nc\n");
    for n in 2..=6 {
        let v = format!("v{n}");
        // From v4 on, key c is gone.
        replace(&s, "cm.yaml", &cm(&v, n < 4));
        wait_until(&s, &format!("{v} in the pod"), 60, || x("cat /cfg/a") == v);
        // The reader gets a round on each version.
        wait_until(&s, "a reader round", 30, || x("tail -n1 /tmp/seen") == format!("{v}\n"));
    }
    assert_eq!(x("ls /cfg"), "a\nb\nbig\n", "the stale key is removed");
    assert_eq!(x("test -e /cfg/c; echo $?"), "1\n");
    assert_eq!(x("ls -a /cfg | grep -c '^\\.\\.20'"), "1\n", "one data directory left");
    // A subPath mount keeps what it had.
    assert_eq!(x("cat /fixed-a"), "v1");
    // Secrets update too.
    assert_eq!(x("cat /sec/token"), "s1");
    replace(&s, "secret.yaml", &secret("s2"));
    wait_until(&s, "the secret update", 60, || x("cat /sec/token") == "s2");

    x("touch /tmp/stop");
    wait_until(&s, "the reader's result", 30, || x("cat /tmp/result 2>/dev/null").contains(' '));
    let result = x("cat /tmp/result");
    let (reads, torn): (u64, u64) = {
        let mut it = result.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    let seen = x("cat /tmp/seen");
    assert_eq!(torn, 0, "torn reads: {}\nseen: {seen}", x("cat /tmp/log 2>/dev/null"));
    assert!(reads > 0);
    let versions: Vec<&str> = seen.lines().collect();
    assert_eq!(versions, ["v1", "v2", "v3", "v4", "v5", "v6"]);
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn missing_objects_hold_the_pod_until_they_appear() {
    let mut s = Standalone::new();
    s.write(
        "pods.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: waits}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: cfg, mountPath: /cfg}}, {{name: p, mountPath: /p}}]}}
  volumes:
  - {{name: cfg, configMap: {{name: later}}}}
  - name: p
    projected: {{sources: [{{secret: {{name: later-s}}}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: optional}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: cfg, mountPath: /cfg}}, {{name: sec, mountPath: /sec}}]}}
  volumes:
  - {{name: cfg, configMap: {{name: nope, optional: true}}}}
  - {{name: sec, secret: {{secretName: there, optional: true, items: [{{key: gone, path: gone}}, {{key: here, path: here}}]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nokey}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: cfg, mountPath: /cfg}}]}}
  volumes:
  - {{name: cfg, configMap: {{name: later, items: [{{key: zzz, path: z}}]}}}}
"#
        ),
    );
    s.write("there.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: there}\nstringData: {here: yes}\n");
    let dir = s.dir.path().to_str().unwrap().to_string();
    s.start(&["--manifest-dir", &dir]);
    // Optional objects and keys that are missing are left out.
    s.wait_pod("optional", "running", 60, |p| running(p, "c"));
    assert_eq!(sh(&s, "optional", "c", "ls /cfg | wc -l; ls /sec"), "0\nhere\n");
    // A missing object holds the pod in ContainerCreating, with events.
    let p = s.wait_pod("waits", "FailedMount", 60, |_| s.berth_ok(&["describe", "pod", "waits"]).contains("FailedMount"));
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(waiting_reason(&p, "c"), "ContainerCreating", "{p}");
    let d = s.berth_ok(&["describe", "pod", "waits"]);
    assert!(d.contains(r#"MountVolume.SetUp failed for volume "cfg" : configmap "later" not found"#), "{d}");
    assert!(d.contains(r#"MountVolume.SetUp failed for volume "p" : secret "later-s" not found"#), "{d}");
    s.wait_pod("nokey", "FailedMount", 60, |_| s.berth_ok(&["describe", "pod", "nokey"]).contains("FailedMount"));
    assert!(s.pod("nokey").unwrap()["status"]["containerStatuses"][0]["containerID"].is_null());
    // The objects appear: the pod starts.
    s.write("later.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {k: ready}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: later-s}\nstringData: {s: too}\n");
    s.wait_pod("waits", "running", 60, |p| running(p, "c"));
    assert_eq!(sh(&s, "waits", "c", "cat /cfg/k /p/s"), "readytoo");
    // Still missing a key: still waiting, with the reason.
    let d = s.berth_ok(&["describe", "pod", "nokey"]);
    assert!(d.contains("configmap references non-existent config key: zzz"), "{d}");
    assert_eq!(waiting_reason(&s.pod("nokey").unwrap(), "c"), "ContainerCreating");
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

/// Unmounts a test mount on drop.
#[test]
fn pod_volumes_take_host_mounts_like_kubelets_shared_root() {
    let mut s = Standalone::new();
    let m = s.write(
        "prop.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: prop}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    volumeMounts: [{{name: e, mountPath: /e, mountPropagation: HostToContainer}}]
  volumes: [{{name: e, emptyDir: {{}}}}]
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("prop", "running", 60, |p| running(p, "c"));
    // The pods root is an rshared mount of its own, as kubelet's root is.
    let root = s.root.path().join("pods");
    let line = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(root.to_str().unwrap()))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{} is not a mount point", root.display()));
    assert!(line.split(" - ").next().unwrap().contains(" shared:"), "{line}");
    // A mount made on the node inside the emptyDir shows up in the pod.
    let dir = pod_dir(&s, &uid(&p)).join("volumes/kubernetes.io~empty-dir/e/late");
    std::fs::create_dir_all(&dir).unwrap();
    nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    let late = MountGuard(dir.clone());
    std::fs::write(dir.join("f"), "from the node").unwrap();
    wait_until(&s, "the node's mount in the pod", 30, || sh_status(&s, "prop", "c", "cat /e/late/f").1 == "from the node");
    drop(late);
    // A restart after kill -9 keeps the one mount; the last run takes it down.
    s.kill9();
    s.start(&[m.to_str().unwrap()]);
    s.wait_pod("prop", "running", 60, |p| running(p, "c"));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let roots = info.lines().filter(|l| l.split(' ').nth(4) == root.to_str()).count();
    assert_eq!(roots, 1, "{info}");
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn host_path_types_are_checked_before_the_pod_starts() {
    let mut s = Standalone::new();
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir_all(h.join("dir")).unwrap();
    std::fs::create_dir_all(h.join("prop")).unwrap();
    std::fs::write(h.join("file"), "host file").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(h.join("sock")).unwrap();
    // Propagation needs a shared mount on the host side (kubelet's root is one).
    let _shared = MountGuard::bind_self(&h.join("prop"), nix::mount::MsFlags::MS_SHARED);
    // ... and a private one refuses HostToContainer with containerd's words.
    let _private = MountGuard::bind_self(&h.join("priv"), nix::mount::MsFlags::MS_PRIVATE);
    let hp = |p: &str| h.join(p).display().to_string();
    let m = s.write(
        "hp.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: ok}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    volumeMounts:
    - {{name: d, mountPath: /d}}
    - {{name: f, mountPath: /f}}
    - {{name: nd, mountPath: /nd}}
    - {{name: nf, mountPath: /nf}}
    - {{name: sock, mountPath: /sock}}
    - {{name: devnull, mountPath: /null}}
    - {{name: unset, mountPath: /unset}}
    - {{name: prop, mountPath: /prop, mountPropagation: HostToContainer}}
    - {{name: prop, mountPath: /private}}
    - {{name: d, mountPath: /sub, subPath: made/here}}
  volumes:
  - {{name: d, hostPath: {{path: {dir}, type: Directory}}}}
  - {{name: f, hostPath: {{path: {file}, type: File}}}}
  - {{name: nd, hostPath: {{path: {nd}, type: DirectoryOrCreate}}}}
  - {{name: nf, hostPath: {{path: {nf}, type: FileOrCreate}}}}
  - {{name: sock, hostPath: {{path: {sock}, type: Socket}}}}
  - {{name: devnull, hostPath: {{path: /dev/null, type: CharDevice}}}}
  - {{name: unset, hostPath: {{path: {dir}}}}}
  - {{name: prop, hostPath: {{path: {prop}, type: Directory}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: v, mountPath: /v, mountPropagation: HostToContainer}}]}}]
  volumes: [{{name: v, hostPath: {{path: {private}, type: Directory}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: notdir}}
spec:
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: v, mountPath: /v}}]}}]
  volumes: [{{name: v, hostPath: {{path: {file}, type: Directory}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: notblock}}
spec:
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: v, mountPath: /v}}]}}]
  volumes: [{{name: v, hostPath: {{path: /dev/null, type: BlockDevice}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nofile}}
spec:
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: v, mountPath: /v}}]}}]
  volumes: [{{name: v, hostPath: {{path: {missing}, type: File}}}}]
"#,
            dir = hp("dir"),
            file = hp("file"),
            nd = hp("new/dir"),
            nf = hp("newfile"),
            sock = hp("sock"),
            prop = hp("prop"),
            private = hp("priv"),
            missing = hp("missing"),
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    s.wait_pod("ok", "running", 60, |p| running(p, "c"));
    let x = |cmd: &str| sh(&s, "ok", "c", cmd);
    assert_eq!(x("test -d /d && cat /f && test -d /nd && test -f /nf && test -S /sock && test -c /null && test -d /unset && echo ok"), "host fileok\n");
    let nd = std::fs::metadata(h.join("new/dir")).unwrap();
    assert!(nd.is_dir() && nd.mode() & 0o7777 == 0o755);
    let nf = std::fs::metadata(h.join("newfile")).unwrap();
    assert!(nf.is_file() && nf.mode() & 0o7777 == 0o644);
    // A subPath of a hostPath is created inside it.
    x("echo via-sub > /sub/f");
    assert_eq!(std::fs::read_to_string(h.join("dir/made/here/f")).unwrap(), "via-sub\n");
    // HostToContainer: a mount made on the host later shows up in the pod;
    // a private mount of the same directory does not get it.
    std::fs::create_dir_all(h.join("prop/m")).unwrap();
    nix::mount::mount(Some("tmpfs"), &h.join("prop/m"), Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    let _m = MountGuard(h.join("prop/m"));
    std::fs::write(h.join("prop/m/late"), "late").unwrap();
    wait_until(&s, "the host mount in the pod", 30, || sh_status(&s, "ok", "c", "cat /prop/m/late").1 == "late");
    assert_ne!(sh_status(&s, "ok", "c", "cat /private/m/late").0, 0);
    drop(_m);
    let p = s.wait_pod("private", "CreateContainerError", 60, |p| waiting_reason(p, "c") == "CreateContainerError");
    let msg = container(&p, "c")["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    let want = format!("path {:?} is mounted on {:?} but it is not a shared or slave mount", hp("priv"), hp("priv"));
    assert!(msg.contains(&want), "{msg}");

    for (pod, msg) in [
        ("notdir", format!("hostPath type check failed: {} is not a directory", hp("file"))),
        ("notblock", "hostPath type check failed: /dev/null is not a block device".to_string()),
        ("nofile", format!("hostPath type check failed: {} is not a file", hp("missing"))),
    ] {
        let p = s.wait_pod(pod, "FailedMount", 60, |_| s.berth_ok(&["describe", "pod", pod]).contains("FailedMount"));
        assert_eq!(waiting_reason(&p, "c"), "ContainerCreating", "{p}");
        assert_eq!(p["status"]["phase"], "Pending");
        let d = s.berth_ok(&["describe", "pod", pod]);
        assert!(d.contains(&format!("MountVolume.SetUp failed for volume \"v\" : {msg}")), "{d}");
    }
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn service_account_tokens_verify_with_the_published_key() {
    let mut s = Standalone::new();
    let issuer = "https://berth.example";
    let m = s.write(
        "tok.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: tok}}
spec:
  terminationGracePeriodSeconds: 1
  serviceAccountName: builder
  containers:
  - {{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: vault, mountPath: /vt}}]}}
  volumes:
  - name: vault
    projected: {{sources: [{{serviceAccountToken: {{path: vault-token, audience: vault, expirationSeconds: 600}}}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: notok}}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"]}}]
"#
        ),
    );
    s.start(&["--service-account-issuer", issuer, m.to_str().unwrap()]);
    let p = s.wait_pod("tok", "running", 60, |p| running(p, "c"));
    let u = uid(&p);
    // Published: the key set, the discovery document and the CA.
    let issuer_dir = s.root.path().join("issuer");
    let disc: Value = serde_json::from_slice(&std::fs::read(issuer_dir.join("openid-configuration.json")).unwrap()).unwrap();
    assert_eq!(disc["issuer"], issuer);
    assert_eq!(disc["jwks_uri"], format!("{issuer}/openid/v1/jwks"));
    let (_, kid) = published_key(&s);

    let token = sh(&s, "tok", "c", "cat /vt/vault-token");
    let (header_kid, c) = verify(&s, &token, issuer, "vault");
    assert_eq!(header_kid, kid);
    assert_eq!(c["aud"], serde_json::json!(["vault"]));
    assert_eq!(c["sub"], "system:serviceaccount:default:builder");
    assert_eq!(c["kubernetes.io"]["namespace"], "default");
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "tok");
    assert_eq!(c["kubernetes.io"]["pod"]["uid"], u.as_str());
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "builder");
    assert!(c["kubernetes.io"]["serviceaccount"]["uid"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);
    assert_eq!(c["nbf"], c["iat"]);
    // Another audience does not accept it.
    let (key, _) = published_key(&s);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["kubernetes"]);
    assert!(jsonwebtoken::decode::<Value>(&token, &key, &v).is_err());

    // The default volume: a token for the API audience, the CA, the namespace.
    let t = sh(&s, "tok", "c", &format!("cat {SA_DIR}/token"));
    let (_, c) = verify(&s, &t, issuer, issuer);
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 3607);
    assert_eq!(c["sub"], "system:serviceaccount:default:builder");
    assert_eq!(sh(&s, "tok", "c", &format!("cat {SA_DIR}/ca.crt")), std::fs::read_to_string(issuer_dir.join("ca.crt")).unwrap());
    assert_eq!(sh(&s, "tok", "c", &format!("cat {SA_DIR}/namespace")), "default");
    // automountServiceAccountToken: false.
    s.wait_pod("notok", "running", 60, |p| running(p, "c"));
    assert_eq!(sh_status(&s, "notok", "c", "ls /var/run/secrets/kubernetes.io").0, 1);
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn tokens_are_refreshed_before_they_expire() {
    let mut s = Standalone::new();
    let m = s.write(
        "r.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: fresh}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"]}}]
"#
        ),
    );
    // Tokens live 10 s at most here: the refresh comes after 8.
    s.start(&["--service-account-max-token-expiration", "10", m.to_str().unwrap()]);
    s.wait_pod("fresh", "running", 60, |p| running(p, "c"));
    let read = || sh(&s, "fresh", "c", &format!("cat {SA_DIR}/token"));
    let first = read();
    let mut second = first.clone();
    wait_until(&s, "a new token", 60, || {
        second = read();
        second != first
    });
    let issuer = berth_kubelet_issuer();
    let (_, c1) = verify(&s, &first, issuer, issuer);
    let (_, c2) = verify(&s, &second, issuer, issuer);
    let (iat1, exp1) = (c1["iat"].as_u64().unwrap(), c1["exp"].as_u64().unwrap());
    let (iat2, exp2) = (c2["iat"].as_u64().unwrap(), c2["exp"].as_u64().unwrap());
    assert_eq!((exp1 - iat1, exp2 - iat2), (10, 10));
    assert!(iat2 > iat1 && iat2 < exp1, "refreshed before the old one expired: {c1} {c2}");
    // The old token is refused once its time is up.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    while now() <= exp1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (key, _) = published_key(&s);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[issuer]);
    v.leeway = 0;
    let e = jsonwebtoken::decode::<Value>(&first, &key, &v).unwrap_err();
    assert!(matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature), "{e:?}");
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn sub_path_escapes_and_traversal_are_refused() {
    let mut s = Standalone::new();
    let m = s.write(
        "esc.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: esc}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: setup
    image: {IMG}
    command: ["sh", "-c", "ln -s / /data/abs; ln -s ../../../../../../../.. /data/rel; mkdir -p /data/ok/inner; echo fine > /data/ok/inner/f; ln -s ok /data/inside; ln -s /etc/hostname /data/filelink"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - {{name: good, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: data, mountPath: /good, subPath: inside/inner}}]}}
  - {{name: abs, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: data, mountPath: /x, subPath: abs/etc}}]}}
  - {{name: rel, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: data, mountPath: /x, subPath: rel}}]}}
  - {{name: file, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: data, mountPath: /x, subPath: filelink}}]}}
  - name: expr
    image: {IMG}
    command: ["sleep", "1000"]
    env: [{{name: UP, value: "../../.."}}]
    volumeMounts: [{{name: data, mountPath: /x, subPathExpr: "$(UP)/etc"}}]
  volumes: [{{name: data, emptyDir: {{}}}}]
"#
        ),
    );
    let bad = s.write(
        "bad.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: itempath}}
spec:
  containers: [{{name: c, image: {IMG}, volumeMounts: [{{name: v, mountPath: /v}}]}}]
  volumes: [{{name: v, configMap: {{name: x, items: [{{key: k, path: ../../etc/cron.d/x}}]}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: abspath}}
spec:
  containers: [{{name: c, image: {IMG}, volumeMounts: [{{name: v, mountPath: /v}}]}}]
  volumes: [{{name: v, secret: {{secretName: x, items: [{{key: k, path: /etc/x}}]}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: subdots}}
spec:
  containers: [{{name: c, image: {IMG}, volumeMounts: [{{name: v, mountPath: /v, subPath: ../x}}]}}]
  volumes: [{{name: v, emptyDir: {{}}}}]
"#
        ),
    );
    s.start(&[m.to_str().unwrap(), bad.to_str().unwrap()]);
    s.wait_pod("esc", "good running", 60, |p| running(p, "good"));
    assert_eq!(sh(&s, "esc", "good", "cat /good/f"), "fine\n");
    for c in ["abs", "rel", "file", "expr"] {
        let p = s.wait_pod("esc", &format!("{c} refused"), 60, |p| waiting_reason(p, c) == "CreateContainerConfigError");
        let msg = container(&p, c)["state"]["waiting"]["message"].as_str().unwrap_or("").to_string();
        assert!(msg.starts_with(&format!("failed to prepare subPath for volumeMount \"data\" of container \"{c}\"")), "{msg}");
        assert!(msg.contains("outside the volume") || msg.contains("without '..'"), "{msg}");
        assert!(container(&p, c)["containerID"].is_null(), "{c} was created: {p}");
    }
    let out = s.output();
    for (doc, field) in [
        ("itempath", "spec.volumes[0].configMap.items[0].path"),
        ("abspath", "spec.volumes[0].secret.items[0].path"),
        ("subdots", "spec.containers[0].volumeMounts[0].subPath"),
    ] {
        let line = out.lines().find(|l| l.contains(doc) && l.contains("bad.yaml")).unwrap_or_else(|| panic!("no error for {doc}:\n{out}"));
        assert!(line.contains(field), "error for {doc} should name {field}: {line}");
        assert!(s.pod(doc).is_none());
    }
    let st = s.interrupt();
    assert_eq!(st.code(), Some(1), "the invalid manifests make the exit status");
    s.assert_clean();
}

#[test]
fn empty_dir_memory_and_size_limits() {
    let mut s = Standalone::new();
    let m = s.write(
        "ed.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: mem}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    resources: {{limits: {{memory: 32Mi}}}}
    volumeMounts: [{{name: small, mountPath: /small}}, {{name: podsize, mountPath: /podsize}}]
  volumes:
  - {{name: small, emptyDir: {{medium: Memory, sizeLimit: 1Mi}}}}
  - {{name: podsize, emptyDir: {{medium: Memory}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sh", "-c", "dd if=/dev/zero of=/d/big bs=1024 count=3072; exec sleep 1000"]
    volumeMounts: [{{name: d, mountPath: /d}}]
  volumes:
  - {{name: d, emptyDir: {{sizeLimit: 1Mi}}}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("mem", "running", 60, |p| running(p, "c"));
    let vols = pod_dir(&s, &uid(&p)).join("volumes/kubernetes.io~empty-dir");
    let (fs, opts) = mount_at(&vols.join("small")).expect("a mount");
    assert_eq!(fs, "tmpfs");
    assert!(opts.split(',').any(|o| o == "size=1024k"), "{opts}");
    let (_, opts) = mount_at(&vols.join("podsize")).expect("a mount");
    assert!(opts.split(',').any(|o| o == "size=32768k"), "the pod's memory limit: {opts}");
    let (code, out) = sh_status(&s, "mem", "c", "dd if=/dev/zero of=/small/f bs=1024 count=2048");
    assert_ne!(code, 0);
    assert!(out.contains("No space left on device"), "{out}");
    // A tmpfs root, as kubelet leaves it: world-writable and sticky.
    assert_eq!(sh(&s, "mem", "c", "stat -c %a /small"), "1777\n");

    // Over the disk limit: evicted.
    let p = s.wait_pod("hog", "evicted", 90, |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    let msg = p["status"]["message"].as_str().unwrap_or("");
    assert_eq!(msg, "Usage of EmptyDir volume \"d\" exceeds the limit \"1Mi\". ");
    let d = s.berth_ok(&["describe", "pod", "hog"]);
    assert!(d.contains("Evicted"), "{d}");
    s.wait_pod("hog", "container stopped", 60, |p| container(p, "c")["state"]["terminated"].is_object());
    let table = s.berth_ok(&["get", "pods", "hog"]);
    assert!(table.contains("Evicted") || table.contains("Error"), "{table}");
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn nothing_is_left_after_delete_or_after_kill_9() {
    let mut s = Standalone::new();
    let pod = |name: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    volumeMounts:
    - {{name: s, mountPath: /s}}
    - {{name: s, mountPath: /one, subPath: k}}
    - {{name: m, mountPath: /m}}
    - {{name: e, mountPath: /e/sub, subPath: a/b}}
  volumes:
  - {{name: s, secret: {{secretName: sec}}}}
  - {{name: m, emptyDir: {{medium: Memory}}}}
  - {{name: e, emptyDir: {{}}}}
---
"#
        )
    };
    let sec = "apiVersion: v1\nkind: Secret\nmetadata: {name: sec}\nstringData: {k: v}\n---\n";
    let m = s.write("ab.yaml", &format!("{sec}{}{}", pod("a"), pod("b")));
    s.start(&[m.to_str().unwrap()]);
    let a = s.wait_pod("a", "running", 60, |p| running(p, "c"));
    let b = s.wait_pod("b", "running", 60, |p| running(p, "c"));
    let (ua, ub) = (uid(&a), uid(&b));
    let mounts_of = |s: &Standalone, u: &str| {
        let dir = pod_dir(s, u).display().to_string();
        s.leftover_mounts().into_iter().filter(|m| m.starts_with(&dir)).count()
    };
    // A tmpfs per secret, service account and memory volume; two subPath binds.
    assert_eq!(mounts_of(&s, &ua), 5, "{:?}", s.leftover_mounts());
    assert_eq!(sh(&s, "a", "c", "cat /one"), "v");

    s.berth_ok(&["delete", "pod", "a"]);
    assert_eq!(mounts_of(&s, &ua), 0, "{:?}", s.leftover_mounts());
    assert!(!pod_dir(&s, &ua).exists());

    // Killed, restarted without pod b: its volumes go with its sandbox.
    s.kill9();
    assert_eq!(mounts_of(&s, &ub), 5);
    let c = s.write("c.yaml", &format!("{sec}{}", pod("c")));
    s.start(&[c.to_str().unwrap()]);
    wait_until(&s, "b's volumes removed", 60, || mounts_of(&s, &ub) == 0 && !pod_dir(&s, &ub).exists());
    s.wait_pod("c", "running", 60, |p| running(p, "c"));
    assert!(s.pod("b").is_none());
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
    let left: Vec<_> = std::fs::read_dir(s.root.path().join("pods")).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "pod directories left: {left:?}");
    // The issuer's key stays, private.
    assert_eq!(std::fs::metadata(s.root.path().join("issuer/sa.key")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn fs_group_change_policy_decides_on_existing_files() {
    let mut s = Standalone::new();
    let pod = |name: &str, policy: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{fsGroup: 2000, fsGroupChangePolicy: {policy}}}
  containers:
  - {{name: c, image: {IMG}, command: ["sleep", "1000"], volumeMounts: [{{name: e, mountPath: /e}}]}}
  volumes: [{{name: e, emptyDir: {{}}}}]
---
"#
        )
    };
    let m = s.write("p.yaml", &format!("{}{}", pod("always", "Always"), pod("onroot", "OnRootMismatch")));
    let path = m.to_str().unwrap().to_string();
    s.start(&[&path]);
    let mut uids = Vec::new();
    for p in ["always", "onroot"] {
        let pod = s.wait_pod(p, "running", 60, |p| running(p, "c"));
        uids.push(uid(&pod));
        // A file the group cannot read, made by root inside the pod.
        assert_eq!(sh(&s, p, "c", "stat -c '%a %g' /e"), "2777 2000\n");
        sh(&s, p, "c", "touch /e/f && chgrp 0 /e/f && chmod 600 /e/f");
    }
    let token = |s: &Standalone, p: &str| sh(s, p, "c", &format!("cat {SA_DIR}/token"));
    let before = token(&s, "onroot");
    // A restart of Berth sets the volumes up again, by the policy.
    s.kill9();
    s.start(&[&path]);
    let file = |u: &str| std::fs::metadata(pod_dir(&s, u).join("volumes/kubernetes.io~empty-dir/e/f")).unwrap();
    wait_until(&s, "Always: the group changed", 60, || file(&uids[0]).gid() == 2000);
    assert_eq!(file(&uids[0]).mode() & 0o777, 0o660);
    wait_until(&s, "the other pod set up again", 60, || s.pod("onroot").is_some_and(|p| running(&p, "c")) && token(&s, "onroot") != before);
    let f = file(&uids[1]);
    assert_eq!((f.gid(), f.mode() & 0o777), (0, 0o600), "OnRootMismatch leaves the files alone");
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}
