//! Building images from layer directories, and image tarballs in and out.
//!
//! [`build_image`] packs each layer directory into a gzip blob (once: the result is remembered under
//! `packed/` keyed on the directory's name, since layer directories never change), writes the config with
//! `rootfs.diff_ids` and `history`, and an OCI image manifest, all as store blobs. A layer directory that was
//! extracted from a pulled blob (`layers/<digest>`) reuses that blob instead of being packed again, so pushing
//! an image built on a pulled base does not upload the base layers again.
//!
//! [`write_oci_tarball`] writes an OCI image layout as a tar, with a Docker `manifest.json` beside it so
//! `docker load` takes it too. [`read_image_tarball`] imports OCI layout tarballs and `docker save` tarballs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, History, ImageConfiguration, Os};
use serde::{Deserialize, Serialize};

use super::layer::{self, Compression};
use super::manifest::{Document, ImageIndex, ImageManifest, descriptor, select_platform};
use super::registry::{PulledImage, read_config};
use super::{Blob, LayerBlob, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, OciError, Platform, Reference};
use crate::model::ids::Digest;
use crate::store::{BlobError, Store};

/// An image whose blobs (layers, config, manifest) are all in the store, ready to push or export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The OCI image manifest.
    pub manifest: Blob,
    /// The image configuration.
    pub config: Blob,
    /// The layer blobs, base first.
    pub layers: Vec<LayerBlob>,
    /// The layers' uncompressed digests, as in the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// The platform the config names.
    pub platform: Platform,
}

/// What `packed/<digest of a layer directory's name>` remembers.
#[derive(Debug, Serialize, Deserialize)]
struct PackedRecord {
    blob: Digest,
    size: u64,
    media_type: String,
    diff_id: String,
}

/// Builds an image from layer directories (base first, overlayfs upper format) and a configuration. The
/// config's platform fields are set from `platform`, `rootfs` from the layers, and `history` gets an entry
/// for each layer it does not describe yet. Everything else in `config` is kept.
pub fn build_image(
    store: &Store,
    layer_dirs: &[PathBuf],
    config: &ImageConfiguration,
    platform: &Platform,
) -> Result<BuiltImage, OciError> {
    let mut layers = Vec::with_capacity(layer_dirs.len());
    let mut diff_ids = Vec::with_capacity(layer_dirs.len());
    for dir in layer_dirs {
        let (blob, diff_id) = packed_layer(store, dir)?;
        layers.push(blob);
        diff_ids.push(diff_id);
    }

    let mut config = config.clone();
    config.set_os(Os::from(platform.os.as_str()));
    config.set_architecture(Arch::from(platform.architecture.as_str()));
    config.set_variant(platform.variant.clone());
    config.rootfs_mut().set_typ("layers".to_owned());
    config.rootfs_mut().set_diff_ids(diff_ids.clone());
    let mut history = config.history().clone().unwrap_or_default();
    let described = history.iter().filter(|h| h.empty_layer() != Some(true)).count();
    if described > layers.len() {
        // History that claims more layers than there are would confuse every tool; start over.
        history.retain(|h| h.empty_layer() == Some(true));
    }
    let described = history.iter().filter(|h| h.empty_layer() != Some(true)).count();
    for _ in described..layers.len() {
        let mut h = History::default();
        h.set_created_by(Some("dagger-rs".to_owned()));
        h.set_comment(Some("layer built by dagger-rs".to_owned()));
        history.push(h);
    }
    config.set_history(Some(history));
    let config_bytes = canonical_json(&config, "image configuration")?;
    let config = put_small_blob(store, &config_bytes, OCI_CONFIG)?;

    let manifest_bytes = manifest_json(&config.digest, config.size, &layers)?;
    let manifest = put_small_blob(store, &manifest_bytes, OCI_MANIFEST)?;
    Ok(BuiltImage {
        manifest,
        config,
        layers,
        diff_ids,
        platform: platform.clone(),
    })
}

/// The OCI image manifest of a config (`sha256:…` and size) and layers, as written: its digest is the image's
/// identity, so these bytes must never change for the same inputs.
fn manifest_json(config_digest: &str, config_size: u64, layers: &[LayerBlob]) -> Result<Vec<u8>, OciError> {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| descriptor(&l.media_type, &l.digest, l.size))
        .collect::<Result<_, _>>()?;
    let manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(oci_spec::image::SCHEMA_VERSION)
        .media_type(OCI_MANIFEST)
        .config(descriptor(OCI_CONFIG, config_digest, config_size)?)
        .layers(layers)
        .build()
        .map_err(|e| OciError::Incomplete {
            what: "the image manifest",
            reason: e.to_string(),
        })?;
    canonical_json(&manifest, "image manifest")
}

