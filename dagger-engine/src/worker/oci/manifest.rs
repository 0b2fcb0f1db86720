//! The JSON documents of images — descriptors, image manifests and indexes, in their OCI and Docker forms — as
//! [`oci_spec::image`] types, and platform selection.
//!
//! The OCI and Docker schema-2 documents share one shape, so one set of types reads both: a Docker media type
//! is kept as written (`MediaType::Other`). Documents the engine writes go through a canonical JSON form
//! (object keys sorted, see `image`), so the hash maps these types hold never change their bytes.
//!
//! Two gaps of the library are covered here: a descriptor without `mediaType` (which the specifications
//! require, and some registries omit in index entries) is read as having an empty one, as before; and the
//! library names a descriptor platform's OS version `os_version` instead of `os.version`, which the engine
//! neither reads nor writes.

use serde_json::Value;

pub use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, OciError, Platform};

/// A descriptor of `media_type`, `digest` (`sha256:…`) and `size`.
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> Result<Descriptor, OciError> {
    let digest: oci_spec::image::Digest = digest.parse().map_err(|_| OciError::UnsupportedMediaType {
        what: format!("descriptor of {media_type}"),
        media_type: format!("digest `{digest}`"),
        supported: "sha256 digests",
    })?;
    Ok(Descriptor::new(media_type.into(), size, digest))
}

impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Self {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
    }
}

impl From<&Platform> for oci_spec::image::Platform {
    fn from(p: &Platform) -> Self {
        let mut platform = oci_spec::image::Platform::default();
        platform.set_os(p.os.as_str().into());
        platform.set_architecture(p.architecture.as_str().into());
        platform.set_variant(p.variant.clone());
        platform
    }
}

/// A manifest document of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// A single-platform image.
    Manifest(Box<ImageManifest>),
    /// A multi-platform index.
    Index(Box<ImageIndex>),
}

/// The manifest media types a registry may answer with.
pub const ACCEPTED_MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Gives every descriptor under `key` (one, or a list) an empty `mediaType` when it has none.
fn default_media_types(doc: &mut Value, key: &str) {
    let fill = |d: &mut Value| {
        if let Some(d) = d.as_object_mut() {
            d.entry("mediaType").or_insert_with(|| Value::String(String::new()));
        }
    };
    match doc.get_mut(key) {
        Some(Value::Array(list)) => list.iter_mut().for_each(fill),
        Some(one) => fill(one),
        None => {}
    }
}

