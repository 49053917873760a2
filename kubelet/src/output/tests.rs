use super::*;
use k8s_openapi::api::core::v1::{Event, Pod};

const NOW: &str = "2024-05-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

/// A pod with `init` init containers, `app` containers and the given status.
fn pod_with(spec: &str, status: &str) -> Pod {
    pod(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default, creationTimestamp: '2024-05-01T11:55:00Z'}}\nspec:\n{spec}\nstatus:\n{status}"
    ))
}

const ONE: &str = "  containers: [{name: app, image: busybox}]";
const TWO_INIT: &str = "  initContainers: [{name: i1, image: busybox}, {name: i2, image: busybox}]\n  containers: [{name: app, image: busybox}]";

fn status_of(spec: &str, status: &str) -> (String, String, String) {
    let r = pod_row(&pod_with(spec, status), now());
    (r.ready, r.status, r.restarts)
}

fn s(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[test]
fn status_column_like_kubectl() {
    let cases: Vec<(&str, &str, (String, String, String))> = vec![
        (ONE, "  phase: Pending", s("0/1", "Pending", "0")),
        (
            ONE,
            "  phase: Pending\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: ContainerCreating}}}]",
            s("0/1", "ContainerCreating", "0"),
        ),
        (
            ONE,
            "  phase: Running\n  conditions: [{type: Ready, status: 'True'}]\n  containerStatuses: [{name: app, image: b, imageID: '', ready: true, restartCount: 0, state: {running: {startedAt: '2024-05-01T11:56:00Z'}}}]",
            s("1/1", "Running", "0"),
        ),
        (
            ONE,
            "  phase: Running\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 5, state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 1, reason: Error, finishedAt: '2024-05-01T11:58:00Z'}}}]",
            s("0/1", "CrashLoopBackOff", "5 (2m ago)"),
        ),
        (
            ONE,
            "  phase: Running\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {running: {}}}]",
            s("0/1", "Running", "0"),
        ),
        (
            ONE,
            "  phase: Succeeded\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, reason: Completed}}}]",
            s("0/1", "Completed", "0"),
        ),
        (
            ONE,
            "  phase: Failed\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 2, reason: Error}}}]",
            s("0/1", "Error", "0"),
        ),
        (
            ONE,
            "  phase: Failed\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 137}}}]",
            s("0/1", "ExitCode:137", "0"),
        ),
        (
            ONE,
            "  phase: Failed\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, signal: 9}}}]",
            s("0/1", "Signal:9", "0"),
        ),
        (
            ONE,
            "  phase: Pending\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: ImagePullBackOff}}}]",
            s("0/1", "ImagePullBackOff", "0"),
        ),
        (
            ONE,
            "  phase: Running\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 1, state: {terminated: {exitCode: 137, reason: OOMKilled}}}]",
            s("0/1", "OOMKilled", "1"),
        ),
        (ONE, "  phase: Failed\n  reason: Evicted", s("0/1", "Evicted", "0")),
        // init containers
        (
            TWO_INIT,
            "  phase: Pending\n  initContainerStatuses: [{name: i1, image: b, imageID: '', ready: false, restartCount: 0, state: {running: {}}}, {name: i2, image: b, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: PodInitializing}}}]\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: PodInitializing}}}]",
            s("0/1", "Init:0/2", "0"),
        ),
        (
            TWO_INIT,
            "  phase: Pending\n  initContainerStatuses: [{name: i1, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, reason: Completed}}}, {name: i2, image: b, imageID: '', ready: false, restartCount: 0, state: {running: {}}}]",
            s("0/1", "Init:1/2", "0"),
        ),
        (
            TWO_INIT,
            "  phase: Pending\n  initContainerStatuses: [{name: i1, image: b, imageID: '', ready: false, restartCount: 3, state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 1, finishedAt: '2024-05-01T11:59:30Z'}}}]",
            s("0/1", "Init:CrashLoopBackOff", "3 (30s ago)"),
        ),
        (
            TWO_INIT,
            "  phase: Failed\n  initContainerStatuses: [{name: i1, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 1, reason: Error}}}]",
            s("0/1", "Init:Error", "0"),
        ),
        (
            TWO_INIT,
            "  phase: Failed\n  initContainerStatuses: [{name: i1, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 3}}}]",
            s("0/1", "Init:ExitCode:3", "0"),
        ),
        (
            TWO_INIT,
            "  phase: Pending\n  initContainerStatuses: [{name: i1, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, reason: Completed}}}, {name: i2, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, reason: Completed}}}]\n  containerStatuses: [{name: app, image: b, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: PodInitializing}}}]",
            s("0/1", "PodInitializing", "0"),
        ),
        // a sidecar counts in READY; a started sidecar does not block
        (
            "  initContainers: [{name: side, image: b, restartPolicy: Always}]\n  containers: [{name: app, image: b}]",
            "  phase: Running\n  conditions: [{type: Initialized, status: 'True'}, {type: Ready, status: 'True'}]\n  initContainerStatuses: [{name: side, image: b, imageID: '', ready: true, started: true, restartCount: 1, state: {running: {}}}]\n  containerStatuses: [{name: app, image: b, imageID: '', ready: true, restartCount: 0, state: {running: {}}}]",
            s("2/2", "Running", "1"),
        ),
        // Completed with another container still running
        (
            "  containers: [{name: a, image: b}, {name: c, image: b}]",
            "  phase: Running\n  conditions: [{type: Ready, status: 'False'}]\n  containerStatuses: [{name: a, image: b, imageID: '', ready: true, restartCount: 0, state: {running: {}}}, {name: c, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, reason: Completed}}}]",
            s("1/2", "NotReady", "0"),
        ),
        (
            "  containers: [{name: a, image: b}, {name: c, image: b}]",
            "  phase: Running\n  conditions: [{type: Ready, status: 'True'}]\n  containerStatuses: [{name: a, image: b, imageID: '', ready: true, restartCount: 0, state: {running: {}}}, {name: c, image: b, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0, reason: Completed}}}]",
            s("1/2", "Running", "0"),
        ),
    ];
    for (spec, status, want) in cases {
        assert_eq!(status_of(spec, status), want, "status:\n{status}");
    }
}

#[test]
fn terminating_and_unknown() {
    let mut p = pod_with(ONE, "  phase: Running");
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    assert_eq!(pod_row(&p, now()).status, "Terminating");
    p.status.as_mut().unwrap().reason = Some("NodeLost".into());
    assert_eq!(pod_row(&p, now()).status, "Unknown");
    let mut done = pod_with(ONE, "  phase: Succeeded");
    done.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    assert_eq!(pod_row(&done, now()).status, "Succeeded", "a finished pod is not Terminating");
}

#[test]
fn table_and_wide() {
    let running = pod_with(
        ONE,
        "  phase: Running\n  podIP: 10.88.0.5\n  podIPs: [{ip: 10.88.0.5}]\n  containerStatuses: [{name: app, image: b, imageID: '', ready: true, restartCount: 0, state: {running: {}}}]",
    );
    let mut pending = pod_with(TWO_INIT, "  phase: Pending");
    pending.metadata.name = Some("a-longer-name".into());
    pending.metadata.creation_timestamp = None;
    let pods = vec![running.clone(), pending.clone()];
    assert_eq!(
        pods_table(&pods, &TableOptions::default(), now()),
        "NAME            READY   STATUS    RESTARTS   AGE\n\
         web             1/1     Running   0          5m\n\
         a-longer-name   0/1     Pending   0          <unknown>\n"
    );
    let mut wide_pod = running.clone();
    wide_pod.spec.as_mut().unwrap().node_name = Some("node1".into());
    assert_eq!(
        pods_table(&[wide_pod], &TableOptions { wide: true, ..Default::default() }, now()),
        "NAME   READY   STATUS    RESTARTS   AGE   IP          NODE    NOMINATED NODE   READINESS GATES\n\
         web    1/1     Running   0          5m    10.88.0.5   node1   <none>           <none>\n"
    );
    let mut other = running.clone();
    other.metadata.namespace = Some("kube-system".into());
    assert_eq!(
        pods_table(&[running.clone(), other], &TableOptions::default(), now()),
        "NAMESPACE     NAME   READY   STATUS    RESTARTS   AGE\n\
         default       web    1/1     Running   0          5m\n\
         kube-system   web    1/1     Running   0          5m\n"
    );
    assert_eq!(
        pods_table(&[running], &TableOptions { no_headers: true, ..Default::default() }, now()),
        "web   1/1   Running   0     5m\n"
    );
    assert_eq!(pods_table(&[], &TableOptions::default(), now()), "");
}

#[test]
fn yaml_and_json_documents() {
    let p = pod_with(ONE, "  phase: Running");
    let y = pods_document(std::slice::from_ref(&p), Format::Yaml, true);
    assert!(y.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n"), "{y}");
    assert!(y.contains("\n  phase: Running\n"), "{y}");
    let back: Pod = serde_yaml::from_str(&y).unwrap();
    assert_eq!(back, p);
    let list = pods_document(&[p.clone(), p.clone()], Format::Yaml, false);
    assert!(list.starts_with("apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Pod\n"), "{list}");
    assert!(list.ends_with("kind: List\nmetadata:\n  resourceVersion: ''\n"), "{list}");
    let j = pods_document(std::slice::from_ref(&p), Format::Json, false);
    assert!(j.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n        {\n"), "{j}");
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"][0]["metadata"]["name"], "web");
    let one = pods_document(&[p], Format::Json, true);
    assert!(one.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"Pod\",\n"), "{one}");
}

fn event(reason: &str, typ: &str, msg: &str, count: i32, first: &str, last: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("web.{reason}"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": reason, "type": typ, "message": msg, "count": count,
        "firstTimestamp": first, "lastTimestamp": last,
        "source": {"component": "kubelet", "host": "node1"}
    }))
    .unwrap()
}

const FULL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  uid: 0123456789abcdef0123456789abcdef
  creationTimestamp: '2024-05-01T11:55:00Z'
  labels: {app: web, tier: front}
  annotations: {kubernetes.io/config.source: file}
spec:
  nodeName: node1
  serviceAccountName: default
  restartPolicy: Always
  initContainers:
  - name: init
    image: busybox:1.36
    command: [sh, -c, "echo init"]
  containers:
  - name: app
    image: busybox:1.36
    command: [httpd, -f]
    args: [-p, "8080"]
    ports: [{containerPort: 8080, name: http, protocol: TCP}]
    resources:
      limits: {cpu: 500m, memory: 64Mi}
      requests: {cpu: 500m, memory: 64Mi}
    livenessProbe:
      httpGet: {path: /healthz, port: http, scheme: HTTP}
      initialDelaySeconds: 1
      timeoutSeconds: 1
      periodSeconds: 10
      successThreshold: 1
      failureThreshold: 3
    readinessProbe:
      exec: {command: [cat, /tmp/ready]}
      timeoutSeconds: 1
      periodSeconds: 5
      successThreshold: 1
      failureThreshold: 3
    env:
    - {name: MODE, value: prod}
    - name: POD
      valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.name}}
    - name: PASS
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: MEM
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: cfg, mountPath: /etc/cfg, readOnly: true}
  volumes:
  - name: data
    emptyDir: {}
  - name: cfg
    configMap: {name: web-config}
