//! Directory snapshots as manifests: a sorted map from relative path to entry, with file contents stored as
//! blobs. Directory operations (`withNewFile`, `directory`, `diff`, `filter`, …) only rewrite manifests, so
//! they cost no file copies; `export` materializes a manifest on the host.
//!
//! # Paths and symlinks
//! A tree keeps one invariant: every proper ancestor of an entry is a directory entry (or the root), so no
//! entry ever sits "below" a symlink or a file. [`Tree::insert`] keeps it by replacing a non-directory
//! ancestor with a directory. Operations that take a user's path first [`Tree::resolve`] it the way a
//! container would see it: a symlink met on the way is followed, an absolute target is taken from the tree's
//! root, and `..` stops at the root. So a link to `/etc` makes `link/passwd` mean the tree's own
//! `etc/passwd`, never a path outside the tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::ids::Digest;

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Entry {
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
        /// Modification time (seconds since the epoch), when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime: Option<i64>,
    },
    /// A regular file.
    File(FileEntry),
    /// A symbolic link.
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// A regular file: contents by digest, and metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Permission bits.
    pub mode: u32,
    /// The contents' digest (a blob in the store).
    pub blob: Digest,
    /// The size in bytes.
    pub size: u64,
    /// Modification time (seconds since the epoch), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

/// A directory tree. Keys are normalized relative paths (`a`, `a/b.txt`); the root is implicit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The entries, sorted by path.
    pub entries: BTreeMap<String, Entry>,
    /// The permission bits of the root directory itself when they are not the default 0755 (a directory taken
    /// with `directory(path)`, read from a host or container directory of another mode, or given
    /// permissions): mounted or copied to a new path, the directory keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_mode: Option<u32>,
}

/// The mode of a directory nobody gave one.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// A path that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path climbs out of the directory with `..`.
    #[error("path `{0}` escapes its directory with `..`")]
    Escapes(String),
    /// Nothing exists at the path (worded as Dagger words it: the path, then the system's message).
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// A file (or link) is used as a directory on the way to the path.
    #[error("{0}: not a directory")]
    Through(String),
    /// A directory was needed, something else is there.
    #[error("path {0} is a file, not a directory")]
    NotADirectory(String),
    /// A file was needed, a directory is there.
    #[error("path {0} is a directory, not a file")]
    NotAFile(String),
    /// Resolving the path met more symlinks than [`MAX_LINKS`] (a loop, most likely).
    #[error("too many levels of symbolic links resolving `{0}`")]
    Loop(String),
}

impl PathError {
    /// The same error about the path as the user gave it (Dagger's messages name that path, not the one it
    /// resolved to).
    pub fn at(self, given: &str) -> PathError {
        let given = given.to_owned();
        match self {
            PathError::NotFound(_) => PathError::NotFound(given),
            PathError::Through(_) => PathError::Through(given),
            PathError::NotADirectory(_) => PathError::NotADirectory(given),
            PathError::NotAFile(_) => PathError::NotAFile(given),
            other => other,
        }
    }
}

/// The most symlinks one path resolution follows (as Linux does) before it fails with [`PathError::Loop`].
pub const MAX_LINKS: usize = 40;

/// What a path names, as [`resolve_path`] needs to know it.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    /// Nothing.
    Missing,
    /// A directory.
    Dir,
    /// A symbolic link, with its target.
    Link(String),
    /// Anything else (a file, a device).
    Other,
}

/// Resolves `path` inside a root the way a process whose root it is would: `lookup` says what the components
/// resolved so far name; a symlink met on the way is followed (the last component only with `follow_last`),
/// an absolute target starts again from the root, and `..` never climbs above the root. The result's
/// components have only directories (or nothing) above them. The one algorithm behind trees, layer stacks and
/// mounted root filesystems.
pub fn resolve_path(
    path: &str,
    follow_last: bool,
    mut lookup: impl FnMut(&[String]) -> Node,
) -> Result<Vec<String>, PathError> {
    let mut pending: Vec<String> = segments(path).rev().map(str::to_owned).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(c);
        let last = pending.is_empty();
        match lookup(&resolved) {
            Node::Link(target) if follow_last || !last => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(PathError::Loop(path.to_owned()));
                }
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(segments(&target).rev().map(str::to_owned));
            }
            Node::Other | Node::Link(_) if !last => {
                return Err(PathError::Through(resolved.join("/")));
            }
            _ => {}
        }
    }
    Ok(resolved)
}

