//! End-to-end tests of `berth images` (the real binary) against a real
//! docker-registry: pull, list, inspect, remove, import, mirrors, errors,
//! tampered blobs, malicious layers, whiteouts, shared layers, concurrency.
//!
//! Every test has its own registry and state root and needs root (the
//! snapshots hold devices, owners and trusted xattrs).

use berth_tests::builder::{self, Built, BuiltImage, Compression, DockerArchiveStyle, ImageBuilder, IndexBuilder, LayerBuilder};
use berth_tests::{block_on, require_root, Registry, TestRoot};
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use tar::EntryType;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs berth expecting failure; returns stderr.
fn berth_fails(root: &TestRoot, args: &[&str]) -> String {
    let out = root.berth(args);
    assert!(
        !out.status.success(),
        "berth {args:?} should have failed\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.starts_with("berth: ") || err.contains("\nberth: "), "no error line: {err}");
    err
}

fn push<'a>(reg: &Registry, repo_tag: &str, what: impl Into<Built<'a>>) -> String {
    let reference = reg.reference(repo_tag);
    block_on(builder::push(&reference, what, &[])).unwrap_or_else(|e| panic!("push {reference}: {e}"))
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

/// `images ls -o json`.
fn ls_json(root: &TestRoot, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["images", "ls", "-o", "json"];
    args.extend_from_slice(extra);
    let out = root.berth_ok(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ls json: {e}: {}", stdout(&out)));
    v.as_array().expect("ls -o json gives an array").clone()
}

fn ls_ids(root: &TestRoot) -> Vec<String> {
    stdout(&root.berth_ok(&["images", "ls", "-q"])).lines().map(str::to_string).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// Names in a directory, sorted; the directory must exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn blobs_dir(root: &TestRoot) -> PathBuf {
    root.path().join("images/blobs/sha256")
}

fn blob_file(root: &TestRoot, digest: &str) -> PathBuf {
    blobs_dir(root).join(hex(digest))
}

fn snapshots_dir(root: &TestRoot) -> PathBuf {
    root.path().join("snapshots")
}

/// A snapshot's filesystem directory.
fn snapshot_fs(root: &TestRoot, chain_id: &str) -> PathBuf {
    snapshots_dir(root).join(hex(chain_id)).join("fs")
}

/// Files in `<root>/images/ingest` other than lock files.
fn ingest_leftovers(root: &TestRoot) -> Vec<String> {
    entries(&root.path().join("images/ingest")).into_iter().filter(|n| !n.ends_with(".lock")).collect()
}

/// OCI chain IDs of a list of diff IDs.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let id = match out.last() {
            None => d.clone(),
            Some(p) => berth_runtime::digest::of_bytes(format!("{p} {d}").as_bytes()),
        };
        out.push(id);
    }
    out
}

fn small_layer(files: &[(&str, &[u8])], c: Compression) -> builder::Layer {
    let mut l = LayerBuilder::new();
    for (p, data) in files {
        l.add_file(p, 0o644, data);
    }
    l.finish(c).unwrap()
}

/// Pseudo-random, incompressible bytes (xorshift), reproducible per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The record of the only image stored.
fn only_image(root: &TestRoot) -> Value {
    let images = ls_json(root, &[]);
    assert_eq!(images.len(), 1, "expected one image: {images:#?}");
    images[0].clone()
}

/// Asserts the state root holds no images, blobs, snapshots or downloads.
fn assert_empty_store(root: &TestRoot) {
    assert_eq!(ls_ids(root), Vec::<String>::new(), "no images");
    assert_eq!(entries(&blobs_dir(root)), Vec::<String>::new(), "no blobs left");
    assert_eq!(entries(&snapshots_dir(root)), Vec::<String>::new(), "no snapshots left");
    assert_eq!(ingest_leftovers(root), Vec::<String>::new(), "no downloads left");
}