status:
  phase: Running
  hostIP: 192.168.1.10
  podIP: 10.88.0.5
  podIPs: [{ip: 10.88.0.5}]
  startTime: '2024-05-01T11:55:00Z'
  qosClass: Guaranteed
  conditions:
  - {type: PodReadyToStartContainers, status: 'True'}
  - {type: Initialized, status: 'True'}
  - {type: Ready, status: 'True'}
  - {type: ContainersReady, status: 'True'}
  - {type: PodScheduled, status: 'True'}
  initContainerStatuses:
  - name: init
    image: busybox:1.36
    imageID: sha256:aaaa
    containerID: berth://1111
    ready: true
    restartCount: 0
    state: {terminated: {exitCode: 0, reason: Completed, startedAt: '2024-05-01T11:55:01Z', finishedAt: '2024-05-01T11:55:02Z'}}
  containerStatuses:
  - name: app
    image: busybox:1.36
    imageID: sha256:aaaa
    containerID: berth://2222
    ready: true
    started: true
    restartCount: 2
    state: {running: {startedAt: '2024-05-01T11:58:00Z'}}
    lastState: {terminated: {exitCode: 137, reason: Error, startedAt: '2024-05-01T11:56:00Z', finishedAt: '2024-05-01T11:57:59Z'}}
