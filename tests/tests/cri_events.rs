//! CRI container events (GetContainerEvents) through the socket, including
//! exits that no RPC causes and exits after a daemon restart, and the list
//! streams (StreamPodSandboxes, StreamContainers, StreamImages).

use berth_tests::{block_on, image_spec, require_root, CriServer};
use cri_proto::v1 as cri;
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::ContainerEventType as Kind;
use std::time::Duration;
use tonic::codec::Streaming;

fn pod(name: &str, parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), namespace: "default".into(), uid: format!("uid-{name}"), attempt: 0 }),
        hostname: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig { cgroup_parent: parent.into(), ..Default::default() }),
        ..Default::default()
    }
}

fn ctr(script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }),
        image: image_spec("cri/busybox:1"),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// The next event, within `secs`.
async fn next(events: &mut Streaming<cri::ContainerEventResponse>, secs: u64) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(secs), events.message())
        .await
        .expect("no container event in time")
        .expect("event stream error")
        .expect("event stream ended")
}

/// Asserts the event's kind and id and returns it.
async fn expect(events: &mut Streaming<cri::ContainerEventResponse>, kind: Kind, id: &str) -> cri::ContainerEventResponse {
    let ev = next(events, 15).await;
    assert_eq!((Kind::try_from(ev.container_event_type).unwrap(), ev.container_id.as_str()), (kind, id), "{ev:#?}");
    assert!(ev.created_at > 0);
    ev
}

/// Asserts no event arrives for a moment (no duplicates).
async fn expect_quiet(events: &mut Streaming<cri::ContainerEventResponse>) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(500), events.message()).await {
        panic!("unexpected event: {ev:#?}");
    }
}

async fn run_pod(rt: &mut RuntimeServiceClient<tonic::transport::Channel>, config: &cri::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

async fn create(rt: &mut RuntimeServiceClient<tonic::transport::Channel>, sid: &str, pod: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> String {
    rt.create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.into(), config: Some(c), sandbox_config: Some(pod.clone()) })
        .await
        .unwrap()
        .into_inner()
        .container_id
}

