use super::*;

fn load(text: &str) -> Loaded {
    load_str("pod.yaml", text)
}

/// The errors of a single invalid pod, displayed.
fn pod_errors(text: &str) -> Vec<String> {
    let l = load(text);
    assert_eq!(l.pods.len(), 1, "{l:?}");
    match &l.pods[0] {
        Ok(p) => panic!("pod is valid: {p:?}"),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn one_error(text: &str) -> String {
    let errs = pod_errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

fn pod_yaml(containers: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n{containers}")
}

const P: &str = "pod.yaml: document 1: Pod default/web: ";

#[test]
fn multi_document_yaml_with_every_kind() {
    let l = load(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n---\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: prod}\nstringData: {password: hunter2}\ndata: {user: YWRtaW4=}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: busybox}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: other}\nspec: {containers: [{name: c}]}\n",
    );
    assert_eq!(l.config_maps.len(), 1);
    assert_eq!(l.config_maps[0].metadata.namespace.as_deref(), Some("default"));
    assert_eq!(l.secrets.len(), 1);
    let s = &l.secrets[0];
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let data = s.data.as_ref().unwrap();
    assert_eq!(data["password"].0, b"hunter2");
    assert_eq!(data["user"].0, b"admin");
    assert!(s.string_data.is_none());
    assert_eq!(l.pods.len(), 2);
    assert_eq!(l.pods[0].as_ref().unwrap().metadata.name.as_deref(), Some("a"));
    let bad = l.pods[1].as_ref().unwrap_err();
    assert_eq!(bad.origin.document, 5, "empty documents count");
    assert_eq!(bad.to_string(), "pod.yaml: document 5: Pod other/b: spec.containers[0].image: Required value");
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    assert_eq!(l.all_errors().count(), 1);
    assert_eq!(l.valid_pods().count(), 1);
}

#[test]
fn json_documents_and_lists() {
    let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"}, "spec": {"containers": [{"name": "c"}]}}
    ]}
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}"#;
    let l = load_str("pods.json", text);
    assert_eq!(l.pods.len(), 3);
    assert_eq!(l.config_maps.len(), 1);
    assert_eq!(
        l.pods[1].as_ref().unwrap_err().to_string(),
        "pods.json: document 1 (items[2]): Pod default/b: spec.containers[0].image: Required value"
    );
    let d = l.pods[2].as_ref().unwrap();
    assert_eq!(origin_of(&d.metadata).unwrap(), Origin { file: "pods.json".into(), document: 2, item: None });
    let a = l.pods[0].as_ref().unwrap();
    assert_eq!(origin_of(&a.metadata).unwrap(), Origin { file: "pods.json".into(), document: 1, item: Some(0) });
}

#[test]
fn unsupported_kinds_and_syntax_errors_name_the_document() {
    let l = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: v2\nkind: Pod\nmetadata: {name: p}\n---\nmetadata: {name: x}\n---\nkind: Pod\n---\n- a\n");
    let errs: Vec<String> = l.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errs,
        [
            "pod.yaml: document 1: Deployment default/d: kind \"Deployment\" (apiVersion \"apps/v1\") is not supported here: standalone mode runs Pods and reads ConfigMaps and Secrets (v1)",
            "pod.yaml: document 2: Pod default/p: apiVersion \"v2\" is not supported for kind Pod: expected \"v1\"",
            "pod.yaml: document 3: kind: Required value",
            "pod.yaml: document 4: Pod default/<no name>: apiVersion: Required value",
            "pod.yaml: document 5: the document is not an object",
        ]
    );
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\nkey: [unclosed\n");
    assert_eq!(l.valid_pods().count(), 1);
    assert_eq!(l.errors.len(), 1);
    let e = l.errors[0].to_string();
    assert!(e.starts_with("pod.yaml: document 2: invalid YAML: "), "{e}");
    let l = load_str("x.json", "{\"kind\": ");
    assert!(l.errors[0].to_string().starts_with("x.json: document 1: invalid JSON: "), "{}", l.errors[0]);
}

#[test]
fn unreadable_file() {
    let l = load_file("/nonexistent/berth/pod.yaml");
    assert_eq!(l.errors.len(), 1);
    assert!(l.errors[0].to_string().starts_with("/nonexistent/berth/pod.yaml: cannot read: "), "{}", l.errors[0]);
}