#[test]
fn pull_list_inspect_remove() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let img = builder::busybox_image().unwrap();
    assert_eq!(push(&reg, "test/busybox:1.0", &img), img.manifest_digest);
    let name = reg.reference("test/busybox:1.0");

    let out = root.berth_ok(&["images", "pull", &name]);
    assert!(stdout(&out).contains(&img.config_digest), "pull prints the image ID: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("resolved to {}", img.manifest_digest)), "{err}");
    assert!(err.contains("download complete"), "{err}");
    // -q prints just the ID.
    let out = root.berth_ok(&["images", "pull", "-q", &name]);
    assert_eq!(stdout(&out).trim(), img.config_digest);

    // Table.
    let table = stdout(&root.berth_ok(&["images", "ls"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("IMAGE") && lines[0].contains("TAG") && lines[0].contains("IMAGE ID"), "{table}");
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[0], reg.reference("test/busybox"), "{table}");
    assert_eq!(cols[1], "1.0", "{table}");
    assert!(hex(&img.config_digest).starts_with(cols[2]) && cols[2].len() >= 12, "{table}");

    // JSON.
    let rec = only_image(&root);
    assert_eq!(rec["id"], img.config_digest.as_str());
    assert_eq!(strings(&rec["repo_tags"]), vec![name.clone()]);
    assert_eq!(strings(&rec["repo_digests"]), vec![format!("{}@{}", reg.reference("test/busybox"), img.manifest_digest)]);
    assert_eq!(rec["manifest_digest"], img.manifest_digest.as_str());
    let layers = rec["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["digest"], img.layer_digests[0].as_str());
    assert_eq!(layers[0]["diff_id"], img.diff_ids[0].as_str());

    // Filters.
    assert_eq!(ls_json(&root, &[&reg.reference("test/busybox")]).len(), 1);
    assert_eq!(ls_json(&root, &[&name]).len(), 1);
    assert_eq!(ls_json(&root, &[&reg.reference("test/busybox:2.0")]).len(), 0);
    assert_eq!(ls_json(&root, &[&reg.reference("test/other")]).len(), 0);

    // Inspect by name, ID and short ID.
    for key in [name.as_str(), img.config_digest.as_str(), &hex(&img.config_digest)[..12]] {
        let out = root.berth_ok(&["images", "inspect", key]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["image"]["id"], img.config_digest.as_str(), "{key}");
        assert_eq!(v["config"]["config"]["Cmd"], serde_json::json!(["sh"]), "{key}");
        assert_eq!(v["config"]["rootfs"]["diff_ids"][0], img.diff_ids[0].as_str());
    }

    // The unpacked root filesystem.
    let top = chain_ids(&img.diff_ids).pop().unwrap();
    assert_eq!(rec["layers"][0]["chain_id"], top.as_str());
    let fs = snapshot_fs(&root, &top);
    let bb = std::fs::symlink_metadata(fs.join("bin/busybox")).unwrap();
    assert!(bb.is_file() && bb.mode() & 0o777 == 0o755);
    assert_eq!(std::fs::read(fs.join("bin/busybox")).unwrap(), std::fs::read("/bin/busybox").unwrap());
    assert_eq!(std::fs::metadata(fs.join("bin/sh")).unwrap().ino(), bb.ino(), "hard link");
    assert_eq!(std::fs::read_to_string(fs.join("etc/passwd")).unwrap(), builder::BUSYBOX_PASSWD);
    assert!(blob_file(&root, &img.layer_digests[0]).is_file());
    assert!(blob_file(&root, &img.config_digest).is_file());
    assert!(blob_file(&root, &img.manifest_digest).is_file());

    // Remove.
    let out = root.berth_ok(&["images", "rm", &name]);
    assert!(stdout(&out).contains(&format!("Deleted: {}", img.config_digest)), "{}", stdout(&out));
    assert_empty_store(&root);
    assert!(!fs.exists());

    // Unknown images.
    let err = berth_fails(&root, &["images", "rm", &name]);
    assert!(err.contains(&name) && err.contains("not found"), "{err}");
    let err = berth_fails(&root, &["images", "rm", "nosuch/image:1"]);
    assert!(err.contains("nosuch/image:1") && err.contains("not found"), "{err}");
    let err = berth_fails(&root, &["images", "inspect", "nosuch/image:1"]);
    assert!(err.contains("nosuch/image:1") && err.contains("not found"), "{err}");
}

fn write_config(root: &TestRoot, text: &str) -> String {
    let p = root.path().join("berth.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn mirrors_and_endpoints_keep_the_image_name() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let img = builder::busybox_image().unwrap();
    push(&reg, "library/busybox:latest", &img);
    let pause_layer = small_layer(&[("pause", b"#!pause\n")], Compression::Gzip);
    let pause = ImageBuilder::new().layer(pause_layer).entrypoint(&["/pause"]).build().unwrap();
    push(&reg, "k8s/pause:3.9", &pause);
    let cfg = write_config(
        &root,
        &format!(
            "[registry.\"docker.io\"]\nmirrors = [\"http://{a}\"]\nmirrors_only = true\n\
             [registry.\"registry.k8s.io\"]\nendpoint = \"http://{a}/k8s\"\n",
            a = reg.addr()
        ),
    );

    let out = root.berth_ok(&["--config", &cfg, "images", "pull", "busybox"]);
    assert!(stdout(&out).contains(&img.config_digest), "{}", stdout(&out));
    let out = root.berth_ok(&["--config", &cfg, "images", "pull", "registry.k8s.io/pause:3.9"]);
    assert!(stdout(&out).contains(&pause.config_digest), "{}", stdout(&out));

    let images = ls_json(&root, &[]);
    let by_id = |id: &str| images.iter().find(|i| i["id"] == id).unwrap_or_else(|| panic!("{id} in {images:#?}")).clone();
    let bb = by_id(&img.config_digest);
    assert_eq!(strings(&bb["repo_tags"]), ["docker.io/library/busybox:latest"]);
    assert_eq!(strings(&bb["repo_digests"]), [format!("docker.io/library/busybox@{}", img.manifest_digest)]);
    let p = by_id(&pause.config_digest);
    assert_eq!(strings(&p["repo_tags"]), ["registry.k8s.io/pause:3.9"]);
    assert_eq!(strings(&p["repo_digests"]), [format!("registry.k8s.io/pause@{}", pause.manifest_digest)]);
    let table = stdout(&root.berth_ok(&["images", "ls"]));
    assert!(table.lines().any(|l| l.split_whitespace().take(2).eq(["docker.io/library/busybox", "latest"])), "{table}");
    assert!(table.lines().any(|l| l.split_whitespace().take(2).eq(["registry.k8s.io/pause", "3.9"])), "{table}");
    // Short names find the images.
    root.berth_ok(&["images", "inspect", "busybox"]);
    root.berth_ok(&["images", "inspect", "docker.io/library/busybox:latest"]);
    assert_eq!(ls_json(&root, &["busybox"]).len(), 1);

    // Something only the real registry could have: mirrors_only fails, naming the image.
    let err = berth_fails(&root, &["--config", &cfg, "images", "pull", "alpine:3"]);
    assert!(err.contains("docker.io/library/alpine:3") && err.contains("not found"), "{err}");

    root.berth_ok(&["images", "rm", "busybox", "registry.k8s.io/pause:3.9"]);
    assert_empty_store(&root);
}

#[test]
fn pull_by_digest() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let img = builder::busybox_image().unwrap();
    push(&reg, "test/busybox:1.0", &img);
    let by_digest = format!("{}@{}", reg.reference("test/busybox"), img.manifest_digest);
    let out = root.berth_ok(&["images", "pull", &by_digest]);
    assert!(stdout(&out).contains(&img.config_digest));
    let rec = only_image(&root);
    assert_eq!(strings(&rec["repo_tags"]), Vec::<String>::new());
    assert_eq!(strings(&rec["repo_digests"]), [by_digest.as_str()]);
    let table = stdout(&root.berth_ok(&["images", "ls"]));
    assert!(table.lines().any(|l| l.split_whitespace().take(2).eq([reg.reference("test/busybox").as_str(), "<none>"])), "{table}");
    root.berth_ok(&["images", "inspect", &by_digest]);
    assert_eq!(ls_json(&root, &[&by_digest]).len(), 1);

    // A well-formed digest the registry does not have.
    let unknown = format!("{}@{}", reg.reference("test/busybox"), berth_runtime::digest::of_bytes(b"nope"));
    let err = berth_fails(&root, &["images", "pull", &unknown]);
    assert!(err.contains(&unknown) && err.contains("not found"), "{err}");
    assert_eq!(ls_json(&root, &[]).len(), 1);

    root.berth_ok(&["images", "rm", &by_digest]);
    assert_empty_store(&root);
}

fn arch_image(arch: &str, docker: bool) -> BuiltImage {
    let l = small_layer(&[("etc/arch", arch.as_bytes())], Compression::Gzip);
    ImageBuilder::new().layer(l).platform("linux", arch, None).docker_media_types(docker).build().unwrap()
}

#[test]
fn multi_platform_index_and_media_types() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let host = builder::Platform::host();
    let other = if host.architecture == "arm64" { "amd64" } else { "arm64" };
    for docker in [false, true] {
        let mine = arch_image(&host.architecture, docker);
        let theirs = arch_image(other, docker);
        assert_ne!(mine.config_digest, theirs.config_digest);
        let index = IndexBuilder::new()
            .add_image(theirs.clone())
            .add_with_platform(mine.clone(), host.clone())
            .docker_media_types(docker)
            .build()
            .unwrap();
        let tag = format!("multi:docker-{docker}");
        push(&reg, &tag, &index);
        let name = reg.reference(&tag);
        let out = root.berth_ok(&["images", "pull", &name]);
        assert!(stdout(&out).contains(&mine.config_digest), "docker={docker}: {}", stdout(&out));
        let rec = ls_json(&root, &[&name]).pop().unwrap();
        assert_eq!(rec["id"], mine.config_digest.as_str());
        assert_eq!(rec["manifest_digest"], mine.manifest_digest.as_str());
        assert_eq!(rec["index_digest"], index.manifest_digest.as_str());
        // The OCI and Docker variants share their config (one image ID): the
        // record is the last pulled, with the names of both.
        let repo_digest = format!("{}@{}", reg.reference("multi"), index.manifest_digest);
        assert!(strings(&rec["repo_digests"]).contains(&repo_digest), "{rec:#}");
        assert_eq!(strings(&rec["repo_tags"]).len(), if docker { 2 } else { 1 }, "{rec:#}");
        let top = rec["layers"][0]["chain_id"].as_str().unwrap().to_string();
        assert_eq!(std::fs::read_to_string(snapshot_fs(&root, &top).join("etc/arch")).unwrap(), host.architecture);
        // Nothing of the other platform was fetched.
        assert!(!blob_file(&root, &theirs.config_digest).exists());
        assert!(!blob_file(&root, &theirs.layer_digests[0]).exists());
        assert!(blob_file(&root, &index.manifest_digest).is_file());
        // Found by the index digest.
        root.berth_ok(&["images", "inspect", &format!("{}@{}", reg.reference("multi"), index.manifest_digest)]);
    }

    // Layers of every compression, OCI and Docker types.
    let layers = [
        small_layer(&[("z/file", b"zstd")], Compression::Zstd),
        small_layer(&[("g/file", b"gzip")], Compression::Gzip),
        small_layer(&[("n/file", b"none")], Compression::None),
    ];
    let oci = layers.iter().cloned().fold(ImageBuilder::new(), |b, l| b.layer(l)).cmd(&["oci"]).build().unwrap();
    let docker = layers[1..].iter().cloned().fold(ImageBuilder::new(), |b, l| b.layer(l)).cmd(&["docker"]);
    let docker = docker.docker_media_types(true).build().unwrap();
    assert!(String::from_utf8_lossy(&docker.manifest_bytes).contains("application/vnd.docker.image.rootfs.diff.tar\""));
    for (tag, img) in [("mixed:oci", &oci), ("mixed:docker", &docker)] {
        push(&reg, tag, img);
        let name = reg.reference(tag);
        let out = root.berth_ok(&["images", "pull", &name]);
        assert!(stdout(&out).contains(&img.config_digest), "{tag}: {}", stdout(&out));
        let rec = ls_json(&root, &[&name]).pop().unwrap();
        assert_eq!(rec["manifest_media_type"], img.manifest_media_type.as_str());
        let chains = chain_ids(&img.diff_ids);
        for (layer, chain) in rec["layers"].as_array().unwrap().iter().zip(&chains) {
            assert_eq!(layer["chain_id"], chain.as_str());
        }
        let mut found = Vec::new();
        for chain in &chains {
            for d in ["z", "g", "n"] {
                if let Ok(s) = std::fs::read_to_string(snapshot_fs(&root, chain).join(d).join("file")) {
                    found.push(s);
                }
            }
        }
        let want: Vec<&str> = if img.layer_digests.len() == 3 { vec!["zstd", "gzip", "none"] } else { vec!["gzip", "none"] };
        assert_eq!(found, want, "{tag}");
    }
    // One snapshot per chain: the host image's layer (shared by its OCI and
    // Docker variants), three for the OCI image, two for the Docker one (its
    // chains start from another base).
    assert_eq!(entries(&snapshots_dir(&root)).len(), 1 + 3 + 2);

    // Removing the images removes every manifest and index pulled for them.
    let ids = ls_ids(&root);
    assert_eq!(ids.len(), 3);
    let mut args = vec!["images", "rm"];
    args.extend(ids.iter().map(String::as_str));
    root.berth_ok(&args);
    assert_empty_store(&root);
}

/// A layer-heavy image whose second layer is small: `(image, big layer, small layer)`.
fn big_and_small() -> (BuiltImage, String, String) {
    let big = {
        let mut l = LayerBuilder::new();
        l.add_file("big/noise", 0o644, &noise(16 << 20, 7));
        l.finish(Compression::None).unwrap()
    };
    let small = small_layer(&[("small/file", b"small")], Compression::Gzip);
    let (b, s) = (big.digest.clone(), small.digest.clone());
    (ImageBuilder::new().layer(big).layer(small).build().unwrap(), b, s)
}

#[test]
fn tampered_blob_is_rejected_and_nothing_stored() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let (img, big, small) = big_and_small();
    push(&reg, "test/tampered:1", &img);
    let name = reg.reference("test/tampered:1");
    let data = reg.blob_data_path(&small);
    let original = std::fs::read(&data).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&data, &bad).unwrap();

    for _ in 0..2 {
        let err = berth_fails(&root, &["images", "pull", &name]);
        assert!(err.contains(&small) && err.contains("does not match"), "{err}");
        assert!(err.contains(&name), "the error names the image: {err}");
        // Checked before any other berth run (opening the store removes downloads of dead processes).
        assert_eq!(ingest_leftovers(&root), Vec::<String>::new(), "downloads left in ingest");
        assert!(!blob_file(&root, &small).exists(), "tampered blob stored");
        assert_eq!(entries(&snapshots_dir(&root)), Vec::<String>::new(), "snapshots of a failed pull");
        assert_eq!(entries(&blobs_dir(&root)), Vec::<String>::new(), "blobs of a failed pull");
        assert_eq!(ls_ids(&root), Vec::<String>::new());
    }

    // A long-lived process (the CRI server) must not accumulate downloads
    // either: the big layer's download is cancelled when the small one fails.
    let cfg = berth_runtime::Config { root: root.path().to_path_buf(), ..Default::default() };
    let svc = berth_runtime::image::ImageService::open(&cfg).unwrap();
    let creds = berth_runtime::image::Credentials::default();
    for _ in 0..3 {
        let e = block_on(svc.pull(&name, &creds, &berth_runtime::image::LogProgress)).unwrap_err().to_string();
        assert!(e.contains(&small) && e.contains("does not match"), "{e}");
        assert_eq!(ingest_leftovers(&root), Vec::<String>::new(), "downloads left in ingest");
        assert_eq!(entries(&blobs_dir(&root)), Vec::<String>::new(), "blobs of a failed pull");
    }
    assert!(svc.list().unwrap().is_empty());

    // A pull given up (dropped) mid-download leaves no partial file either.
    std::fs::write(&data, &original).unwrap();
    let (mut saw_download, mut finished) = (false, false);
    block_on(async {
        let pull = svc.pull(&name, &creds, &berth_runtime::image::LogProgress);
        tokio::pin!(pull);
        for _ in 0..1_000_000 {
            tokio::select! {
                biased;
                r = &mut pull => {
                    r.unwrap();
                    finished = true;
                    break;
                }
                _ = tokio::task::yield_now() => {
                    if !ingest_leftovers(&root).is_empty() {
                        saw_download = true;
                        break;
                    }
                }
            }
        }
    });
    assert!(saw_download && !finished, "the pull was not caught downloading");
    assert_eq!(ingest_leftovers(&root), Vec::<String>::new(), "a cancelled download was left in ingest");
    drop(svc);

    std::fs::write(&data, &original).unwrap();
    let out = root.berth_ok(&["images", "pull", &name]);
    assert!(stdout(&out).contains(&img.config_digest));
    assert_eq!(ls_ids(&root), [img.config_digest.as_str()]);
    assert!(blob_file(&root, &small).is_file() && blob_file(&root, &big).is_file());
    let chains = chain_ids(&img.diff_ids);
    assert_eq!(std::fs::read(snapshot_fs(&root, &chains[1]).join("small/file")).unwrap(), b"small");
    assert_eq!(std::fs::metadata(snapshot_fs(&root, &chains[0]).join("big/noise")).unwrap().len(), 16 << 20);
    root.berth_ok(&["images", "rm", &name]);
    assert_empty_store(&root);
}