fn remove_cgroup_parent(parent: &str) {
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = ctl.path().join(parent.trim_start_matches('/'));
        if d.exists() {
            let children: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
            assert!(children.is_empty(), "cgroups left under {}: {children:?}", d.display());
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn state(s: &cri::ContainerStatus) -> cri::ContainerState {
    cri::ContainerState::try_from(s.state).unwrap()
}

/// runp, create, start of a container that exits by itself, rm, stopp, rmp:
/// the events in order, with their statuses; the list streams agree with
/// the List RPCs.
#[test]
fn lifecycle_events_and_list_streams() {
    require_root();
    let server = CriServer::start_with_busybox();
    let parent = format!("/berth-events-{}", std::process::id());
    let pod = pod("events", &parent);
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let mut events = RuntimeServiceClient::new(server.channel().await)
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();

        let sid = run_pod(&mut rt, &pod).await;
        for kind in [Kind::ContainerCreatedEvent, Kind::ContainerStartedEvent] {
            let ev = expect(&mut events, kind, &sid).await;
            let ps = ev.pod_sandbox_status.expect("sandbox events carry the pod sandbox status");
            assert_eq!(ps.id, sid);
            assert_eq!(ps.state, cri::PodSandboxState::SandboxReady as i32);
            assert!(ev.containers_statuses.is_empty());
        }

        let cid = create(&mut rt, &sid, &pod, ctr("sleep 1; exit 2")).await;
        let ev = expect(&mut events, Kind::ContainerCreatedEvent, &cid).await;
        assert_eq!(ev.pod_sandbox_status.unwrap().id, sid);
        assert_eq!(ev.containers_statuses.len(), 1);
        assert_eq!((ev.containers_statuses[0].id.as_str(), state(&ev.containers_statuses[0])), (cid.as_str(), cri::ContainerState::ContainerCreated));

        rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.unwrap();
        let ev = expect(&mut events, Kind::ContainerStartedEvent, &cid).await;
        assert_eq!(state(&ev.containers_statuses[0]), cri::ContainerState::ContainerRunning);

        // The exit, with no RPC touching the container.
        let ev = expect(&mut events, Kind::ContainerStoppedEvent, &cid).await;
        assert_eq!(ev.pod_sandbox_status.unwrap().id, sid);
        let st = &ev.containers_statuses[0];
        assert_eq!((st.id.as_str(), state(st), st.exit_code), (cid.as_str(), cri::ContainerState::ContainerExited, 2), "{st:#?}");
        assert!(st.finished_at > 0);

        // The list streams return what the List RPCs return.
        let listed: Vec<String> = rt.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner().containers.into_iter().map(|c| c.id).collect();
        let mut streamed = Vec::new();
        let mut s = rt.stream_containers(cri::StreamContainersRequest::default()).await.unwrap().into_inner();
        while let Some(m) = s.message().await.unwrap() {
            streamed.extend(m.containers.into_iter().map(|c| c.id));
        }
        assert_eq!(streamed, listed);
        assert_eq!(streamed, vec![cid.clone()]);
        // With a filter that matches nothing: an empty stream.
        let filter = cri::ContainerFilter { state: Some(cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 }), ..Default::default() };
        let mut s = rt.stream_containers(cri::StreamContainersRequest { filter: Some(filter) }).await.unwrap().into_inner();
        assert!(s.message().await.unwrap().is_none_or(|m| m.containers.is_empty()));

        let filter = cri::PodSandboxFilter { label_selector: [("app".to_string(), "events".to_string())].into(), ..Default::default() };
        let listed: Vec<String> =
            rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter.clone()) }).await.unwrap().into_inner().items.into_iter().map(|p| p.id).collect();
        let mut streamed = Vec::new();
        let mut s = rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: Some(filter) }).await.unwrap().into_inner();
        while let Some(m) = s.message().await.unwrap() {
            streamed.extend(m.pod_sandboxes.into_iter().map(|p| p.id));
        }
        assert_eq!(streamed, listed);
        assert_eq!(streamed, vec![sid.clone()]);

        let mut is = ImageServiceClient::new(server.channel().await);
        let listed: Vec<String> = is.list_images(cri::ListImagesRequest::default()).await.unwrap().into_inner().images.into_iter().map(|i| i.id).collect();
        let mut streamed = Vec::new();
        let mut s = is.stream_images(cri::StreamImagesRequest::default()).await.unwrap().into_inner();
        while let Some(m) = s.message().await.unwrap() {
            streamed.extend(m.images.into_iter().map(|i| i.id));
        }
        assert_eq!(streamed, listed);
        assert_eq!(streamed.len(), 1);

        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
        let ev = expect(&mut events, Kind::ContainerDeletedEvent, &cid).await;
        assert_eq!(ev.containers_statuses[0].exit_code, 2);
        // Idempotent removal: no second event.
        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();

        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        let ev = expect(&mut events, Kind::ContainerStoppedEvent, &sid).await;
        assert_eq!(ev.pod_sandbox_status.unwrap().state, cri::PodSandboxState::SandboxNotready as i32);
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        let ev = expect(&mut events, Kind::ContainerDeletedEvent, &sid).await;
        assert_eq!(ev.pod_sandbox_status.unwrap().id, sid);
        expect_quiet(&mut events).await;
    });
    drop(server);
    remove_cgroup_parent(&parent);
}

/// A container still running when the daemon is killed: after the restart,
/// its exit produces a STOPPED event.
#[test]
fn exit_after_restart_is_an_event() {
    require_root();
    let mut server = CriServer::start_with_busybox();
    let parent = format!("/berth-events-{}", std::process::id());
    let pod = pod("restart", &parent);
    let (sid, cid, pid) = block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let sid = run_pod(&mut rt, &pod).await;
        let cid = create(&mut rt, &sid, &pod, ctr("sleep 300")).await;
        rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.unwrap();
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: true }).await.unwrap().into_inner();
        let pid = serde_json::from_str::<serde_json::Value>(&st.info["info"]).unwrap()["pid"].as_i64().unwrap();
        assert!(pid > 0);
        (sid, cid, pid as i32)
    });
    server.kill9();
    server.restart();
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let mut events = RuntimeServiceClient::new(server.channel().await)
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false }).await.unwrap().into_inner().status.unwrap();
        assert_eq!(state(&st), cri::ContainerState::ContainerRunning);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        let ev = expect(&mut events, Kind::ContainerStoppedEvent, &cid).await;
        assert_eq!(ev.pod_sandbox_status.unwrap().id, sid);
        let st = &ev.containers_statuses[0];
        assert_eq!((state(st), st.exit_code), (cri::ContainerState::ContainerExited, 137), "{st:#?}");

        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
        expect(&mut events, Kind::ContainerDeletedEvent, &cid).await;
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        expect(&mut events, Kind::ContainerStoppedEvent, &sid).await;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        expect(&mut events, Kind::ContainerDeletedEvent, &sid).await;
        expect_quiet(&mut events).await;
    });
    drop(server);
    remove_cgroup_parent(&parent);
}

