//! The values operations produce and the solver keeps: a directory, a file, a secret, a cache volume, file
//! metadata, the host, a container, a service, or a plain record. Persistent ones are stored as JSON (tagged by `kind`)
//! in the cache directory's `results/`.

use serde::{Deserialize, Serialize};

use crate::model::tree::{FileEntry, Tree};
use crate::ops::error::OpError;
use crate::store::Store;

/// What an evaluated object holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub(crate) enum Evaluated {
    /// A directory snapshot and its name (`src/`, `/` for a root).
    Dir {
        /// The tree.
        tree: Tree,
        /// The name `Directory.name` reports.
        name: String,
    },
    /// A file and its name.
    File {
        /// The name `File.name` reports.
        name: String,
        /// The contents and metadata.
        entry: FileEntry,
    },
    /// A secret: its name and URI (the plaintext stays in session memory).
    Secret {
        /// The name.
        name: String,
        /// The URI (`env://…`, `file://…`), empty for `setSecret`.
        uri: String,
    },
    /// A cache volume, with the defaults `cacheVolume` gave for every mount of it that sets none of its own.
    Cache {
        /// Its key.
        key: String,
        /// The sharing mode (`SHARED`, `PRIVATE`, `LOCKED`).
        #[serde(default = "shared")]
        sharing: String,
        /// What a new volume starts with.
        #[serde(default)]
        source: Option<Tree>,
        /// The owner of a new volume's root (`user[:group]`, resolved in the container mounting it).
        #[serde(default)]
        owner: String,
    },
    /// File metadata.
    Stat {
        /// `REGULAR`, `DIRECTORY`, `SYMLINK`.
        file_type: String,
        /// The base name.
        name: String,
        /// Permission bits.
        permissions: u32,
        /// Size in bytes.
        size: u64,
    },
    /// The host.
    Host,
    /// A container.
    Container(Box<crate::ops::container::state::ContainerState>),
    /// A plain record (`EnvVariable`, `Label`, `Port`): its fields.
    Record(serde_json::Map<String, serde_json::Value>),
    /// A service: what runs, and under which hostname (running it is the session's, see
    /// [`crate::worker::service`]).
    Service(Box<crate::ops::service::def::ServiceDef>),
}

/// The sharing mode of a cache volume nobody gave one.
fn shared() -> String {
    "SHARED".into()
}

impl Evaluated {
    /// A cache volume with `key` and no defaults of its own.
    #[cfg(test)]
    pub(crate) fn cache(key: &str) -> Self {
        Evaluated::Cache {
            key: key.to_owned(),
            sharing: shared(),
            source: None,
            owner: String::new(),
        }
    }

    /// A directory's tree and name.
    pub(crate) fn as_dir(&self) -> Result<(&Tree, &str), OpError> {
        match self {
            Evaluated::Dir { tree, name } => Ok((tree, name)),
            _ => Err(OpError::new("internal error: expected a directory")),
        }
    }

    /// A file's name and entry.
    pub(crate) fn as_file(&self) -> Result<(&str, &FileEntry), OpError> {
        match self {
            Evaluated::File { name, entry } => Ok((name, entry)),
            _ => Err(OpError::new("internal error: expected a file")),
        }
    }
}

impl crate::solver::Value for Evaluated {
    /// Whether this result is worth keeping on disk across sessions.
    fn persistent(&self) -> bool {
        matches!(
            self,
            Evaluated::Dir { .. }
                | Evaluated::File { .. }
                | Evaluated::Stat { .. }
                | Evaluated::Container(_)
                | Evaluated::Record(_)
        )
    }

    /// Whether a result loaded from disk can still be used (the layers it names may have been pruned).
    fn intact(&self, store: &Store) -> bool {
        match self {
            Evaluated::Container(c) => c.intact(store),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ids::Digest;
    use crate::ops::container::state::ContainerState;
    use crate::solver::Value as _;

    use super::*;

    #[test]
    fn what_is_kept_on_disk_and_what_is_still_usable() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let session_only = [
            Evaluated::Host,
            Evaluated::cache("k"),
            Evaluated::Service(Box::new(crate::ops::service::def::ServiceDef {
                what: crate::ops::service::def::ServiceKind::Host { ports: Vec::new() },
                hostname: None,
            })),
            Evaluated::Secret {
                name: "s".into(),
                uri: String::new(),
            },
        ];
        assert!(
            session_only.iter().all(|v| !v.persistent()),
            "secrets, caches, services and the host stay in memory"
        );
        let container = |layers: Vec<String>| {
            Evaluated::Container(Box::new(ContainerState {
                layers,
                ..ContainerState::default()
            }))
        };
        assert!(container(vec![]).persistent());
        assert!(container(vec![]).intact(&store));
        let layer = Digest::of(b"layer").to_string();
        assert!(
            !container(vec![layer.clone()]).intact(&store),
            "a pruned layer is a cache miss"
        );
        std::fs::create_dir_all(store.root().join("layers").join(&layer)).expect("layer");
        assert!(container(vec![layer]).intact(&store));
    }

    #[test]
    fn values_are_stored_as_tagged_json() {
        let v = Evaluated::Stat {
            file_type: "REGULAR".into(),
            name: "f".into(),
            permissions: 0o644,
            size: 3,
        };
        let json = serde_json::to_value(&v).expect("json");
        assert_eq!(json["kind"], "Stat", "records on disk name their kind");
        let back: Evaluated = serde_json::from_value(json).expect("back");
        assert!(matches!(back, Evaluated::Stat { size: 3, .. }));
    }
}
