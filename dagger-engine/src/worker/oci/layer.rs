//! Layer blobs ⇄ layer directories.
//!
//! A layer directory is in overlayfs "upper dir" format, so the runtime can stack layers with overlayfs:
//! - regular files, directories, symlinks and hard links (between entries of the same layer) keep their
//!   mode, owner and modification time (owners need root; without it they are left as the current user);
//! - a deleted path (tar `.wh.NAME`) is a character device 0:0 named `NAME`;
//! - an opaque directory (tar `DIR/.wh..wh..opq`) carries the xattr `trusted.overlay.opaque` = `y`
//!   (`user.overlay.opaque` in rootless mode, see [`crate::worker::userns`]);
//! - `user.*` and `security.capability` xattrs from PAX records are kept, except `user.overlay.*`; others
//!   (notably `trusted.*`) are dropped: both could forge overlayfs metadata.
//!
//! Device nodes, fifos and sockets in a layer tar are **not** created: containers get their devices from the
//! runtime, and creating nodes from untrusted images is a needless risk. They are not dropped silently either:
//! [`Extracted`] lists them by kind, and [`Extracted::summary`] is the line the engine reports for the layer.
//!
//! [`extract`] refuses a tar whose entries would land outside the layer (`..` climbing out, a parent that is a
//! symlink, a hard link to a path outside the layer or not yet extracted) and then removes everything it wrote:
//! symlinks are never followed while extracting. Leading `/` and `./` are read as relative to the layer root.
//!
//! [`pack`] does the reverse: a deterministic (sorted, gzip with a fixed header) tar of a layer directory,
//! with whiteouts and opaque directories turned back into `.wh.` entries.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use sha2::{Digest as _, Sha256};

use crate::store::Store;

use super::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OciError};

/// The xattr overlayfs reads to hide a lower directory's contents: `trusted.overlay.opaque` as root,
/// `user.overlay.opaque` in rootless mode.
pub fn opaque_xattr() -> &'static str {
    crate::worker::userns::opaque_xattr()
}

/// Whether an extended attribute travels with a file in layer tars (both ways): `user.*` ones but the
/// overlayfs markers of rootless mode (`user.overlay.*`, which would forge opaque directories and redirects),
/// and file capabilities.
fn kept_xattr(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.overlay.")) || name == b"security.capability"
}
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How a layer blob is compressed, detected from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a blob.
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for a blob with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }
}

/// Wraps `reader` in the decompressor its first bytes call for. Nothing is buffered beyond the reader's buffer.
pub fn decompress<'a, R: BufRead + Send + 'a>(mut reader: R) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let compression = Compression::detect(reader.fill_buf()?);
    let out: Box<dyn Read + Send + 'a> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ZstdFrames::new(reader)),
    };
    Ok((compression, out))
}

/// Opens a layer blob and returns its decompressed stream.
pub fn open_blob(blob: &Path) -> Result<(Compression, Box<dyn Read + Send>), OciError> {
    let file = fs::File::open(blob).map_err(OciError::io(blob))?;
    decompress(BufReader::with_capacity(64 * 1024, file)).map_err(OciError::io(blob))
}

/// The digest (`sha256:…`) of a blob's decompressed content: the layer's `diff_id`. Streams the blob.
pub fn diff_id(blob: &Path) -> Result<(Compression, String), OciError> {
    let (compression, mut reader) = open_blob(blob)?;
    let mut hashing = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut hashing).map_err(OciError::io(blob))?;
    Ok((compression, hashing.digest()))
}

/// A zstd stream of one or more frames (skippable frames are skipped); ruzstd's own reader stops after one.
struct ZstdFrames<R: BufRead> {
    reader: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(reader: R) -> Self {
        ZstdFrames {
            reader,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.reader.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.reader) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                        length, ..
                    })) => {
                        io::copy(&mut (&mut self.reader).take(u64::from(length)), &mut io::sink())?;
                    }
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
                continue;
            }
            while self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                self.decoder
                    .decode_blocks(&mut self.reader, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // This frame is done; another may follow.
            self.in_frame = false;
        }
    }
}

/// A writer that hashes (sha256) and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// `sha256:<hex>` of the bytes written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }

    /// The number of bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

// ---------------------------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------------------------

/// What [`extract`] skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Device nodes, fifos and other entries that are not created, in tar order.
    pub skipped: Vec<Skipped>,
}

/// One tar entry [`extract`] did not create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its path, as written in the tar.
    pub path: String,
    /// What it is.
    pub kind: SkippedKind,
}

/// The kinds of entries a layer may hold that are not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkippedKind {
    /// A character device node (`/dev/null`, `/dev/tty`, …).
    CharDevice,
    /// A block device node (`/dev/sda`, …).
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A tar entry type this extractor does not know (its type byte), such as a GNU volume label.
    Other(u8),
}

