//! Image references, parsed and normalized the way the Docker CLI does.
//!
//! A reference is `[registry/]repository[:tag][@digest]`. The first path component is a registry when it
//! contains a `.` or a `:`, is `localhost`, or has an upper-case letter; otherwise the image is on Docker Hub
//! (`docker.io`) and single-component names get the `library/` prefix. Without a tag or digest the tag is
//! `latest`. So `alpine` is `docker.io/library/alpine:latest`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::OciError;

/// The registry name Docker Hub images are written with.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's distribution API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses a reference such as `alpine`, `localhost:5000/x/y:tag` or `host/repo:tag@sha256:…`.
    pub fn parse(input: &str) -> Result<Self, OciError> {
        let bad = |reason: String| OciError::BadReference {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace".into()));
        }

        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(digest).map_err(bad)?)),
            None => (input, None),
        };
        // The tag is after the last `:` that follows the last `/`; a `:` before a `/` is a registry port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                check_tag(tag).map_err(bad)?;
                (&name[..last_slash + i], Some(tag.to_owned()))
            }
            None => (name, None),
        };

        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_registry(first) => (first.to_owned(), rest.to_owned()),
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        check_registry(&registry).map_err(bad)?;
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        check_repository(&repository).map_err(bad)?;

        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry as written (`docker.io` for Docker Hub), with its port if any.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, such as `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when neither a tag nor a digest was written).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), if one was written.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn tag_or_digest(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The host (and port) that serves this registry's API: `registry-1.docker.io` for Docker Hub.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `::1`); such registries are
    /// contacted over plain HTTP, as Docker does.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    /// The same image pinned to `digest`, keeping the tag.
    pub fn with_digest(&self, digest: &str) -> Self {
        Reference {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// `registry/repository@digest`: the image by digest alone.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }

    /// What `publish` returns, as Dagger does: `registry/repository:tag@digest` when `input` (the address as
    /// given) names a tag, `registry/repository@digest` when it names none (`latest` was pushed).
    pub fn published(&self, input: &str, digest: &str) -> String {
        let name = input.split('@').next().unwrap_or(input);
        let tag_given = name.rsplit('/').next().is_some_and(|last| last.contains(':'));
        match (&self.tag, tag_given) {
            (Some(tag), true) => format!("{}/{}:{tag}@{digest}", self.registry, self.repository),
            _ => self.pinned(digest),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Whether a `host[:port]` (IPv6 in brackets) names this machine.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, port)| {
            // `::1` without brackets has colons but no port.
            if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') {
                h
            } else {
                registry
            }
        }),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

// The first component names a registry when Docker would treat it so; otherwise `a/b` is a Docker Hub repo.
fn looks_like_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase())
}

// Digests name blobs we fetch and verify; only sha256 is verifiable here, so other algorithms are refused.
fn parse_digest(d: &str) -> Result<String, String> {
    let Some((algo, hex)) = d.split_once(':') else {
        return Err(format!("the digest `{d}` is not of the form `sha256:<64 hex digits>`"));
    };
    if algo != "sha256" {
        return Err(format!(
            "the digest algorithm `{algo}` is not supported; use a `sha256:` digest"
        ));
    }
    if crate::model::ids::Digest::parse(hex).is_none() {
        return Err(format!(
            "the digest `{d}` is not `sha256:` followed by 64 lowercase hex digits"
        ));
    }
    Ok(d.to_owned())
}

// Tags: up to 128 characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-` (the distribution grammar).
fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the tag `{tag}` is invalid: use up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
        ))
    }
}

// Registry: a host name or IP (IPv6 in brackets) and an optional numeric port.
fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(format!("the registry `{registry}` has an unclosed `[`"));
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`[{ip}]` is not an IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(port) => ("x", Some(port)),
            None if after.is_empty() => ("x", None),
            None => return Err(format!("the registry `{registry}` has text after `]`")),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !host_ok {
        return Err(format!("the registry host `{host}` is not a valid host name"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("the registry port `{port}` is not a number from 0 to 65535"));
    }
    Ok(())
}

// Repository components: lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn check_repository(repo: &str) -> Result<(), String> {
    if repo.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    for part in repo.split('/') {
        if part.is_empty() {
            return Err(format!("the repository `{repo}` has an empty path component"));
        }
        if part.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("the repository `{repo}` must be lowercase"));
        }
        if !component_ok(part) {
            return Err(format!(
                "the repository component `{part}` is invalid: use lowercase letters and digits, separated by \
                 `.`, `_`, `__` or `-`"
            ));
        }
    }
    Ok(())
}