// JSON with object keys sorted (serde_json's `Value` map is ordered), so equal documents hash equally even when
// a type holds a `HashMap`.
fn canonical_json<T: Serialize>(value: &T, kind: &'static str) -> Result<Vec<u8>, OciError> {
    let json_err = |source| OciError::Json {
        what: "the document being written".to_owned(),
        kind,
        source,
    };
    let value = serde_json::to_value(value).map_err(json_err)?;
    serde_json::to_vec(&value).map_err(json_err)
}

fn put_small_blob(store: &Store, bytes: &[u8], media_type: &str) -> Result<Blob, OciError> {
    let d = store.put_blob(bytes)?;
    Ok(Blob {
        digest: format!("sha256:{d}"),
        media_type: media_type.to_owned(),
        size: bytes.len() as u64,
        path: store.blob_path(&d),
    })
}

/// The blob and diff_id of one layer directory: remembered, reused from a pull, or packed now.
fn packed_layer(store: &Store, dir: &Path) -> Result<(LayerBlob, String), OciError> {
    let name = dir.file_name().unwrap_or(dir.as_os_str());
    let key = Digest::of(name.as_bytes());
    let to_blob = |r: &PackedRecord| {
        (
            Blob {
                digest: format!("sha256:{}", r.blob),
                media_type: r.media_type.clone(),
                size: r.size,
                path: store.blob_path(&r.blob),
            },
            r.diff_id.clone(),
        )
    };
    if let Some(record) = store.get_json::<PackedRecord>("packed", &key)
        && store.has_blob(&record.blob)
    {
        return Ok(to_blob(&record));
    }

    let record = match pulled_blob_of(store, dir, name) {
        Some(blob) => {
            let path = store.blob_path(&blob);
            let size = std::fs::metadata(&path).map_err(OciError::io(&path))?.len();
            let (compression, diff_id) = layer::diff_id(&path)?;
            PackedRecord {
                blob,
                size,
                media_type: compression.oci_media_type().to_owned(),
                diff_id,
            }
        }
        None => {
            let mut writer = store.blob_writer()?;
            let packed = layer::pack(dir, &mut writer)?;
            let blob = writer.commit(None).map_err(|e| match e {
                BlobError::Store(e) => OciError::Store(e),
                BlobError::Mismatch { .. } => OciError::io(dir)(io::Error::other(e)),
            })?;
            PackedRecord {
                blob,
                size: packed.size,
                media_type: OCI_LAYER_GZIP.to_owned(),
                diff_id: packed.diff_id,
            }
        }
    };
    store.put_json("packed", &key, &record)?;
    Ok(to_blob(&record))
}

// `layers/<digest>` of this store, whose blob is still there.
fn pulled_blob_of(store: &Store, dir: &Path, name: &OsStr) -> Option<Digest> {
    let digest = Digest::parse(name.to_str()?)?;
    (dir == store.layer_path(&digest) && store.has_blob(&digest)).then_some(digest)
}

// ---------------------------------------------------------------------------------------------------------
// Tarballs
// ---------------------------------------------------------------------------------------------------------

/// One image in a `docker save` `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DockerArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Writes `image` as an OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/…`) plus a
/// `manifest.json` in the `docker save` format, so both OCI tools and `docker load` read it. The tar is
/// deterministic (fixed order, times and owners); blobs are streamed from the store.
pub fn write_oci_tarball(image: &BuiltImage, out: impl Write) -> Result<(), OciError> {
    write_oci_tarball_named(image, None, out)
}