/// The components of a path, without empty and `.` segments.
fn segments(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty() && *s != ".")
}

/// Normalizes a path relative to a tree's root: drops leading `/`, `.` segments and empty segments,
/// resolves `..` (an escape above the root is an error). The root is `""`.
pub fn normalize(path: &str) -> Result<String, PathError> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escapes(path.to_owned()));
                }
            }
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}

impl Tree {
    /// Resolves a normalized `path` through the tree's symlinks, as a process whose root is this tree would:
    /// every symlink on the way is followed (the last component only with `follow_last`), an absolute target
    /// restarts from the root, and `..` never climbs above the root. The result is a normalized path whose
    /// ancestors are all directories of the tree or missing; what it names may not exist.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, PathError> {
        let resolved = resolve_path(path, follow_last, |comps| match self.entries.get(&comps.join("/")) {
            None => Node::Missing,
            Some(Entry::Dir { .. }) => Node::Dir,
            Some(Entry::Symlink { target }) => Node::Link(target.clone()),
            Some(Entry::File(_)) => Node::Other,
        })?;
        Ok(resolved.join("/"))
    }

    /// Whether the tree keeps its invariant: every entry's ancestors are directory entries.
    pub fn is_well_formed(&self) -> bool {
        self.entries.keys().all(|k| {
            let mut cur = k.as_str();
            while let Some(p) = parent_of(cur) {
                if !matches!(self.entries.get(p), Some(Entry::Dir { .. })) {
                    return false;
                }
                cur = p;
            }
            true
        })
    }

    /// Puts `entry` at the user path `path` (normalized), resolving symlinks on the way (the last component
    /// only with `follow_last`), and returns where it landed. Missing parents are created; a file met as a
    /// parent is an error.
    pub fn put(&mut self, path: &str, entry: Entry, follow_last: bool) -> Result<String, PathError> {
        let at = self.resolve(path, follow_last)?;
        if at.is_empty() {
            if matches!(entry, Entry::Dir { .. }) {
                return Ok(at);
            }
            return Err(PathError::NotAFile("/".into()));
        }
        self.insert(&at, entry);
        Ok(at)
    }

    /// Creates the directory at the user path `path` and its missing parents (through symlinks), keeping an
    /// existing directory as it is.
    pub fn mkdir_all(&mut self, path: &str, mode: u32) -> Result<String, PathError> {
        let at = self.resolve(path, true)?;
        if !self.is_dir(&at) {
            self.insert(&at, Entry::Dir { mode, mtime: None });
        }
        Ok(at)
    }

    /// Removes what the user path `path` names (its parents resolved through symlinks, a final symlink
    /// removed itself); returns whether anything was removed.
    pub fn remove_path(&mut self, path: &str) -> Result<bool, PathError> {
        let at = self.resolve(path, false)?;
        if at.is_empty() && !path.is_empty() {
            // A path that resolves to the root (`link -> /`, then `link/..`): nothing to remove by that name.
            return Ok(false);
        }
        Ok(self.remove(&at))
    }

    /// The permission bits of the root directory.
    pub fn root_mode(&self) -> u32 {
        self.root_mode.unwrap_or(DEFAULT_DIR_MODE)
    }

    /// Sets the permission bits of the root directory (the default is kept as `None`, so a tree's digest
    /// does not depend on how its default mode was given).
    pub fn set_root_mode(&mut self, mode: u32) {
        let mode = mode & 0o7777;
        self.root_mode = (mode != DEFAULT_DIR_MODE).then_some(mode);
    }

    /// Whether `path` (normalized) is the root or an existing directory.
    pub fn is_dir(&self, path: &str) -> bool {
        path.is_empty() || matches!(self.entries.get(path), Some(Entry::Dir { .. }))
    }

    /// Makes every ancestor of `path` a directory: missing ones are created (mode 0755), and one that is a
    /// file or a symlink is replaced by an empty directory (so nothing ever sits below a link).
    fn ensure_parents(&mut self, path: &str) {
        let mut cur = path;
        let mut missing = Vec::new();
        while let Some(p) = parent_of(cur) {
            match self.entries.get(p) {
                Some(Entry::Dir { .. }) => {}
                Some(_) => {
                    self.entries.remove(p);
                    missing.push(p.to_owned());
                }
                None => missing.push(p.to_owned()),
            }
            cur = p;
        }
        for p in missing {
            self.entries.insert(
                p,
                Entry::Dir {
                    mode: 0o755,
                    mtime: None,
                },
            );
        }
    }

    /// Inserts an entry at a normalized path taken literally (no symlink is followed), replacing whatever was
    /// there (and below it); an ancestor that is not a directory becomes one. User paths go through
    /// [`Tree::put`].
    pub fn insert(&mut self, path: &str, entry: Entry) {
        self.remove(path);
        self.ensure_parents(path);
        self.entries.insert(path.to_owned(), entry);
    }

    /// Removes `path` and everything below it; returns whether anything was removed.
    pub fn remove(&mut self, path: &str) -> bool {
        if path.is_empty() {
            let any = !self.entries.is_empty();
            self.entries.clear();
            return any;
        }
        let prefix = format!("{path}/");
        let before = self.entries.len();
        self.entries.retain(|k, _| k != path && !k.starts_with(&prefix));
        before != self.entries.len()
    }

    /// The subtree at a normalized directory path, re-rooted.
    pub fn subtree(&self, path: &str) -> Result<Tree, PathError> {
        if path.is_empty() {
            return Ok(self.clone());
        }
        let mode = match self.entries.get(path) {
            Some(Entry::Dir { mode, .. }) => *mode,
            Some(_) => return Err(PathError::NotADirectory(path.to_owned())),
            None => return Err(PathError::NotFound(path.to_owned())),
        };
        let prefix = format!("{path}/");
        let mut sub = Tree {
            entries: self
                .entries
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|rest| (rest.to_owned(), v.clone())))
                .collect(),
            root_mode: None,
        };
        sub.set_root_mode(mode);
        Ok(sub)
    }

    /// Copies `other` into this tree under the user directory path `path` (resolved through symlinks),
    /// merging with what is there. An entry of `other` replaces an entry of another kind with its whole
    /// subtree; an entry whose parent in `other` is not a directory is left out.
    pub fn merge(&mut self, path: &str, other: &Tree) -> Result<String, PathError> {
        let base = self.resolve(path, true)?;
        if !base.is_empty() && !self.is_dir(&base) {
            // A directory made for the copy takes the copied directory's own mode; an existing one keeps its.
            self.insert(
                &base,
                Entry::Dir {
                    mode: other.root_mode(),
                    mtime: None,
                },
            );
        }
        for (k, v) in &other.entries {
            // Sorted keys put a parent before its children, so the parent is already in place here.
            let parent_ok = match parent_of(k) {
                None => true,
                Some(p) => self.is_dir(&join(&base, p)),
            };
            if !parent_ok {
                continue;
            }
            let target = join(&base, k);
            match (self.entries.get(&target), v) {
                // Merging directories keeps what is below the existing one.
                (Some(Entry::Dir { .. }), Entry::Dir { .. }) => {
                    self.entries.insert(target, v.clone());
                }
                _ => self.insert(&target, v.clone()),
            }
        }
        Ok(base)
    }

    /// The file at a normalized path.
    pub fn file(&self, path: &str) -> Result<&FileEntry, PathError> {
        if path.is_empty() {
            return Err(PathError::NotAFile("/".into()));
        }
        match self.entries.get(path) {
            Some(Entry::File(f)) => Ok(f),
            Some(_) => Err(PathError::NotAFile(path.to_owned())),
            None => Err(PathError::NotFound(path.to_owned())),
        }
    }

    /// The names directly inside a normalized directory path, sorted, directories with a trailing `/`.
    pub fn list(&self, path: &str) -> Result<Vec<String>, PathError> {
        if !self.is_dir(path) {
            return Err(if self.entries.contains_key(path) {
                PathError::NotADirectory(path.to_owned())
            } else {
                PathError::NotFound(path.to_owned())
            });
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut out: Vec<String> = self
            .entries
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&prefix)?;
                (!rest.contains('/')).then(|| match v {
                    Entry::Dir { .. } => format!("{rest}/"),
                    _ => rest.to_owned(),
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Paths matching a glob pattern (`*`, `?`, `[…]`, and `**` for any number of directories); directories
    /// match too, and end with `/` (as `entries` lists them). Sorted.
    pub fn glob(&self, pattern: &str) -> Vec<String> {
        let pat: Vec<&str> = pattern
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        self.entries
            .iter()
            .filter(|(k, _)| {
                let segs: Vec<&str> = k.split('/').collect();
                match_segments(&pat, &segs)
            })
            .map(|(k, e)| match e {
                Entry::Dir { .. } => format!("{k}/"),
                _ => k.clone(),
            })
            .collect()
    }

    /// The entries below the directory at the normalized path `base` whose path relative to it matches
    /// `pattern` segment for segment (see [`split_wildcards`]), sorted. A match is not looked into: what is
    /// below it has more segments than the pattern.
    pub fn wildcard_matches(&self, base: &str, pattern: &[String]) -> Vec<String> {
        let prefix = if base.is_empty() {
            String::new()
        } else {
            format!("{base}/")
        };
        self.entries
            .keys()
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .is_some_and(|rel| matches_each(pattern, &rel.split('/').collect::<Vec<_>>()))
            })
            .cloned()
            .collect()
    }

    /// Gives every file and directory, the root included, the permission bits `mode` (symlinks keep theirs).
    pub fn set_permissions(&mut self, mode: u32) {
        self.set_root_mode(mode);
        for e in self.entries.values_mut() {
            match e {
                Entry::Dir { mode: m, .. } => *m = mode,
                Entry::File(f) => f.mode = mode,
                Entry::Symlink { .. } => {}
            }
        }
    }

    /// The tree without the entries `dropped` names (given each path and whether it is a directory), nor
    /// anything below a dropped directory.
    pub fn without(&self, mut dropped: impl FnMut(&str, bool) -> bool) -> Tree {
        let mut gone: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut out = Tree {
            root_mode: self.root_mode,
            ..Tree::default()
        };
        for (k, v) in &self.entries {
            let mut parent = parent_of(k);
            let mut below_gone = false;
            while let Some(p) = parent {
                if gone.contains(p) {
                    below_gone = true;
                    break;
                }
                parent = parent_of(p);
            }
            if below_gone || dropped(k, matches!(v, Entry::Dir { .. })) {
                gone.insert(k);
                continue;
            }
            out.entries.insert(k.clone(), v.clone());
        }
        out
    }

    /// Keeps the entries that pass `include` (if any) and are not `exclude`d; exclude wins. Directories
    /// holding kept entries are kept.
    pub fn filter(&self, include: &[String], exclude: &[String]) -> Tree {
        let matches_any = matches_patterns;
        let mut out = Tree {
            root_mode: self.root_mode,
            ..Tree::default()
        };
        for (k, v) in &self.entries {
            if matches_any(k, exclude) {
                continue;
            }
            if !include.is_empty() && !matches_any(k, include) {
                continue;
            }
            out.entries.insert(k.clone(), v.clone());
        }
        // Parents of kept entries stay, with their own metadata.
        out.add_parents_from(self);
        out
    }

    /// Adds the parent directories of every entry, as `source` has them (keeping the tree well formed).
    fn add_parents_from(&mut self, source: &Tree) {
        let keys: Vec<String> = self.entries.keys().cloned().collect();
        for k in keys {
            let mut cur = k.as_str();
            while let Some(p) = parent_of(cur) {
                if let Some(e) = source.entries.get(p) {
                    self.entries.entry(p.to_owned()).or_insert_with(|| e.clone());
                }
                cur = p;
            }
        }
    }

    /// What `other` adds or changes relative to `self` (deletions do not appear).
    pub fn diff(&self, other: &Tree) -> Tree {
        let mut out = Tree {
            root_mode: other.root_mode,
            ..Tree::default()
        };
        for (k, v) in &other.entries {
            if self.entries.get(k) != Some(v) {
                out.entries.insert(k.clone(), v.clone());
            }
        }
        out.add_parents_from(other);
        out
    }

    /// Sets every entry's modification time.
    pub fn with_timestamps(&self, t: i64) -> Tree {
        let mut out = self.clone();
        for e in out.entries.values_mut() {
            match e {
                Entry::Dir { mtime, .. } => *mtime = Some(t),
                Entry::File(f) => f.mtime = Some(t),
                Entry::Symlink { .. } => {}
            }
        }
        out
    }

    /// A digest of the whole tree: paths, kinds, modes, contents, the root's mode. Modification times are not
    /// part of it (as in Dagger, whose content digests leave them out): a file touched on the host, or a tree
    /// given new times, has the same digest.
    pub fn digest(&self) -> Digest {
        let mut plain = self.clone();
        for e in plain.entries.values_mut() {
            match e {
                Entry::Dir { mtime, .. } => *mtime = None,
                Entry::File(f) => f.mtime = None,
                Entry::Symlink { .. } => {}
            }
        }
        Digest::of(&serde_json::to_vec(&plain).unwrap_or_default())
    }
}

