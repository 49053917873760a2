//! Builds the busybox test image and writes or pushes it, for scripts:
//!
//! ```text
//! berth-testimage busybox --push 127.0.0.1:5000/busybox:latest
//! berth-testimage busybox --oci-layout DIR [--tag latest]
//! berth-testimage busybox --oci-archive FILE
//! berth-testimage busybox --docker-archive FILE --tag busybox:latest
//! berth-testimage busybox --multi-arch --push 127.0.0.1:5000/busybox:multi
//! berth-testimage busybox --cmd sleep --cmd 2147483647 --docker-archive pause.tar --tag pause:1
//! ```
//!
//! Prints the manifest (or index) digest.

use anyhow::{bail, Context, Result};
use berth_runtime::image::builder::{self, Built, BuiltImage, Compression, DockerArchiveStyle, IndexBuilder};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Build berth's test images")]
struct Cli {
    #[command(subcommand)]
    image: Image,
}

#[derive(Subcommand)]
enum Image {
    /// The busybox image: /bin/busybox with hard-linked applets, users root, app (1000) and nobody.
    Busybox(Out),
}

#[derive(Clone, Copy, ValueEnum)]
enum Comp {
    None,
    Gzip,
    Zstd,
}

#[derive(clap::Args)]
struct Out {
    /// Push to a registry reference (HOST:PORT/NAME:TAG); 127.0.0.1/localhost use plain HTTP.
    #[arg(long)]
    push: Vec<String>,
    /// Write an OCI image layout directory.
    #[arg(long)]
    oci_layout: Option<PathBuf>,
    /// Write an OCI archive (tar of a layout); gzip it if the name ends in .gz.
    #[arg(long)]
    oci_archive: Option<PathBuf>,
    /// Write a `docker save` archive.
    #[arg(long)]
    docker_archive: Option<PathBuf>,
    /// Docker archives in the docker 25+ `blobs/sha256` form instead of `<id>/layer.tar`.
    #[arg(long)]
    docker_blobs: bool,
    /// Name for OCI layouts (ref.name annotation) and docker RepoTags.
    #[arg(long, default_value = "busybox:latest")]
    tag: Vec<String>,
    /// Build a linux/amd64 + linux/arm64 index instead of a host-platform image.
    #[arg(long)]
    multi_arch: bool,
    /// Use Docker schema 2 media types.
    #[arg(long)]
    docker_media_types: bool,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Comp,
    /// Registry user for --push (password from BERTH_REGISTRY_PASSWORD).
    #[arg(long)]
    username: Option<String>,
    /// Hosts (HOST:PORT) to reach over plain HTTP besides 127.0.0.1/localhost.
    #[arg(long)]
    insecure: Vec<String>,
    /// The image's Cmd, one argument per flag (default: sh).
    #[arg(long = "cmd", value_name = "ARG")]
    cmd: Vec<String>,
}

fn busybox(out: &Out, os: &str, arch: &str, variant: Option<&str>) -> Result<BuiltImage> {
    let comp = match out.compression {
        Comp::None => Compression::None,
        Comp::Gzip => Compression::Gzip,
        Comp::Zstd => Compression::Zstd,
    };
    let layer = builder::busybox_layer()?.finish(comp)?;
    let cmd: Vec<&str> = if out.cmd.is_empty() { vec!["sh"] } else { out.cmd.iter().map(String::as_str).collect() };
    let img = builder::ImageBuilder::new()
        .layer(layer)
        .cmd(&cmd)
        .env(&[builder::BUSYBOX_PATH])
        .platform(os, arch, variant)
        .docker_media_types(out.docker_media_types)
        .build()?;
    Ok(img)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let Image::Busybox(out) = Cli::parse().image;
    let host = builder::Platform::host();
    let image = busybox(&out, &host.os, &host.architecture, host.variant.as_deref())?;
    let index = if out.multi_arch {
        let amd = busybox(&out, "linux", "amd64", None)?;
        let arm = busybox(&out, "linux", "arm64", Some("v8"))?;
        Some(IndexBuilder::new().add_image(amd).add_image(arm).docker_media_types(out.docker_media_types).build()?)
    } else {
        None
    };
    let built: Built = match &index {
        Some(i) => i.into(),
        None => (&image).into(),
    };
    if out.push.is_empty() && out.oci_layout.is_none() && out.oci_archive.is_none() && out.docker_archive.is_none() {
        bail!("nothing to do: give --push, --oci-layout, --oci-archive or --docker-archive");
    }
    let refs: Vec<(&str, Built)> = out.tag.iter().map(|t| (t.as_str(), built)).collect();
    if let Some(dir) = &out.oci_layout {
        builder::write_oci_layout(dir, &refs)?;
    }
    if let Some(file) = &out.oci_archive {
        let gz = file.extension().is_some_and(|e| e == "gz" || e == "tgz");
        builder::write_oci_archive(file, &refs, if gz { Compression::Gzip } else { Compression::None })?;
    }
    if let Some(file) = &out.docker_archive {
        if index.is_some() {
            bail!("--docker-archive holds a single image: drop --multi-arch");
        }
        let tags: Vec<&str> = out.tag.iter().map(String::as_str).collect();
        let style = if out.docker_blobs { DockerArchiveStyle::Blobs } else { DockerArchiveStyle::Legacy };
        builder::write_docker_archive(file, &image, &tags, style)?;
    }
    let insecure: Vec<&str> = out.insecure.iter().map(String::as_str).collect();
    let auth = match &out.username {
        Some(u) => {
            let p = std::env::var("BERTH_REGISTRY_PASSWORD").context("--username needs BERTH_REGISTRY_PASSWORD")?;
            oci_client::secrets::RegistryAuth::Basic(u.clone(), p)
        }
        None => oci_client::secrets::RegistryAuth::Anonymous,
    };
    for r in &out.push {
        builder::push_with_auth(r, built, &insecure, &auth).await?;
    }
    println!("{}", built.manifest_digest());
    Ok(())
}
