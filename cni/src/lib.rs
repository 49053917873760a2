//! CNI networking for Berth: network configurations, plugin invocation per
//! the CNI specification (1.0.0; 0.3.x and 0.4.0 configurations too), an
//! attachment cache that survives restarts, pod network namespaces, and the
//! pod-level plan (loopback plus one pod network, Berth's default bridge
//! network when no configuration exists).

pub mod api;
pub mod cache;
pub mod config;
pub mod error;
pub mod invoke;
pub mod netns;
pub mod pod;
pub mod result;
pub mod version;

pub use api::{Cni, RuntimeConf};
pub use config::NetworkConfigList;
pub use error::{CniError, ConfigError, PluginError};
pub use pod::{Attachment, Options, PodNetworks, PodSpec, SetupResult};
pub use result::CniResult;
pub use version::Version;