impl Document {
    /// Parses a manifest or index, using `content_type` (from the registry) or else the document's own
    /// `mediaType`, or else its shape. `what` names it in errors.
    pub fn parse(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<Self, OciError> {
        let json_err = |kind| {
            move |source| OciError::Json {
                what: what.to_owned(),
                kind,
                source,
            }
        };
        let mut doc: Value = serde_json::from_slice(bytes).map_err(json_err("manifest"))?;
        if !doc.is_object() {
            // Let the typed parse say what is wrong.
            serde_json::from_value::<ImageManifest>(doc.clone()).map_err(json_err("manifest"))?;
        }
        let own_type = doc.get("mediaType").and_then(Value::as_str).map(str::to_owned);
        let schema_version = doc.get("schemaVersion").and_then(Value::as_u64);
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
        let media_type = content_type.map(str::to_owned).or(own_type).unwrap_or_else(|| {
            if doc.get("manifests").is_some() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
        match media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => {
                default_media_types(&mut doc, "manifests");
                Ok(Document::Index(Box::new(
                    serde_json::from_value(doc).map_err(json_err("image index"))?,
                )))
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                if schema_version != Some(2) {
                    return Err(OciError::UnsupportedMediaType {
                        what: what.to_owned(),
                        media_type: format!("{media_type} (schemaVersion {schema_version:?})"),
                        supported: "schema version 2",
                    });
                }
                default_media_types(&mut doc, "config");
                default_media_types(&mut doc, "layers");
                Ok(Document::Manifest(Box::new(
                    serde_json::from_value(doc).map_err(json_err("image manifest"))?,
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
pub fn select_platform<'a>(index: &'a ImageIndex, wanted: &Platform, what: &str) -> Result<&'a Descriptor, OciError> {
    let candidates = || {
        index.manifests().iter().filter_map(|d| {
            let p = Platform::from(d.platform().as_ref()?);
            (p.os != "unknown").then_some((d, p))
        })
    };
    // An exact variant match beats an entry that merely has the right OS and architecture.
    let exact = candidates()
        .find(|(_, p)| p == wanted || (wanted.variant.is_none() && p.variant.is_none() && p.matches(wanted)));
    if let Some((d, _)) = exact.or_else(|| candidates().find(|(_, p)| wanted.matches(p))) {
        return Ok(d);
    }
    let mut available: Vec<String> = candidates().map(|(_, p)| p.to_string()).collect();
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
        let mut d = descriptor(
            OCI_MANIFEST,
            &format!("sha256:{}", digest_char.to_string().repeat(64)),
            1,
        )
        .expect("descriptor");
        d.set_platform(Some((&p).into()));
        d
    }

    #[test]
    fn index_platform_selection_honours_variants() {
        let mut index = ImageIndex::default();
        index.set_media_type(Some(OCI_INDEX.into()));
        index.set_manifests(vec![
            entry("linux/amd64", 'a'),
            entry("linux/arm/v6", 'b'),
            entry("linux/arm/v7", 'c'),
            entry("linux/arm64/v8", 'd'),
            entry("unknown/unknown", 'e'),
        ]);
        let pick = |p: &str| {
            select_platform(&index, &Platform::parse(p).expect("platform"), "test index")
                .map(|d| d.digest().to_string())
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
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},"layers":[]}"#;
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

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn docker_schema_2_documents_read_like_oci_ones_with_their_media_types_kept() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{D1}"}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{D2}",
                          "urls":["https://example.com/l"]}}]}}"#
        );
        let Ok(Document::Manifest(m)) = Document::parse(manifest.as_bytes(), Some(DOCKER_MANIFEST), "m") else {
            panic!("a Docker manifest");
        };
        assert_eq!(m.config().media_type().as_ref(), super::super::DOCKER_CONFIG);
        assert_eq!((m.config().digest().as_ref(), m.config().size()), (D1, 7));
        assert_eq!(m.layers()[0].media_type().as_ref(), super::super::DOCKER_LAYER_GZIP);
        assert_eq!(m.layers()[0].digest().as_ref(), D2);

        // A manifest list with `os.version`, `features`, a field of its own, and an entry without a media type.
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","extra":true,"manifests":[
                {{"mediaType":"{DOCKER_MANIFEST}","size":1,"digest":"{D1}",
                  "platform":{{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1"}}}},
                {{"size":2,"digest":"{D2}","platform":{{"architecture":"arm","os":"linux","variant":"v7",
                  "features":["sse4"]}}}}]}}"#
        );
        let Ok(Document::Index(index)) = Document::parse(list.as_bytes(), None, "list") else {
            panic!("a Docker manifest list");
        };
        let arm = Platform::parse("linux/arm/v7").expect("platform");
        let chosen = select_platform(&index, &arm, "list").expect("the arm entry");
        assert_eq!(chosen.digest().as_ref(), D2);
        assert_eq!(chosen.media_type().as_ref(), "", "no media type reads as an empty one");
        let windows = Platform::from(index.manifests()[0].platform().as_ref().expect("a platform"));
        assert_eq!(windows.to_string(), "windows/amd64");
    }

    #[test]
    fn a_malformed_digest_is_refused_when_the_document_is_read() {
        for digest in ["sha256:1", "sha256:../../etc/passwd", "md5"] {
            let m = format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{digest}","size":1}},"layers":[]}}"#
            );
            let err = Document::parse(m.as_bytes(), None, "m").expect_err(digest);
            assert!(matches!(err, OciError::Json { .. }), "{digest}: {err}");
        }
        assert!(descriptor(OCI_MANIFEST, "sha256:1", 1).is_err());
    }

    #[test]
    fn platforms_convert_both_ways() {
        for p in [
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/riscv64",
            "plan9/mips64le",
        ] {
            let ours = Platform::parse(p).expect("platform");
            let theirs = oci_spec::image::Platform::from(&ours);
            assert_eq!(Platform::from(&theirs), ours, "{p}");
        }
    }
}
