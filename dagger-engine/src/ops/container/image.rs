//! Images: `from` (pull, unpack once, apply the configuration), `import`, and image output — `asTarball`,
//! `export` and `publish` — built from the container's layers and configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::model::ids::Digest;
use crate::model::tree::FileEntry;
use crate::ops::container::state::{ContainerState, ImageConfig, expand_if, layers_dir};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::{
    ContainerExport, ContainerPublish, ContainerWithRegistryAuth, ImageLayerCompression, ImageMediaTypes,
};
use crate::ops::secret::secret_plaintext;
use crate::ops::value::Evaluated;
use crate::solver::events::EventKind;
use crate::worker::scratch::Scratch;
use crate::worker::snapshot::{self};

// ----- images in and out -----------------------------------------------------------------------------------

pub(crate) fn oci(e: crate::worker::oci::OciError) -> OpError {
    OpError::new(e.to_string())
}

/// The image configuration as a container state's config.
pub(crate) fn config_from_image(img: &oci_spec::image::ImageConfiguration) -> ImageConfig {
    let Some(c) = img.config() else {
        return ImageConfig::default();
    };
    let ports = c
        .exposed_ports()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            Some((port.parse().ok()?, proto.to_ascii_uppercase(), None))
        })
        .collect();
    ImageConfig {
        env: c.env().clone().unwrap_or_default(),
        workdir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        ports,
    }
}

