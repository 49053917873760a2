//! The CRI server through its unix socket with a tonic client: version,
//! status, and the ImageService RPCs, with their error codes.

use berth_tests::{block_on, builder, require_root, CriServer, Registry};
use cri_proto::v1 as cri;
use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use std::os::unix::fs::PermissionsExt;
use tonic::Code;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.into(), ..Default::default() })
}

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
        assert!(!net.status && !net.reason.is_empty());
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
        let st = is.image_status(cri::ImageStatusRequest { image: spec(&name), verbose: false }).await.unwrap().into_inner();
        assert!(st.image.is_none());

        let pulled = is.pull_image(cri::PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(pulled.image_ref, img.config_digest);

        let list = is.list_images(cri::ListImagesRequest::default()).await.unwrap().into_inner().images;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].repo_tags, vec![name.clone()]);
        assert_eq!(list[0].repo_digests, vec![format!("{}/cri/busybox@{}", reg.addr(), img.manifest_digest)]);
        assert!(list[0].size > 0);

        let filtered = is
            .list_images(cri::ListImagesRequest { filter: Some(cri::ImageFilter { image: spec(&img.config_digest) }) })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(filtered.len(), 1);

        let st = is.image_status(cri::ImageStatusRequest { image: spec(&name), verbose: true }).await.unwrap().into_inner();
        assert_eq!(st.image.unwrap().id, img.config_digest);
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
        assert_eq!(info["image"]["id"], img.config_digest);

        let fs = is.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
        let u = &fs.image_filesystems[0];
        assert!(u.used_bytes.as_ref().unwrap().value > 0 && u.inodes_used.as_ref().unwrap().value > 0);

        // Error codes.
        let e = is.pull_image(cri::PullImageRequest { image: spec("UPPER/case"), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = is.pull_image(cri::PullImageRequest { image: spec(""), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = is
            .pull_image(cri::PullImageRequest { image: spec(&format!("{}/cri/missing:1", reg.addr())), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("cri/missing"), "{e:?}");

        is.remove_image(cri::RemoveImageRequest { image: spec(&name) }).await.unwrap();
        // Removal is idempotent.
        is.remove_image(cri::RemoveImageRequest { image: spec(&name) }).await.unwrap();
        assert!(is.list_images(cri::ListImagesRequest::default()).await.unwrap().into_inner().images.is_empty());
    });
    // Secrets never reach the log: pull with credentials and check.
    block_on(async {
        let mut is = ImageServiceClient::new(server.channel().await);
        let auth = cri::AuthConfig { username: "u".into(), password: "s3cret-pass-xyz".into(), ..Default::default() };
        let _ = is.pull_image(cri::PullImageRequest { image: spec(&name), auth: Some(auth), ..Default::default() }).await;
    });
    assert!(!server.log().contains("s3cret-pass-xyz"));
}