#[test]
fn tar_slip_layers_are_rejected() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let outside = tempfile::Builder::new().prefix("berth-outside-").tempdir().unwrap();
    let out_dir = outside.path().display().to_string();
    let base = small_layer(&[("etc/base", b"base")], Compression::Gzip);

    let abs = format!("{out_dir}/abs-file");
    // (tag, adds the malicious entries, the entry the error must name)
    type Case<'a> = (&'a str, Box<dyn Fn(&mut LayerBuilder)>, String);
    let cases: Vec<Case> = vec![
        ("dotdot", Box::new(|l| {
            l.add_raw(b"../escape", EntryType::Regular, 0o644, None, b"x");
        }), "../escape".to_string()),
        ("dotdot-deep", Box::new(|l| {
            l.add_raw(b"a/../../../../escape-deep", EntryType::Regular, 0o644, None, b"x");
        }), "a/../../../../escape-deep".to_string()),
        ("absolute", Box::new(move |l| {
            l.add_raw(abs.as_bytes(), EntryType::Regular, 0o644, None, b"x");
        }), format!("{out_dir}/abs-file")),
        ("symlink", Box::new({
            let d = out_dir.clone();
            move |l| {
                l.add_raw(b"evil", EntryType::Symlink, 0o777, Some(d.as_bytes()), b"");
                l.add_raw(b"evil/through-link", EntryType::Regular, 0o644, None, b"x");
            }
        }), "evil/through-link".to_string()),
        ("symlink-root", Box::new(|l| {
            l.add_raw(b"evil", EntryType::Symlink, 0o777, Some(b"/"), b"");
            l.add_raw(b"evil/tmp/berth-tar-slip-marker", EntryType::Regular, 0o644, None, b"x");
        }), "evil/tmp/berth-tar-slip-marker".to_string()),
        ("hardlink", Box::new(|l| {
            l.add_raw(b"h", EntryType::Link, 0o644, Some(b"../../../../etc/passwd"), b"");
        }), "h".to_string()),
    ];
    for (tag, build, entry) in &cases {
        let mut l = LayerBuilder::new();
        l.add_file("ok/before", 0o644, b"fine");
        build(&mut l);
        let evil = l.finish(Compression::Gzip).unwrap();
        let img = ImageBuilder::new().layer(base.clone()).layer(evil).build().unwrap();
        push(&reg, &format!("test/evil:{tag}"), &img);
        let name = reg.reference(&format!("test/evil:{tag}"));
        let err = berth_fails(&root, &["images", "pull", &name]);
        assert!(err.contains(&format!("{entry:?}")), "{tag}: the error names the entry {entry:?}: {err}");
        assert!(err.contains("refused") || err.contains("outside"), "{tag}: {err}");
        assert_eq!(ls_ids(&root), Vec::<String>::new(), "{tag}: no image recorded");
        assert_eq!(entries(outside.path()), Vec::<String>::new(), "{tag}: written outside");
        let snaps = entries(&snapshots_dir(&root));
        assert_eq!(snaps, Vec::<String>::new(), "{tag}: snapshots left");
        assert_eq!(ingest_leftovers(&root), Vec::<String>::new());
    }
    // Nothing escaped into the state root or the snapshot root either.
    assert_eq!(entries(root.path()), ["images", "snapshots"]);
    assert!(!Path::new("/tmp/berth-tar-slip-marker").exists());
    assert!(!root.path().join("escape-deep").exists());
}