/// [`write_oci_tarball`], naming the image: the index entry gets the tag as `org.opencontainers.image.ref.name`
/// (how OCI tools such as `umoci` address images in a layout) and the full name as `io.containerd.image.name`,
/// and `manifest.json` lists it in `RepoTags`, so `docker load` tags it.
pub fn write_oci_tarball_named(image: &BuiltImage, name: Option<&Reference>, out: impl Write) -> Result<(), OciError> {
    let mut b = tar::Builder::new(out);
    let out_err = |e| OciError::io("the image tarball")(e);

    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append_bytes(&mut b, "oci-layout", layout).map_err(out_err)?;

    append_bytes(&mut b, "index.json", &index_json(image, name)?).map_err(out_err)?;

    let blob_path = |digest: &str| format!("blobs/{}", digest.replacen(':', "/", 1));
    let docker = vec![DockerArchiveEntry {
        config: blob_path(&image.config.digest),
        repo_tags: name.filter(|n| n.tag().is_some()).map(|n| vec![docker_tag(n)]),
        layers: image.layers.iter().map(|l| blob_path(&l.digest)).collect(),
    }];
    append_bytes(&mut b, "manifest.json", &canonical_json(&docker, "docker manifest")?).map_err(out_err)?;

    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = fixed_header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, dir, io::empty()).map_err(out_err)?;
    }
    let mut seen = std::collections::HashSet::new();
    for blob in std::iter::once(&image.manifest)
        .chain(std::iter::once(&image.config))
        .chain(image.layers.iter())
    {
        if !seen.insert(blob.digest.clone()) {
            continue;
        }
        let file = std::fs::File::open(&blob.path).map_err(OciError::io(&blob.path))?;
        let len = file.metadata().map_err(OciError::io(&blob.path))?.len();
        let mut h = fixed_header(tar::EntryType::Regular, 0o644, len);
        b.append_data(&mut h, blob_path(&blob.digest), file.take(len))
            .map_err(OciError::io(&blob.path))?;
    }
    b.into_inner().map_err(out_err)?.flush().map_err(out_err)
}

// `docker load` wants Docker Hub names short (`busybox:1`, `user/app:1`) and others as written.
fn docker_tag(name: &Reference) -> String {
    let tag = name.tag().unwrap_or("latest");
    if name.registry() == super::reference::DOCKER_HUB {
        let repo = name.repository();
        format!("{}:{tag}", repo.strip_prefix("library/").unwrap_or(repo))
    } else {
        format!("{}/{}:{tag}", name.registry(), name.repository())
    }
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = fixed_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    b.append_data(&mut h, name, bytes)
}

/// Imports an image tarball into the store for [`Platform::default`]; see [`read_image_tarball_for`].
pub fn read_image_tarball(path: &Path, store: &Store) -> Result<PulledImage, OciError> {
    read_image_tarball_for(path, store, &Platform::default())
}

/// Imports an image tarball into the store: an OCI image layout (`index.json`, as written by
/// [`write_oci_tarball`], `skopeo copy … oci-archive:` or `docker save` since Docker 25) or a `docker save`
/// archive (`manifest.json` with layer tars). The tarball may be gzip- or zstd-compressed. Every file is
/// streamed into the store once; blobs named by digest are checked against it. When an index holds several
/// images, the one for `platform` is taken.
pub fn read_image_tarball_for(path: &Path, store: &Store, platform: &Platform) -> Result<PulledImage, OciError> {
    let files = store_members(path, store)?;
    if let Some((index_digest, _)) = files.get("index.json") {
        return import_oci_layout(path, store, platform, &files, index_digest);
    }
    if let Some((manifest_digest, _)) = files.get("manifest.json") {
        return import_docker_archive(path, store, &files, manifest_digest);
    }
    Err(OciError::BadTarball {
        path: path.to_owned(),
        reason: "it has neither `index.json` (an OCI image layout) nor `manifest.json` (a `docker save` archive)"
            .into(),
    })
}

/// Every regular member of the tarball at `path`, stored as a blob (checked against its name under
/// `blobs/sha256/`): normalized member path → (store digest, size).
fn store_members(path: &Path, store: &Store) -> Result<HashMap<String, (Digest, u64)>, OciError> {
    let file = std::fs::File::open(path).map_err(OciError::io(path))?;
    let (_, reader) = layer::decompress(BufReader::with_capacity(64 * 1024, file)).map_err(OciError::io(path))?;
    let mut archive = tar::Archive::new(reader);
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    for entry in archive.entries().map_err(OciError::io(path))? {
        let mut entry = entry.map_err(OciError::io(path))?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let name = normalize_member(&entry.path_bytes());
        let mut writer = store.blob_writer()?;
        io::copy(&mut entry, &mut writer).map_err(OciError::io(path))?;
        let size = writer.size();
        let named = name.strip_prefix("blobs/sha256/").and_then(Digest::parse);
        let digest = writer.commit(named.as_ref()).map_err(|e| match e {
            BlobError::Mismatch { expected, actual } => OciError::DigestMismatch {
                what: format!("`{name}` in {}", path.display()),
                expected: format!("sha256:{expected}"),
                actual: format!("sha256:{actual}"),
            },
            BlobError::Store(e) => OciError::Store(e),
        })?;
        files.insert(name, (digest, size));
    }

    Ok(files)
}

