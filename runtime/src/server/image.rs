//! The CRI ImageService over [`crate::image::ImageService`].

use super::error;
use crate::image::{Credentials, ImageRecord, ImageService, LogProgress};
use cri_proto::v1 as cri;
use cri_proto::v1::image_service_server::ImageService as CriImageService;
use std::collections::HashMap;
use tonic::{Request, Response, Status};

pub struct ImageServer {
    pub images: ImageService,
}

fn to_cri(r: &ImageRecord) -> cri::Image {
    cri::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        spec: Some(cri::ImageSpec { image: r.id.clone(), ..Default::default() }),
        pinned: r.pinned,
        ..Default::default()
    }
}

/// User of the image config's `User`: a numeric uid, or a name.
fn set_user(img: &mut cri::Image, config: &serde_json::Value) {
    let user = config.pointer("/config/User").and_then(|u| u.as_str()).unwrap_or("");
    let user = user.split(':').next().unwrap_or("");
    match user.parse::<i64>() {
        Ok(uid) => img.uid = Some(cri::Int64Value { value: uid }),
        Err(_) => img.username = user.to_string(),
    }
}

fn image_name(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    spec.map(|s| s.image.as_str()).filter(|s| !s.is_empty()).ok_or_else(|| error::missing("image.image"))
}

#[tonic::async_trait]
impl CriImageService for ImageServer {
    async fn list_images(&self, req: Request<cri::ListImagesRequest>) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = req.into_inner().filter.and_then(|f| f.image).map(|i| i.image).filter(|s| !s.is_empty());
        let mut out = Vec::new();
        let wanted = match &filter {
            Some(f) => self.images.status(f).map_err(error::image)?.map(|r| r.id),
            None => None,
        };
        for r in self.images.list().map_err(error::image)? {
            if filter.is_some() && wanted.as_deref() != Some(r.id.as_str()) {
                continue;
            }
            let mut img = to_cri(&r);
            if let Ok(cfg) = self.images.config_json(&r) {
                set_user(&mut img, &cfg);
            }
            out.push(img);
        }
        Ok(Response::new(cri::ListImagesResponse { images: out }))
    }

    async fn stream_images(&self, req: Request<cri::StreamImagesRequest>) -> Result<Response<tonic::codegen::BoxStream<cri::StreamImagesResponse>>, Status> {
        Ok(Response::new(super::events::stream_images(self, req.into_inner().filter).await?))
    }

    async fn image_status(&self, req: Request<cri::ImageStatusRequest>) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        let Some(r) = self.images.status(name).map_err(error::image)? else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut img = to_cri(&r);
        let cfg = self.images.config_json(&r).map_err(error::image)?;
        set_user(&mut img, &cfg);
        let mut info = HashMap::new();
        if req.verbose {
            let v = serde_json::json!({ "image": r, "config": cfg });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse { image: Some(img), info }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        let creds = match &req.auth {
            Some(a) => Credentials::from_cri(a).map_err(|e| Status::invalid_argument(format!("auth: {e}")))?,
            None => Credentials::default(),
        };
        let rec = self.images.pull(name, &creds, &LogProgress).await.map_err(error::image)?;
        Ok(Response::new(cri::PullImageResponse { image_ref: rec.id }))
    }

    async fn remove_image(&self, req: Request<cri::RemoveImageRequest>) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        match self.images.remove(name).await {
            // Removing an absent image succeeds, as kubelet retries removals.
            Ok(_) | Err(crate::image::ImageError::NotFound { .. }) => Ok(Response::new(cri::RemoveImageResponse {})),
            Err(e) => Err(error::image(e)),
        }
    }

    async fn image_fs_info(&self, _req: Request<cri::ImageFsInfoRequest>) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let u = self.images.fs_usage().map_err(error::image)?;
        let fs = cri::FilesystemUsage {
            timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: self.images.root().join("images").display().to_string() }),
            used_bytes: Some(cri::UInt64Value { value: u.bytes }),
            inodes_used: Some(cri::UInt64Value { value: u.inodes }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse { image_filesystems: vec![fs.clone()], container_filesystems: vec![fs] }))
    }
}
