//! A client for the OCI distribution API (v2): pull images into the store, push built images.
//!
//! # Where requests go
//! A reference's registry is contacted at its API host (`docker.io` → `registry-1.docker.io`). Pulls try the
//! registry's mirrors first, in order, and fall back to the registry itself when a mirror fails or lacks the
//! image; pushes always go to the registry itself. HTTPS is used, except over loopback (`localhost`,
//! `127.0.0.0/8`, `::1`) and for hosts configured as insecure, which get plain HTTP, as Docker does.
//!
//! Three environment variables configure this ([`RegistryConfig::from_env`]):
//! - `DAGGER_RS_REGISTRY_MIRRORS`: comma-separated `registry=base-url` pairs, such as
//!   `docker.io=http://127.0.0.1:5000,ghcr.io=https://ghcr-mirror.example`; repeat a registry to give it
//!   several mirrors (tried in the order written). The registry is written as in references (`docker.io`).
//! - `DAGGER_RS_INSECURE_REGISTRIES`: comma-separated `host[:port]` registries to reach over plain HTTP.
//! - `DAGGER_RS_REGISTRY_TIMEOUT`: how long to wait ([`RegistryTimeouts`]), as `connect=S,request=S,idle=S`
//!   (any subset, seconds), or one number of seconds for all three.
//!
//! # Timeouts
//! A registry that accepts connections and then goes quiet fails the request, saying what timed out, where,
//! after how long, and which setting raises the limit. Three limits apply: establishing a connection
//! (`connect`, 10 s by default); a whole small request — manifests, tokens, blob existence checks, upload
//! starts, manifest pushes — from sending it to the last byte of the answer (`request`, 60 s); and for blob
//! downloads and uploads, which may legitimately take long, the time without a single byte moving (`idle`,
//! 60 s), with no limit on the transfer as a whole.
//!
//! # Authentication
//! Requests go out anonymously. On a `401` the `WWW-Authenticate` challenge decides: `Bearer realm=…,
//! service=…,scope=…` fetches a token from the realm (sending the [`Auth`] credentials there, if any), `Basic`
//! retries with the credentials. Tokens are cached per registry endpoint and repository scope.
//!
//! # Pulling
//! The manifest is asked for with every OCI and Docker schema-2 media type; an index (or manifest list) is
//! resolved to the manifest for the wanted [`Platform`]. The config and each layer blob are streamed into the
//! store (a temporary file, hashed while written, renamed into `blobs/` once the digest matches), so memory
//! does not grow with layer size; blobs already in the store are not downloaded again. The file writes are
//! plain blocking writes of network-sized chunks, cheap next to the network wait.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode, header};

use super::manifest::{ACCEPTED_MANIFEST_TYPES, Descriptor, Document, ImageManifest, select_platform};
use super::unpack::Unpacking;
use super::{
    Blob, BuiltImage, DOCKER_CONFIG, LayerBlob, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OciError,
    Platform, Reference, sha256_of,
};
use crate::model::ids::Digest;
use crate::store::{BlobError, Store};

/// The variable that lists registry mirrors.
pub const MIRRORS_ENV: &str = "DAGGER_RS_REGISTRY_MIRRORS";
/// The variable that lists registries reached over plain HTTP.
pub const INSECURE_ENV: &str = "DAGGER_RS_INSECURE_REGISTRIES";
/// The variable that sets the registry timeouts.
pub const TIMEOUT_ENV: &str = "DAGGER_RS_REGISTRY_TIMEOUT";

/// Manifests and configs larger than this are refused: they are JSON documents, not data.
const MAX_DOCUMENT: usize = 8 * 1024 * 1024;
/// How many layers download at once.
const PARALLEL_LAYERS: usize = 4;
/// How long the explanation in an error answer is waited for (blob requests have no overall deadline).
const ERROR_BODY_WAIT: Duration = Duration::from_secs(10);
/// The chunk size of blob uploads.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// How long registry requests may wait (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryTimeouts {
    /// Establishing a connection (TCP and TLS). Default 10 s.
    pub connect: Duration,
    /// A whole small request (manifests, tokens, blob existence checks, upload starts, manifest pushes), from
    /// sending it to the last byte of the answer. Default 60 s.
    pub request: Duration,
    /// A blob download or upload with no byte moving; the transfer as a whole has no deadline. Default 60 s.
    pub idle: Duration,
}

impl Default for RegistryTimeouts {
    fn default() -> Self {
        RegistryTimeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

impl RegistryTimeouts {
    /// Parses the `DAGGER_RS_REGISTRY_TIMEOUT` form: `connect=S,request=S,idle=S` (any subset; the others keep
    /// their defaults) or a single number of seconds for all three. Seconds may have a fraction (`0.5`).
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = |reason: String| OciError::BadConfig {
            var: TIMEOUT_ENV,
            reason,
        };
        let seconds = |value: &str| -> Result<Duration, OciError> {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| bad(format!("`{}` is not a positive number of seconds", value.trim())))
        };
        let mut out = RegistryTimeouts::default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(out);
        }
        if !text.contains('=') {
            let all = seconds(text)?;
            return Ok(RegistryTimeouts {
                connect: all,
                request: all,
                idle: all,
            });
        }
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                bad(format!(
                    "`{pair}` is not `name=seconds`; write `connect=10,request=60,idle=60` or one number"
                ))
            })?;
            let slot = match key.trim() {
                "connect" => &mut out.connect,
                "request" => &mut out.request,
                "idle" => &mut out.idle,
                other => {
                    return Err(bad(format!(
                        "`{other}` is not a timeout name: use `connect`, `request` or `idle`"
                    )));
                }
            };
            *slot = seconds(value)?;
        }
        Ok(out)
    }
}

