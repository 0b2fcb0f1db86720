//! OCI images: references, registry pull and push, layer extraction and packing, image building and tarballs.
//!
//! - [`reference`](mod@reference): parse `alpine`, `localhost:5000/x/y:tag`, `host/repo@sha256:…` like Docker;
//! - [`registry`]: a distribution API v2 client (mirrors, anonymous, basic and bearer-token auth) that pulls
//!   images into the [`Store`](crate::store::Store) and pushes built ones;
//! - [`manifest`]: the JSON documents (descriptors, manifests, indexes) and platform selection;
//! - [`layer`]: extract a layer blob into a directory in overlayfs "upper" format, refusing path escapes,
//!   and pack such a directory back into a deterministic gzip tar;
//! - [`image`]: build an image (config and manifest) from layer directories, write and read image tarballs.
//!
//! A pull lands every blob in the store under its digest; [`layer::extract_cached`] turns each layer
//! into a directory once; the runtime stacks those directories with overlayfs. Going out, [`image::build_image`]
//! packs layer directories into blobs, and [`registry::RegistryClient::push`] or [`image::write_oci_tarball`]
//! ship them.
//!

pub mod image;
pub mod layer;
pub mod manifest;
pub mod reference;
pub mod registry;
mod unpack;

use std::fmt;
use std::path::PathBuf;

pub use image::{
    BuiltImage, build_image, read_image_tarball, read_image_tarball_for, write_oci_tarball, write_oci_tarball_named,
};
pub use reference::Reference;
pub use registry::{Auth, PulledImage, RegistryClient, RegistryConfig};

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image configuration.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Media type of a Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a Docker image configuration.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Media type of a gzip-compressed Docker layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A blob in the store: a layer, a config or a manifest, as a descriptor plus where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its media type, such as [`OCI_LAYER_GZIP`].
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its file in the store (`blobs/<hex>`).
    pub path: PathBuf,
}

/// A layer's compressed blob (the name the pull result uses).
pub type LayerBlob = Blob;

impl Blob {
    /// The store digest (the hex part of [`Blob::digest`]), if it is a well-formed sha256 digest.
    pub fn store_digest(&self) -> Option<crate::model::ids::Digest> {
        self.digest
            .strip_prefix("sha256:")
            .and_then(crate::model::ids::Digest::parse)
    }
}

/// An operating system, CPU architecture and optional variant, such as `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`, …
    pub architecture: String,
    /// `v7`, `v8`, …
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, OciError> {
        let bad = || OciError::BadPlatform(s.to_owned());
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let architecture = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() || variant.as_deref() == Some("") {
            return Err(bad());
        }
        Ok(Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        })
    }

    /// The platform of this machine, in Go's names (`amd64`, `arm64`, …).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    // `arm64` images usually say `v8` or nothing; treat the two as the same.
    fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v,
        }
    }

    /// Whether an image for `other` runs here: same OS and architecture, and the same variant when this
    /// platform names one.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.normalized_variant().is_none() || self.normalized_variant() == other.normalized_variant())
    }
}