impl Extracted {
    /// The line reported for a layer that had skipped entries, such as `skipped 2 device nodes (1 character,
    /// 1 block), 1 fifo in layer sha256:…: …`; `None` when nothing was skipped.
    pub fn summary(&self, layer: &str) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let count = |k: fn(&SkippedKind) -> bool| self.skipped.iter().filter(|s| k(&s.kind)).count();
        let chars = count(|k| *k == SkippedKind::CharDevice);
        let blocks = count(|k| *k == SkippedKind::BlockDevice);
        let fifos = count(|k| *k == SkippedKind::Fifo);
        let others = count(|k| matches!(k, SkippedKind::Other(_)));
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = Vec::new();
        match (chars, blocks) {
            (0, 0) => {}
            (c, 0) => parts.push(plural(c, "character device node", "character device nodes")),
            (0, b) => parts.push(plural(b, "block device node", "block device nodes")),
            (c, b) => parts.push(format!(
                "{} ({c} character, {b} block)",
                plural(c + b, "device node", "device nodes")
            )),
        }
        if fifos > 0 {
            parts.push(plural(fifos, "fifo", "fifos"));
        }
        if others > 0 {
            let mut types: Vec<String> = self
                .skipped
                .iter()
                .filter_map(|s| match s.kind {
                    SkippedKind::Other(t) => Some(format!("`{}`", t.escape_ascii())),
                    _ => None,
                })
                .collect();
            types.dedup();
            parts.push(format!(
                "{} of unsupported tar type {}",
                plural(others, "entry", "entries"),
                types.join(", ")
            ));
        }
        let shown: Vec<&str> = self.skipped.iter().take(3).map(|s| s.path.as_str()).collect();
        let more = if self.skipped.len() > shown.len() { ", …" } else { "" };
        Some(format!(
            "skipped {} in layer {layer} ({}{more}): containers get device nodes and pipes from the runtime, \
             never from an image layer",
            parts.join(", "),
            shown.join(", "),
        ))
    }
}

/// Extracts the layer blob at `blob` (gzip, zstd or plain tar, detected from its bytes) into `dest`, which must
/// not exist yet. Streams: memory does not grow with the layer's size. On any error `dest` is removed.
pub fn extract(blob: &Path, dest: &Path) -> Result<Extracted, OciError> {
    let (_, reader) = open_blob(blob)?;
    extract_tar(reader, &blob.display().to_string(), dest)
}

/// Extracts a decompressed layer tar from `reader` into `dest` (which must not exist); `layer` names it in
/// errors. On any error `dest` is removed.
pub fn extract_tar(reader: impl Read, layer: &str, dest: &Path) -> Result<Extracted, OciError> {
    fs::create_dir(dest).map_err(OciError::io(dest))?;
    let mut x = Extractor {
        dest,
        layer,
        privilege: crate::worker::userns::privilege(),
        dir_times: Vec::new(),
        done: Extracted::default(),
    };
    match x.run(reader) {
        Ok(()) => Ok(x.done),
        Err(e) => {
            // `remove_dir_all` does not follow symlinks, so this cannot reach outside `dest` either.
            let _ = fs::remove_dir_all(dest);
            Err(e)
        }
    }
}

struct Extractor<'a> {
    dest: &'a Path,
    layer: &'a str,
    privilege: crate::worker::userns::Privilege,
    dir_times: Vec<(PathBuf, i64)>,
    done: Extracted,
}

/// A tar path made relative and free of `.`/`..`: the components under the layer root.
type RelPath = Vec<OsString>;

// Entry paths are read relative to the root; `..` may only go back down what the path went up.
fn normalize(raw: &[u8]) -> Result<RelPath, &'static str> {
    let mut out: RelPath = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("climbs out of the layer with `..`");
                }
            }
            _ => out.push(OsStr::from_bytes(part).to_owned()),
        }
    }
    Ok(out)
}

fn join(root: &Path, rel: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(rel);
    p
}