/// The container's config as an OCI image configuration.
pub(crate) fn image_config(st: &ContainerState) -> Result<oci_spec::image::ImageConfiguration, OpError> {
    let c = &st.config;
    let mut b = oci_spec::image::ConfigBuilder::default();
    if !c.env.is_empty() {
        b = b.env(c.env.clone());
    }
    if !c.workdir.is_empty() {
        b = b.working_dir(c.workdir.clone());
    }
    if !c.user.is_empty() {
        b = b.user(c.user.clone());
    }
    if !c.entrypoint.is_empty() {
        b = b.entrypoint(c.entrypoint.clone());
    }
    if !c.cmd.is_empty() {
        b = b.cmd(c.cmd.clone());
    }
    if !c.labels.is_empty() {
        b = b.labels(
            c.labels
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    if !c.ports.is_empty() {
        b = b.exposed_ports(
            c.ports
                .iter()
                .map(|(p, proto, _)| format!("{p}/{}", proto.to_ascii_lowercase()))
                .collect::<Vec<_>>(),
        );
    }
    let config = b
        .build()
        .map_err(|e| OpError::new(format!("cannot build the image config: {e}")))?;
    let mut img = oci_spec::image::ImageConfiguration::default();
    img.set_config(Some(config));
    Ok(img)
}

pub(crate) fn platform_of(st: &ContainerState) -> Result<crate::worker::oci::Platform, OpError> {
    if st.platform.is_empty() {
        return Ok(crate::worker::oci::Platform::host());
    }
    crate::worker::oci::Platform::parse(&st.platform).map_err(oci)
}

/// Credentials `withRegistryAuth` gave for the reference's registry.
pub(crate) async fn registry_auth(
    engine: &Arc<Engine>,
    auths: Vec<(String, String, Digest)>,
    reference: &crate::worker::oci::Reference,
) -> Result<Option<crate::worker::oci::registry::Auth>, OpError> {
    let found: Option<(String, String, Digest)> = {
        let wanted = reference.registry().to_owned();
        let mut found = None;
        for (address, username, secret) in auths.into_iter().rev() {
            if address == wanted || crate::worker::oci::Reference::parse(&address).is_ok_and(|r| r.registry() == wanted)
            {
                found = Some((address, username, secret));
                break;
            }
        }
        found
    };
    let Some((_, username, secret)) = found else {
        return Ok(None);
    };
    Ok(Some(crate::worker::oci::registry::Auth {
        username,
        secret: secret_plaintext(engine, &secret).await?,
    }))
}

/// The manifest digest `address` names now (for `from`, so a moved tag is a new object, and the image used
/// is the one resolved here). Any failure — a bad reference, an unreachable registry, a missing tag, refused
/// credentials — is an error naming the reference: `from` never goes on with an unpinned tag. Credentials
/// given by `withRegistryAuth` earlier in the chain (`parent`) are used.
pub(crate) async fn resolve_address(
    engine: &Arc<Engine>,
    parent: Option<&Digest>,
    address: &str,
) -> Result<String, OpError> {
    let failed = |cause: String| OpError::new(format!("cannot resolve image `{address}` to a digest: {cause}"));
    let reference = crate::worker::oci::Reference::parse(address).map_err(|e| failed(e.to_string()))?;
    if let Some(d) = reference.digest() {
        return Ok(d.to_owned());
    }
    // The credentials are found in the recorded calls: nothing needs to run for them.
    let mut auths = Vec::new();
    let mut cursor = parent.cloned();
    while let Some(d) = cursor {
        let call = engine.call(&d).ok_or_else(|| {
            failed(format!(
                "internal error: the container `{d}` it is called on is unknown"
            ))
        })?;
        if call.field == "withRegistryAuth" {
            let args: Map<String, Value> = call.args.clone().into_iter().collect();
            if let Ok(a) = ContainerWithRegistryAuth::parse(&args) {
                auths.insert(0, (a.address, a.username, a.secret));
            }
        }
        if call.field == "from" || call.field == "container" {
            break;
        }
        cursor = call.parent;
    }
    let auth = registry_auth(engine, auths, &reference)
        .await
        .map_err(|e| failed(e.message))?;
    let registry = engine.registry().map_err(|e| failed(e.message))?;
    registry
        .resolve(&reference, auth.as_ref())
        .await
        .map_err(|e| failed(e.to_string()))
}

/// `from(address)`: pulls the image (layers already in the store are not fetched again), unpacks its layers
/// once, and applies its configuration.
pub(crate) async fn from(
    engine: &Arc<Engine>,
    d: &Digest,
    st: &mut ContainerState,
    address: &str,
    pinned: Option<&str>,
) -> Result<(), OpError> {
    let mut reference = crate::worker::oci::Reference::parse(address).map_err(oci)?;
    if let Some(d) = pinned {
        reference = reference.with_digest(d);
    }
    // `resolve_address` pins every `from` when it is selected; a record without the pin is not pulled by tag.
    if reference.digest().is_none() {
        return Err(OpError::new(format!(
            "image `{address}` was not resolved to a digest: select `from` again to resolve it"
        )));
    }
    let platform = platform_of(st)?;
    let auth = registry_auth(engine, st.registry_auth.clone(), &reference).await?;
    let registry = engine.registry()?;
    let pull: futures_util::future::BoxFuture<'_, _> =
        Box::pin(registry.pull(&engine.store, &reference, &platform, auth.as_ref()));
    let image = pull.await.map_err(oci)?;
    if image.downloaded > 0 {
        engine.emit_event("Container.from", d, EventKind::Pulled(image.downloaded));
    }
    apply_image(engine, ("Container.from", d), st, &image).await?;
    let mut shown = reference.clone();
    if shown.digest().is_none() {
        shown = shown.with_digest(&image.manifest_digest);
    }
    st.image_ref = shown.to_string();
    Ok(())
}

/// How many layers of one image are unpacked at once.
const UNPACK_AT_ONCE: usize = 4;

/// Makes `st` the pulled or imported image: its layers (unpacked once) and configuration. What unpacking a
/// layer left out (device nodes, fifos) is reported as a log line of the operation `op`, one per layer.
pub(crate) async fn apply_image(
    engine: &Arc<Engine>,
    (op, d): (&str, &Digest),
    st: &mut ContainerState,
    image: &crate::worker::oci::registry::PulledImage,
) -> Result<(), OpError> {
    let store = engine.store.clone();
    let blobs: Vec<Digest> = image
        .layers
        .iter()
        .map(|l| {
            l.store_digest()
                .ok_or_else(|| OpError::new(format!("layer digest `{}` is not a sha256 digest", l.digest)))
        })
        .collect::<Result<_, _>>()?;
    // Layers unpacked while they downloaded are in place; the others are unpacked now, side by side (each
    // into a directory of its own).
    // (The futures are made up front: a stream holding the closure that makes them is not `Send` for every
    // lifetime.)
    let unpacking: Vec<_> = blobs
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, blob)| {
            let store = store.clone();
            let during_pull = image.unpacked.get(i).cloned().flatten();
            async move {
                if let Some(extracted) = during_pull
                    && store.layer_path(&blob).is_dir()
                {
                    return Ok(extracted);
                }
                tokio::task::spawn_blocking(move || crate::worker::oci::layer::extract_reporting(&store, &blob))
                    .await
                    .map_err(|e| OpError::new(format!("internal error: {e}")))?
                    .map(|(_, extracted)| extracted)
                    .map_err(oci)
            }
        })
        .collect();
    use futures_util::StreamExt as _;
    let extracted: Vec<Result<_, OpError>> = futures_util::stream::iter(unpacking)
        .buffered(UNPACK_AT_ONCE)
        .collect()
        .await;
    let mut skipped = Vec::new();
    for (b, extracted) in blobs.iter().zip(extracted) {
        skipped.extend(extracted?.summary(&format!("sha256:{b}")));
    }
    let names: Vec<String> = blobs.iter().map(ToString::to_string).collect();
    for line in skipped {
        engine.emit_log(op, d, line);
    }
    st.layers = names;
    st.config = config_from_image(&image.config);
    st.exec = None;
    st.mounts.clear();
    Ok(())
}