/// Whether the relative path `path` matches one of the include/exclude `patterns` (`*`, `?`, `[…]` within a
/// segment, `**` across segments); a pattern matching a directory covers everything below it.
pub fn matches_patterns(path: &str, patterns: &[String]) -> bool {
    let segs: Vec<&str> = path.split('/').collect();
    patterns.iter().any(|p| {
        let pat: Vec<&str> = p
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        (1..=segs.len()).any(|n| match_segments(&pat, &segs[..n]))
    })
}

/// Splits a removal path (normalized, `/`-separated) that holds a `*` at its first component holding a
/// wildcard (`*`, `?` or `[`): the literal directory before it (the path's leading `/` kept) and the pattern
/// from there on, one element per segment. `None` when there is no `*`: the path names itself. As in Dagger's
/// `withoutFile`, each pattern segment matches one segment (`*` never crosses a `/`, `**` is `*`).
pub fn split_wildcards(path: &str) -> Option<(String, Vec<String>)> {
    if !path.contains('*') {
        return None;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let first = segs.iter().position(|s| s.contains(['*', '?', '[']))?;
    let lead = if path.starts_with('/') { "/" } else { "" };
    Some((
        format!("{lead}{}", segs[..first].join("/")),
        segs[first..].iter().map(|s| (*s).to_owned()).collect(),
    ))
}

/// Whether path segments match pattern segments one for one (`*`, `?`, `[…]` within a segment).
pub fn matches_each(pattern: &[String], segs: &[&str]) -> bool {
    pattern.len() == segs.len()
        && pattern
            .iter()
            .zip(segs)
            .all(|(p, s)| match_one(p.as_bytes(), s.as_bytes()))
}

/// Matches path segments against pattern segments; `**` matches zero or more segments. Time is linear in
/// the product of the lengths (no backtracking), whatever the pattern.
fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    // `next[j]`: whether `pat[i + 1..]` matches `segs[j..]`; built from the end of the pattern.
    let mut next = vec![false; segs.len() + 1];
    next[segs.len()] = true;
    for p in pat.iter().rev() {
        let mut cur = vec![false; segs.len() + 1];
        for j in (0..=segs.len()).rev() {
            cur[j] = if *p == "**" {
                next[j] || (j < segs.len() && cur[j + 1])
            } else {
                j < segs.len() && next[j + 1] && match_one(p.as_bytes(), segs[j].as_bytes())
            };
        }
        next = cur;
    }
    next[0]
}