/// Where to reach registries: mirrors, plain-HTTP hosts, and how long to wait for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registry (as written in references, such as `docker.io`) → mirror base URLs, tried in order.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registries (`host[:port]`) reached over plain HTTP.
    pub insecure: BTreeSet<String>,
    /// How long requests may wait.
    pub timeouts: RegistryTimeouts,
}

impl RegistryConfig {
    /// Reads `DAGGER_RS_REGISTRY_MIRRORS`, `DAGGER_RS_INSECURE_REGISTRIES` and `DAGGER_RS_REGISTRY_TIMEOUT` (see
    /// the module docs); unset variables mean no mirrors, no insecure registries and the default timeouts.
    pub fn from_env() -> Result<Self, OciError> {
        let mirrors = std::env::var(MIRRORS_ENV).unwrap_or_default();
        let insecure = std::env::var(INSECURE_ENV).unwrap_or_default();
        let mut config = Self::parse(&mirrors, &insecure)?;
        config.timeouts = RegistryTimeouts::parse(&std::env::var(TIMEOUT_ENV).unwrap_or_default())?;
        Ok(config)
    }

    /// Parses the two settings in their environment-variable form.
    pub fn parse(mirrors: &str, insecure: &str) -> Result<Self, OciError> {
        let mut config = RegistryConfig::default();
        for pair in mirrors.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason: String| OciError::BadConfig {
                var: MIRRORS_ENV,
                reason,
            };
            let (registry, url) = pair.split_once('=').ok_or_else(|| {
                bad(format!(
                    "`{pair}` is not `registry=url`, such as `docker.io=http://127.0.0.1:5000`"
                ))
            })?;
            let url = url.trim().trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
                return Err(bad(format!(
                    "`{url}` (mirror of {registry}) is not an http:// or https:// URL"
                )));
            }
            config
                .mirrors
                .entry(registry.trim().to_owned())
                .or_default()
                .push(url.to_owned());
        }
        for host in insecure.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            if host.contains('/') {
                return Err(OciError::BadConfig {
                    var: INSECURE_ENV,
                    reason: format!("`{host}` should be a `host[:port]`, without a scheme or path"),
                });
            }
            config.insecure.insert(host.to_owned());
        }
        Ok(config)
    }

    /// The registry's own endpoint: `https://` unless loopback or insecure.
    fn upstream(&self, reference: &Reference) -> Endpoint {
        let host = reference.api_host();
        let plain =
            reference.is_loopback() || self.insecure.contains(reference.registry()) || self.insecure.contains(host);
        let scheme = if plain { "http" } else { "https" };
        Endpoint {
            base: format!("{scheme}://{host}"),
            name: reference.registry().to_owned(),
        }
    }

    /// Mirrors, then the registry itself.
    fn pull_endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(reference.registry())
            .into_iter()
            .flatten()
            .map(|base| Endpoint {
                base: base.clone(),
                name: format!("{} (mirror of {})", host_of(base), reference.registry()),
            })
            .collect();
        out.push(self.upstream(reference));
        out
    }
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| url.to_owned())
}

/// A place to send API requests: a base URL (`/v2/…` is appended) and the name errors use.
#[derive(Clone, Debug)]
struct Endpoint {
    base: String,
    name: String,
}

/// Registry credentials (`withRegistryAuth`).
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub secret: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("secret", &"***")
            .finish()
    }
}

impl Auth {
    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// An image pulled into the store.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The reference it came from (for tarball imports: its tag, when the tarball names one).
    pub reference: Option<Reference>,
    /// `sha256:…` of the platform-specific image manifest.
    pub manifest_digest: String,
    /// `sha256:…` of the configuration blob.
    pub config_digest: String,
    /// The image configuration.
    pub config: oci_spec::image::ImageConfiguration,
    /// The layer blobs, base first, all in the store.
    pub layers: Vec<LayerBlob>,
    /// How many bytes this pull downloaded: the manifests, and the blobs that were not in the store yet
    /// (0 for a tarball import).
    pub downloaded: u64,
    /// For each layer (in [`layers`](Self::layers)' order) that was unpacked while it downloaded: what the
    /// unpacking left out (see [`Extracted::summary`](super::layer::Extracted::summary)); `None` for the others,
    /// which are unpacked from the store when the image is used.
    pub unpacked: Vec<Option<super::layer::Extracted>>,
}

/// A blob a pull fetched (or found in the store).
struct Fetched {
    blob: Blob,
    /// Bytes downloaded (0 when it was in the store).
    downloaded: u64,
    /// For a layer unpacked while it downloaded: what the unpacking left out.
    unpacked: Option<super::layer::Extracted>,
}

/// What a request body is made from; rebuilt for each attempt, so requests can be retried after a challenge.
#[derive(Clone)]
enum Body {
    Empty,
    Bytes(Vec<u8>),
    File(std::path::PathBuf, u64),
}

/// Which limit a request runs under (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// A small request: the whole exchange within [`RegistryTimeouts::request`].
    Request,
    /// A blob transfer: no byte moving for [`RegistryTimeouts::idle`] fails it.
    Idle,
}

/// When bytes last moved on a transfer, shared between an upload body and the watchdog of its request.
#[derive(Clone)]
struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new(Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock() = Instant::now();
    }

    fn quiet_for(&self) -> Duration {
        self.0.lock().elapsed()
    }
}