fn component_ok(part: &str) -> bool {
    let b = part.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.first().copied().is_some_and(alnum) || !b.last().copied().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or one or more `-`.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod published_tests {
    use super::*;

    #[test]
    fn publish_reports_the_tag_given_and_the_digest() {
        let d = "sha256:0123";
        let r = |s: &str| Reference::parse(s).expect("reference");
        assert_eq!(
            r("localhost:5000/app:v1").published("localhost:5000/app:v1", d),
            "localhost:5000/app:v1@sha256:0123"
        );
        assert_eq!(
            r("localhost:5000/app").published("localhost:5000/app", d),
            "localhost:5000/app@sha256:0123"
        );
        assert_eq!(
            r("app:latest").published("app:latest", d),
            "docker.io/library/app:latest@sha256:0123"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// input, display form, registry, repository, tag, digest
    type Case<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_normalize_like_docker() {
        let cases: &[Case] = &[
            (
                "alpine",
                "docker.io/library/alpine:latest",
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
            ),
            (
                "alpine:3.20",
                "docker.io/library/alpine:3.20",
                "docker.io",
                "library/alpine",
                Some("3.20"),
                None,
            ),
            (
                "user/app",
                "docker.io/user/app:latest",
                "docker.io",
                "user/app",
                Some("latest"),
                None,
            ),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
                "docker.io",
                "library/busybox",
                Some("1"),
                None,
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost",
                "app",
                Some("latest"),
                None,
            ),
            (
                "localhost:5000/x/y:tag",
                "localhost:5000/x/y:tag",
                "localhost:5000",
                "x/y",
                Some("tag"),
                None,
            ),
            (
                "ghcr.io/o/r/s:v1.0-rc_1",
                "ghcr.io/o/r/s:v1.0-rc_1",
                "ghcr.io",
                "o/r/s",
                Some("v1.0-rc_1"),
                None,
            ),
            (
                "[::1]:5000/app:1",
                "[::1]:5000/app:1",
                "[::1]:5000",
                "app",
                Some("1"),
                None,
            ),
        ];
        for (input, shown, registry, repository, tag, digest) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *shown, "{input}");
            assert_eq!(r.registry(), *registry, "{input}");
            assert_eq!(r.repository(), *repository, "{input}");
            assert_eq!(r.tag(), *tag, "{input}");
            assert_eq!(r.digest(), *digest, "{input}");
            assert_eq!(
                Reference::parse(shown).as_ref().ok(),
                Some(&r),
                "display form of {input} reparses"
            );
        }

        let pinned = Reference::parse(&format!("127.0.0.1:5000/busybox@{D}")).expect("digest reference");
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/busybox@{D}"));
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.tag_or_digest(), D);

        let both = Reference::parse(&format!("host.example/repo:tag@{D}")).expect("tag and digest");
        assert_eq!(both.tag(), Some("tag"));
        assert_eq!(both.digest(), Some(D));
        assert_eq!(both.tag_or_digest(), D);
        assert_eq!(both.pinned(D), format!("host.example/repo@{D}"));
    }

    #[test]
    fn api_hosts_and_loopback() {
        let hub = Reference::parse("alpine").expect("alpine");
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert!(!hub.is_loopback());
        for r in [
            "localhost:5000/a",
            "127.0.0.1:5000/a",
            "127.1.2.3/a",
            "[::1]:5000/a",
            "localhost/a",
        ] {
            let r = Reference::parse(r).expect(r);
            assert!(r.is_loopback(), "{r}");
            assert_eq!(r.api_host(), r.registry());
        }
        assert!(!Reference::parse("10.0.0.1:5000/a").expect("ip").is_loopback());
        assert!(is_loopback_host("::1"));
    }

    #[test]
    fn bad_references_say_why() {
        let cases = [
            ("", "empty"),
            ("Alpine", "lowercase"),
            ("alpine:", "tag"),
            ("alpine:-x", "tag"),
            ("alpine@sha256:abc", "64 lowercase hex"),
            ("alpine@md5:abc", "algorithm"),
            ("host:port/app", "port"),
            ("a//b", "empty path component"),
            ("docker.io/library/bad..name", "component"),
            ("with space", "whitespace"),
            ("[::1/app", "unclosed"),
        ];
        for (input, needle) in cases {
            match Reference::parse(input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => assert!(e.to_string().contains(needle), "{input:?}: {e}"),
            }
        }
    }
}