impl Extractor<'_> {
    fn unsafe_entry(&self, entry: &[u8], reason: impl Into<String>) -> OciError {
        OciError::UnsafeEntry {
            layer: self.layer.to_owned(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn io_err(&self, path: &Path) -> impl FnOnce(io::Error) -> OciError {
        OciError::io(path)
    }

    fn run(&mut self, reader: impl Read) -> Result<(), OciError> {
        let layer_path = PathBuf::from(self.layer);
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(OciError::io(&layer_path))?;
        for entry in entries {
            let mut entry = entry.map_err(OciError::io(&layer_path))?;
            self.entry(&mut entry)?;
        }
        // Directory times last: creating their children changed them.
        for (path, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            set_mtime(&path, mtime).map_err(self.io_err(&path))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), OciError> {
        let raw = entry.path_bytes().into_owned();
        let rel = normalize(&raw).map_err(|r| self.unsafe_entry(&raw, r))?;
        let header = entry.header().clone();
        let kind = header.entry_type();

        // Whiteouts first: their names are markers, not files.
        if let Some(name) = rel.last().map(|n| n.as_bytes())
            && name.starts_with(WHITEOUT_PREFIX)
        {
            return self.whiteout(&raw, &rel, name);
        }

        let is_dir = kind == tar::EntryType::Directory || (kind == tar::EntryType::Regular && raw.ends_with(b"/"));
        if rel.is_empty() {
            // The layer root itself (`./`): only its metadata can change.
            if is_dir {
                self.apply_dir_meta(entry, self.dest.to_path_buf())?;
                return Ok(());
            }
            return Err(self.unsafe_entry(&raw, "names the layer root but is not a directory"));
        }
        let parent = self.ensure_dirs(&raw, &rel[..rel.len() - 1])?;
        let path = parent.join(&rel[rel.len() - 1]);

        if is_dir {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&path).map_err(self.io_err(&path))?;
                    fs::create_dir(&path).map_err(self.io_err(&path))?;
                }
                Err(_) => fs::create_dir(&path).map_err(self.io_err(&path))?,
            }
            return self.apply_dir_meta(entry, path);
        }

        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular_file(entry, &raw, &path, &header)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.unsafe_entry(&raw, "is a symlink without a target"))?;
                remove_any(&path).map_err(self.io_err(&path))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(self.io_err(&path))?;
                self.chown(&raw, &path, &header)?;
                set_mtime(&path, header_mtime(&header)).map_err(self.io_err(&path))?;
            }
            tar::EntryType::Link => {
                self.hard_link(entry, &raw, &rel, &path)?;
            }
            // Archive-wide metadata (a PAX global header) is not an entry of the layer.
            tar::EntryType::XGlobalHeader => {}
            other => {
                // Devices, fifos and unknown types are not created (see the module docs), but reported.
                let kind = match other {
                    tar::EntryType::Char => SkippedKind::CharDevice,
                    tar::EntryType::Block => SkippedKind::BlockDevice,
                    tar::EntryType::Fifo => SkippedKind::Fifo,
                    other => SkippedKind::Other(other.as_byte()),
                };
                self.done.skipped.push(Skipped {
                    path: String::from_utf8_lossy(&raw).into_owned(),
                    kind,
                });
            }
        }
        Ok(())
    }

    /// A whiteout entry (`.wh.<name>`, `.wh..wh..opq`) in the directory `rel` without its last component:
    /// overlayfs markers (a 0/0 character device, the opaque xattr) in its place.
    fn whiteout(&mut self, raw: &[u8], rel: &[OsString], name: &[u8]) -> Result<(), OciError> {
        let parent = self.ensure_dirs(raw, &rel[..rel.len() - 1])?;
        if name == OPAQUE_MARKER {
            rustix::fs::lsetxattr(&parent, opaque_xattr(), b"y", XattrFlags::empty())
                .map_err(|e| OciError::io(&parent)(e.into()))?;
        } else if name.starts_with(b".wh..wh.") {
            // Other aufs metadata (hard-link directories): meaningless for overlayfs.
        } else {
            let hidden = &name[WHITEOUT_PREFIX.len()..];
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.unsafe_entry(raw, "is a whiteout without a name"));
            }
            let path = parent.join(OsStr::from_bytes(hidden));
            remove_any(&path).map_err(self.io_err(&path))?;
            rustix::fs::mknodat(
                CWD,
                &path,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| OciError::io(&path)(e.into()))?;
        }
        Ok(())
    }

    /// A regular file at `path`: its contents, owner, mode, extended attributes and time, created without
    /// following a link there.
    fn regular_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        path: &Path,
        header: &tar::Header,
    ) -> Result<(), OciError> {
        remove_any(path).map_err(self.io_err(path))?;
        let xattrs = pax_xattrs(entry);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(self.io_err(path))?;
        io::copy(entry, &mut file).map_err(self.io_err(path))?;
        self.chown(raw, path, header)?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(header_mode(header)))
            .map_err(|e| OciError::io(path)(e.into()))?;
        for (name, value) in xattrs {
            // Filesystems without xattr support (or a non-root user for `security.*`) lose them.
            let _ = rustix::fs::fsetxattr(&file, name.as_os_str(), &value, XattrFlags::empty());
        }
        drop(file);
        set_mtime(path, header_mtime(header)).map_err(self.io_err(path))?;
        Ok(())
    }

    /// A hard link at `path` (the entry `rel`) to an earlier entry of the layer.
    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        rel: &[OsString],
        path: &Path,
    ) -> Result<(), OciError> {
        let target_raw = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .ok_or_else(|| self.unsafe_entry(raw, "is a hard link without a target"))?;
        let target_rel = normalize(&target_raw).map_err(|_| {
            self.unsafe_entry(
                raw,
                format!(
                    "is a hard link to `{}`, outside the layer",
                    String::from_utf8_lossy(&target_raw)
                ),
            )
        })?;
        let target = self.existing_link_target(raw, &target_raw, &target_rel)?;
        if target_rel == rel {
            return Ok(());
        }
        remove_any(path).map_err(self.io_err(path))?;
        fs::hard_link(&target, path).map_err(self.io_err(path))?;
        Ok(())
    }

    // Creates the missing directories of `rel` under the root; refuses to go through a symlink.
    fn ensure_dirs(&self, raw: &[u8], rel: &[OsString]) -> Result<PathBuf, OciError> {
        let mut path = self.dest.to_path_buf();
        for (i, part) in rel.iter().enumerate() {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    let shown = join(Path::new(""), &rel[..=i]);
                    return Err(self.unsafe_entry(
                        raw,
                        format!(
                            "is under `{}`, a symlink in the layer; following it could write outside the layer",
                            shown.display()
                        ),
                    ));
                }
                Ok(_) => {
                    // A file (or whiteout) where a directory is needed: the later entry wins, as in tar.
                    fs::remove_file(&path).map_err(self.io_err(&path))?;
                    fs::create_dir(&path).map_err(self.io_err(&path))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(self.io_err(&path))?;
                }
                Err(e) => return Err(OciError::io(&path)(e)),
            }
        }
        Ok(path)
    }

    // A hard link's target must already be in this layer, reached through real directories only.
    fn existing_link_target(&self, raw: &[u8], target_raw: &[u8], rel: &[OsString]) -> Result<PathBuf, OciError> {
        let shown = String::from_utf8_lossy(target_raw);
        let refuse = |why: &str| self.unsafe_entry(raw, format!("is a hard link to `{shown}`, {why}"));
        if rel.is_empty() {
            return Err(refuse("the layer root"));
        }
        let mut path = self.dest.to_path_buf();
        for part in &rel[..rel.len() - 1] {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => return Err(refuse("which is under a symlink")),
                _ => return Err(refuse("which is not in the layer")),
            }
        }
        path.push(&rel[rel.len() - 1]);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Err(refuse("which is a directory")),
            Ok(_) => Ok(path),
            Err(_) => Err(refuse("which is not in the layer")),
        }
    }

    fn apply_dir_meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: PathBuf) -> Result<(), OciError> {
        let header = entry.header().clone();
        let raw = entry.path_bytes().into_owned();
        self.chown(&raw, &path, &header)?;
        rustix::fs::chmodat(CWD, &path, Mode::from_raw_mode(header_mode(&header)), AtFlags::empty())
            .map_err(|e| OciError::io(&path)(e.into()))?;
        for (name, value) in pax_xattrs(entry) {
            let _ = rustix::fs::lsetxattr(&path, name.as_os_str(), &value, XattrFlags::empty());
        }
        self.dir_times.push((path, header_mtime(&header)));
        Ok(())
    }

    fn chown(&self, raw: &[u8], path: &Path, header: &tar::Header) -> Result<(), OciError> {
        // An empty or garbled field reads as 0, as GNU tar does; ids that do not fit are refused.
        let id = |v: io::Result<u64>, what: &str| -> Result<u32, OciError> {
            Some(v.unwrap_or(0))
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| self.unsafe_entry(raw, format!("has an invalid {what}")))
        };
        let uid = id(header.uid(), "uid")?;
        let gid = id(header.gid(), "gid")?;
        let res = rustix::fs::chownat(
            CWD,
            path,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        use crate::worker::userns::Privilege;
        match (res, self.privilege) {
            (Ok(()), _) => Ok(()),
            // Without root, files stay owned by the current user; in a user namespace that maps one ID, by root.
            (Err(_), Privilege::Unprivileged { .. } | Privilege::UserNamespace { ids: 1 }) => Ok(()),
            (Err(rustix::io::Errno::INVAL), Privilege::UserNamespace { ids }) => Err(self.unsafe_entry(
                raw,
                format!(
                    "belongs to {uid}:{gid}, an ID the engine's user namespace does not map (it maps 0 to {}): \
                     give the user a larger range of subordinate IDs in /etc/subuid and /etc/subgid",
                    ids - 1
                ),
            )),
            (Err(e), _) => Err(OciError::io(path)(e.into())),
        }
    }
}