/// Runs `fut` until it finishes, or fails once `activity` has been quiet for `idle`.
async fn unless_idle<T>(fut: impl std::future::Future<Output = T>, activity: &Activity, idle: Duration) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    loop {
        let left = idle.saturating_sub(activity.quiet_for());
        if left.is_zero() {
            return None;
        }
        if let Ok(out) = tokio::time::timeout(left, &mut fut).await {
            return Some(out);
        }
    }
}

/// A file as an upload body that records when each chunk is taken by the connection.
fn tracked_file_body(file: tokio::fs::File, activity: Activity) -> reqwest::Body {
    let chunks = futures_util::stream::try_unfold((file, activity), |(mut file, activity)| async move {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf).await?;
        activity.touch();
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((buf, (file, activity))))
    });
    reqwest::Body::wrap_stream(chunks)
}

/// `1s`, `0.5s`, `2m 30s`: a limit as people read it.
pub(crate) fn fmt_limit(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs >= 60 && !secs.is_multiple_of(60) {
        format!("{}m {}s", secs / 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A registry client. Cheap to share: keep one per engine, so tokens and connections are reused.
pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
    /// (endpoint base, scope) → `Authorization` header value.
    authorizations: Mutex<HashMap<(String, String), String>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient").field("config", &self.config).finish()
    }
}

impl RegistryClient {
    /// A client with these settings.
    pub fn new(config: RegistryConfig) -> Result<Self, OciError> {
        // Small requests get a per-request deadline, blob transfers an idle watchdog (see `send`); nothing
        // client-wide beyond the connect limit, so a long download that keeps moving is never cut.
        let http = reqwest::Client::builder()
            .user_agent(concat!("dagger-rs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeouts.connect)
            .build()
            .map_err(|e| OciError::BadConfig {
                var: "HTTP client",
                reason: e.to_string(),
            })?;
        Ok(RegistryClient {
            http,
            config,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    // ----- pull ------------------------------------------------------------------------------------------

    /// Pulls `reference` for `platform` into `store`: manifest, config and layer blobs (layers are not
    /// extracted; see [`extract_cached`](super::layer::extract_cached)). Mirrors are tried first.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
        auth: Option<&Auth>,
    ) -> Result<PulledImage, OciError> {
        let endpoints = self.config.pull_endpoints(reference);
        let mut last_err = None;
        for (i, ep) in endpoints.iter().enumerate() {
            match self.pull_from(ep, store, reference, platform, auth).await {
                Ok(image) => return Ok(image),
                // Content that arrived corrupt is not retried elsewhere: it is worth a loud failure.
                Err(e @ OciError::DigestMismatch { .. }) => return Err(e),
                Err(e) if i + 1 < endpoints.len() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| OciError::NotFound {
            registry: reference.registry().to_owned(),
            what: reference.to_string(),
        }))
    }

    /// The digest (`sha256:…`) of the manifest or index `reference` names, without pulling anything else.
    /// [`OciError::NotFound`] when the registry does not have it.
    pub async fn resolve(&self, reference: &Reference, auth: Option<&Auth>) -> Result<String, OciError> {
        let endpoints = self.config.pull_endpoints(reference);
        let mut last_err = None;
        for ep in &endpoints {
            let what = reference.to_string();
            match self
                .get_manifest(ep, reference.repository(), reference.tag_or_digest(), auth, &what)
                .await
            {
                Ok((bytes, _)) => return Ok(sha256_of(&bytes)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| OciError::NotFound {
            registry: reference.registry().to_owned(),
            what: reference.to_string(),
        }))
    }

    async fn pull_from(
        &self,
        ep: &Endpoint,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
        auth: Option<&Auth>,
    ) -> Result<PulledImage, OciError> {
        let repo = reference.repository();
        let (bytes, content_type) = self
            .get_manifest(ep, repo, reference.tag_or_digest(), auth, &reference.to_string())
            .await?;
        let mut downloaded = bytes.len() as u64;
        let top_digest = sha256_of(&bytes);
        if let Some(expected) = reference.digest()
            && expected != top_digest
        {
            return Err(OciError::DigestMismatch {
                what: format!("the manifest of {reference}"),
                expected: expected.to_owned(),
                actual: top_digest,
            });
        }
        let (manifest, manifest_digest, manifest_bytes) =
            match Document::parse(&bytes, content_type.as_deref(), &reference.to_string())? {
                Document::Manifest(m) => (*m, top_digest, bytes),
                Document::Index(index) => {
                    let what = format!("{reference} ({top_digest})");
                    let chosen = select_platform(&index, platform, &what)?;
                    let chosen_digest = chosen.digest().to_string();
                    let chosen_type = chosen.media_type().to_string();
                    let (bytes, content_type) = self.get_manifest(ep, repo, &chosen_digest, auth, &what).await?;
                    downloaded += bytes.len() as u64;
                    let digest = sha256_of(&bytes);
                    if digest != chosen_digest {
                        return Err(OciError::DigestMismatch {
                            what: format!("the {platform} manifest of {reference}"),
                            expected: chosen_digest,
                            actual: digest,
                        });
                    }
                    match Document::parse(&bytes, content_type.as_deref(), &what)? {
                        Document::Manifest(m) => (*m, digest, bytes),
                        Document::Index(_) => {
                            return Err(OciError::UnsupportedMediaType {
                                what: format!("the {platform} entry of {what}"),
                                media_type: chosen_type,
                                supported: "an image manifest inside an index (nested indexes are not supported)",
                            });
                        }
                    }
                }
            };
        store.put_blob(&manifest_bytes)?;
        let mut image = self
            .pull_manifest_content(ep, store, reference, manifest, manifest_digest, auth)
            .await?;
        image.downloaded += downloaded;
        Ok(image)
    }

    async fn pull_manifest_content(
        &self,
        ep: &Endpoint,
        store: &Store,
        reference: &Reference,
        manifest: ImageManifest,
        manifest_digest: String,
        auth: Option<&Auth>,
    ) -> Result<PulledImage, OciError> {
        let repo = reference.repository();
        let config_type = manifest.config().media_type().as_ref();
        if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
            return Err(OciError::UnsupportedMediaType {
                what: format!("the config of {reference}"),
                media_type: config_type.to_owned(),
                supported: "OCI and Docker image configs (artifacts are not images)",
            });
        }
        let config = self
            .fetch_blob(ep, store, repo, manifest.config(), auth, reference)
            .await?;
        let (config_blob, mut downloaded) = (config.blob, config.downloaded);
        let config = read_config(&config_blob.path, &format!("the config of {reference}"))?;
        for layer in manifest.layers() {
            if !is_layer_type(layer.media_type().as_ref()) {
                return Err(OciError::UnsupportedMediaType {
                    what: format!("layer {} of {reference}", layer.digest()),
                    media_type: layer.media_type().to_string(),
                    supported: "tar layers, plain or compressed with gzip or zstd",
                });
            }
        }
        // The futures are made up front: a stream holding the closure that makes them would not be `Send`
        // for every lifetime, and pulls run inside the engine's `Send` evaluation futures.
        let fetches: Vec<_> = manifest
            .layers()
            .iter()
            .map(|d| self.fetch_blob(ep, store, repo, d, auth, reference))
            .collect();
        let fetched: Vec<Fetched> = futures_util::stream::iter(fetches)
            .buffered(PARALLEL_LAYERS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        downloaded += fetched.iter().map(|f| f.downloaded).sum::<u64>();
        let (layers, unpacked) = fetched.into_iter().map(|f| (f.blob, f.unpacked)).unzip();
        Ok(PulledImage {
            reference: Some(reference.clone()),
            manifest_digest,
            config_digest: manifest.config().digest().to_string(),
            config,
            layers,
            downloaded,
            unpacked,
        })
    }

    async fn get_manifest(
        &self,
        ep: &Endpoint,
        repo: &str,
        tag_or_digest: &str,
        auth: Option<&Auth>,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), OciError> {
        let url = format!("{}/v2/{repo}/manifests/{tag_or_digest}", ep.base);
        let what = format!("the manifest of {what}");
        let resp = self
            .send(
                ep,
                repo,
                "pull",
                auth,
                Method::GET,
                &url,
                &[(header::ACCEPT, ACCEPTED_MANIFEST_TYPES)],
                Body::Empty,
                &what,
                Deadline::Request,
            )
            .await?;
        let mut resp = expect_status(ep, resp, &[StatusCode::OK], &what).await?;
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        // The request's deadline covers reading the answer too.
        while let Some(chunk) = resp.chunk().await.map_err(self.transport_err(ep, &url, &what))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err(OciError::TooLarge {
                    what,
                    expected: MAX_DOCUMENT as u64,
                });
            }
        }
        Ok((body, content_type))
    }

    // Streams one blob into the store unless it is there already, verifying its digest and size; a layer is
    // unpacked as it arrives (see `unpack`).
    async fn fetch_blob(
        &self,
        ep: &Endpoint,
        store: &Store,
        repo: &str,
        d: &Descriptor,
        auth: Option<&Auth>,
        reference: &Reference,
    ) -> Result<Fetched, OciError> {
        let what = format!("blob {} of {reference}", d.digest());
        let digest = d
            .as_digest_sha256()
            .and_then(Digest::parse)
            .ok_or_else(|| OciError::UnsupportedMediaType {
                what: what.clone(),
                media_type: format!("digest `{}`", d.digest()),
                supported: "sha256 digests",
            })?;
        let size = d.size();
        let blob = |path| Blob {
            digest: d.digest().to_string(),
            media_type: d.media_type().to_string(),
            size,
            path,
        };
        if store.has_blob(&digest) {
            return Ok(Fetched {
                blob: blob(store.blob_path(&digest)),
                downloaded: 0,
                unpacked: None,
            });
        }
        let url = format!("{}/v2/{repo}/blobs/{}", ep.base, d.digest());
        let resp = self
            .send(
                ep,
                repo,
                "pull",
                auth,
                Method::GET,
                &url,
                &[],
                Body::Empty,
                &what,
                Deadline::Idle,
            )
            .await?;
        let mut resp = expect_status(ep, resp, &[StatusCode::OK], &what).await?;
        let mut writer = store.blob_writer()?;
        let mut unpacking = if is_layer_type(d.media_type().as_ref()) {
            Unpacking::start(store, &digest)
        } else {
            None
        };
        let idle = self.config.timeouts.idle;
        loop {
            let next = tokio::time::timeout(idle, resp.chunk())
                .await
                .map_err(|_| self.timeout(ep, &url, &what, TimeoutKind::Idle))?;
            let Some(chunk) = next.map_err(self.transport_err(ep, &url, &what))? else {
                break;
            };
            std::io::Write::write_all(&mut writer, &chunk).map_err(OciError::io(store.root().join("tmp")))?;
            if writer.size() > size {
                return Err(OciError::TooLarge { what, expected: size });
            }
            if let Some(u) = &mut unpacking {
                u.feed(&chunk).await;
            }
        }
        let downloaded = writer.size();
        let committed = writer.commit(Some(&digest));
        let unpacked = match unpacking {
            Some(u) => u.finish(store, &digest, committed.is_ok()).await,
            None => None,
        };
        match committed {
            Ok(_) => Ok(Fetched {
                blob: blob(store.blob_path(&digest)),
                downloaded,
                unpacked,
            }),
            Err(BlobError::Mismatch { expected, actual }) => Err(OciError::DigestMismatch {
                what,
                expected: format!("sha256:{expected}"),
                actual: format!("sha256:{actual}"),
            }),
            Err(BlobError::Store(e)) => Err(e.into()),
        }
    }

    // ----- push ------------------------------------------------------------------------------------------

    /// Pushes a built image to `reference` (its tag, or its digest when it has no tag): the blobs the registry
    /// lacks, then the manifest. Returns `registry/repository@sha256:…`.
    pub async fn push(
        &self,
        image: &BuiltImage,
        reference: &Reference,
        auth: Option<&Auth>,
    ) -> Result<String, OciError> {
        for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
            self.push_blob(reference, blob, auth).await?;
        }
        let bytes = std::fs::read(&image.manifest.path).map_err(OciError::io(&image.manifest.path))?;
        let digest = self
            .push_manifest(reference, &image.manifest.media_type, bytes, auth)
            .await?;
        Ok(reference.pinned(&digest))
    }

    /// Uploads one blob unless the repository has it already (a `HEAD` check): `POST` to start an upload,
    /// then one `PUT` with the whole content, streamed from the file.
    pub async fn push_blob(&self, reference: &Reference, blob: &Blob, auth: Option<&Auth>) -> Result<(), OciError> {
        let ep = self.config.upstream(reference);
        let repo = reference.repository();
        let what = format!("blob {} of {reference}", blob.digest);
        let url = format!("{}/v2/{repo}/blobs/{}", ep.base, blob.digest);
        let head = self
            .send(
                &ep,
                repo,
                "pull,push",
                auth,
                Method::HEAD,
                &url,
                &[],
                Body::Empty,
                &what,
                Deadline::Request,
            )
            .await?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }

        let start_url = format!("{}/v2/{repo}/blobs/uploads/", ep.base);
        let what_upload = format!("an upload to {reference}");
        let started = self
            .send(
                &ep,
                repo,
                "pull,push",
                auth,
                Method::POST,
                &start_url,
                &[],
                Body::Empty,
                &what_upload,
                Deadline::Request,
            )
            .await?;
        let started = expect_status(&ep, started, &[StatusCode::ACCEPTED], &what_upload).await?;
        let location = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Status {
                registry: ep.name.clone(),
                status: started.status().as_u16(),
                what: what_upload.clone(),
                body: "no Location header in the answer".into(),
            })?;
        // `Location` may be relative to the request URL.
        let mut put_url = reqwest::Url::parse(&start_url)
            .and_then(|base| base.join(location))
            .map_err(|e| OciError::Status {
                registry: ep.name.clone(),
                status: started.status().as_u16(),
                what: what_upload.clone(),
                body: format!("unusable Location `{location}`: {e}"),
            })?;
        put_url.query_pairs_mut().append_pair("digest", &blob.digest);
        let resp = self
            .send(
                &ep,
                repo,
                "pull,push",
                auth,
                Method::PUT,
                put_url.as_str(),
                &[(header::CONTENT_TYPE, "application/octet-stream")],
                Body::File(blob.path.clone(), blob.size),
                &what,
                Deadline::Idle,
            )
            .await?;
        expect_status(&ep, resp, &[StatusCode::CREATED, StatusCode::ACCEPTED], &what).await?;
        Ok(())
    }

    /// Puts a manifest (or index) under the reference's tag, or its digest when it has no tag; returns the
    /// manifest's digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        media_type: &str,
        bytes: Vec<u8>,
        auth: Option<&Auth>,
    ) -> Result<String, OciError> {
        let ep = self.config.upstream(reference);
        let repo = reference.repository();
        let digest = sha256_of(&bytes);
        let target = reference.tag().unwrap_or(&digest);
        let url = format!("{}/v2/{repo}/manifests/{target}", ep.base);
        let what = format!("the manifest of {reference}");
        let resp = self
            .send(
                &ep,
                repo,
                "pull,push",
                auth,
                Method::PUT,
                &url,
                &[(header::CONTENT_TYPE, media_type)],
                Body::Bytes(bytes),
                &what,
                Deadline::Request,
            )
            .await?;
        expect_status(
            &ep,
            resp,
            &[StatusCode::CREATED, StatusCode::OK, StatusCode::ACCEPTED],
            &what,
        )
        .await?;
        Ok(digest)
    }

    // ----- transport -------------------------------------------------------------------------------------

    /// Sends a request with the cached authorization for (endpoint, scope); on a 401 answers the challenge
    /// and tries once more. 401 and 403 after that become [`OciError::Unauthorized`]. Under
    /// [`Deadline::Request`] the whole exchange (answer body included) has the request limit; under
    /// [`Deadline::Idle`] sending fails once no byte has moved for the idle limit, and the caller reads the
    /// body under the same limit.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        ep: &Endpoint,
        repo: &str,
        actions: &str,
        auth: Option<&Auth>,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Body,
        what: &str,
        deadline: Deadline,
    ) -> Result<reqwest::Response, OciError> {
        let scope = format!("repository:{repo}:{actions}");
        let key = (ep.base.clone(), scope.clone());
        let mut answered_challenge = false;
        loop {
            let cached = self.authorizations.lock().get(&key).cloned();
            let mut req = self.http.request(method.clone(), url);
            for (name, value) in headers {
                req = req.header(name, *value);
            }
            if let Some(a) = &cached {
                req = req.header(header::AUTHORIZATION, a);
            }
            let activity = Activity::new();
            req = match &body {
                Body::Empty => req,
                Body::Bytes(b) => req.body(b.clone()),
                Body::File(path, len) => {
                    let file = tokio::fs::File::open(path).await.map_err(OciError::io(path))?;
                    req.header(header::CONTENT_LENGTH, *len)
                        .body(tracked_file_body(file, activity.clone()))
                }
            };
            let resp = match deadline {
                Deadline::Request => req.timeout(self.config.timeouts.request).send().await,
                Deadline::Idle => unless_idle(req.send(), &activity, self.config.timeouts.idle)
                    .await
                    .ok_or_else(|| self.timeout(ep, url, what, TimeoutKind::Idle))?,
            }
            .map_err(self.transport_err(ep, url, what))?;
            let status = resp.status();
            if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let unauthorized = || OciError::Unauthorized {
                registry: ep.name.clone(),
                status: status.as_u16(),
                what: what.to_owned(),
                had_credentials: auth.is_some(),
            };
            if answered_challenge || status == StatusCode::FORBIDDEN {
                return Err(unauthorized());
            }
            answered_challenge = true;
            let Some(challenge) = challenge else {
                return Err(unauthorized());
            };
            let (kind, params) = parse_challenge(&challenge);
            let authorization = if kind.eq_ignore_ascii_case("bearer") {
                let token = self.fetch_token(ep, &params, &scope, auth).await?;
                format!("Bearer {token}")
            } else if kind.eq_ignore_ascii_case("basic") {
                match auth {
                    Some(a) => a.basic_header(),
                    None => return Err(unauthorized()),
                }
            } else {
                return Err(unauthorized());
            };
            self.authorizations.lock().insert(key.clone(), authorization);
        }
    }

    async fn fetch_token(
        &self,
        ep: &Endpoint,
        params: &HashMap<String, String>,
        scope: &str,
        auth: Option<&Auth>,
    ) -> Result<String, OciError> {
        let realm = params.get("realm").cloned().unwrap_or_default();
        let token_err = |reason: String| OciError::Token {
            registry: ep.name.clone(),
            realm: realm.clone(),
            reason,
        };
        let mut url = reqwest::Url::parse(&realm).map_err(|e| token_err(format!("the realm is not a URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                q.append_pair("service", service);
            }
            // Ask for what this request needs; the challenge's scope may be narrower (pull only).
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url.clone()).timeout(self.config.timeouts.request);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a.basic_header());
        }
        let what = format!("a token for `{scope}`");
        let resp = req.send().await.map_err(self.transport_err(ep, url.as_str(), &what))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(OciError::Unauthorized {
                registry: ep.name.clone(),
                status: status.as_u16(),
                what: format!("a token for `{scope}`"),
                had_credentials: auth.is_some(),
            });
        }
        if !status.is_success() {
            return Err(token_err(format!("answered {status}")));
        }
        let bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                self.timeout(ep, url.as_str(), &what, TimeoutKind::Request)
            } else {
                token_err(format!("unreadable answer: {e}"))
            }
        })?;
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| token_err(format!("the answer is not JSON: {e}")))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| token_err("the answer has no `token`".into()))
    }
}

