//! Builds OCI images from files (test images, import fixtures).
