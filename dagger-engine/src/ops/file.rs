//! `File`: a file entry (contents in the store as a blob, mode, size, time) and its name; renamed,
//! retimed, read and exported.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::ids::Digest;
use crate::model::tree::FileEntry;
use crate::ops::error::OpError;

use crate::ops::engine::Engine;
use crate::ops::fields::FileField;
use crate::ops::host::{host_path, write_file};
use crate::ops::op::{Op, run};
use crate::ops::value::Evaluated;

/// The op computing a builder field of a file; `None` for a field this engine does not implement.
pub(crate) fn op(field: FileField) -> Option<Op> {
    use FileField as F;
    match field {
        F::WithName(a) => run(move |cx| async move {
            let (_, entry) = cx.file()?;
            Ok(Evaluated::File {
                name: a.name,
                entry: entry.clone(),
            })
        }),
        F::WithTimestamps(a) => run(move |cx| async move {
            let (name, entry) = cx.file()?;
            Ok(Evaluated::File {
                name: name.to_owned(),
                entry: FileEntry {
                    mtime: Some(a.timestamp),
                    ..entry.clone()
                },
            })
        }),
        F::Stat => run(move |cx| async move {
            let (name, entry) = cx.file()?;
            Ok(Evaluated::Stat {
                file_type: "REGULAR".into(),
                name: name.to_owned(),
                permissions: entry.mode,
                size: entry.size,
            })
        }),
        _ => None,
    }
}

/// Checks a name given to a file (`Query.file`, `File.withName`) as Dagger does: a bare file name, no longer
/// than a file system allows.
pub(crate) fn check_file_name(name: &str) -> Result<(), OpError> {
    if name.contains('/') {
        return Err(OpError::new(format!("file name {name:?} must not contain a directory")));
    }
    if name.len() > 255 {
        return Err(OpError::new(
            "File name length exceeds the maximum supported 255 characters",
        ));
    }
    Ok(())
}

/// The files `sources` (file objects), each with its name, and `permissions` applied when given.
pub(crate) async fn source_files(
    engine: &Arc<Engine>,
    sources: &[Digest],
    permissions: Option<i64>,
) -> Result<Vec<(String, FileEntry)>, OpError> {
    let mut files = Vec::new();
    for d in sources {
        let src = engine.eval(d).await?;
        let Evaluated::File { name, entry } = &*src else {
            return Err(OpError::new("`sources` holds something that is not a file"));
        };
        let mut entry = entry.clone();
        if let Some(p) = permissions {
            entry.mode = p as u32;
        }
        files.push((name.clone(), entry));
    }
    Ok(files)
}

/// Computes a leaf of the file `entry` named `name`.
pub(crate) fn leaf(engine: &Arc<Engine>, field: FileField, name: &str, entry: &FileEntry) -> Result<Value, OpError> {
    use FileField as F;
    Ok(match field {
        F::Contents(a) => {
            let bytes = engine.store.get_blob(&entry.blob)?;
            json!(lines(&String::from_utf8_lossy(&bytes), a.offset_lines, a.limit_lines))
        }
        F::Name => json!(name),
        F::Size => json!(entry.size),
        F::Digest(a) => {
            if a.exclude_metadata {
                json!(format!("sha256:{}", entry.blob))
            } else {
                let meta = serde_json::to_vec(&(name, entry)).unwrap_or_default();
                json!(format!("sha256:{}", Digest::of(&meta)))
            }
        }
        F::Export(a) => {
            let mut target = host_path(engine, &a.path);
            if target.is_dir() {
                if !a.allow_parent_dir_path {
                    return Err(OpError::new(format!(
                        "{} is a directory; pass a file path, or set `allowParentDirPath` to write into it",
                        target.display()
                    )));
                }
                target = target.join(name);
            }
            write_file(engine, entry, &target)?;
            json!(target.to_string_lossy())
        }
        other => return Err(OpError::unsupported("File", other.name())),
    })
}

