//! `CacheVolume`: a named volume, identified by its key; its directory lives on the host (see
//! [`crate::worker::cache_volume`]) and is mounted by `withMountedCache`.

use serde_json::{Map, Value};

use crate::ops::args::s;
use crate::ops::value::Evaluated;

/// `cacheVolume(key)`.
pub(crate) fn compute(args: &Map<String, Value>) -> Evaluated {
    Evaluated::Cache {
        key: s(args, "key").to_owned(),
    }
}