impl RegistryClient {
    /// A transport error, told apart: a timeout names its limit; anything else is "cannot reach".
    fn transport_err<'a>(
        &'a self,
        ep: &'a Endpoint,
        url: &'a str,
        what: &'a str,
    ) -> impl FnOnce(reqwest::Error) -> OciError + 'a {
        move |source| {
            if source.is_timeout() {
                let kind = if source.is_connect() {
                    TimeoutKind::Connect
                } else {
                    TimeoutKind::Request
                };
                self.timeout(ep, url, what, kind)
            } else {
                OciError::Http {
                    registry: ep.name.clone(),
                    url: url.to_owned(),
                    source,
                }
            }
        }
    }

    fn timeout(&self, ep: &Endpoint, url: &str, what: &str, kind: TimeoutKind) -> OciError {
        let t = &self.config.timeouts;
        OciError::Timeout {
            registry: ep.name.clone(),
            url: url.to_owned(),
            what: what.to_owned(),
            kind,
            limit: match kind {
                TimeoutKind::Connect => t.connect,
                TimeoutKind::Request => t.request,
                TimeoutKind::Idle => t.idle,
            },
        }
    }
}

/// Which registry limit ran out (see [`RegistryTimeouts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No connection was established in time.
    Connect,
    /// A small request was not answered in full in time.
    Request,
    /// A blob transfer moved no byte for too long.
    Idle,
}