/// Reads an xattr without following symlinks.
fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Unmounts on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Err(e) = berth_runtime::image::snapshot::unmount(&self.0) {
            eprintln!("unmounting {}: {e}", self.0.display());
        }
    }
}

#[test]
fn whiteouts_and_opaque_dirs_on_disk() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let l1 = {
        let mut l = LayerBuilder::new();
        l.add_dir("a", 0o755).add_file("a/f1", 0o644, b"1").add_file("a/f2", 0o644, b"2");
        l.add_dir("d", 0o755).add_file("d/x", 0o644, b"x");
        l.finish(Compression::Gzip).unwrap()
    };
    let l2 = {
        let mut l = LayerBuilder::new();
        l.add_whiteout("a/f1").add_dir("d", 0o755).add_opaque("d").add_file("d/y", 0o644, b"y");
        l.finish(Compression::Gzip).unwrap()
    };
    let img = ImageBuilder::new().layer(l1).layer(l2).build().unwrap();
    push(&reg, "test/wh:1", &img);
    let name = reg.reference("test/wh:1");
    root.berth_ok(&["images", "pull", &name]);
    let chains = chain_ids(&img.diff_ids);
    let (lower, upper) = (snapshot_fs(&root, &chains[0]), snapshot_fs(&root, &chains[1]));

    let wh = std::fs::symlink_metadata(upper.join("a/f1")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0, "whiteout is 0:0");
    assert!(!upper.join("a/.wh.f1").exists());
    assert!(!upper.join("a/f2").exists(), "upper holds only its own diff");
    assert_eq!(lgetxattr(&upper.join("d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!upper.join("d/.wh..wh..opq").exists());
    assert_eq!(entries(&upper.join("d")), ["y"]);
    assert_eq!(entries(&lower.join("a")), ["f1", "f2"]);
    assert_eq!(lgetxattr(&lower.join("d"), "trusted.overlay.opaque"), None);

    // The merged view through overlayfs.
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    berth_runtime::image::snapshot::mount_overlay(&[upper.clone(), lower.clone()], None, &mnt).expect("mount overlay");
    let guard = Unmount(mnt.clone());
    assert_eq!(entries(&mnt.join("a")), ["f2"]);
    assert_eq!(std::fs::read(mnt.join("a/f2")).unwrap(), b"2");
    assert_eq!(entries(&mnt.join("d")), ["y"]);
    drop(guard);
    std::fs::remove_dir(&mnt).unwrap();

    root.berth_ok(&["images", "rm", &name]);
    assert_empty_store(&root);
}

#[test]
fn shared_layers_are_stored_once() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let base = builder::busybox_layer().unwrap().finish(Compression::Gzip).unwrap();
    let a = ImageBuilder::new().layer(base.clone()).layer(small_layer(&[("app/a", b"a")], Compression::Gzip)).build().unwrap();
    let b = ImageBuilder::new().layer(base.clone()).layer(small_layer(&[("app/b", b"b")], Compression::Gzip)).build().unwrap();
    push(&reg, "test/a:1", &a);
    push(&reg, "test/b:1", &b);
    let (na, nb) = (reg.reference("test/a:1"), reg.reference("test/b:1"));
    root.berth_ok(&["images", "pull", &na]);
    let out = root.berth_ok(&["images", "pull", &nb]);
    let short = &hex(&base.digest)[..12];
    assert!(stderr(&out).contains(&format!("{short}: already exists")), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&format!("{short}: downloading")), "{}", stderr(&out));
    assert_eq!(
        reg.count_requests("GET", &format!("/v2/test/a/blobs/{}", base.digest), 200)
            + reg.count_requests("GET", &format!("/v2/test/b/blobs/{}", base.digest), 200),
        1,
        "base layer downloaded once"
    );

    let (ca, cb) = (chain_ids(&a.diff_ids), chain_ids(&b.diff_ids));
    assert_eq!(ca[0], cb[0]);
    assert_eq!(entries(&snapshots_dir(&root)).len(), 3, "base + two tops");
    // 2 configs, 2 manifests, 3 layers.
    assert_eq!(entries(&blobs_dir(&root)).len(), 7);

    root.berth_ok(&["images", "rm", &na]);
    assert_eq!(ls_ids(&root), [b.config_digest.as_str()]);
    assert_eq!(entries(&snapshots_dir(&root)), {
        let mut v = vec![hex(&cb[0]).to_string(), hex(&cb[1]).to_string()];
        v.sort();
        v
    });
    assert!(blob_file(&root, &base.digest).is_file());
    assert!(!blob_file(&root, &a.config_digest).exists() && !blob_file(&root, &a.layer_digests[1]).exists());
    assert!(snapshot_fs(&root, &cb[0]).join("bin/busybox").is_file());
    assert_eq!(std::fs::read(snapshot_fs(&root, &cb[1]).join("app/b")).unwrap(), b"b");
    let v: Value = serde_json::from_slice(&root.berth_ok(&["images", "inspect", &nb]).stdout).unwrap();
    assert_eq!(v["image"]["id"], b.config_digest.as_str());
    // Pulling A again only fetches its own layer.
    let out = root.berth_ok(&["images", "pull", &na]);
    assert!(stderr(&out).contains(&format!("{short}: already exists")), "{}", stderr(&out));

    root.berth_ok(&["images", "rm", &na, &nb]);
    assert_empty_store(&root);
}