/// An OCI image layout: follows `index.json` down to the image manifest for `platform`.
fn import_oci_layout(
    path: &Path,
    store: &Store,
    platform: &Platform,
    files: &HashMap<String, (Digest, u64)>,
    index_digest: &Digest,
) -> Result<PulledImage, OciError> {
    let bad = |reason: String| OciError::BadTarball {
        path: path.to_owned(),
        reason,
    };
    let blob_of = |digest: &str, media_type: &str| -> Result<Blob, OciError> {
        let d = digest
            .strip_prefix("sha256:")
            .and_then(Digest::parse)
            .ok_or_else(|| bad(format!("`{digest}` is not a sha256 digest")))?;
        let size = files
            .get(&format!("blobs/sha256/{d}"))
            .map(|(_, size)| *size)
            .ok_or_else(|| bad(format!("it lacks the blob {digest}")))?;
        Ok(Blob {
            digest: digest.to_owned(),
            media_type: media_type.to_owned(),
            size,
            path: store.blob_path(&d),
        })
    };

    let what = format!("index.json of {}", path.display());
    let bytes = store.get_blob(index_digest)?;
    let mut doc = Document::parse(&bytes, None, &what)?;
    let mut reference = None;
    // Follow indexes down to one image manifest (a few levels at most).
    for _ in 0..4 {
        let Document::Index(index) = doc else {
            return Err(bad(format!("{what} is an image manifest, not an index")));
        };
        let chosen = match index.manifests().as_slice() {
            [only] => only.clone(),
            [] => return Err(bad(format!("{what} lists no image"))),
            _ => select_platform(&index, platform, &what)?.clone(),
        };
        reference = reference.or_else(|| {
            chosen
                .annotations()
                .as_ref()
                .and_then(|a| a.get("io.containerd.image.name"))
                .and_then(|n| Reference::parse(n).ok())
        });
        let (digest, media_type) = (chosen.digest().to_string(), chosen.media_type().to_string());
        let blob = blob_of(&digest, &media_type)?;
        let bytes = std::fs::read(&blob.path).map_err(OciError::io(&blob.path))?;
        doc = Document::parse(&bytes, Some(&media_type), &format!("manifest {digest}"))?;
        if let Document::Manifest(m) = doc {
            return import_manifest(path, *m, digest, reference, &blob_of);
        }
    }
    Err(bad("its indexes nest too deeply".into()))
}

/// The `index.json` of an image tarball: one entry, the image's manifest with its platform, named when `name`
/// is given.
fn index_json(image: &BuiltImage, name: Option<&Reference>) -> Result<Vec<u8>, OciError> {
    let mut entry = descriptor(OCI_MANIFEST, &image.manifest.digest, image.manifest.size)?;
    entry.set_platform(Some((&image.platform).into()));
    if let Some(name) = name {
        let mut annotations = HashMap::new();
        annotations.insert("io.containerd.image.name".to_owned(), name.to_string());
        if let Some(tag) = name.tag() {
            annotations.insert("org.opencontainers.image.ref.name".to_owned(), tag.to_owned());
        }
        entry.set_annotations(Some(annotations));
    }
    let mut index = ImageIndex::default();
    index.set_media_type(Some(OCI_INDEX.into()));
    index.set_manifests(vec![entry]);
    canonical_json(&index, "image index")
}