impl TimeoutKind {
    /// The name of the limit in `DAGGER_RS_REGISTRY_TIMEOUT`.
    pub fn setting(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Request => "request",
            TimeoutKind::Idle => "idle",
        }
    }

    /// What did not happen in time, for messages.
    pub fn stalled(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "could not connect within",
            TimeoutKind::Request => "was not answered within",
            TimeoutKind::Idle => "received or sent no data for",
        }
    }
}

// Turns any status but the expected ones into an error that explains it.
async fn expect_status(
    ep: &Endpoint,
    resp: reqwest::Response,
    ok: &[StatusCode],
    what: &str,
) -> Result<reqwest::Response, OciError> {
    let status = resp.status();
    if ok.contains(&status) {
        return Ok(resp);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(OciError::NotFound {
            registry: ep.name.clone(),
            what: what.to_owned(),
        });
    }
    // Blob requests have no overall deadline: the explanation is waited for briefly only.
    let body = tokio::time::timeout(ERROR_BODY_WAIT, resp.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let body: String = body.trim().chars().take(400).collect();
    Err(OciError::Status {
        registry: ep.name.clone(),
        status: status.as_u16(),
        what: what.to_owned(),
        body: if body.is_empty() { "(no details)".into() } else { body },
    })
}

/// Splits `Bearer realm="…",service="…",scope="…"` into the scheme and its parameters. Quoted values may
/// contain commas (`scope="repository:x:pull,push"`).
pub fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (kind, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key, value.trim().to_owned());
    }
    (kind.to_owned(), params)
}