fn header_mode(h: &tar::Header) -> u32 {
    h.mode().unwrap_or(0o644) & 0o7777
}

fn header_mtime(h: &tar::Header) -> i64 {
    h.mtime().ok().and_then(|t| i64::try_from(t).ok()).unwrap_or(0)
}

// `SCHILY.xattr.*` PAX records worth keeping: `user.*` and file capabilities.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(OsString, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.flatten()
        .filter_map(|ext| {
            let name = ext.key_bytes().strip_prefix(b"SCHILY.xattr.")?;
            kept_xattr(name).then(|| (OsStr::from_bytes(name).to_owned(), ext.value_bytes().to_vec()))
        })
        .collect()
}

fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

// Removes whatever is at `path` without following symlinks; absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------------------

/// The digests of a packed layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedDigests {
    /// `sha256:…` of the compressed blob (its name in registries).
    pub digest: String,
    /// Size of the compressed blob.
    pub size: u64,
    /// `sha256:…` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
}

/// Writes a deterministic gzip tar of the layer directory `layer_dir` to `out`: entries sorted by name,
/// owners, modes and modification times kept, no user or group names, whiteout devices as `.wh.NAME`, opaque
/// directories followed by a `.wh..wh..opq` entry, hard links within the directory as links.
pub fn pack(layer_dir: &Path, out: impl Write) -> Result<PackedDigests, OciError> {
    let compressed = HashingWriter::new(out);
    let gz = flate2::GzBuilder::new().write(compressed, flate2::Compression::default());
    let uncompressed = HashingWriter::new(gz);
    let mut builder = tar::Builder::new(uncompressed);
    let mut packer = Packer {
        root: layer_dir,
        links: HashMap::new(),
    };
    let root_meta = fs::symlink_metadata(layer_dir).map_err(OciError::io(layer_dir))?;
    if !root_meta.is_dir() {
        return Err(OciError::io(layer_dir)(io::Error::new(
            io::ErrorKind::NotADirectory,
            "a layer must be a directory",
        )));
    }
    if is_opaque(layer_dir) {
        packer.marker(&mut builder, Path::new(""), &root_meta)?;
    }
    packer.walk(&mut builder, Path::new(""))?;
    let uncompressed = builder.into_inner().map_err(OciError::io(layer_dir))?;
    let diff_id = uncompressed.digest();
    let gz = uncompressed.into_inner();
    let compressed = gz.finish().map_err(OciError::io(layer_dir))?;
    let mut compressed_flush = compressed;
    compressed_flush.flush().map_err(OciError::io(layer_dir))?;
    Ok(PackedDigests {
        digest: compressed_flush.digest(),
        size: compressed_flush.size(),
        diff_id,
    })
}

struct Packer<'a> {
    root: &'a Path,
    /// (device, inode) of files with several links → the first path written.
    links: HashMap<(u64, u64), PathBuf>,
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, opaque_xattr(), &mut buf[..]), Ok(1) if buf[0] == b'y')
}

fn base_header(m: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
    h.set_size(0);
    h
}

