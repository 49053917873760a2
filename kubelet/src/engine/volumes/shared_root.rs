//! The pods root as a shared mount, as kubelet makes its root directory:
//! mounts made below a pod's volumes propagate to containers that ask for
//! HostToContainer or Bidirectional, which the runtime refuses otherwise.

use std::path::{Path, PathBuf};

use berth_runtime::spec::{mount_in, Propagation};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Marks that Berth made the pods root's bind mount (kept across restarts,
/// so the run that ends with no pods left takes it down).
fn marker(root: &Path) -> PathBuf {
    root.with_extension("rshared")
}

/// Makes `root` an rshared mount: nothing when it is one already; rshared
/// in place when it is some other mount point; else an rbind of it onto
/// itself (recursive, so the volume mounts of running pods stay visible).
pub fn make_rshared(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)?;
    let root = root.canonicalize()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let own = mount_in(&mountinfo, &root).filter(|m| m.mount_point == root);
    if own.as_ref().is_some_and(|m| m.propagation == Propagation::Shared) {
        return Ok(());
    }
    if own.is_none() {
        mount(Some(&root), &root, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| anyhow::anyhow!("bind mount of {} onto itself: {e}", root.display()))?;
        std::fs::write(marker(&root), "")?;
    }
    mount(None::<&str>, &root, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| anyhow::anyhow!("making {} rshared: {e}", root.display()))?;
    Ok(())
}

/// Takes down the bind mount `make_rshared` made, once no pod uses it.
pub fn undo(root: &Path) {
    let Ok(root) = root.canonicalize() else { return };
    if !marker(&root).exists() {
        return;
    }
    match umount2(&root, MntFlags::MNT_DETACH) {
        Ok(()) => {
            let _ = std::fs::remove_file(marker(&root));
        }
        Err(e) => tracing::warn!("unmounting {}: {e}", root.display()),
    }
}
