//! hostPath type checks, as kubelet runs them before a pod starts.

use anyhow::{bail, Context};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Checks (and for the `...OrCreate` types creates) the host path.
pub fn check(path: &Path, kind: &str) -> anyhow::Result<()> {
    let shown = path.display();
    // Symlinks are followed, as Kubernetes' stat does.
    let meta = std::fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind {
        "" => {}
        "DirectoryOrCreate" | "Directory" => {
            if kind == "DirectoryOrCreate" && meta.is_none() {
                std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path).with_context(|| format!("creating directory {shown}"))?;
                return Ok(());
            }
            if !ft.is_some_and(|t| t.is_dir()) {
                bail!("hostPath type check failed: {shown} is not a directory");
            }
        }
        "FileOrCreate" | "File" => {
            if kind == "FileOrCreate" && meta.is_none() {
                // The parent must exist: kubelet does not create it.
                std::fs::OpenOptions::new().create(true).append(true).mode(0o644).open(path).with_context(|| format!("creating file {shown}"))?;
                return Ok(());
            }
            if !ft.is_some_and(|t| t.is_file()) {
                bail!("hostPath type check failed: {shown} is not a file");
            }
        }
        "Socket" => {
            if !ft.is_some_and(|t| t.is_socket()) {
                bail!("hostPath type check failed: {shown} is not a socket file");
            }
        }
        "CharDevice" => {
            if !ft.is_some_and(|t| t.is_char_device()) {
                bail!("hostPath type check failed: {shown} is not a character device");
            }
        }
        "BlockDevice" => {
            if !ft.is_some_and(|t| t.is_block_device()) {
                bail!("hostPath type check failed: {shown} is not a block device");
            }
        }
        other => bail!("{other} is an invalid volume type"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("file"), "x").unwrap();
        let sock = std::os::unix::net::UnixListener::bind(p.join("sock")).unwrap();
        check(&p.join("whatever"), "").unwrap();
        check(p, "Directory").unwrap();
        let e = check(&p.join("file"), "Directory").unwrap_err().to_string();
        assert_eq!(e, format!("hostPath type check failed: {}/file is not a directory", p.display()));
        assert!(check(&p.join("missing"), "Directory").is_err());
        check(&p.join("new/dir"), "DirectoryOrCreate").unwrap();
        assert!(p.join("new/dir").is_dir());
        assert!(check(&p.join("file"), "DirectoryOrCreate").is_err());
        check(&p.join("file"), "File").unwrap();
        assert!(check(p, "File").unwrap_err().to_string().ends_with("is not a file"));
        check(&p.join("made"), "FileOrCreate").unwrap();
        assert!(p.join("made").is_file());
        assert!(check(&p.join("no/parent"), "FileOrCreate").is_err());
        check(&p.join("sock"), "Socket").unwrap();
        assert!(check(&p.join("file"), "Socket").unwrap_err().to_string().ends_with("is not a socket file"));
        check(Path::new("/dev/null"), "CharDevice").unwrap();
        assert!(check(&p.join("file"), "CharDevice").unwrap_err().to_string().ends_with("is not a character device"));
        assert!(check(Path::new("/dev/null"), "BlockDevice").unwrap_err().to_string().ends_with("is not a block device"));
        drop(sock);
    }
}