#[test]
fn unknown_fields_are_errors() {
    let errs = pod_errors(&pod_yaml("  - name: c\n    image: busybox\n    imagePullPolicyy: Always\n    livenessProbe:\n      exec: {command: [x]}\n      periodSecond: 3\n"));
    assert_eq!(
        errs,
        [
            format!("{P}spec.containers[0].imagePullPolicyy: Unknown field"),
            format!("{P}spec.containers[0].livenessProbe.periodSecond: Unknown field"),
        ]
    );
    let errs = pod_errors("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspc: {a: 1}\nstatus: {phase: Running}\nxs: {}\nnothing: null\nspec: {containers: [{name: c, image: i}]}\n");
    assert_eq!(errs, [format!("{P}spc: Unknown field"), format!("{P}xs: Unknown field")]);
}

#[test]
fn type_errors_name_the_field() {
    let e = one_error(&pod_yaml("  - name: c\n    image: busybox\n    ports: [{containerPort: http}]\n"));
    assert!(e.starts_with(&format!("{P}spec.containers[0].ports[0].containerPort: invalid type: string \"http\"")), "{e}");
}

#[test]
fn defaults_like_the_apiserver() {
    let l = load(&pod_yaml(
        "  - name: c\n    image: busybox\n    ports: [{containerPort: 80, name: http}]\n    \
         resources: {limits: {cpu: 500m, memory: 64Mi}, requests: {cpu: 100m}}\n    \
         env: [{name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n    \
         livenessProbe: {httpGet: {port: http}, periodSeconds: 0}\n  - name: d\n    image: busybox:1.36\n  \
         volumes: [{name: v}, {name: cm, configMap: {name: x}}]\n",
    ));
    let pod = l.pods[0].as_ref().unwrap();
    assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.enable_service_links, Some(true));
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert!(spec.security_context.is_some());
    let c = &spec.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers[1].image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
    assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    assert_eq!(c.ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
    let probe = c.liveness_probe.as_ref().unwrap();
    assert_eq!(
        (probe.timeout_seconds, probe.period_seconds, probe.success_threshold, probe.failure_threshold),
        (Some(1), Some(10), Some(1), Some(3))
    );
    let g = probe.http_get.as_ref().unwrap();
    assert_eq!((g.path.as_deref(), g.scheme.as_deref()), (Some("/"), Some("HTTP")));
    let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(req["cpu"].0, "100m");
    assert_eq!(req["memory"].0, "64Mi", "requests default to limits");
    let f = c.env.as_ref().unwrap()[0].value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(f.api_version.as_deref(), Some("v1"));
    let vols = spec.volumes.as_ref().unwrap();
    assert!(vols[0].empty_dir.is_some(), "a volume without a source is an emptyDir");
    assert_eq!(vols[1].config_map.as_ref().unwrap().default_mode, Some(0o644));
    let ann = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
    assert_eq!(&ann[CONFIG_HASH_ANNOTATION], pod.metadata.uid.as_ref().unwrap());
    assert!(pod.status.is_none());
}

#[test]
fn host_network_ports_default_host_port() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: i, ports: [{containerPort: 8080}]}]\n");
    let pod = l.pods[0].as_ref().unwrap();
    assert_eq!(pod.spec.as_ref().unwrap().containers[0].ports.as_ref().unwrap()[0].host_port, Some(8080));
}

#[test]
fn uid_is_stable_per_content_and_source() {
    let text = pod_yaml("  - name: c\n    image: busybox\n");
    let uid = |name: &str, t: &str| load_str(name, t).pods[0].as_ref().unwrap().metadata.uid.clone().unwrap();
    let a = uid("a.yaml", &text);
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a, uid("a.yaml", &text), "same file, same UID");
    assert_ne!(a, uid("b.yaml", &text), "another source");
    assert_ne!(a, uid("a.yaml", &text.replace("busybox", "busybox:1")), "edited content");
    // Formatting does not matter, only the object.
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_eq!(a, uid("a.yaml", json));
    // A UID in the manifest is kept.
    let with_uid = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, uid: '1234'}\nspec: {containers: [{name: c, image: i}]}\n";
    assert_eq!(uid("a.yaml", with_uid), "1234");
    // Through files: the canonical path is the source.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(&f, &text).unwrap();
    let u1 = load_file(&f).pods[0].as_ref().unwrap().metadata.uid.clone();
    let u2 = load_file(dir.path().join(".").join("p.yaml")).pods[0].as_ref().unwrap().metadata.uid.clone();
    assert_eq!(u1, u2);
}