/// `import(source, tag)`: an OCI-layout or docker-archive tarball.
pub(crate) async fn import(
    engine: &Arc<Engine>,
    d: &Digest,
    st: &mut ContainerState,
    source: &Digest,
) -> Result<(), OpError> {
    let file = engine.eval(source).await?;
    let Evaluated::File { entry, .. } = &*file else {
        return Err(OpError::new("`source` is not a file"));
    };
    let path = engine.store.blob_path(&entry.blob);
    let store = engine.store.clone();
    let platform = platform_of(st)?;
    let image = tokio::task::spawn_blocking(move || {
        crate::worker::oci::image::read_image_tarball_for(&path, &store, &platform).map_err(oci)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))??;
    apply_image(engine, ("Container.import", d), st, &image).await?;
    st.image_ref = image.reference.map(|r| r.to_string()).unwrap_or_default();
    Ok(())
}

/// The image-output options of `export`, `publish` and `asTarball`.
pub(crate) struct ImageOptions<'a> {
    /// The field (`export`, …), for messages.
    pub(crate) field: &'static str,
    /// Other platforms' containers to include.
    pub(crate) platform_variants: &'a [Digest],
    /// The media types asked for.
    pub(crate) media_types: ImageMediaTypes,
    /// The layer compression asked for.
    pub(crate) forced_compression: Option<ImageLayerCompression>,
}

/// Refuses image-output options this engine does not implement yet, naming them.
pub(crate) fn check_image_options(o: &ImageOptions<'_>) -> Result<(), OpError> {
    let field = o.field;
    if !o.platform_variants.is_empty() {
        return Err(OpError::new(format!(
            "`Container.{field}(platformVariants:)` is not supported by this engine yet: publish one platform at a time"
        )));
    }
    if !matches!(o.media_types, ImageMediaTypes::Oci | ImageMediaTypes::OciMediaTypes) {
        return Err(OpError::new(format!(
            "`Container.{field}(mediaTypes: {})` is not supported by this engine yet: it writes OCI media types",
            o.media_types.as_str()
        )));
    }
    match o.forced_compression {
        None | Some(ImageLayerCompression::Gzip | ImageLayerCompression::GZIP) => Ok(()),
        Some(other) => Err(OpError::new(format!(
            "`Container.{field}(forcedCompression: {})` is not supported by this engine yet: layers are gzip-compressed",
            other.as_str()
        ))),
    }
}