/// The pause process's host pid, from the verbose PodSandboxStatus.
async fn pause_pid(rt: &mut RuntimeServiceClient<tonic::transport::Channel>, sid: &str) -> i32 {
    let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sid.into(), verbose: true }).await.unwrap().into_inner();
    let pid = serde_json::from_str::<serde_json::Value>(&st.info["info"]).unwrap()["pid"].as_i64().unwrap();
    assert!(pid > 0, "{st:#?}");
    pid as i32
}

async fn sandbox_state(rt: &mut RuntimeServiceClient<tonic::transport::Channel>, sid: &str) -> cri::PodSandboxState {
    let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sid.into(), verbose: false }).await.unwrap().into_inner();
    cri::PodSandboxState::try_from(st.status.unwrap().state).unwrap()
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// A pause process that dies on its own (killed by pid, no RPC): a STOPPED
/// event for the sandbox with its NOTREADY status, and STOPPED for the
/// container in the pod's PID namespace, which dies with its PID 1. The same
/// for a sandbox that was running before a daemon restart. StopPodSandbox
/// afterwards adds no second STOPPED.
#[test]
fn pause_death_is_a_sandbox_event() {
    require_root();
    let mut server = CriServer::start_with_busybox();
    let parent = format!("/berth-events-pause-{}", std::process::id());
    let pod1 = pod("pause-death", &parent);
    let pod2 = pod("pause-death-restart", &parent);
    let sid2 = block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let mut events = RuntimeServiceClient::new(server.channel().await)
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        let sid = run_pod(&mut rt, &pod1).await;
        expect(&mut events, Kind::ContainerCreatedEvent, &sid).await;
        expect(&mut events, Kind::ContainerStartedEvent, &sid).await;
        let cid = create(&mut rt, &sid, &pod1, ctr("sleep 300")).await;
        expect(&mut events, Kind::ContainerCreatedEvent, &cid).await;
        rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.unwrap();
        expect(&mut events, Kind::ContainerStartedEvent, &cid).await;
        assert_eq!(sandbox_state(&mut rt, &sid).await, cri::PodSandboxState::SandboxReady);

        sigkill(pause_pid(&mut rt, &sid).await);
        // Both STOPPED events, in either order.
        let mut seen = Vec::new();
        for _ in 0..2 {
            let ev = next(&mut events, 15).await;
            assert_eq!(Kind::try_from(ev.container_event_type).unwrap(), Kind::ContainerStoppedEvent, "{ev:#?}");
            let ps = ev.pod_sandbox_status.clone().expect("pod sandbox status");
            assert_eq!(ps.id, sid);
            if ev.container_id == sid {
                assert_eq!(ps.state, cri::PodSandboxState::SandboxNotready as i32, "{ev:#?}");
                assert_eq!(ps.metadata.as_ref().unwrap().name, "pause-death");
            } else {
                assert_eq!(ev.container_id, cid);
                assert_eq!(state(&ev.containers_statuses[0]), cri::ContainerState::ContainerExited);
            }
            seen.push(ev.container_id);
        }
        seen.sort();
        let mut want = vec![sid.clone(), cid.clone()];
        want.sort();
        assert_eq!(seen, want);
        assert_eq!(sandbox_state(&mut rt, &sid).await, cri::PodSandboxState::SandboxNotready);
        let filter = cri::PodSandboxFilter { state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxNotready as i32 }), ..Default::default() };
        let listed = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) }).await.unwrap().into_inner().items;
        assert_eq!(listed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), vec![sid.as_str()]);
        // A container cannot be created in it any more.
        let err = rt
            .create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.clone(), config: Some(ctr("true")), sandbox_config: Some(pod1.clone()) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

        // What kubelet does next: stopp (no second STOPPED), rm, rmp.
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        expect(&mut events, Kind::ContainerDeletedEvent, &cid).await;
        expect(&mut events, Kind::ContainerDeletedEvent, &sid).await;
        expect_quiet(&mut events).await;

        run_pod(&mut rt, &pod2).await
    });
    server.kill9();
    server.restart();
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let mut events = RuntimeServiceClient::new(server.channel().await)
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(sandbox_state(&mut rt, &sid2).await, cri::PodSandboxState::SandboxReady);
        sigkill(pause_pid(&mut rt, &sid2).await);
        let ev = expect(&mut events, Kind::ContainerStoppedEvent, &sid2).await;
        assert_eq!(ev.pod_sandbox_status.unwrap().state, cri::PodSandboxState::SandboxNotready as i32);
        assert!(ev.containers_statuses.is_empty());
        assert_eq!(sandbox_state(&mut rt, &sid2).await, cri::PodSandboxState::SandboxNotready);
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid2.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid2.clone() }).await.unwrap();
        expect(&mut events, Kind::ContainerDeletedEvent, &sid2).await;
        expect_quiet(&mut events).await;
    });
    drop(server);
    remove_cgroup_parent(&parent);
}