impl Packer<'_> {
    fn walk<W: Write>(&mut self, b: &mut tar::Builder<W>, rel_dir: &Path) -> Result<(), OciError> {
        let dir = self.root.join(rel_dir);
        let mut names: Vec<OsString> = fs::read_dir(&dir)
            .map_err(OciError::io(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(OciError::io(&dir))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let rel = rel_dir.join(&name);
            let path = self.root.join(&rel);
            let m = fs::symlink_metadata(&path).map_err(OciError::io(&path))?;
            let ft = m.file_type();
            let io_err = OciError::io(&path);
            if ft.is_dir() {
                let mut h = base_header(&m, tar::EntryType::Directory);
                self.pax_xattrs(b, &path)?;
                b.append_data(&mut h, &rel, io::empty()).map_err(io_err)?;
                if is_opaque(&path) {
                    self.marker(b, &rel, &m)?;
                }
                self.walk(b, &rel)?;
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                        let mut h = base_header(&m, tar::EntryType::Link);
                        b.append_link(&mut h, &rel, first).map_err(io_err)?;
                        continue;
                    }
                    self.links.insert((m.dev(), m.ino()), rel.clone());
                }
                let mut h = base_header(&m, tar::EntryType::Regular);
                h.set_size(m.len());
                self.pax_xattrs(b, &path)?;
                let file = fs::File::open(&path).map_err(OciError::io(&path))?;
                b.append_data(&mut h, &rel, ExactReader::new(file, m.len()))
                    .map_err(io_err)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(OciError::io(&path))?;
                let mut h = base_header(&m, tar::EntryType::Symlink);
                b.append_link(&mut h, &rel, &target).map_err(io_err)?;
            } else if ft.is_char_device() && m.rdev() == 0 {
                let mut whiteout = OsString::from(".wh.");
                whiteout.push(&name);
                let mut h = base_header(&m, tar::EntryType::Regular);
                b.append_data(&mut h, rel_dir.join(whiteout), io::empty())
                    .map_err(io_err)?;
            } else if ft.is_char_device() || ft.is_block_device() {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = base_header(&m, kind);
                let dev = m.rdev() as rustix::fs::Dev;
                h.set_device_major(rustix::fs::major(dev))
                    .map_err(OciError::io(&path))?;
                h.set_device_minor(rustix::fs::minor(dev))
                    .map_err(OciError::io(&path))?;
                b.append_data(&mut h, &rel, io::empty()).map_err(io_err)?;
            } else if ft.is_fifo() {
                let mut h = base_header(&m, tar::EntryType::Fifo);
                b.append_data(&mut h, &rel, io::empty()).map_err(io_err)?;
            }
            // Sockets cannot be archived; they are left out.
        }
        Ok(())
    }

    // The `.wh..wh..opq` entry that marks `rel_dir` opaque.
    fn marker<W: Write>(&self, b: &mut tar::Builder<W>, rel_dir: &Path, m: &fs::Metadata) -> Result<(), OciError> {
        let mut h = base_header(m, tar::EntryType::Regular);
        h.set_mode(0);
        b.append_data(&mut h, rel_dir.join(OsStr::from_bytes(OPAQUE_MARKER)), io::empty())
            .map_err(OciError::io(self.root.join(rel_dir)))
    }

    // A PAX header carrying the entry's kept xattrs (`user.*`, `security.capability`), when it has any.
    fn pax_xattrs<W: Write>(&self, b: &mut tar::Builder<W>, path: &Path) -> Result<(), OciError> {
        let mut names = [0u8; 4096];
        let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
            return Ok(());
        };
        let mut wanted: Vec<&[u8]> = names[..n].split(|&c| c == 0).filter(|n| kept_xattr(n)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort();
        let mut records = Vec::new();
        for name in wanted {
            let mut value = vec![0u8; 64 * 1024];
            let Ok(len) = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..]) else {
                continue;
            };
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            pax_record(&mut records, &key, &value[..len]);
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(records.len() as u64);
        b.append_data(&mut h, "PaxHeader", records.as_slice())
            .map_err(OciError::io(path))
    }
}

// A PAX record is `<len> <key>=<value>\n` where `<len>` counts the whole record, itself included.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Reads exactly `len` bytes from a file, failing if it shrank (a tar entry's size is fixed in its header).
struct ExactReader<R> {
    inner: io::Take<R>,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, len: u64) -> Self {
        ExactReader { inner: inner.take(len) }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.inner.limit() > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being packed",
            ));
        }
        Ok(n)
    }
}

/// Extracts the layer blob `blob` (already in `store`) into [`Store::layer_path`], once: when the directory
/// exists it is returned as is. Extraction happens under `tmp/` and the directory is renamed into place, so
/// concurrent callers and killed engines never see half a layer.
pub fn extract_cached(store: &Store, blob: &crate::model::ids::Digest) -> Result<PathBuf, OciError> {
    extract_reporting(store, blob).map(|(dest, _)| dest)
}

