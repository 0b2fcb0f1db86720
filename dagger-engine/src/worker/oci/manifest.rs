//! The JSON documents of images: descriptors, image manifests and indexes, in their OCI and Docker forms.
//!
//! The OCI and Docker schema-2 documents share one shape, so one set of types reads both. Maps are
//! `BTreeMap`s so that what we write is deterministic (the digest of a manifest is its identity).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, OciError, Platform};

/// A reference to a blob or manifest: media type, digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// In an index: the platform of the referenced manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescriptorPlatform>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Other places to download the content from (foreign layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// A descriptor with just the media type, digest and size.
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size,
            platform: None,
            annotations: None,
            urls: None,
        }
    }
}

/// The platform field of an index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorPlatform {
    /// CPU architecture (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows images).
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

impl DescriptorPlatform {
    /// As a [`Platform`].
    pub fn to_platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

impl From<&Platform> for DescriptorPlatform {
    fn from(p: &Platform) -> Self {
        DescriptorPlatform {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone(),
            os_version: None,
        }
    }
}

/// An image manifest (OCI or Docker schema 2): a config and layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`OCI_MANIFEST`] or [`DOCKER_MANIFEST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image configuration.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (OCI) or manifest list (Docker): manifests per platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`OCI_INDEX`] or [`DOCKER_MANIFEST_LIST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A manifest document of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// A single-platform image.
    Manifest(Box<Manifest>),
    /// A multi-platform index.
    Index(Index),
}

/// The manifest media types a registry may answer with.
pub const ACCEPTED_MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

impl Document {
    /// Parses a manifest or index, using `content_type` (from the registry) or else the document's own
    /// `mediaType`, or else its shape. `what` names it in errors.
    pub fn parse(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<Self, OciError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            schema_version: Option<u32>,
            manifests: Option<serde_json::Value>,
        }
        let json_err = |kind| {
            move |source| OciError::Json {
                what: what.to_owned(),
                kind,
                source,
            }
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(json_err("manifest"))?;
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
        let media_type = content_type.map(str::to_owned).or(probe.media_type).unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
        match media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(Document::Index(
                serde_json::from_slice(bytes).map_err(json_err("image index"))?,
            )),
            OCI_MANIFEST | DOCKER_MANIFEST => {
                if probe.schema_version != Some(2) {
                    return Err(OciError::UnsupportedMediaType {
                        what: what.to_owned(),
                        media_type: format!("{media_type} (schemaVersion {:?})", probe.schema_version),
                        supported: "schema version 2",
                    });
                }
                Ok(Document::Manifest(Box::new(
                    serde_json::from_slice(bytes).map_err(json_err("image manifest"))?,
                )))
            }
            other => Err(OciError::UnsupportedMediaType {
                what: what.to_owned(),
                media_type: other.to_owned(),
                supported: "OCI image manifests and indexes, Docker schema 2 manifests and manifest lists",
            }),
        }
    }
}

/// Picks the manifest for `wanted` from an index; the error lists the platforms the index has. Entries
/// without a platform, or for `unknown/unknown` (attestations), are never picked.
pub fn select_platform<'a>(index: &'a Index, wanted: &Platform, what: &str) -> Result<&'a Descriptor, OciError> {
    let candidates = || {
        index
            .manifests
            .iter()
            .filter(|d| d.platform.as_ref().is_some_and(|p| p.os != "unknown"))
    };
    // An exact variant match beats an entry that merely has the right OS and architecture.
    let exact = candidates().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.to_platform() == *wanted
                || (wanted.variant.is_none() && p.variant.is_none() && p.to_platform().matches(wanted))
        })
    });
    if let Some(d) =
        exact.or_else(|| candidates().find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(&p.to_platform()))))
    {
        return Ok(d);
    }
    let mut available: Vec<String> = candidates()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_platform().to_string()))
        .collect();
    available.dedup();
    Err(OciError::NoPlatform {
        wanted: wanted.to_string(),
        index: what.to_owned(),
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str, digest_char: char) -> Descriptor {
        let p = Platform::parse(platform).expect("platform");
        Descriptor {
            platform: Some(DescriptorPlatform::from(&p)),
            ..Descriptor::new(
                OCI_MANIFEST,
                &format!("sha256:{}", digest_char.to_string().repeat(64)),
                1,
            )
        }
    }

    #[test]
    fn index_platform_selection_honours_variants() {
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![
                entry("linux/amd64", 'a'),
                entry("linux/arm/v6", 'b'),
                entry("linux/arm/v7", 'c'),
                entry("linux/arm64/v8", 'd'),
                entry("unknown/unknown", 'e'),
            ],
            annotations: None,
        };
        let pick = |p: &str| {
            select_platform(&index, &Platform::parse(p).expect("platform"), "test index").map(|d| d.digest.clone())
        };
        assert!(pick("linux/amd64").expect("amd64").starts_with("sha256:a"));
        assert!(pick("linux/arm/v7").expect("v7").starts_with("sha256:c"));
        assert!(pick("linux/arm64").expect("arm64").starts_with("sha256:d"));
        let err = pick("linux/s390x").expect_err("no s390x").to_string();
        assert_eq!(
            err,
            "no linux/s390x image in index test index; available: linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8"
        );
    }

    #[test]
    fn documents_are_recognized_by_type_or_shape() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1","size":1},"layers":[]}"#;
        assert!(matches!(Document::parse(m, None, "m"), Ok(Document::Manifest(_))));
        assert!(matches!(
            Document::parse(m, Some(DOCKER_MANIFEST), "m"),
            Ok(Document::Manifest(_))
        ));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(Document::parse(i, None, "i"), Ok(Document::Index(_))));
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        let err = Document::parse(
            v1,
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            "old",
        )
        .expect_err("schema 1");
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
