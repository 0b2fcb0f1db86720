//! `File`: a file entry (contents in the store as a blob, mode, size, time) and its name; renamed,
//! retimed, read and exported.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::model::error::FieldError;
use crate::model::ids::Digest;
use crate::model::tree::FileEntry;
use crate::ops::args::{b, i, s, unsupported};
use crate::ops::engine::Engine;
use crate::ops::host::{host_path, write_file};
use crate::ops::value::Evaluated;

/// Computes a field of the file `p`.
pub(crate) fn compute(p: &Evaluated, field: &str, args: &Map<String, Value>) -> Result<Evaluated, FieldError> {
    Ok({
        let (name, entry) = file_of(p)?;
        match field {
            "withName" => Evaluated::File {
                name: s(args, "name").to_owned(),
                entry: entry.clone(),
            },
            "withTimestamps" => Evaluated::File {
                name: name.to_owned(),
                entry: FileEntry {
                    mtime: i(args, "timestamp"),
                    ..entry.clone()
                },
            },
            "stat" => Evaluated::Stat {
                file_type: "REGULAR".into(),
                name: name.to_owned(),
                permissions: entry.mode,
                size: entry.size,
            },
            other => return Err(unsupported("File", other)),
        }
    })
}

pub(crate) fn file_of(v: &Evaluated) -> Result<(&str, &FileEntry), FieldError> {
    match v {
        Evaluated::File { name, entry } => Ok((name, entry)),
        _ => Err(FieldError::new("internal error: expected a file")),
    }
}

/// The files of a list argument of file IDs (`sources`), each with its name, and `permissions` applied when
/// given.
pub(crate) async fn source_files(
    engine: &Arc<Engine>,
    args: &Map<String, Value>,
) -> Result<Vec<(String, FileEntry)>, FieldError> {
    let mut files = Vec::new();
    for v in args
        .get("sources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(d) = v.get("$id").and_then(Value::as_str).and_then(Digest::parse) else {
            continue;
        };
        let src = engine.eval(&d).await?;
        let Evaluated::File { name, entry } = &*src else {
            return Err(FieldError::new("`sources` holds something that is not a file"));
        };
        let mut entry = entry.clone();
        if let Some(p) = i(args, "permissions") {
            entry.mode = p as u32;
        }
        files.push((name.clone(), entry));
    }
    Ok(files)
}

/// Computes the leaf `name` of the file `v`.
pub(crate) fn leaf(
    engine: &Arc<Engine>,
    name: &str,
    args: &Map<String, Value>,
    v: &Evaluated,
) -> Result<Value, FieldError> {
    let leaf = |v: Value| Ok(v);
    match (name, v) {
        ("contents", Evaluated::File { entry, .. }) => {
            let bytes = engine.store.get_blob(&entry.blob)?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let offset = i(args, "offsetLines").unwrap_or(0).max(0) as usize;
            let text = match (offset, i(args, "limitLines")) {
                (0, None) => text,
                (o, limit) => {
                    let lines = text.split_inclusive('\n').skip(o);
                    match limit {
                        Some(l) => lines.take(l.max(0) as usize).collect(),
                        None => lines.collect(),
                    }
                }
            };
            leaf(json!(text))
        }
        ("name", Evaluated::File { name, .. }) => leaf(json!(name)),
        ("size", Evaluated::File { entry, .. }) => leaf(json!(entry.size)),
        ("digest", Evaluated::File { entry, name }) => {
            if b(args, "excludeMetadata") {
                leaf(json!(format!("sha256:{}", entry.blob)))
            } else {
                let meta = serde_json::to_vec(&(name, entry)).unwrap_or_default();
                leaf(json!(format!("sha256:{}", Digest::of(&meta))))
            }
        }
        ("export", Evaluated::File { entry, .. }) => {
            let mut target = host_path(engine, s(args, "path"));
            if target.is_dir() {
                if !b(args, "allowParentDirPath") {
                    return Err(FieldError::new(format!(
                        "{} is a directory; pass a file path, or set `allowParentDirPath` to write into it",
                        target.display()
                    )));
                }
                if let Ok((name, _)) = file_of(v) {
                    target = target.join(name);
                }
            }
            write_file(engine, entry, &target)?;
            leaf(json!(target.to_string_lossy()))
        }
        _ => Err(unsupported("File", name)),
    }
}