"#;

#[test]
fn describe_snapshot() {
    // Times print in the local zone; pin it.
    std::env::set_var("TZ", "UTC");
    let p = pod(FULL);
    let events = vec![
        event("Started", "Normal", "Started container app", 3, "2024-05-01T11:55:03Z", "2024-05-01T11:58:00Z"),
        event("Unhealthy", "Warning", "Liveness probe failed: HTTP probe failed with statuscode: 500\n", 1, "2024-05-01T11:57:40Z", "2024-05-01T11:57:40Z"),
        event("Pulled", "Normal", "Container image \"busybox:1.36\" already present on machine", 1, "2024-05-01T11:55:01Z", "2024-05-01T11:55:01Z"),
    ];
    let out = describe_pod(&p, Some(&events), now());
    let want = "\
Name:             web
Namespace:        default
Service Account:  default
Node:             node1/192.168.1.10
Start Time:       Wed, 01 May 2024 11:55:00 +0000
Labels:           app=web
                  tier=front
Annotations:      kubernetes.io/config.source: file
Status:           Running
IP:               10.88.0.5
IPs:
  IP:  10.88.0.5
Init Containers:
  init:
    Container ID:  berth://1111
    Image:         busybox:1.36
    Image ID:      sha256:aaaa
    Port:          <none>
    Host Port:     <none>
    Command:
      sh
      -c
      echo init
    State:          Terminated
      Reason:       Completed
      Exit Code:    0
      Started:      Wed, 01 May 2024 11:55:01 +0000
      Finished:     Wed, 01 May 2024 11:55:02 +0000
    Ready:          True
    Restart Count:  0
    Environment:    <none>
    Mounts:         <none>
Containers:
  app:
    Container ID:  berth://2222
    Image:         busybox:1.36
    Image ID:      sha256:aaaa
    Port:          8080/TCP
    Host Port:     0/TCP
    Command:
      httpd
      -f
    Args:
      -p
      8080
    State:          Running
      Started:      Wed, 01 May 2024 11:58:00 +0000
    Last State:     Terminated
      Reason:       Error
      Exit Code:    137
      Started:      Wed, 01 May 2024 11:56:00 +0000
      Finished:     Wed, 01 May 2024 11:57:59 +0000
    Ready:          True
    Restart Count:  2
    Limits:
      cpu:     500m
      memory:  64Mi
    Requests:
      cpu:      500m
      memory:   64Mi
    Liveness:   http-get http://:http/healthz delay=1s timeout=1s period=10s #success=1 #failure=3
    Readiness:  exec [cat /tmp/ready] delay=0s timeout=1s period=5s #success=1 #failure=3
    Environment:
      MODE:  prod
      POD:   web (v1:metadata.name)
      PASS:  <set to the key 'password' in secret 'creds'>  Optional: false
      MEM:   64 (limits.memory)
    Mounts:
      /data from data (rw)
      /etc/cfg from cfg (ro)
Conditions:
  Type                        Status
  PodReadyToStartContainers   True 
  Initialized                 True 
  Ready                       True 
  ContainersReady             True 
  PodScheduled                True 
Volumes:
  data:
    Type:       EmptyDir (a temporary directory that shares a pod's lifetime)
    Medium:     
    SizeLimit:  <unset>
  cfg:
    Type:        ConfigMap (a volume populated by a ConfigMap)
    Name:        web-config
    Optional:    false
QoS Class:       Guaranteed
Node-Selectors:  <none>
Tolerations:     <none>
Events:
  Type     Reason     Age                 From     Message
  ----     ------     ----                ----     -------
  Normal   Pulled     4m59s               kubelet  Container image \"busybox:1.36\" already present on machine
  Warning  Unhealthy  2m20s               kubelet  Liveness probe failed: HTTP probe failed with statuscode: 500
  Normal   Started    2m (x3 over 4m57s)  kubelet  Started container app
";
    if out != want {
        for (i, (a, b)) in out.lines().zip(want.lines()).enumerate() {
            if a != b {
                panic!("line {i} differs:\n got: {a:?}\nwant: {b:?}\n\nfull output:\n{out}");
            }
        }
        panic!("lengths differ:\n{out}");
    }
}

#[test]
fn describe_without_status_or_events() {
    let p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: bare, namespace: default}\nspec: {containers: [{name: c, image: i}]}\n");
    let out = describe_pod(&p, Some(&[]), now());
    assert!(out.starts_with("Name:         bare\nNamespace:    default\nNode:         <none>\nLabels:       <none>\nAnnotations:  <none>\nStatus:       \nIP:           \nIPs:          <none>\nContainers:\n  c:\n    Image:        i\n    Port:         <none>\n"), "{out}");
    assert!(out.ends_with("Mounts:       <none>\nVolumes:          <none>\nQoS Class:        BestEffort\nNode-Selectors:   <none>\nTolerations:      <none>\nEvents:           <none>\n"), "{out}");
    assert!(!describe_pod(&p, None, now()).contains("Events"));
}