/// A `docker save` archive: its one image, with the registry manifest it would have.
fn import_docker_archive(
    path: &Path,
    store: &Store,
    files: &HashMap<String, (Digest, u64)>,
    manifest_digest: &Digest,
) -> Result<PulledImage, OciError> {
    let bad = |reason: String| OciError::BadTarball {
        path: path.to_owned(),
        reason,
    };
    let bytes = store.get_blob(manifest_digest)?;
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(&bytes).map_err(|source| OciError::Json {
        what: format!("manifest.json of {}", path.display()),
        kind: "docker save manifest",
        source,
    })?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(bad("its manifest.json lists no image".into())),
        _ => return Err(bad("it holds several images; import one at a time".into())),
    };
    let member = |name: &str| {
        files
            .get(&normalize_member(name.as_bytes()))
            .cloned()
            .ok_or_else(|| bad(format!("manifest.json names `{name}`, which is not in the tarball")))
    };
    let (config_digest, config_size) = member(&entry.config)?;
    let mut layers = Vec::new();
    for name in &entry.layers {
        let (d, size) = member(name)?;
        let path = store.blob_path(&d);
        let compression = sniff(&path)?;
        layers.push(Blob {
            digest: format!("sha256:{d}"),
            media_type: compression.oci_media_type().to_owned(),
            size,
            path,
        });
    }
    let config_path = store.blob_path(&config_digest);
    let config = read_config(&config_path, &format!("the config of {}", path.display()))?;
    check_layer_count(path, &config, layers.len())?;
    // `docker save` archives have no registry manifest; make the one a registry would hold.
    let manifest = manifest_json(&format!("sha256:{config_digest}"), config_size, &layers)?;
    let manifest_blob = put_small_blob(store, &manifest, OCI_MANIFEST)?;
    let reference = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first())
        .and_then(|t| Reference::parse(t).ok());
    Ok(PulledImage {
        reference,
        manifest_digest: manifest_blob.digest,
        config_digest: format!("sha256:{config_digest}"),
        config,
        layers,
        downloaded: 0,
        unpacked: Vec::new(),
    })
}

