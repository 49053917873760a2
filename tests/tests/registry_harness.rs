//! The registry harness and the image builder against a real docker-registry:
//! push, pull back with oci-client, auth, clean shutdown.

use berth_tests::builder::{self, media, Built, Compression, ImageBuilder, IndexBuilder, LayerBuilder};
use berth_tests::{block_on, http_status, Registry};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn client(reg: &Registry) -> Client {
    Client::new(ClientConfig { protocol: ClientProtocol::HttpsExcept(vec![reg.addr().into()]), ..Default::default() })
}

async fn pull_raw(reg: &Registry, reference: &str, auth: &RegistryAuth) -> (Vec<u8>, String) {
    let r: Reference = reference.parse().unwrap();
    let accept = [media::OCI_MANIFEST, media::OCI_INDEX, media::DOCKER_MANIFEST, media::DOCKER_LIST];
    let (bytes, digest) = client(reg).pull_manifest_raw(&r, auth, &accept).await.unwrap();
    (bytes.to_vec(), digest)
}

#[test]
fn push_and_pull_back() {
    let reg = Registry::start();
    let img = builder::busybox_image().unwrap();
    let reference = reg.reference("busybox:latest");
    let digest = block_on(builder::push(&reference, &img, &[])).unwrap();
    assert_eq!(digest, img.manifest_digest);

    block_on(async {
        let (bytes, d) = pull_raw(&reg, &reference, &RegistryAuth::Anonymous).await;
        assert_eq!(d, img.manifest_digest);
        assert_eq!(bytes, img.manifest_bytes);
        // Layers and config come back byte for byte.
        let r: Reference = reference.parse().unwrap();
        let c = client(&reg);
        let (m, _) = c.pull_image_manifest(&r, &RegistryAuth::Anonymous).await.unwrap();
        for l in m.layers.iter().chain([&m.config]) {
            let mut out = Vec::new();
            c.pull_blob(&r, l, &mut out).await.unwrap();
            assert!(img.blobs.iter().any(|(d, _, b)| *d == l.digest && *b == out), "{}", l.digest);
        }
    });
    // Blobs are where tamper tests expect them.
    assert!(reg.blob_data_path(&img.config_digest).is_file());
}

#[test]
fn push_index_and_docker_types() {
    let reg = Registry::start();
    let img = |arch: &str, docker: bool| {
        let l = LayerBuilder::new().add_file("etc/arch", 0o644, arch.as_bytes()).finish(Compression::Gzip).unwrap();
        ImageBuilder::new().layer(l).platform("linux", arch, None).docker_media_types(docker).build().unwrap()
    };
    for docker in [false, true] {
        let index = IndexBuilder::new()
            .add_image(img("amd64", docker))
            .add_image(img("arm64", docker))
            .docker_media_types(docker)
            .build()
            .unwrap();
        let reference = reg.reference(&format!("multi:docker-{docker}"));
        let digest = block_on(builder::push(&reference, &index, &[])).unwrap();
        assert_eq!(digest, index.manifest_digest);
        block_on(async {
            let (bytes, d) = pull_raw(&reg, &reference, &RegistryAuth::Anonymous).await;
            assert_eq!((d, bytes), (index.manifest_digest.clone(), index.manifest_bytes.clone()));
            let r: Reference = reference.parse().unwrap();
            match client(&reg).pull_manifest(&r, &RegistryAuth::Anonymous).await.unwrap() {
                (OciManifest::ImageIndex(i), d) => {
                    assert_eq!(d, index.manifest_digest);
                    let archs: Vec<String> =
                        i.manifests.iter().map(|m| m.platform.as_ref().unwrap().architecture.to_string()).collect();
                    assert_eq!(archs, ["amd64", "arm64"]);
                }
                other => panic!("not an index: {other:?}"),
            }
            // Each child is pullable by digest.
            for child in &index.images {
                let by_digest = format!("{}@{}", reg.reference("multi"), child.manifest_digest);
                let (bytes, d) = pull_raw(&reg, &by_digest, &RegistryAuth::Anonymous).await;
                assert_eq!((d, bytes), (child.manifest_digest.clone(), child.manifest_bytes.clone()));
            }
        });
    }
}

#[test]
fn auth_required() {
    let reg = Registry::start_with_auth("tester", "s3cret");
    let img = ImageBuilder::new()
        .layer(LayerBuilder::new().add_file("a", 0o644, b"a").finish(Compression::None).unwrap())
        .build()
        .unwrap();
    let reference = reg.reference("private:v1");
    let err = block_on(builder::push(&reference, &img, &[])).unwrap_err();
    assert!(err.to_string().contains(&reference), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    let wrong = RegistryAuth::Basic("tester".into(), "wrong".into());
    assert!(block_on(builder::push_with_auth(&reference, &img, &[], &wrong)).is_err());
    let auth = RegistryAuth::Basic("tester".into(), "s3cret".into());
    let digest = block_on(builder::push_with_auth(&reference, Built::from(&img), &[], &auth)).unwrap();
    assert_eq!(digest, img.manifest_digest);
    let (_, d) = block_on(pull_raw(&reg, &reference, &auth));
    assert_eq!(d, img.manifest_digest);
}

#[test]
fn registry_stops_cleanly() {
    let reg = Registry::start();
    assert_eq!(http_status(reg.addr(), "/v2/").unwrap(), 200);
    let (addr, dir, pid) = (reg.addr().to_string(), reg.dir().to_path_buf(), reg.pid());
    assert!(dir.join("config.yml").is_file());
    drop(reg);
    assert!(!dir.exists(), "temp dir left behind");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "registry process still around");
    assert!(std::net::TcpStream::connect(&addr).is_err(), "port still answering");
    assert!(std::net::TcpListener::bind(&addr).is_ok(), "port not freed");
}