/// One element of a segment pattern.
enum Token<'a> {
    /// `*`: any run of bytes.
    Star,
    /// `?`: one byte.
    Any,
    /// `[…]`, `[!…]`, `[^…]`: one byte in (or, negated, not in) the class.
    Class { negate: bool, class: &'a [u8] },
    /// A byte as it is (an unclosed `[` included).
    Byte(u8),
}

impl Token<'_> {
    fn matches(&self, c: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(b) => *b == c,
            Token::Class { negate, class } => {
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != *negate
            }
        }
    }
}

fn tokens(p: &[u8]) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => out.push(Token::Star),
            b'?' => out.push(Token::Any),
            b'[' => {
                if let Some(end) = p[i + 1..].iter().position(|&c| c == b']') {
                    let inner = &p[i + 1..i + 1 + end];
                    out.push(match inner.split_first() {
                        Some((b'!' | b'^', class)) => Token::Class { negate: true, class },
                        _ => Token::Class {
                            negate: false,
                            class: inner,
                        },
                    });
                    i += end + 2;
                    continue;
                }
                out.push(Token::Byte(b'['));
            }
            c => out.push(Token::Byte(c)),
        }
        i += 1;
    }
    out
}

/// Matches one segment against a pattern with `*`, `?` and `[…]` classes.
pub fn match_one(p: &[u8], s: &[u8]) -> bool {
    // The same dynamic programme as `match_segments`, over bytes: no backtracking.
    let mut next = vec![false; s.len() + 1];
    next[s.len()] = true;
    for t in tokens(p).iter().rev() {
        let mut cur = vec![false; s.len() + 1];
        for j in (0..=s.len()).rev() {
            cur[j] = match t {
                Token::Star => next[j] || (j < s.len() && cur[j + 1]),
                t => j < s.len() && next[j + 1] && t.matches(s[j]),
            };
        }
        next = cur;
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Entry {
        Entry::File(FileEntry {
            mode: 0o644,
            blob: Digest::of(b""),
            size: 0,
            mtime: None,
        })
    }

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(normalize("/a/./b//c/").as_deref(), Ok("a/b/c"));
        assert_eq!(normalize("a/../b").as_deref(), Ok("b"));
        assert!(matches!(normalize("../x"), Err(PathError::Escapes(_))));
        assert!(matches!(normalize("a/../../x"), Err(PathError::Escapes(_))));
    }

    #[test]
    fn list_glob_filter_diff() {
        let mut t = Tree::default();
        t.insert("src/main.rs", file());
        t.insert("src/lib/mod.rs", file());
        t.insert("README.md", file());
        assert_eq!(t.list("").expect("root"), vec!["README.md", "src/"]);
        assert_eq!(t.list("src").expect("src"), vec!["lib/", "main.rs"]);
        assert_eq!(t.glob("**/*.rs"), vec!["src/lib/mod.rs", "src/main.rs"]);
        // A trailing `**` matches zero or more segments, so the directory itself is included; directories
        // end with `/`.
        assert_eq!(
            t.glob("src/**"),
            vec!["src/", "src/lib/", "src/lib/mod.rs", "src/main.rs"]
        );
        assert_eq!(t.glob("*"), vec!["README.md", "src/"]);
        let f = t.filter(&["src".into()], &["**/mod.rs".into()]);
        assert_eq!(
            f.entries.keys().cloned().collect::<Vec<_>>(),
            // The directory stays, as an empty one, when only its content is excluded.
            vec!["src", "src/lib", "src/main.rs"]
        );
        let mut t2 = t.clone();
        t2.insert("new.txt", file());
        t2.remove("README.md");
        assert_eq!(t.diff(&t2).entries.keys().cloned().collect::<Vec<_>>(), vec!["new.txt"]);
    }

    #[test]
    fn removal_patterns_split_at_their_first_wildcard_and_match_segment_for_segment() {
        assert_eq!(split_wildcards("a/b.txt"), None);
        assert_eq!(split_wildcards("a/b?.txt"), None, "only a `*` makes a pattern");
        assert_eq!(
            split_wildcards("a/b/*.txt"),
            Some(("a/b".to_owned(), vec!["*.txt".to_owned()]))
        );
        assert_eq!(
            split_wildcards("/w/x?/*"),
            Some(("/w".to_owned(), vec!["x?".to_owned(), "*".to_owned()]))
        );
        assert_eq!(split_wildcards("*oo"), Some((String::new(), vec!["*oo".to_owned()])));
        let mut t = Tree::default();
        for p in ["c/file-a1.txt", "c/file-b1.txt", "c/sub/file-a1.txt", "d/x.txt"] {
            t.insert(p, file());
        }
        let pat = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(t.wildcard_matches("c", &pat("*a1*")), vec!["c/file-a1.txt"]);
        assert_eq!(t.wildcard_matches("", &pat("*")), vec!["c", "d"]);
        assert_eq!(
            t.wildcard_matches("", &pat("*/*.txt")),
            vec!["c/file-a1.txt", "c/file-b1.txt", "d/x.txt"],
            "one segment per pattern segment"
        );
        assert_eq!(t.wildcard_matches("", &pat("**/x.txt")), vec!["d/x.txt"], "`**` is `*`");
        assert!(t.wildcard_matches("nope", &pat("*")).is_empty());
    }

    #[test]
    fn character_classes() {
        assert!(match_one(b"[a-c]x", b"bx"));
        assert!(!match_one(b"[!a-c]x", b"bx"));
        assert!(match_one(b"*.t?t", b"notes.txt"));
    }

    #[test]
    fn without_drops_entries_and_everything_below_dropped_directories() {
        let mut t = Tree::default();
        for d in ["a", "a/b", "a-b"] {
            t.mkdir_all(d, 0o755).expect("mkdir");
        }
        for f in ["a/b/c", "a-b/c", "x"] {
            let entry = Entry::File(FileEntry {
                mode: 0o644,
                blob: Digest::of(b""),
                size: 0,
                mtime: None,
            });
            t.put(f, entry, true).expect("put");
        }
        let mut asked = Vec::new();
        let kept = t.without(|path, is_dir| {
            asked.push((path.to_owned(), is_dir));
            path == "a"
        });
        assert_eq!(kept.entries.keys().collect::<Vec<_>>(), ["a-b", "a-b/c", "x"]);
        assert!(
            !asked.iter().any(|(p, _)| p.starts_with("a/")),
            "nothing below a dropped directory is asked about"
        );
        assert!(asked.contains(&("a-b".to_owned(), true)) && asked.contains(&("x".to_owned(), false)));
    }

    /// The backtracking matchers this engine used before, as the reference for the linear ones.
    /// Matches path segments against pattern segments; `**` matches zero or more segments.
    fn reference_segments(pat: &[&str], segs: &[&str]) -> bool {
        match pat.split_first() {
            None => segs.is_empty(),
            Some((&"**", rest)) => (0..=segs.len()).any(|i| reference_segments(rest, &segs[i..])),
            Some((p, rest)) => match segs.split_first() {
                Some((s, srest)) => reference_one(p.as_bytes(), s.as_bytes()) && reference_segments(rest, srest),
                None => false,
            },
        }
    }

    /// Matches one segment against a pattern with `*`, `?` and `[…]` classes.
    fn reference_one(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| reference_one(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && reference_one(rest, &s[1..]),
            Some((b'[', rest)) => {
                let Some(end) = rest.iter().position(|&c| c == b']') else {
                    return s.first() == Some(&b'[') && reference_one(rest, &s[1..]);
                };
                let Some((&c, srest)) = s.split_first() else {
                    return false;
                };
                let (negate, class) = match rest[..end].split_first() {
                    Some((b'!' | b'^', cls)) => (true, cls),
                    _ => (false, &rest[..end]),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && reference_one(&rest[end + 1..], srest)
            }
            Some((&pc, rest)) => s.first() == Some(&pc) && reference_one(rest, &s[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn segment_matching_agrees_with_the_backtracking_reference(
            p in "[ab*?\\[\\]!^-]{0,8}",
            s in "[ab\\[\\]-]{0,8}",
        ) {
            proptest::prop_assert_eq!(match_one(p.as_bytes(), s.as_bytes()), reference_one(p.as_bytes(), s.as_bytes()));
        }

        #[test]
        fn path_matching_agrees_with_the_backtracking_reference(
            p in proptest::collection::vec("\\*\\*|a\\*|b|\\*", 0..5),
            s in proptest::collection::vec("a|b|ab|ba", 0..5),
        ) {
            let pat: Vec<&str> = p.iter().map(String::as_str).collect();
            let segs: Vec<&str> = s.iter().map(String::as_str).collect();
            proptest::prop_assert_eq!(match_segments(&pat, &segs), reference_segments(&pat, &segs));
        }
    }

    #[test]
    fn patterns_that_made_backtracking_explode_match_at_once() {
        let started = std::time::Instant::now();
        let pattern = format!("{}b", "a*".repeat(40));
        assert!(!match_one(pattern.as_bytes(), "a".repeat(200).as_bytes()));
        let deep: Vec<&str> = std::iter::repeat_n("x", 200).collect();
        let stars: Vec<&str> = std::iter::repeat_n("**", 40).chain(["y"]).collect();
        assert!(!match_segments(&stars, &deep));
        // Generous: the backtracking matchers took longer than the age of the universe here.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