/// [`extract_cached`], also returning what this extraction left out (device nodes, fifos, …; see
/// [`Extracted::summary`]). A layer already extracted reports nothing: it was reported when it was unpacked.
pub fn extract_reporting(store: &Store, blob: &crate::model::ids::Digest) -> Result<(PathBuf, Extracted), OciError> {
    let dest = store.layer_path(blob);
    if dest.is_dir() {
        return Ok((dest, Default::default()));
    }
    let tmp = store.tmp_path("layer");
    let extracted = extract(&store.blob_path(blob), &tmp)?;
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok((dest, extracted)),
        // Another extraction of the same blob won the race (and reports): keep its directory.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok((dest, Default::default()))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(OciError::Io { path: dest, source: e })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Builds tars byte by byte, so entries can say things the `tar` crate's path checks would refuse.
    struct RawTar(tar::Builder<Vec<u8>>);

    impl RawTar {
        fn new() -> Self {
            RawTar(tar::Builder::new(Vec::new()))
        }

        fn entry(&mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8], mode: u32) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000);
            h.set_cksum();
            self.0.append(&h, data).expect("append");
            self
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(tar::EntryType::Regular, name, "", data, 0o644)
        }

        fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(tar::EntryType::Directory, name, "", b"", 0o755)
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(tar::EntryType::Symlink, name, target, b"", 0o777)
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(tar::EntryType::Link, name, target, b"", 0o644)
        }

        fn bytes(&mut self) -> Vec<u8> {
            let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
            b.into_inner().expect("finish tar")
        }
    }

    fn extract_bytes(tar: &[u8], dest: &Path) -> Result<Extracted, OciError> {
        extract_tar(tar, "test layer", dest)
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn escapes_are_refused_and_leave_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("outside");
        let base = tmp.path().join("a").join("b");
        fs::create_dir_all(&base).expect("base");
        let dest = base.join("dest");

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "dot-dot",
                RawTar::new().file("ok", b"x").file("../escape", b"x").bytes(),
                "climbs out",
            ),
            (
                "nested dot-dot",
                RawTar::new().file("a/../../escape", b"x").bytes(),
                "climbs out",
            ),
            (
                "dot-slash dot-dot",
                RawTar::new().file("./../../escape", b"x").bytes(),
                "climbs out",
            ),
            (
                "absolute symlink parent",
                RawTar::new()
                    .symlink("link", outside.to_str().expect("utf-8"))
                    .file("link/pwned", b"x")
                    .bytes(),
                "a symlink in the layer",
            ),
            (
                "relative symlink parent",
                RawTar::new().symlink("up", "../../../outside").dir("up/sub/").bytes(),
                "a symlink in the layer",
            ),
            (
                "symlink deeper in the path",
                RawTar::new()
                    .dir("d/")
                    .symlink("d/l", "/")
                    .file("d/l/etc/pwned", b"x")
                    .bytes(),
                "a symlink in the layer",
            ),
            (
                "hard link to /etc/passwd",
                RawTar::new().hardlink("pw", "/etc/passwd").bytes(),
                "not in the layer",
            ),
            (
                "hard link climbing out",
                RawTar::new().hardlink("pw", "../../../../etc/passwd").bytes(),
                "outside the layer",
            ),
            (
                "hard link through a symlink",
                RawTar::new()
                    .symlink("etc", "/etc")
                    .hardlink("pw", "etc/passwd")
                    .bytes(),
                "under a symlink",
            ),
            (
                "whiteout climbing out",
                RawTar::new().file("../.wh.x", b"").bytes(),
                "climbs out",
            ),
            (
                "whiteout under a symlink",
                RawTar::new()
                    .symlink("l", outside.to_str().expect("utf-8"))
                    .file("l/.wh.x", b"")
                    .bytes(),
                "a symlink in the layer",
            ),
        ];
        for (name, tar, reason) in cases {
            let err = extract_bytes(&tar, &dest).expect_err(name).to_string();
            assert!(err.contains(reason), "{name}: {err}");
            assert!(!dest.exists(), "{name}: the destination was left behind");
            assert_eq!(names_in(&base), Vec::<String>::new(), "{name}: wrote beside dest");
            assert_eq!(
                names_in(tmp.path().join("a").as_path()),
                ["b"],
                "{name}: wrote above dest"
            );
            assert_eq!(
                names_in(&outside),
                Vec::<String>::new(),
                "{name}: wrote through a symlink"
            );
        }
        let passwd = fs::metadata("/etc/passwd").expect("passwd");
        assert_eq!(passwd.nlink(), 1, "a hard link to /etc/passwd was created somewhere");
    }

    #[test]
    fn absolute_and_dotted_paths_stay_inside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("dest");
        let abs = format!("/dagger-rs-absolute-test-{}/file", std::process::id());
        let tar = RawTar::new()
            .file(&abs, b"abs")
            .file("./dot/./file", b"dot")
            .file("x/../back", b"back")
            .bytes();
        extract_bytes(&tar, &dest).expect("extract");
        assert!(!Path::new(&abs).exists());
        assert_eq!(fs::read(dest.join(&abs[1..])).expect("abs"), b"abs");
        assert_eq!(fs::read(dest.join("dot/file")).expect("dot"), b"dot");
        assert_eq!(fs::read(dest.join("back")).expect("back"), b"back");
    }

    #[test]
    fn device_nodes_and_fifos_are_skipped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("dest");
        let mut t = RawTar::new();
        t.file("keep", b"k");
        t.entry(tar::EntryType::Char, "dev/null", "", b"", 0o666);
        t.entry(tar::EntryType::Block, "dev/sda", "", b"", 0o660);
        t.entry(tar::EntryType::Fifo, "pipe", "", b"", 0o644);
        t.entry(tar::EntryType::Char, "dev/tty", "", b"", 0o666);
        t.entry(tar::EntryType::new(b'V'), "volume-label", "", b"", 0o644);
        let done = extract_bytes(&t.bytes(), &dest).expect("extract");
        let paths: Vec<&str> = done.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["dev/null", "dev/sda", "pipe", "dev/tty", "volume-label"]);
        assert_eq!(done.skipped[1].kind, SkippedKind::BlockDevice);
        assert_eq!(done.skipped[4].kind, SkippedKind::Other(b'V'));
        assert!(fs::symlink_metadata(dest.join("dev/null")).is_err());
        assert!(fs::symlink_metadata(dest.join("pipe")).is_err());
        assert!(dest.join("keep").is_file());
        assert_eq!(
            done.summary("sha256:abc").as_deref(),
            Some(
                "skipped 3 device nodes (2 character, 1 block), 1 fifo, 1 entry of unsupported tar type `V` in layer \
                 sha256:abc (dev/null, dev/sda, pipe, …): containers get device nodes and pipes from the runtime, \
                 never from an image layer"
            )
        );
        assert_eq!(Extracted::default().summary("sha256:abc"), None);
    }

    #[test]
    fn whiteouts_and_opaque_directories_become_overlay_markers() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: overlayfs markers (trusted.* attributes) need root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("dest");
        let tar = RawTar::new()
            .dir("etc/")
            .file("etc/.wh..wh..opq", b"")
            .file("etc/hosts", b"127.0.0.1 localhost\n")
            .file("usr/.wh.lib", b"")
            .file(".wh.gone", b"")
            .file("deep/er/.wh..wh..opq", b"")
            .bytes();
        extract_bytes(&tar, &dest).expect("extract");
        for whiteout in ["usr/lib", "gone"] {
            let m = fs::symlink_metadata(dest.join(whiteout)).expect(whiteout);
            assert!(m.file_type().is_char_device(), "{whiteout}");
            assert_eq!(m.rdev(), 0, "{whiteout}");
        }
        assert!(is_opaque(&dest.join("etc")));
        assert!(is_opaque(&dest.join("deep/er")));
        assert!(!is_opaque(&dest.join("usr")));
        assert!(!dest.join("etc/.wh..wh..opq").exists());
        assert_eq!(names_in(&dest.join("etc")), ["hosts"]);
    }

    #[test]
    fn metadata_symlinks_and_hard_links_are_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("dest");
        let mut t = RawTar::new();
        t.entry(tar::EntryType::Directory, "bin/", "", b"", 0o750);
        t.entry(tar::EntryType::Regular, "bin/tool", "", b"#!/bin/sh\n", 0o4755);
        t.hardlink("bin/tool2", "bin/tool");
        t.symlink("bin/sh", "/bin/busybox");
        t.file("bin/later", b"created after the directory entry");
        let mut tar = t.bytes();
        // An owner other than root: rewrite the `tool` entry's uid/gid in place (second header).
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes().copy_from_slice(&tar[512..1024]);
        h.set_uid(1234);
        h.set_gid(2345);
        h.set_cksum();
        tar[512..1024].copy_from_slice(h.as_bytes());

        extract_bytes(&tar, &dest).expect("extract");
        let tool = fs::metadata(dest.join("bin/tool")).expect("tool");
        assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(tool.mtime(), 1_000_000);
        if rustix::process::geteuid().is_root() {
            assert_eq!((tool.uid(), tool.gid()), (1234, 2345));
        }
        let tool2 = fs::metadata(dest.join("bin/tool2")).expect("tool2");
        assert_eq!(tool2.ino(), tool.ino());
        assert_eq!(
            fs::read_link(dest.join("bin/sh")).expect("link"),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::symlink_metadata(dest.join("bin/sh")).expect("sh").mtime(),
            1_000_000
        );
        let bin = fs::metadata(dest.join("bin")).expect("bin");
        assert_eq!(bin.permissions().mode() & 0o7777, 0o750);
        assert_eq!(bin.mtime(), 1_000_000, "directory times are set after their children");
    }

    fn sample_tar() -> Vec<u8> {
        let mut t = RawTar::new();
        t.dir("etc/");
        for i in 0..50 {
            t.file(
                &format!("etc/file{i}"),
                format!("content {i}\n").repeat(i * 40).as_bytes(),
            );
        }
        t.symlink("etc/link", "file1");
        t.bytes()
    }

    #[test]
    fn compression_is_detected_from_the_bytes() {
        let tar = sample_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = ruzstd::encoding::compress_to_vec(tar.as_slice(), ruzstd::encoding::CompressionLevel::Fastest);
        // Several frames with a skippable frame between them, as parallel compressors write.
        let (a, b) = tar.split_at(tar.len() / 3);
        let mut multi = ruzstd::encoding::compress_to_vec(a, ruzstd::encoding::CompressionLevel::Fastest);
        multi.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        multi.extend_from_slice(&3u32.to_le_bytes());
        multi.extend_from_slice(b"pad");
        multi.extend(ruzstd::encoding::compress_to_vec(
            b,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));

        let tmp = tempfile::tempdir().expect("tempdir");
        let expected_id = format!("sha256:{}", crate::model::ids::Digest::of(&tar));
        for (name, bytes, compression) in [
            ("plain", tar.clone(), Compression::None),
            ("gzip", gz, Compression::Gzip),
            ("zstd", zst, Compression::Zstd),
            ("zstd-frames", multi, Compression::Zstd),
        ] {
            let blob = tmp.path().join(format!("{name}.blob"));
            fs::write(&blob, &bytes).expect("write blob");
            let (detected, id) = diff_id(&blob).expect(name);
            assert_eq!((detected, id.as_str()), (compression, expected_id.as_str()), "{name}");
            let dest = tmp.path().join(name);
            extract(&blob, &dest).expect(name);
            assert_eq!(names_in(&dest.join("etc")).len(), 51, "{name}");
            assert_eq!(
                fs::read(dest.join("etc/file3")).expect("file3"),
                "content 3\n".repeat(120).as_bytes()
            );
        }
    }

    // Everything overlayfs and images care about, for comparing two layer directories.
    fn describe(root: &Path) -> Vec<String> {
        fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
            let mut names = names_in(&root.join(rel));
            names.sort();
            for name in names {
                let rel = rel.join(&name);
                let path = root.join(&rel);
                let m = fs::symlink_metadata(&path).expect("meta");
                let kind = if m.is_dir() {
                    format!("dir opaque={}", is_opaque(&path))
                } else if m.file_type().is_symlink() {
                    format!("symlink -> {}", fs::read_link(&path).expect("link").display())
                } else if m.file_type().is_char_device() {
                    format!("char {}", m.rdev())
                } else {
                    format!("file {:?} links={}", fs::read(&path).expect("read"), m.nlink())
                };
                let mut xattr = [0u8; 64];
                let user = rustix::fs::lgetxattr(&path, "user.note", &mut xattr[..])
                    .map(|n| String::from_utf8_lossy(&xattr[..n]).into_owned())
                    .unwrap_or_default();
                let mtime = if m.file_type().is_char_device() { 0 } else { m.mtime() };
                out.push(format!(
                    "{} {kind} mode={:o} owner={}:{} mtime={mtime} user.note={user}",
                    rel.display(),
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                ));
                if m.is_dir() {
                    walk(root, &rel, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, Path::new(""), &mut out);
        out
    }

    #[test]
    fn pack_then_extract_round_trips_and_is_deterministic() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: overlayfs markers (trusted.* attributes) need root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        let tar = RawTar::new()
            .dir("etc/")
            .file("etc/.wh..wh..opq", b"")
            .file("etc/hosts", b"hosts")
            .file("etc/.wh.shadow", b"")
            .dir("usr/bin/")
            .entry(tar::EntryType::Regular, "usr/bin/tool", "", b"tool", 0o755)
            .hardlink("usr/bin/tool-again", "usr/bin/tool")
            .symlink("usr/bin/sh", "tool")
            .bytes();
        extract_bytes(&tar, &src).expect("extract source");
        // Names longer than a tar header holds.
        let long = src.join("d".repeat(90)).join("e".repeat(120));
        fs::create_dir_all(long.parent().expect("parent")).expect("long dir");
        fs::write(&long, b"long").expect("long file");
        rustix::fs::lsetxattr(src.join("etc/hosts"), "user.note", b"kept", XattrFlags::empty()).expect("user xattr");

        let mut first = Vec::new();
        let digests = pack(&src, &mut first).expect("pack");
        let mut second = Vec::new();
        assert_eq!(pack(&src, &mut second).expect("pack again"), digests);
        assert_eq!(first, second, "packing is deterministic");
        assert_eq!(
            digests.digest,
            format!("sha256:{}", crate::model::ids::Digest::of(&first))
        );
        assert_eq!(digests.size, first.len() as u64);

        let blob = tmp.path().join("packed.tar.gz");
        fs::write(&blob, &first).expect("write");
        assert_eq!(
            diff_id(&blob).expect("diff id"),
            (Compression::Gzip, digests.diff_id.clone())
        );
        let back = tmp.path().join("back");
        extract(&blob, &back).expect("extract packed");
        let (a, b) = (describe(&src), describe(&back));
        assert_eq!(a, b);
        assert!(a.iter().any(|l| l.starts_with("etc dir opaque=true")), "{a:#?}");
        assert!(a.iter().any(|l| l.starts_with("etc/shadow char 0")), "{a:#?}");
        assert!(a.iter().any(|l| l.contains("user.note=kept")), "{a:#?}");
        assert!(
            a.iter()
                .any(|l| l.starts_with("usr/bin/tool-again file") && l.contains("links=2")),
            "{a:#?}"
        );
    }

    /// `user.overlay.*` attributes are overlayfs markers in rootless mode (an image could forge an opaque
    /// directory with one): dropped on extraction and never packed, while other `user.*` ones travel.
    #[test]
    fn overlay_markers_in_user_attributes_are_dropped_both_ways() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in [
            ("etc/", tar::EntryType::Directory),
            ("etc/conf", tar::EntryType::Regular),
        ] {
            let mut records = Vec::new();
            pax_record(&mut records, b"SCHILY.xattr.user.note", b"kept");
            pax_record(&mut records, b"SCHILY.xattr.user.overlay.opaque", b"y");
            let mut x = tar::Header::new_ustar();
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_mode(0o644);
            x.set_size(records.len() as u64);
            b.append_data(&mut x, "PaxHeader", records.as_slice()).expect("pax");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, name, &b""[..]).expect("entry");
        }
        let dest = tmp.path().join("x");
        extract_bytes(&b.into_inner().expect("tar"), &dest).expect("extract");
        let attr = |path: &Path, name: &str| {
            let mut buf = [0u8; 16];
            rustix::fs::lgetxattr(path, name, &mut buf[..])
                .ok()
                .map(|n| buf[..n].to_vec())
        };
        for path in [dest.join("etc"), dest.join("etc/conf")] {
            assert_eq!(attr(&path, "user.note"), Some(b"kept".to_vec()), "{}", path.display());
            assert_eq!(attr(&path, "user.overlay.opaque"), None, "{}", path.display());
        }
        // Packing leaves them out too (a rootless engine's own markers are not user data).
        rustix::fs::lsetxattr(
            dest.join("etc/conf"),
            "user.overlay.redirect",
            b"/x",
            XattrFlags::empty(),
        )
        .expect("set a marker");
        let mut packed = Vec::new();
        pack(&dest, &mut packed).expect("pack");
        let blob = tmp.path().join("packed.tar.gz");
        fs::write(&blob, &packed).expect("write");
        let back = tmp.path().join("back");
        extract(&blob, &back).expect("extract packed");
        assert_eq!(attr(&back.join("etc/conf"), "user.note"), Some(b"kept".to_vec()));
        assert_eq!(attr(&back.join("etc/conf"), "user.overlay.redirect"), None);
        assert!(kept_xattr(b"security.capability") && !kept_xattr(b"trusted.overlay.opaque"));
    }

    #[test]
    fn layers_extract_once_and_prune_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("open");
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        tar.append_data(&mut h, "dir/file", &b"hello"[..]).expect("append");
        let d = store.put_blob(&tar.into_inner().expect("tar")).expect("put");

        let layer = extract_cached(&store, &d).expect("extract");
        assert_eq!(layer, store.layer_path(&d));
        assert_eq!(std::fs::read(layer.join("dir/file")).expect("read"), b"hello");
        std::fs::write(layer.join("marker"), b"").expect("marker");
        assert_eq!(extract_cached(&store, &d).expect("again"), layer);
        assert!(layer.join("marker").exists(), "a cached layer is not extracted again");

        store.prune(0).expect("prune");
        assert!(!layer.exists());
        assert!(
            std::fs::read_dir(dir.path().join("layers"))
                .expect("layers")
                .next()
                .is_none()
        );
    }
}
