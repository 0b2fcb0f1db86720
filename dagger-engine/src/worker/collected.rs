//! What a collection of leftovers removed (a tally reported once at start-up), and the naming convention
//! that says which process owns a leftover: shared by [`crate::worker::cleanup`] and the host-wide
//! collections of [`crate::worker::network`] and [`crate::worker::runtime`].

/// What one collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Mounts under the cache directory (container filesystems, secrets' tmpfs).
    pub mounts: usize,
    /// Scratch folders under `tmp/`.
    pub scratch_folders: usize,
    /// Half-written files under `tmp/`.
    pub temporary_files: usize,
    /// Containers in the OCI runtime's state directory (their processes killed).
    pub containers: usize,
    /// Network namespaces.
    pub namespaces: usize,
    /// Host ends of veth pairs.
    pub veths: usize,
    /// Container address leases.
    pub leases: usize,
}

impl Collected {
    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        *self == Collected::default()
    }

    /// Adds the counts of `other`.
    pub(crate) fn add(&mut self, other: &Collected) {
        self.mounts += other.mounts;
        self.scratch_folders += other.scratch_folders;
        self.temporary_files += other.temporary_files;
        self.containers += other.containers;
        self.namespaces += other.namespaces;
        self.veths += other.veths;
        self.leases += other.leases;
    }
}

impl std::fmt::Display for Collected {
    /// `collected after an unclean stop: 2 mounts, 3 scratch folders, 1 container, 1 network namespace`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.mounts, "mount", "mounts"),
            (self.scratch_folders, "scratch folder", "scratch folders"),
            (self.temporary_files, "temporary file", "temporary files"),
            (self.containers, "container", "containers"),
            (self.namespaces, "network namespace", "network namespaces"),
            (self.veths, "veth", "veths"),
            (self.leases, "address lease", "address leases"),
        ]
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
        .collect();
        if parts.is_empty() {
            write!(f, "nothing left by an unclean stop")
        } else {
            write!(f, "collected after an unclean stop: {}", parts.join(", "))
        }
    }
}

/// The process ID an item is named after: the first group of at most 10 digits between `-` and `.`
/// separators (`exec-1234-5-ab`, `blob.1234.7`, `<digest>.1234.0`, `drs-1234-2-ff`).
pub fn owner_pid(name: &str) -> Option<u32> {
    name.split(['-', '.'])
        .find(|t| !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_reports_what_it_removed_in_words() {
        let mut c = Collected::default();
        assert!(c.is_empty());
        assert_eq!(c.to_string(), "nothing left by an unclean stop");
        c.add(&Collected {
            mounts: 2,
            containers: 1,
            ..Collected::default()
        });
        c.add(&Collected {
            namespaces: 1,
            ..Collected::default()
        });
        assert_eq!(
            c.to_string(),
            "collected after an unclean stop: 2 mounts, 1 container, 1 network namespace"
        );
    }
}