fn is_layer_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER_TAR
            | OCI_LAYER_GZIP
            | OCI_LAYER_ZSTD
            | super::DOCKER_LAYER_GZIP
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    )
}

/// Reads an image configuration from a file. `what` names it in errors.
pub fn read_config(path: &std::path::Path, what: &str) -> Result<oci_spec::image::ImageConfiguration, OciError> {
    let bytes = std::fs::read(path).map_err(OciError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| OciError::Json {
        what: what.to_owned(),
        kind: "image configuration",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_env_forms() {
        let c = RegistryConfig::parse(
            "docker.io=http://127.0.0.1:5000/, docker.io=https://m2.example,ghcr.io=https://g.example",
            "reg.internal:5000, other",
        )
        .expect("parse");
        assert_eq!(
            c.mirrors.get("docker.io"),
            Some(&vec![
                "http://127.0.0.1:5000".to_owned(),
                "https://m2.example".to_owned()
            ])
        );
        assert_eq!(c.mirrors.get("ghcr.io").map(Vec::len), Some(1));
        assert!(c.insecure.contains("reg.internal:5000") && c.insecure.contains("other"));

        let hub = Reference::parse("alpine").expect("ref");
        let eps: Vec<String> = c.pull_endpoints(&hub).into_iter().map(|e| e.base).collect();
        assert_eq!(
            eps,
            [
                "http://127.0.0.1:5000",
                "https://m2.example",
                "https://registry-1.docker.io"
            ]
        );
        let local = Reference::parse("localhost:5000/a").expect("ref");
        assert_eq!(c.upstream(&local).base, "http://localhost:5000");
        let insecure = Reference::parse("reg.internal:5000/a").expect("ref");
        assert_eq!(c.upstream(&insecure).base, "http://reg.internal:5000");

        for bad in ["docker.io", "docker.io=ftp://x", "docker.io=not a url"] {
            let e = RegistryConfig::parse(bad, "").expect_err(bad);
            assert!(e.to_string().contains(MIRRORS_ENV), "{e}");
        }
        assert!(RegistryConfig::parse("", "http://x").is_err());
    }

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let (kind, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(kind, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (kind, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(kind, "Basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn timeouts_parse_env_forms() {
        let d = RegistryTimeouts::default();
        assert_eq!(
            (d.connect, d.request, d.idle),
            (
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(60)
            )
        );
        assert_eq!(RegistryTimeouts::parse("").expect("empty"), d);
        let t = RegistryTimeouts::parse("idle=300, connect=2.5").expect("pairs");
        assert_eq!(
            (t.connect, t.request, t.idle),
            (Duration::from_millis(2500), d.request, Duration::from_secs(300))
        );
        let all = RegistryTimeouts::parse("5").expect("one number");
        assert_eq!([all.connect, all.request, all.idle], [Duration::from_secs(5); 3]);
        for bad in ["idle", "idle=", "idle=-1", "idle=0", "slow=3", "x"] {
            let e = RegistryTimeouts::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(TIMEOUT_ENV), "{e}");
        }
        assert_eq!(fmt_limit(Duration::from_secs(1)), "1s");
        assert_eq!(fmt_limit(Duration::from_millis(500)), "0.5s");
        assert_eq!(fmt_limit(Duration::from_secs(150)), "2m 30s");
    }

    /// What the scripted server does with one request.
    #[derive(Clone)]
    enum Act {
        /// Answer with these bytes (a whole HTTP response).
        Answer(Vec<u8>),
        /// Write these bytes (headers, maybe part of a body), then keep the connection open and say nothing.
        Stall(Vec<u8>),
    }

    fn answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// A loopback HTTP server that reads each request head (never a body) and acts as `script` says for its
    /// request line. Stalled connections are held open until the test ends.
    async fn scripted(script: impl Fn(&str) -> Act + Send + Sync + 'static) -> String {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = script.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = tokio::io::BufReader::new(read);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                                break;
                            }
                        }
                        match script(line.trim()) {
                            Act::Answer(bytes) => {
                                if write.write_all(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Act::Stall(bytes) => {
                                let _ = write.write_all(&bytes).await;
                                // Hold both halves open, silent, for longer than any test runs.
                                tokio::time::sleep(Duration::from_secs(600)).await;
                                drop(reader);
                                return;
                            }
                        }
                    }
                });
            }
        });
        host
    }

    /// Timeouts far below the defaults, so a test waits a second, not a minute; `request` and `idle` apart.
    fn quick(request: u64, idle: u64) -> RegistryClient {
        let config = RegistryConfig {
            timeouts: RegistryTimeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(request),
                idle: Duration::from_secs(idle),
            },
            ..RegistryConfig::default()
        };
        RegistryClient::new(config).expect("client")
    }

    /// Whatever the limits, a stalled registry must fail well before the old four minutes.
    const GENEROUS: Duration = Duration::from_secs(30);

    /// `err` is a timeout of `kind`, it came within [`GENEROUS`] of `started`, and its message holds `parts`.
    #[track_caller]
    fn assert_timed_out(err: &OciError, kind: TimeoutKind, started: Instant, parts: &[&str]) {
        assert!(started.elapsed() < GENEROUS, "took {:?}", started.elapsed());
        assert!(
            matches!(err, OciError::Timeout { kind: k, .. } if *k == kind),
            "{err:?}"
        );
        let msg = err.to_string();
        for part in parts {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
    }

    #[tokio::test]
    async fn a_registry_that_accepts_and_never_answers_times_out_saying_so() {
        let host = scripted(|_| Act::Stall(Vec::new())).await;
        let client = quick(1, 120);
        let reference = Reference::parse(&format!("{host}/silent/app:v1")).expect("ref");
        let started = Instant::now();
        let err = client.resolve(&reference, None).await.expect_err("no answer");
        assert_timed_out(
            &err,
            TimeoutKind::Request,
            started,
            &[
                "timed out",
                &format!("registry {host}"),
                &format!("http://{host}/v2/silent/app/manifests/v1"),
                "within 1s",
                "DAGGER_RS_REGISTRY_TIMEOUT=request=",
            ],
        );
        assert!(!err.to_string().contains("cannot reach"), "{err}");

        // A pull fails the same way.
        let store = Store::open(tempfile::tempdir().expect("tmp").path().join("s")).expect("store");
        let started = Instant::now();
        let err = client
            .pull(&store, &reference, &Platform::default(), None)
            .await
            .expect_err("no answer");
        assert!(started.elapsed() < GENEROUS, "took {:?}", started.elapsed());
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn a_manifest_whose_body_stalls_runs_into_the_request_limit() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: 5000\r\n\r\n{\"schemaVersion\"".to_vec();
        let host = scripted(move |_| Act::Stall(head.clone())).await;
        let client = quick(1, 120);
        let reference = Reference::parse(&format!("{host}/half/app:v1")).expect("ref");
        let started = Instant::now();
        let err = client.resolve(&reference, None).await.expect_err("stalled body");
        assert!(started.elapsed() < GENEROUS, "took {:?}", started.elapsed());
        let msg = err.to_string();
        assert!(
            msg.contains("timed out") && msg.contains("within 1s") && msg.contains("=request="),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_blob_download_that_stops_moving_runs_into_the_idle_limit() {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let config_digest = sha256_of(&config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
            config.len(),
            OCI_MANIFEST = super::super::OCI_MANIFEST,
        );
        let host = scripted(move |line| {
            if line.contains("/manifests/") {
                Act::Answer(answer(
                    "200 OK",
                    &[("content-type", super::super::OCI_MANIFEST)],
                    manifest.as_bytes(),
                ))
            } else {
                // Headers and the first bytes of the config, then silence.
                let mut head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", config.len()).into_bytes();
                head.extend_from_slice(&config[..10]);
                Act::Stall(head)
            }
        })
        .await;
        // The request limit is long: only the idle limit can end this.
        let client = quick(120, 1);
        let reference = Reference::parse(&format!("{host}/slow/app:v1")).expect("ref");
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path().join("s")).expect("store");
        let started = Instant::now();
        let err = client
            .pull(&store, &reference, &Platform::default(), None)
            .await
            .expect_err("stalled blob");
        assert_timed_out(
            &err,
            TimeoutKind::Idle,
            started,
            &[
                "timed out",
                &format!("blob {config_digest}"),
                &format!("http://{host}/v2/slow/app/blobs/{config_digest}"),
                "no data for 1s",
                "DAGGER_RS_REGISTRY_TIMEOUT=idle=",
            ],
        );
    }

    #[tokio::test]
    async fn a_blob_upload_the_registry_never_answers_runs_into_the_idle_limit() {
        let host = scripted(|line| {
            if line.starts_with("HEAD") {
                Act::Answer(answer("404 Not Found", &[], b""))
            } else if line.starts_with("POST") {
                Act::Answer(answer(
                    "202 Accepted",
                    &[("location", "/v2/up/app/blobs/uploads/1")],
                    b"",
                ))
            } else {
                Act::Stall(Vec::new())
            }
        })
        .await;
        let client = quick(120, 1);
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("blob");
        std::fs::write(&path, b"layer bytes").expect("write");
        let blob = Blob {
            digest: sha256_of(b"layer bytes"),
            media_type: OCI_LAYER_GZIP.to_owned(),
            size: 11,
            path,
        };
        let reference = Reference::parse(&format!("{host}/up/app:v1")).expect("ref");
        let started = Instant::now();
        let err = client.push_blob(&reference, &blob, None).await.expect_err("no answer");
        assert_timed_out(&err, TimeoutKind::Idle, started, &["DAGGER_RS_REGISTRY_TIMEOUT=idle="]);
    }

    #[test]
    fn auth_debug_hides_the_secret() {
        let a = Auth {
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