#[test]
fn duplicates_across_documents_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let pod = pod_yaml("  - name: c\n    image: busybox\n");
    std::fs::write(dir.path().join("a.yaml"), &pod).unwrap();
    std::fs::write(dir.path().join("b.yml"), pod.replace("busybox", "nginx")).unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "garbage: [").unwrap();
    let l = load_paths(&[dir.path().to_path_buf()]);
    assert_eq!(l.pods.len(), 2);
    assert!(l.pods[0].is_ok());
    let e = l.pods[1].as_ref().unwrap_err().to_string();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yml");
    assert_eq!(
        e,
        format!(
            "{}: document 1: Pod default/web: metadata.name: Duplicate value: \"web\": already defined in {}: document 1",
            b.display(),
            a.display()
        )
    );
    let l = load("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert_eq!(l.config_maps.len(), 1);
    assert_eq!(
        l.errors[0].to_string(),
        "pod.yaml: document 2: ConfigMap default/x: metadata.name: Duplicate value: \"x\": already defined in pod.yaml: document 1"
    );
}

#[test]
fn validation_messages() {
    let c = |body: &str| one_error(&pod_yaml(body));
    let cases: Vec<(&str, String)> = vec![
        ("  - name: c\n", format!("{P}spec.containers[0].image: Required value")),
        ("  - name: c\n    image: ' busybox'\n", format!("{P}spec.containers[0].image: Invalid value: \" busybox\": must not have leading or trailing whitespace")),
        ("  - name: c\n    image: i\n  - name: c\n    image: i\n", format!("{P}spec.containers[1].name: Duplicate value: \"c\"")),
        ("  - name: C_1\n    image: i\n", format!("{P}spec.containers[0].name: Invalid value: \"C_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")),
        ("  - name: c\n    image: i\n    resources: {limits: {memory: 12XB}}\n", format!("{P}spec.containers[0].resources.limits[memory]: Invalid value: \"12XB\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
        ("  - name: c\n    image: i\n    resources: {limits: {cpu: 1}, requests: {cpu: 2}}\n", format!("{P}spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1")),
        ("  - name: c\n    image: i\n    resources: {limits: {gpu: 1}}\n", format!("{P}spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers")),
        ("  - name: c\n    image: i\n    resources: {requests: {cpu: -1}}\n", format!("{P}spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0")),
        ("  - name: c\n    image: i\n    livenessProbe: {exec: {command: [x]}, tcpSocket: {port: 80}}\n", format!("{P}spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type")),
        ("  - name: c\n    image: i\n    readinessProbe: {periodSeconds: 3}\n", format!("{P}spec.containers[0].readinessProbe: Required value: must specify a handler type")),
        ("  - name: c\n    image: i\n    lifecycle: {postStart: {exec: {command: [x]}, httpGet: {port: 80}}}\n", format!("{P}spec.containers[0].lifecycle.postStart.httpGet: Forbidden: may not specify more than 1 handler type")),
        ("  - name: c\n    image: i\n    lifecycle: {preStop: {}}\n", format!("{P}spec.containers[0].lifecycle.preStop: Required value: must specify a handler type")),
        ("  - name: c\n    image: i\n    lifecycle: {preStop: {sleep: {seconds: 31}}}\n", format!("{P}spec.containers[0].lifecycle.preStop.sleep.seconds: Invalid value: 31: must be non-negative and less than terminationGracePeriodSeconds (30)")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 80, name: web}]\n    livenessProbe: {httpGet: {port: http}}\n", format!("{P}spec.containers[0].livenessProbe.httpGet.port: Not found: \"http\": no port of this container has this name")),
        ("  - name: c\n    image: i\n    lifecycle: {postStart: {tcpSocket: {port: admin}}}\n", format!("{P}spec.containers[0].lifecycle.postStart.tcpSocket.port: Not found: \"admin\": no port of this container has this name")),
        ("  - name: c\n    image: i\n    livenessProbe: {httpGet: {port: 70000}}\n", format!("{P}spec.containers[0].livenessProbe.httpGet.port: Invalid value: 70000: must be between 1 and 65535, inclusive")),
        ("  - name: c\n    image: i\n    livenessProbe: {exec: {command: [x]}, successThreshold: 2}\n", format!("{P}spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1")),
        ("  - name: c\n    image: i\n    readinessProbe: {exec: {command: [x]}, terminationGracePeriodSeconds: 5}\n", format!("{P}spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes")),
        ("  - name: c\n    image: i\n    livenessProbe: {httpGet: {port: 80, scheme: FTP}}\n", format!("{P}spec.containers[0].livenessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 70000}]\n", format!("{P}spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 0}]\n", format!("{P}spec.containers[0].ports[0].containerPort: Required value")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 80, hostPort: 65536}]\n", format!("{P}spec.containers[0].ports[0].hostPort: Invalid value: 65536: must be between 1 and 65535, inclusive")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 80, protocol: HTTP}]\n", format!("{P}spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 80, name: web}, {containerPort: 81, name: web}]\n", format!("{P}spec.containers[0].ports[1].name: Duplicate value: \"web\"")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 80, hostPort: 8080}]\n  - name: d\n    image: i\n    ports: [{containerPort: 81, hostPort: 8080}]\n", format!("{P}spec.containers[1].ports[0].hostPort: Duplicate value: \"8080/TCP\"")),
        ("  - name: c\n    image: i\n    ports: [{containerPort: 80, name: '8080'}]\n", format!("{P}spec.containers[0].ports[0].name: Invalid value: \"8080\": must contain at least one letter (a-z)")),
        ("  - name: c\n    image: i\n    env: [{name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n", format!("{P}spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty")),
        ("  - name: c\n    image: i\n    env: [{name: A, valueFrom: {}}]\n", format!("{P}spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`")),
        ("  - name: c\n    image: i\n    env: [{name: A, valueFrom: {fieldRef: {fieldPath: metadata.nam}}}]\n", format!("{P}spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"metadata.nam\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"")),
        ("  - name: c\n    image: i\n    env: [{name: A, valueFrom: {configMapKeyRef: {name: cm, key: 'a/b'}}}]\n", format!("{P}spec.containers[0].env[0].valueFrom.configMapKeyRef.key: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")),
        ("  - name: c\n    image: i\n    env: [{name: 'A=B', value: x}]\n", format!("{P}spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='")),
        ("  - name: c\n    image: i\n    envFrom: [{prefix: P_}]\n", format!("{P}spec.containers[0].envFrom[0]: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`")),
        ("  - name: c\n    image: i\n    volumeMounts: [{name: data, mountPath: /data}]\n", format!("{P}spec.containers[0].volumeMounts[0].name: Not found: \"data\"")),
        ("  - name: c\n    image: i\n    restartPolicy: Always\n", format!("{P}spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers")),
        ("  - name: c\n    image: i\n    imagePullPolicy: Sometimes\n", format!("{P}spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"")),
    ];
    for (body, want) in cases {
        assert_eq!(c(body), want, "for:\n{body}");
    }
}