/// Builds the container's image (layers packed once each, config, manifest) in the store.
pub(crate) async fn built_image(
    engine: &Arc<Engine>,
    st: &ContainerState,
) -> Result<crate::worker::oci::image::BuiltImage, OpError> {
    let layers: Vec<PathBuf> = st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect();
    let config = image_config(st)?;
    let platform = platform_of(st)?;
    let store = engine.store.clone();
    tokio::task::spawn_blocking(move || {
        crate::worker::oci::image::build_image(&store, &layers, &config, &platform).map_err(oci)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?
}

/// Writes the container's image as an OCI tarball at `target` (atomically).
pub(crate) async fn write_tarball(engine: &Arc<Engine>, st: &ContainerState, target: &Path) -> Result<(), OpError> {
    let image = built_image(engine, st).await?;
    let target = target.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(), OpError> {
        let io = |e: std::io::Error| OpError::new(format!("cannot write {}: {e}", target.display()));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = target.with_extension(format!("partial-{}", snapshot::unique()));
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let result = crate::worker::oci::image::write_oci_tarball(&image, &mut out)
            .map_err(oci)
            .and_then(|()| std::io::Write::flush(&mut out).map_err(io));
        drop(out);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &target).map_err(io)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?
}

/// `asTarball`: the image as an OCI tarball file.
pub(crate) async fn as_tarball(
    engine: &Arc<Engine>,
    st: &ContainerState,
    options: ImageOptions<'_>,
) -> Result<Evaluated, OpError> {
    check_image_options(&options)?;
    // Removed however this ends, a cancelled request included.
    let tmp = Scratch::new(&engine.store, "image");
    write_tarball(engine, st, tmp.path()).await?;
    let stored = engine.store.put_blob_from_file(tmp.path());
    let (blob, size) = stored?;
    Ok(Evaluated::File {
        name: "image.tar".into(),
        entry: FileEntry {
            mode: 0o644,
            blob,
            size,
            mtime: None,
        },
    })
}

/// `export(path)`: the image as an OCI tarball on the host; returns the absolute path written.
pub(crate) async fn export(engine: &Arc<Engine>, st: &ContainerState, a: &ContainerExport) -> Result<Value, OpError> {
    check_image_options(&ImageOptions {
        field: "export",
        platform_variants: &a.platform_variants,
        media_types: a.media_types,
        forced_compression: a.forced_compression,
    })?;
    let path = expand_if(&a.path, st, a.expand)?;
    let target = crate::ops::host::host_path(engine, &path);
    if target.is_dir() {
        return Err(OpError::new(format!(
            "{} is a directory; `export` writes a tarball: give a file path",
            target.display()
        )));
    }
    write_tarball(engine, st, &target).await?;
    Ok(json!(target.to_string_lossy()))
}

/// `publish(address)`: pushes the image; returns the reference with its tag and digest (`host/repo:tag@sha256:…`).
pub(crate) async fn publish(engine: &Arc<Engine>, st: &ContainerState, a: &ContainerPublish) -> Result<Value, OpError> {
    check_image_options(&ImageOptions {
        field: "publish",
        platform_variants: &a.platform_variants,
        media_types: a.media_types,
        forced_compression: a.forced_compression,
    })?;
    let reference = crate::worker::oci::Reference::parse(&a.address).map_err(oci)?;
    let auth = registry_auth(engine, st.registry_auth.clone(), &reference).await?;
    let image = built_image(engine, st).await?;
    let pinned = engine
        .registry()?
        .push(&image, &reference, auth.as_ref())
        .await
        .map_err(oci)?;
    let digest = pinned.rsplit_once('@').map_or(pinned.as_str(), |(_, d)| d);
    Ok(json!(reference.published(&a.address, digest)))
}

#[cfg(test)]
mod tests {
    //! Image configurations in and out: no registry, no root.

    use super::*;

    #[test]
    fn a_container_config_survives_the_trip_through_an_oci_image_config() {
        let st = ContainerState {
            config: ImageConfig {
                env: vec!["PATH=/bin".into(), "A=1".into()],
                workdir: "/app".into(),
                user: "1000:1000".into(),
                entrypoint: vec!["/bin/app".into()],
                cmd: vec!["serve".into()],
                labels: [("org.opencontainers.image.title".to_owned(), "app".to_owned())]
                    .into_iter()
                    .collect(),
                ports: vec![(8080, "TCP".into(), None), (53, "UDP".into(), None)],
            },
            ..ContainerState::default()
        };
        let img = image_config(&st).expect("image config");
        let exposed = img
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        assert!(
            exposed.contains(&"8080/tcp".to_owned()) && exposed.contains(&"53/udp".to_owned()),
            "{exposed:?}"
        );
        let mut back = config_from_image(&img);
        back.ports.sort();
        let mut want = st.config.clone();
        want.ports.sort();
        assert_eq!(back, want, "descriptions of ports are not part of an image");
    }

    #[test]
    fn an_empty_config_stays_empty() {
        let img = image_config(&ContainerState::default()).expect("image config");
        assert_eq!(config_from_image(&img), ImageConfig::default());
        assert_eq!(
            config_from_image(&oci_spec::image::ImageConfiguration::default()),
            ImageConfig::default()
        );
    }
}