fn import_manifest(
    path: &Path,
    manifest: ImageManifest,
    manifest_digest: String,
    reference: Option<Reference>,
    blob_of: &dyn Fn(&str, &str) -> Result<Blob, OciError>,
) -> Result<PulledImage, OciError> {
    let config_digest = manifest.config().digest().to_string();
    let config_blob = blob_of(&config_digest, manifest.config().media_type().as_ref())?;
    let config = read_config(&config_blob.path, &format!("the config of {}", path.display()))?;
    let layers = manifest
        .layers()
        .iter()
        .map(|d| blob_of(d.digest().as_ref(), d.media_type().as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    check_layer_count(path, &config, layers.len())?;
    Ok(PulledImage {
        reference,
        manifest_digest,
        config_digest,
        config,
        layers,
        downloaded: 0,
        unpacked: Vec::new(),
    })
}

fn check_layer_count(path: &Path, config: &ImageConfiguration, layers: usize) -> Result<(), OciError> {
    let diff_ids = config.rootfs().diff_ids().len();
    if diff_ids == layers {
        return Ok(());
    }
    Err(OciError::BadTarball {
        path: path.to_owned(),
        reason: format!("its config lists {diff_ids} layers (rootfs.diff_ids) but its manifest has {layers}"),
    })
}

// Tar member names compare without `./` and `/` prefixes.
fn normalize_member(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    name.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn sniff(path: &Path) -> Result<Compression, OciError> {
    let mut prefix = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(OciError::io(path))?;
    let n = f.read(&mut prefix).map_err(OciError::io(path))?;
    Ok(Compression::detect(&prefix[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_dir(root: &Path, name: &str, file: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
        std::fs::write(dir.join("etc").join(file), file).expect("write");
        dir
    }

    #[test]
    fn images_get_diff_ids_history_and_a_manifest_and_layers_pack_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path().join("store")).expect("store");
        let a = layer_dir(tmp.path(), "layer-a", "a");
        let b = layer_dir(tmp.path(), "layer-b", "b");
        let mut config = ImageConfiguration::default();
        let mut base_history = History::default();
        base_history.set_created_by(Some("base layer".to_owned()));
        config.set_history(Some(vec![base_history]));
        let arm = Platform::parse("linux/arm64/v8").expect("platform");

        let image = build_image(&store, &[a.clone(), b.clone()], &config, &arm).expect("build");
        assert_eq!(image.layers.len(), 2);
        assert!(
            image
                .layers
                .iter()
                .all(|l| l.media_type == OCI_LAYER_GZIP && l.path.is_file())
        );

        let written = read_config(&image.config.path, "config").expect("config");
        assert_eq!(written.rootfs().diff_ids(), &image.diff_ids);
        assert_eq!(written.architecture().to_string(), "arm64");
        assert_eq!(written.variant().as_deref(), Some("v8"));
        let history = written.history().clone().unwrap_or_default();
        assert_eq!(history.len(), 2, "one entry kept, one added: {history:?}");
        assert_eq!(history[0].created_by().as_deref(), Some("base layer"));

        let bytes = std::fs::read(&image.manifest.path).expect("manifest");
        assert_eq!(image.manifest.digest, super::super::sha256_of(&bytes));
        let Document::Manifest(m) = Document::parse(&bytes, None, "manifest").expect("parse") else {
            panic!("not a manifest");
        };
        assert_eq!(m.config().digest().to_string(), image.config.digest);
        assert_eq!(m.layers()[1].digest().to_string(), image.layers[1].digest);

        // Layer directories never change, so a directory of the same name is not packed again.
        std::fs::write(a.join("etc/extra"), "ignored").expect("write");
        let again = build_image(&store, &[a, b], &config, &arm).expect("build again");
        assert_eq!(again, image);
    }

    fn fake_blob(hex: char, media_type: &str, size: u64) -> Blob {
        Blob {
            digest: format!("sha256:{}", hex.to_string().repeat(64)),
            media_type: media_type.to_owned(),
            size,
            path: PathBuf::from("/nonexistent"),
        }
    }

    /// The bytes of what the engine writes are its images' identities (manifest digests, cache keys, `publish`
    /// and `export` outputs): pinned here, so a change of types or libraries cannot change them unnoticed.
    #[test]
    fn manifests_indexes_and_configs_are_written_byte_for_byte_as_pinned() {
        let layers = vec![
            fake_blob('a', OCI_LAYER_GZIP, 100),
            fake_blob('b', super::super::DOCKER_LAYER_GZIP, 200),
        ];
        let config = fake_blob('c', OCI_CONFIG, 300);
        let manifest = manifest_json(&config.digest, config.size, &layers).expect("manifest");
        let pin = |bytes: &[u8], digest: &str| {
            assert_eq!(
                super::super::sha256_of(bytes),
                digest,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        };
        assert_eq!(
            String::from_utf8(manifest.clone()).expect("utf-8"),
            concat!(
                r#"{"config":{"digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","#,
                r#""mediaType":"application/vnd.oci.image.config.v1+json","size":300},"layers":[{"digest":"#,
                r#""sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","#,
                r#""mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":100},{"digest":"#,
                r#""sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","#,
                r#""mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":200}],"#,
                r#""mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#
            )
        );
        pin(
            &manifest,
            "sha256:70d7ff5cad4eecd0cf1cf7c23a19c1596e83dbf309cb54e643abcb266e7e6c84",
        );

        let image = BuiltImage {
            manifest: fake_blob('d', OCI_MANIFEST, 400),
            config,
            layers,
            diff_ids: Vec::new(),
            platform: Platform::parse("linux/arm/v7").expect("platform"),
        };
        let name = Reference::parse("registry.example/team/app:1.0").expect("reference");
        pin(
            &index_json(&image, None).expect("index"),
            "sha256:79340bb1cb30f4560405d7a1898f48c306e8655c5c3ab64839c044abe999ebd2",
        );
        // Named: two annotations (kept in key order) beside the platform.
        pin(
            &index_json(&image, Some(&name)).expect("index"),
            "sha256:d953a1430ebfe9524c1337e97ee9e03a073f14fc5f7c5fd49f057e07a64459bc",
        );

        let mut config = ImageConfiguration::default();
        let mut inner = oci_spec::image::Config::default();
        inner.set_env(Some(vec!["PATH=/usr/bin:/bin".to_owned(), "A=1".to_owned()]));
        inner.set_cmd(Some(vec!["sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()]));
        inner.set_entrypoint(Some(vec!["/entry".to_owned()]));
        inner.set_working_dir(Some("/work".to_owned()));
        inner.set_user(Some("1000:1000".to_owned()));
        inner.set_labels(Some(
            [("z.last", "3"), ("a.first", "1"), ("m.middle", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ));
        inner.set_exposed_ports(Some(vec!["8080/tcp".to_owned(), "53/udp".to_owned()]));
        config.set_config(Some(inner));
        config.set_architecture(Arch::ARM);
        config.set_os(Os::Linux);
        config.set_variant(Some("v7".to_owned()));
        config.rootfs_mut().set_typ("layers".to_owned());
        config
            .rootfs_mut()
            .set_diff_ids(vec![format!("sha256:{}", "e".repeat(64))]);
        let mut h = History::default();
        h.set_created_by(Some("dagger-rs".to_owned()));
        h.set_comment(Some("layer built by dagger-rs".to_owned()));
        config.set_history(Some(vec![h]));
        // Labels and exposed ports are hash maps in memory: written in key order all the same.
        pin(
            &canonical_json(&config, "image configuration").expect("config"),
            "sha256:185bd432e95c2232acd03ee34b932b3bbfe5f6fbe302e9e33145c99555974375",
        );
    }
}