impl Default for Platform {
    /// `linux/amd64`.
    fn default() -> Self {
        Platform {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong with images: references, registries, layers and tarballs.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The image reference does not parse.
    #[error("invalid image reference `{input}`: {reason}")]
    BadReference {
        /// What was written.
        input: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A platform string does not parse.
    #[error("invalid platform `{0}`: expected `os/arch` or `os/arch/variant`, such as `linux/arm64`")]
    BadPlatform(String),
    /// A registry setting (environment variable) does not parse.
    #[error("invalid registry configuration in `{var}`: {reason}")]
    BadConfig {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The registry could not be reached or the connection broke.
    #[error("cannot reach registry {registry} ({url}): {source}")]
    Http {
        /// The registry host.
        registry: String,
        /// The URL asked for.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A registry went quiet: a connection, a request or a blob transfer ran past its limit.
    #[error(
        "registry {registry} timed out: {what} ({url}) {} {}; if the registry is only slow, raise the limit with \
         {}={}=SECONDS (or `registryTimeout` in the engine configuration file)",
        .kind.stalled(), registry::fmt_limit(*.limit), registry::TIMEOUT_ENV, .kind.setting()
    )]
    Timeout {
        /// The registry host.
        registry: String,
        /// The URL asked for.
        url: String,
        /// What was asked for.
        what: String,
        /// Which limit ran out.
        kind: registry::TimeoutKind,
        /// The limit.
        limit: std::time::Duration,
    },
    /// The registry wants credentials, or refused the ones given.
    #[error(
        "registry {registry} answered {status} for {what}: {}",
        if *.had_credentials { "check the credentials passed with `withRegistryAuth`" }
        else { "pass credentials with `withRegistryAuth`" }
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// 401 or 403.
        status: u16,
        /// What was asked for.
        what: String,
        /// Whether credentials were sent.
        had_credentials: bool,
    },
    /// The image (or one of its blobs) does not exist there.
    #[error("registry {registry} does not have {what} (404): check the image name and tag")]
    NotFound {
        /// The registry host.
        registry: String,
        /// What was asked for.
        what: String,
    },
    /// The registry answered an unexpected status.
    #[error("registry {registry} answered {status} for {what}: {body}")]
    Status {
        /// The registry host.
        registry: String,
        /// The HTTP status.
        status: u16,
        /// What was asked for.
        what: String,
        /// The start of the response body (registries explain errors there).
        body: String,
    },
    /// A token server answered something unusable.
    #[error("token server {realm} for registry {registry}: {reason}")]
    Token {
        /// The registry host.
        registry: String,
        /// The token endpoint.
        realm: String,
        /// What went wrong.
        reason: String,
    },
    /// Downloaded or imported content does not match its digest.
    #[error("{what} has digest {actual}, but {expected} was expected: the content is corrupt or was tampered with")]
    DigestMismatch {
        /// Which blob or manifest.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A blob was longer than its descriptor says.
    #[error("{what} is larger than the {expected} bytes its descriptor announces")]
    TooLarge {
        /// Which blob.
        what: String,
        /// The announced size.
        expected: u64,
    },
    /// An index has no manifest for the wanted platform.
    #[error("no {wanted} image in index {index}; available: {}", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    NoPlatform {
        /// The wanted platform.
        wanted: String,
        /// The index (reference or digest).
        index: String,
        /// The platforms it has.
        available: Vec<String>,
    },
    /// A manifest, index or blob has a media type we cannot use.
    #[error("{what} has media type `{media_type}`, which is not supported; supported: {supported}")]
    UnsupportedMediaType {
        /// Which document.
        what: String,
        /// Its media type.
        media_type: String,
        /// What is supported.
        supported: &'static str,
    },
    /// A manifest, index or config is not valid JSON of the expected shape.
    #[error("{what} is not a valid {kind}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The expected kind of document.
        kind: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A document the engine writes could not be put together (a field its specification requires is missing).
    #[error("cannot write {what}: {reason}")]
    Incomplete {
        /// The document.
        what: &'static str,
        /// What is missing.
        reason: String,
    },
    /// A layer tar has an entry that would land outside the layer, or cannot be represented.
    #[error("layer {layer}: entry `{entry}` {reason}; the layer was not extracted")]
    UnsafeEntry {
        /// The layer blob.
        layer: String,
        /// The entry's path as written in the tar.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An image tarball does not have the expected layout.
    #[error("image tarball {}: {reason}", path.display())]
    BadTarball {
        /// The tarball.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The cache directory failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl OciError {
    /// An I/O error on `path`, for `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }
}

/// `sha256:<hex>` of bytes.
pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::model::ids::Digest::of(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let arm = Platform::parse("linux/arm64/v8").expect("parse");
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        assert!(arm.matches(&Platform::parse("linux/arm64").expect("parse")));
        assert!(Platform::default().matches(&Platform::parse("linux/amd64/v3").expect("parse")));
        assert!(
            !Platform::parse("linux/arm/v7")
                .expect("parse")
                .matches(&Platform::parse("linux/arm/v6").expect("parse"))
        );
        for bad in ["", "linux", "linux/", "linux/arm/", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