#[test]
fn pod_level_validation_messages() {
    let spec = |s: &str| one_error(&format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: [{{name: c, image: i, volumeMounts: [{{name: a, mountPath: /a}}]}}]\n{s}"));
    let cases: Vec<(&str, String)> = vec![
        ("  volumes: [{name: a}]\n  restartPolicy: Sometimes\n", format!("{P}spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"")),
        ("  volumes: [{name: a}, {name: a}]\n", format!("{P}spec.volumes[1].name: Duplicate value: \"a\"")),
        ("  volumes: [{name: a, emptyDir: {sizeLimit: 1XB}}]\n", format!("{P}spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"1XB\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
        ("  volumes: [{name: a, emptyDir: {}, hostPath: {path: /tmp}}]\n", format!("{P}spec.volumes[0].emptyDir: Forbidden: may not specify more than 1 volume type")),
        ("  volumes: [{name: a, nfs: {server: x, path: /}}]\n", format!("{P}spec.volumes[0].nfs: Forbidden: not supported by Berth: a single node serves emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes")),
        ("  volumes: [{name: a, configMap: {name: c, items: [{key: k, path: ../x}]}}]\n", format!("{P}spec.volumes[0].configMap.items[0].path: Invalid value: \"../x\": must not contain '..'")),
        ("  volumes: [{name: a, secret: {secretName: s, items: [{key: k, path: /x}]}}]\n", format!("{P}spec.volumes[0].secret.items[0].path: Invalid value: \"/x\": must be a relative path")),
        ("  volumes: [{name: a, secret: {secretName: s, defaultMode: 1000}}]\n", format!("{P}spec.volumes[0].secret.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive")),
        ("  volumes: [{name: a, hostPath: {path: /x, type: Dir}}]\n", format!("{P}spec.volumes[0].hostPath.type: Unsupported value: \"Dir\": supported values: \"\", \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\"")),
        ("  volumes: [{name: a, projected: {sources: [{serviceAccountToken: {path: t, expirationSeconds: 60}}]}}]\n", format!("{P}spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes")),
        ("  volumes: [{name: a}]\n  dnsPolicy: Cluster\n", format!("{P}spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"")),
        ("  volumes: [{name: a}]\n  terminationGracePeriodSeconds: -1\n", format!("{P}spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0")),
    ];
    for (s, want) in cases {
        assert_eq!(spec(s), want, "for:\n{s}");
    }
}

#[test]
fn init_container_rules() {
    let pod = |init: &str| {
        pod_errors(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  initContainers:\n{init}  containers: [{{name: app, image: i}}]\n"
        ))
    };
    assert_eq!(pod("  - {name: app, image: i}\n"), [format!("{P}spec.containers[0].name: Duplicate value: \"app\"")]);
    assert_eq!(
        pod("  - {name: i, image: i, livenessProbe: {exec: {command: [x]}}}\n"),
        [format!("{P}spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always")]
    );
    assert_eq!(
        pod("  - {name: i, image: i, restartPolicy: Never}\n"),
        [format!("{P}spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"")]
    );
    // A sidecar may have probes and hooks.
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  initContainers: [{name: s, image: i, restartPolicy: Always, startupProbe: {exec: {command: [x]}}, lifecycle: {preStop: {sleep: {seconds: 1}}}}]\n  containers: [{name: app, image: i}]\n");
    assert!(l.pods[0].is_ok(), "{:?}", l.pods[0]);
}

#[test]
fn metadata_validation() {
    let errs = pod_errors("apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1, namespace: Prod, labels: {'bad key!': v, ok: 'bad value!'}}\nspec: {containers: [{name: c, image: i}]}\n");
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("pod.yaml: document 1: Pod Prod/Web_1: metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain"), "{}", errs[0]);
    assert!(errs[1].contains("metadata.namespace: Invalid value: \"Prod\": a lowercase RFC 1123 label"));
    assert!(errs[2].contains("metadata.labels: Invalid value: \"bad key!\": name part must consist"));
    assert!(errs[3].contains("metadata.labels[ok]: Invalid value: \"bad value!\": a valid label must be an empty string"));
    let e = one_error("apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: c, image: i}]}\n");
    assert_eq!(e, "pod.yaml: document 1: Pod default/<no name>: metadata.name: Required value: name or generateName is required");
}

#[test]
fn every_error_of_a_pod_is_reported() {
    let errs = pod_errors(&pod_yaml("  - name: c\n  - name: c\n    image: i\n    ports: [{containerPort: 0}]\n"));
    assert_eq!(
        errs,
        [
            format!("{P}spec.containers[0].image: Required value"),
            format!("{P}spec.containers[1].name: Duplicate value: \"c\""),
            format!("{P}spec.containers[1].ports[0].containerPort: Required value"),
        ]
    );
}

#[test]
fn config_map_and_secret_validation() {
    let l = load("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {'a/b': x}\nbinaryData: {'a/b': eA==}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '***'}\n");
    let errs: Vec<String> = l.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("pod.yaml: document 1: ConfigMap default/cm: data[a/b]: Invalid value: \"a/b\": a valid config key"));
    assert!(errs[2].ends_with("binaryData[a/b]: Invalid value: \"a/b\": duplicate of key present in data"));
    assert_eq!(errs[3], "pod.yaml: document 2: Secret default/s: data.k: invalid value: must be base64-encoded");
    assert!(l.config_maps.is_empty() && l.secrets.is_empty());
}

#[test]
fn secret_values_stay_out_of_errors_and_debug() {
    let l = load("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {pw: 123456789}\n");
    let e = l.errors[0].to_string();
    assert_eq!(e, "pod.yaml: document 1: Secret default/s: stringData.pw: invalid value: must be a string");
    let l = load("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {pw: hunter2}\n");
    assert_eq!(l.secrets.len(), 1);
    let dbg = format!("{l:?}");
    assert!(dbg.contains("default/s") && !dbg.contains("hunter2") && !dbg.contains("104, 117"), "{dbg}");
}