/// The lines of `text` from `offset` (0 when absent or negative), at most `limit` of them.
fn lines(text: &str, offset: Option<i64>, limit: Option<i64>) -> String {
    let offset = offset.unwrap_or(0).max(0) as usize;
    let lines = text.split_inclusive('\n').skip(offset);
    match limit {
        Some(l) => lines.take(l.max(0) as usize).collect(),
        None => lines.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_can_start_at_a_line_and_stop_after_some() {
        let text = "a\nb\nc";
        assert_eq!(lines(text, None, None), text);
        assert_eq!(lines(text, Some(1), None), "b\nc");
        assert_eq!(lines(text, Some(1), Some(1)), "b\n");
        assert_eq!(
            lines(text, Some(-3), Some(2)),
            "a\nb\n",
            "a negative offset is the start"
        );
        assert_eq!(lines(text, Some(9), None), "");
        assert_eq!(lines(text, None, Some(0)), "");
    }
}

#[cfg(test)]
mod op_tests {
    //! File ops and leaves: no runtime, no root.

    use serde_json::json;

    use super::*;
    use crate::ops::op::testing::{self, engine};

    async fn apply(
        e: &Arc<Engine>,
        parent: Evaluated,
        field: &str,
        args: serde_json::Value,
    ) -> Result<Evaluated, OpError> {
        testing::apply(
            e,
            parent,
            op(FileField::parse(field, &testing::args(args)).expect("a field of File")),
        )
        .await
    }

    async fn a_file(e: &Arc<Engine>, contents: &str) -> Evaluated {
        testing::file(e, "f.txt", contents, 0o640)
    }

    #[tokio::test]
    async fn files_are_renamed_retimed_and_stated() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let f = a_file(&e, "hello").await;
        let renamed = apply(&e, f.clone(), "withName", json!({ "name": "g.txt" }))
            .await
            .expect("withName");
        assert_eq!(renamed.as_file().expect("file").0, "g.txt");
        let stamped = apply(&e, f.clone(), "withTimestamps", json!({ "timestamp": 7 }))
            .await
            .expect("stamp");
        assert_eq!(stamped.as_file().expect("file").1.mtime, Some(7));
        let Evaluated::Stat {
            file_type,
            name,
            permissions,
            size,
        } = apply(&e, f, "stat", json!({})).await.expect("stat")
        else {
            panic!("a stat");
        };
        assert_eq!(
            (file_type.as_str(), name.as_str(), permissions, size),
            ("REGULAR", "f.txt", 0o640, 5)
        );
    }

    #[tokio::test]
    async fn leaves_read_contents_size_digest_and_export() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let f = a_file(&e, "one\ntwo\n").await;
        let (name, entry) = f.as_file().expect("file");
        let leaf_of = |field: &str, args: serde_json::Value| {
            let field = FileField::parse(field, args.as_object().expect("object")).expect("field");
            leaf(&e, field, name, entry)
        };
        assert_eq!(
            leaf_of("contents", json!({ "offsetLines": 1 })).expect("contents"),
            json!("two\n")
        );
        assert_eq!(leaf_of("size", json!({})).expect("size"), json!(8));
        let with_meta = leaf_of("digest", json!({})).expect("digest");
        let content_only = leaf_of("digest", json!({ "excludeMetadata": true })).expect("digest");
        assert_eq!(content_only, json!(format!("sha256:{}", entry.blob)));
        assert_ne!(
            with_meta, content_only,
            "the name and mode are part of the default digest"
        );
        std::fs::create_dir_all(tmp.path().join("out")).expect("out");
        let refused = leaf_of("export", json!({ "path": "out" })).expect_err("a directory");
        assert!(refused.message.contains("allowParentDirPath"), "{}", refused.message);
        let written = leaf_of("export", json!({ "path": "out", "allowParentDirPath": true })).expect("export");
        assert_eq!(written, json!(tmp.path().join("out/f.txt").to_string_lossy()));
        assert_eq!(
            std::fs::read(tmp.path().join("out/f.txt")).expect("read"),
            b"one\ntwo\n"
        );
    }
}