#[test]
fn records_survive_restart_and_repull_downloads_nothing() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let img = builder::busybox_image().unwrap();
    push(&reg, "test/busybox:1.0", &img);
    let name = reg.reference("test/busybox:1.0");
    root.berth_ok(&["images", "pull", &name]);
    let before = ls_json(&root, &[]);
    let records = std::fs::read(root.path().join("images/images.json")).unwrap();
    // Every `berth` run is a new process reading the stored records.
    let after = ls_json(&root, &[]);
    assert_eq!(before, after);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], img.config_digest.as_str());

    let layer_gets = || reg.count_requests("GET", &format!("/v2/test/busybox/blobs/{}", img.layer_digests[0]), 200);
    assert_eq!(layer_gets(), 1);
    let out = root.berth_ok(&["images", "pull", &name]);
    let err = stderr(&out);
    assert!(err.contains(&format!("{}: already exists", &hex(&img.layer_digests[0])[..12])), "{err}");
    assert!(err.contains(&format!("{}: already exists", &hex(&img.config_digest)[..12])), "{err}");
    assert!(!err.contains("downloading") && !err.contains("unpacking"), "{err}");
    assert_eq!(layer_gets(), 1, "no second download");
    assert!(stdout(&out).contains(&img.config_digest));
    assert_eq!(ls_json(&root, &[]), before, "a re-pull changes no record");
    let v1: Value = serde_json::from_slice(&records).unwrap();
    let v2: Value = serde_json::from_slice(&std::fs::read(root.path().join("images/images.json")).unwrap()).unwrap();
    assert_eq!(v1, v2);
}