#[test]
fn qos_classes() {
    let q = |res: &str| qos_class(&pod(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: c, image: i, resources: {res}}}]}}\n")));
    assert_eq!(q("{}"), "BestEffort");
    assert_eq!(q("{requests: {cpu: 100m}}"), "Burstable");
    assert_eq!(q("{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 1000m, memory: 1Gi}}"), "Guaranteed");
    assert_eq!(q("{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 500m, memory: 1Gi}}"), "Burstable");
    assert_eq!(q("{limits: {cpu: 1}, requests: {cpu: 1}}"), "Burstable");
}

#[test]
fn probes_described() {
    let p: k8s_openapi::api::core::v1::Probe = serde_yaml::from_str(
        "{tcpSocket: {port: 5432}, initialDelaySeconds: 5, timeoutSeconds: 1, periodSeconds: 10, successThreshold: 1, failureThreshold: 3}",
    )
    .unwrap();
    assert_eq!(describe_probe(&p), "tcp-socket :5432 delay=5s timeout=1s period=10s #success=1 #failure=3");
    let p: k8s_openapi::api::core::v1::Probe =
        serde_yaml::from_str("{grpc: {port: 9000, service: ''}, timeoutSeconds: 1, periodSeconds: 10, successThreshold: 1, failureThreshold: 3}").unwrap();
    assert_eq!(describe_probe(&p), "grpc <pod>:9000  delay=0s timeout=1s period=10s #success=1 #failure=3");
}
