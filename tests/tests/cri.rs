//! The CRI server through its unix socket with a tonic client: version,
//! status, and the ImageService RPCs, with their error codes.

use berth_tests::{block_on, image_spec, builder, require_root, CriServer, MountGuard, Registry};
use cri_proto::v1 as cri;
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use std::os::unix::fs::PermissionsExt;
use tonic::Code;

#[test]
fn version_status_and_config() {
    require_root();
    let server = CriServer::start();
    let mode = std::fs::metadata(&server.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode");
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let v = rt.version(cri::VersionRequest { version: "v1".into() }).await.unwrap().into_inner();
        assert_eq!((v.runtime_name.as_str(), v.runtime_api_version.as_str()), ("berth", "v1"));
        let st = rt.status(cri::StatusRequest { verbose: true }).await.unwrap().into_inner();
        let conds = st.status.unwrap().conditions;
        assert!(conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
        let net = conds.iter().find(|c| c.r#type == "NetworkReady").expect("NetworkReady condition");
        // The harness's loopback CNI network is usable.
        assert!(net.status, "{net:?}");
        let rc = rt.runtime_config(cri::RuntimeConfigRequest {}).await.unwrap().into_inner();
        assert_eq!(rc.linux.unwrap().cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);
        let e = rt.checkpoint_container(cri::CheckpointContainerRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(e.message().contains("CheckpointContainer"));
    });
    let socket = server.socket.clone();
    drop(server);
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[test]
fn image_service_rpcs() {
    require_root();
    let reg = Registry::start();
    let img = builder::busybox_image().unwrap();
    let name = format!("{}/cri/busybox:1.0", reg.addr());
    block_on(builder::push(&name, &img, &[reg.addr()])).unwrap();
    let server = CriServer::start();
    block_on(async {
        let mut is = ImageServiceClient::new(server.channel().await);
        // Absent image: an empty status, not an error.
        let st = is.image_status(cri::ImageStatusRequest { image: image_spec(&name), verbose: false }).await.unwrap().into_inner();
        assert!(st.image.is_none());

        let pulled = is.pull_image(cri::PullImageRequest { image: image_spec(&name), ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(pulled.image_ref, img.config_digest);

        let list = is.list_images(cri::ListImagesRequest::default()).await.unwrap().into_inner().images;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].repo_tags, vec![name.clone()]);
        assert_eq!(list[0].repo_digests, vec![format!("{}/cri/busybox@{}", reg.addr(), img.manifest_digest)]);
        assert!(list[0].size > 0);

        let filtered = is
            .list_images(cri::ListImagesRequest { filter: Some(cri::ImageFilter { image: image_spec(&img.config_digest) }) })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(filtered.len(), 1);

        let st = is.image_status(cri::ImageStatusRequest { image: image_spec(&name), verbose: true }).await.unwrap().into_inner();
        assert_eq!(st.image.unwrap().id, img.config_digest);
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
        assert_eq!(info["image"]["id"], img.config_digest);

        let fs = is.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
        let u = &fs.image_filesystems[0];
        assert!(u.used_bytes.as_ref().unwrap().value > 0 && u.inodes_used.as_ref().unwrap().value > 0);

        // Error codes.
        let e = is.pull_image(cri::PullImageRequest { image: image_spec("UPPER/case"), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = is.pull_image(cri::PullImageRequest { image: image_spec(""), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = is
            .pull_image(cri::PullImageRequest { image: image_spec(&format!("{}/cri/missing:1", reg.addr())), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("cri/missing"), "{e:?}");

        is.remove_image(cri::RemoveImageRequest { image: image_spec(&name) }).await.unwrap();
        // Removal is idempotent.
        is.remove_image(cri::RemoveImageRequest { image: image_spec(&name) }).await.unwrap();
        assert!(is.list_images(cri::ListImagesRequest::default()).await.unwrap().into_inner().images.is_empty());
    });
    // Secrets never reach the log: pull with credentials and check.
    block_on(async {
        let mut is = ImageServiceClient::new(server.channel().await);
        let auth = cri::AuthConfig { username: "u".into(), password: "s3cret-pass-xyz".into(), ..Default::default() };
        let _ = is.pull_image(cri::PullImageRequest { image: image_spec(&name), auth: Some(auth), ..Default::default() }).await;
    });
    assert!(!server.log().contains("s3cret-pass-xyz"));
}

/// A pod through the socket in the order crictl uses: runp, create, start,
/// ps, inspect, logs, stop, rm, stopp, rmp; then error codes, restart
/// recovery and a leak check.
#[test]
fn pod_lifecycle() {
    require_root();
    let mut server = CriServer::start_with_busybox();
    let logs = tempfile::tempdir().unwrap();
    let parent = format!("/berth-critest-{}", std::process::id());
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: "web".into(), namespace: "default".into(), uid: "uid-1".into(), attempt: 0 }),
        hostname: "web-pod".into(),
        log_directory: logs.path().display().to_string(),
        labels: [("app".to_string(), "web".to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig { cgroup_parent: parent.clone(), ..Default::default() }),
        ..Default::default()
    };
    let ctr = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }),
        image: image_spec("cri/busybox:1"),
        command: vec!["sh".into(), "-c".into(), "echo hello from $(hostname); sleep 300".into()],
        log_path: "main/0.log".into(),
        ..Default::default()
    };
    let (sid, cid) = block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let sid = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: String::new() })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        // CRI names are unique.
        let e = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let mut bad = pod.clone();
        bad.metadata.as_mut().unwrap().name.clear();
        let e = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(bad), runtime_handler: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("name"), "{e:?}");

        let cid = rt
            .create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.clone(), config: Some(ctr.clone()), sandbox_config: Some(pod.clone()) })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        let e = rt
            .create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.clone(), config: Some(ctr.clone()), sandbox_config: Some(pod.clone()) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        // HostToContainer from a private host mount cannot propagate.
        let private = MountGuard::bind_self(&logs.path().join("private"), nix::mount::MsFlags::MS_PRIVATE);
        let mut prop = ctr.clone();
        prop.metadata.as_mut().unwrap().name = "prop".into();
        prop.mounts = vec![cri::Mount {
            container_path: "/p".into(),
            host_path: private.0.display().to_string(),
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }];
        let e = rt
            .create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.clone(), config: Some(prop), sandbox_config: Some(pod.clone()) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("is not a shared or slave mount"), "{e:?}");
        drop(private);
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false }).await.unwrap().into_inner().status.unwrap();
        assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
        rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.unwrap();
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: true }).await.unwrap().into_inner();
        assert_eq!(st.status.as_ref().unwrap().state, cri::ContainerState::ContainerRunning as i32);
        assert_eq!(st.status.as_ref().unwrap().log_path, logs.path().join("main/0.log").display().to_string());
        let cpid = serde_json::from_str::<serde_json::Value>(&st.info["info"]).unwrap()["pid"].as_i64().unwrap();
        let sst = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sid.clone(), verbose: true }).await.unwrap().into_inner();
        assert_eq!(sst.status.as_ref().unwrap().state, cri::PodSandboxState::SandboxReady as i32);
        let ppid = serde_json::from_str::<serde_json::Value>(&sst.info["info"]).unwrap()["pid"].as_i64().unwrap();
        // The container lives in the pod's network, IPC and UTS namespaces.
        for ns in ["net", "ipc", "uts"] {
            let c = std::fs::read_link(format!("/proc/{cpid}/ns/{ns}")).unwrap();
            let p = std::fs::read_link(format!("/proc/{ppid}/ns/{ns}")).unwrap();
            let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            assert_eq!(c, p, "{ns} namespace shared with the pause");
            assert_ne!(c, host, "{ns} namespace is not the host's");
        }
        // ExecSync: output, exit code, and a timeout.
        let ex = rt
            .exec_sync(cri::ExecSyncRequest { container_id: cid.clone(), cmd: vec!["sh".into(), "-c".into(), "hostname; echo err >&2; exit 3".into()], timeout: 10 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((ex.stdout.as_slice(), ex.stderr.as_slice(), ex.exit_code), (&b"web-pod\n"[..], &b"err\n"[..], 3));
        let e = rt.exec_sync(cri::ExecSyncRequest { container_id: cid.clone(), cmd: vec!["sleep".into(), "30".into()], timeout: 1 }).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        let e = rt.exec_sync(cri::ExecSyncRequest { container_id: cid.clone(), cmd: vec![], timeout: 1 }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let log_file = logs.path().join("main/0.log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&log_file).unwrap_or_default().contains("hello from web-pod") {
            assert!(std::time::Instant::now() < deadline, "log never showed the pod hostname");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let listed = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter { pod_sandbox_id: sid.clone(), ..Default::default() }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(listed.len(), 1);
        let pods = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter { label_selector: [("app".to_string(), "web".to_string())].into(), ..Default::default() }),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(pods.len(), 1);
        let e = rt.container_status(cri::ContainerStatusRequest { container_id: "nope".into(), verbose: false }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        (sid, cid)
    });

    // kill -9 of the server: the container keeps running, and a new server
    // reports everything as it was.
    server.kill9();
    assert!(server.root.path().join("run").exists());
    server.restart();
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false }).await.unwrap().into_inner().status.unwrap();
        assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "running across a daemon crash");
        let sst = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sid.clone(), verbose: false }).await.unwrap().into_inner();
        assert_eq!(sst.status.unwrap().state, cri::PodSandboxState::SandboxReady as i32);

        rt.stop_container(cri::StopContainerRequest { container_id: cid.clone(), timeout: 1 }).await.unwrap();
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false }).await.unwrap().into_inner().status.unwrap();
        assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
        // The pod shares a PID namespace (pid mode POD) whose PID 1 is the
        // pause, so the shell gets the default SIGTERM action.
        assert_eq!(st.exit_code, 143, "killed by SIGTERM");
        assert_eq!(st.reason, "Error");
        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        assert!(rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await.unwrap().into_inner().items.is_empty());
        assert!(rt.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner().containers.is_empty());
    });
    // Nothing left: mounts, cgroups.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(server.root.path().to_str().unwrap()), "mounts left under the state root");
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = ctl.path().join(parent.trim_start_matches('/'));
        if d.exists() {
            let children: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
            assert!(children.is_empty(), "cgroups left under {}: {children:?}", d.display());
            let _ = std::fs::remove_dir(&d);
        }
    }
}