#[test]
fn import_archives() {
    require_root();
    let root = TestRoot::new();
    let work = tempfile::Builder::new().prefix("berth-import-").tempdir().unwrap();
    let img = builder::busybox_image().unwrap();
    let other = ImageBuilder::new().layer(small_layer(&[("other", b"o")], Compression::Zstd)).build().unwrap();

    let layout = work.path().join("layout");
    builder::write_oci_layout(&layout, &[("example.com/layout:v1", Built::Image(&other))]).unwrap();
    let archive = work.path().join("image.oci.tar");
    builder::write_oci_archive(&archive, &[("example.com/archive:v1", Built::Image(&img))], Compression::None).unwrap();
    let archive_gz = work.path().join("image.oci.tar.gz");
    builder::write_oci_archive(&archive_gz, &[("example.com/archive:gz", Built::Image(&img))], Compression::Gzip).unwrap();
    let legacy = work.path().join("legacy.tar");
    builder::write_docker_archive(&legacy, &img, &["busybox:latest"], DockerArchiveStyle::Legacy).unwrap();
    let blobs = work.path().join("blobs.tar");
    builder::write_docker_archive(&blobs, &img, &["example.com/blobs:v2"], DockerArchiveStyle::Blobs).unwrap();

    let tags = |root: &TestRoot| -> Vec<String> {
        let mut v: Vec<String> = ls_json(root, &[]).iter().flat_map(|i| strings(&i["repo_tags"])).collect();
        v.sort();
        v
    };
    let import = |p: &Path, name: Option<&str>| -> String {
        let mut args = vec!["images", "import", p.to_str().unwrap()];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        stdout(&root.berth_ok(&args))
    };

    let out = import(&layout, None);
    assert!(out.contains("example.com/layout:v1") && out.contains(&other.config_digest), "{out}");
    assert_eq!(tags(&root), ["example.com/layout:v1"]);
    let rec = only_image(&root);
    assert_eq!(rec["id"], other.config_digest.as_str());
    assert_eq!(std::fs::read(snapshot_fs(&root, &other.diff_ids[0]).join("other")).unwrap(), b"o");

    for (p, tag) in [
        (&archive, "example.com/archive:v1"),
        (&archive_gz, "example.com/archive:gz"),
        (&legacy, "docker.io/library/busybox:latest"),
        (&blobs, "example.com/blobs:v2"),
    ] {
        let out = import(p, None);
        assert!(out.contains(tag) && out.contains(&img.config_digest), "{}: {out}", p.display());
        assert!(tags(&root).contains(&tag.to_string()), "{}: {:?}", p.display(), tags(&root));
    }
    assert_eq!(
        tags(&root),
        [
            "docker.io/library/busybox:latest",
            "example.com/archive:gz",
            "example.com/archive:v1",
            "example.com/blobs:v2",
            "example.com/layout:v1"
        ]
    );
    // Same image, one record, one snapshot.
    assert_eq!(ls_ids(&root).len(), 2);
    assert!(snapshot_fs(&root, &img.diff_ids[0]).join("bin/busybox").is_file());
    assert_eq!(entries(&snapshots_dir(&root)).len(), 2);
    let v: Value = serde_json::from_slice(&root.berth_ok(&["images", "inspect", "busybox"]).stdout).unwrap();
    assert_eq!(v["config"]["config"]["Cmd"], serde_json::json!(["sh"]));

    // --name overrides the archive's names.
    let out = import(&layout, Some("example.com/renamed:7"));
    assert!(out.contains("example.com/renamed:7"), "{out}");
    assert!(tags(&root).contains(&"example.com/renamed:7".to_string()));
    // A layout naming no repository needs --name (or stays unnamed but listed).
    let unnamed = work.path().join("unnamed");
    builder::write_oci_layout(&unnamed, &[("", Built::Image(&other))]).unwrap();
    import(&unnamed, Some("example.com/unnamed:1"));
    assert!(tags(&root).contains(&"example.com/unnamed:1".to_string()));

    // Garbage and missing paths.
    let garbage = work.path().join("garbage.tar");
    std::fs::write(&garbage, noise(5000, 3)).unwrap();
    let err = berth_fails(&root, &["images", "import", garbage.to_str().unwrap()]);
    assert!(err.contains(garbage.to_str().unwrap()), "{err}");
    let missing = work.path().join("missing.tar");
    let err = berth_fails(&root, &["images", "import", missing.to_str().unwrap()]);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert_eq!(ls_ids(&root).len(), 2);
    assert_eq!(ingest_leftovers(&root), Vec::<String>::new());

    let ids = ls_ids(&root);
    let mut args = vec!["images", "rm"];
    args.extend(ids.iter().map(String::as_str));
    root.berth_ok(&args);
    assert_empty_store(&root);
}

#[test]
fn pull_errors() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();

    for bad in ["UPPER/x", "bad tag:1", "busybox@sha256:abc", ""] {
        let err = berth_fails(&root, &["images", "pull", bad]);
        assert!(err.contains("invalid image reference"), "{bad:?}: {err}");
    }

    let missing = reg.reference("test/missing:1");
    let err = berth_fails(&root, &["images", "pull", &missing]);
    assert!(err.contains(&missing) && err.contains("not found"), "{err}");

    let port = berth_tests::free_port().unwrap();
    let nowhere = format!("127.0.0.1:{port}/test/busybox:1");
    let err = berth_fails(&root, &["images", "pull", &nowhere]);
    assert!(err.contains(&nowhere) && err.contains("unreachable"), "{err}");

    let bad_creds = berth_fails(&root, &["images", "pull", "--creds", "nocolon", &missing]);
    assert!(bad_creds.contains("USER:PASSWORD"), "{bad_creds}");
    assert_empty_store(&root);
}

#[test]
fn registry_credentials() {
    require_root();
    let reg = Registry::start_with_auth("tester", "s3cret");
    let root = TestRoot::new();
    let img = builder::busybox_image().unwrap();
    let auth = oci_client::secrets::RegistryAuth::Basic("tester".into(), "s3cret".into());
    block_on(builder::push_with_auth(&reg.reference("private/busybox:1"), &img, &[], &auth)).unwrap();
    let name = reg.reference("private/busybox:1");

    for args in [vec!["images", "pull", &name], vec!["images", "pull", "--creds", "tester:wrong", &name]] {
        let err = berth_fails(&root, &args);
        let lower = err.to_lowercase();
        assert!(lower.contains("credentials") || lower.contains("unauthorized"), "{args:?}: {err}");
        assert!(err.contains(&name), "{err}");
        assert_empty_store(&root);
    }

    let out = root.berth_ok(&["images", "pull", "--creds", "tester:s3cret", &name]);
    assert!(stdout(&out).contains(&img.config_digest));
    root.berth_ok(&["images", "rm", &name]);

    // The password from stdin.
    let mut child = root
        .command()
        .args(["images", "pull", "--username", "tester", "--password-stdin", &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ls_ids(&root), [img.config_digest.as_str()]);
}

#[test]
fn concurrent_pulls_share_one_download() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    let (img, big, small) = big_and_small();
    push(&reg, "test/shared:1", &img);
    let name = reg.reference("test/shared:1");
    let gets = |d: &str| reg.count_requests("GET", &format!("/v2/test/shared/blobs/{d}"), 200);

    // In one process: two pulls at once through the library.
    let cfg = berth_runtime::Config { root: root.path().to_path_buf(), ..Default::default() };
    let svc = berth_runtime::image::ImageService::open(&cfg).unwrap();
    let creds = berth_runtime::image::Credentials::default();
    let (r1, r2) = block_on(async {
        tokio::join!(
            svc.pull(&name, &creds, &berth_runtime::image::LogProgress),
            svc.pull(&name, &creds, &berth_runtime::image::LogProgress)
        )
    });
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!((r1.id.as_str(), r2.id.as_str()), (img.config_digest.as_str(), img.config_digest.as_str()));
    assert_eq!((gets(&big), gets(&small)), (1, 1), "each layer fetched once");
    assert_eq!(svc.list().unwrap().len(), 1);
    assert_eq!(entries(&snapshots_dir(&root)).len(), 2);
    assert_eq!(ingest_leftovers(&root), Vec::<String>::new());
    drop(svc);
    root.berth_ok(&["images", "rm", &name]);
    assert_empty_store(&root);

    // Two berth processes at once, plus a third process opening the store mid-pull.
    let spawn = || {
        root.command()
            .args(["images", "pull", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn(), spawn());
    let ls = root.berth(&["images", "ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    for p in [p1, p2] {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(&img.config_digest));
    }
    assert_eq!((gets(&big), gets(&small)), (2, 2), "each layer fetched once more");
    assert_eq!(ls_ids(&root), [img.config_digest.as_str()]);
    assert_eq!(entries(&snapshots_dir(&root)).len(), 2);
    let chains = chain_ids(&img.diff_ids);
    assert_eq!(std::fs::metadata(snapshot_fs(&root, &chains[0]).join("big/noise")).unwrap().len(), 16 << 20);
    root.berth_ok(&["images", "rm", &name]);
    assert_empty_store(&root);
}

/// Opening the image store (any `berth images` command) while another process
/// unpacks a layer must not disturb that unpack.
#[test]
fn opening_the_store_does_not_break_a_running_unpack() {
    require_root();
    let reg = Registry::start();
    let root = TestRoot::new();
    // Many files: unpacking takes a while.
    let mut l = LayerBuilder::new();
    for d in 0..40 {
        for f in 0..100 {
            l.add_file(&format!("d{d}/f{f}"), 0o644, format!("{d}/{f}").as_bytes());
        }
    }
    let img = ImageBuilder::new().layer(l.finish(Compression::Gzip).unwrap()).build().unwrap();
    push(&reg, "test/many:1", &img);
    let name = reg.reference("test/many:1");
    let mut puller = root
        .command()
        .args(["images", "pull", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the unpack to start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let snaps = snapshots_dir(&root);
    let mut saw_tmp = false;
    while std::time::Instant::now() < deadline {
        if std::fs::read_dir(&snaps).map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))).unwrap_or(false) {
            saw_tmp = true;
            break;
        }
        if puller.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(saw_tmp, "never saw the unpack in progress");
    let ls = root.berth(&["images", "ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let out = puller.wait_with_output().unwrap();
    assert!(out.status.success(), "the pull was broken by another process: {}", stderr(&out));
    let fs = snapshot_fs(&root, &img.diff_ids[0]);
    for d in 0..40 {
        assert_eq!(entries(&fs.join(format!("d{d}"))).len(), 100, "d{d} complete");
    }
    root.berth_ok(&["images", "rm", &name]);
    assert_empty_store(&root);
}
