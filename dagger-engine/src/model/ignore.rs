//! `.gitignore` rules as git applies them to a tree: every `.gitignore` holds patterns relative to its own
//! folder, with the full syntax (`!` to re-include, a trailing `/` for directories only, a leading or inner
//! `/` to anchor, `*`, `?`, `[…]`, `**`); a deeper file's rules win over its parents', and within a file the
//! last matching line wins. Nothing below an ignored directory comes back (git does not look into it), which
//! is for the walk using these rules to honour ([`crate::model::tree::Tree::without`] does).

use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The rules of the `.gitignore` files of one tree, each with the folder (relative to the tree's root, `""`
/// for the root) it sits in.
#[derive(Default)]
pub struct GitignoreRules {
    files: Vec<(String, Gitignore)>,
}

/// Where the rules pretend the tree's root is: the matcher compares paths under a root, and only the
/// relative part matters.
fn anchor(rel: &str) -> PathBuf {
    Path::new("/").join(rel)
}

impl GitignoreRules {
    /// Adds the rules of the `.gitignore` in the folder `dir` (relative to the tree's root). Lines that are not
    /// valid patterns are skipped, as git skips them.
    pub fn add(&mut self, dir: &str, contents: &str) {
        let dir = dir.trim_matches('/').to_owned();
        let mut builder = GitignoreBuilder::new(anchor(&dir));
        for line in contents.lines() {
            let _ = builder.add_line(None, line);
        }
        if let Ok(matcher) = builder.build()
            && !matcher.is_empty()
        {
            self.files.push((dir, matcher));
        }
    }

    /// Whether no rule was added.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether the entry at `path` (relative to the tree's root; `is_dir` for a directory) is ignored by the
    /// rules of its own folder and those above it: the deepest `.gitignore` with a matching line decides. Its
    /// parents are not looked at (a walk does not reach below an ignored directory).
    pub fn ignored(&self, path: &str, is_dir: bool) -> bool {
        let path = path.trim_matches('/');
        let mut deciding: Vec<&(String, Gitignore)> = self
            .files
            .iter()
            .filter(|(dir, _)| {
                dir.is_empty()
                    || path
                        .strip_prefix(dir.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .collect();
        deciding.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.len()));
        for (_, matcher) in deciding {
            match matcher.matched(anchor(path), is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }

    /// Whether `path` or one of the directories above it is ignored (so a walk would never reach it).
    pub fn ignored_or_below_ignored(&self, path: &str, is_dir: bool) -> bool {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for (i, c) in comps.iter().enumerate() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            let last = i + 1 == comps.len();
            if self.ignored(&prefix, if last { is_dir } else { true }) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of Dagger's `TestDirectoryGitIgnore` (host_test.go).
    fn daggers_rules() -> GitignoreRules {
        let mut rules = GitignoreRules::default();
        rules.add("", "**.txt\n.git/\n!subdir/e.txt\n*.md\ninternal/foo/\n");
        rules.add("subdir2", "*.yaml\n.gitignore\n");
        rules
    }

    #[test]
    fn the_deepest_file_decides_and_patterns_are_relative_to_their_folder() {
        let rules = daggers_rules();
        for (path, is_dir, want) in [
            (".git", true, true),
            (".gitignore", false, false),
            ("b.md", false, true),
            ("c.txt.rar", false, false),
            ("subdir", true, false),
            ("subdir/b.md", false, true),
            ("subdir/e.txt", false, false),
            ("subdir/g.txt", false, true),
            ("subdir/h.yaml", false, false),
            ("subdir2/.gitignore", false, true),
            ("subdir2/foo.go", false, false),
            ("subdir2/bar.txt", false, true),
            ("subdir2/baz.md", false, true),
            ("subdir2/bool.yaml", false, true),
            ("internal/foo", true, true),
            ("internal/foo", false, false),
            ("x/internal/foo", true, false),
        ] {
            assert_eq!(rules.ignored(path, is_dir), want, "{path} (dir: {is_dir})");
        }
    }

    #[test]
    fn negations_anchors_and_double_stars() {
        let mut rules = GitignoreRules::default();
        rules.add("", "*.log\n!keep.log\n/build\ndocs/**/*.tmp\n# a comment\n\n");
        rules.add("sub", "!*.log\n");
        assert!(rules.ignored("a.log", false));
        assert!(!rules.ignored("keep.log", false));
        assert!(rules.ignored("build", true));
        assert!(
            !rules.ignored("x/build", true),
            "a leading `/` anchors at the file's folder"
        );
        assert!(rules.ignored("docs/a/b/c.tmp", false));
        assert!(!rules.ignored("sub/a.log", false), "a deeper file re-includes");
        assert!(rules.ignored_or_below_ignored("build/out/x", false));
        assert!(!rules.ignored_or_below_ignored("src/main.rs", false));
        assert!(GitignoreRules::default().is_empty());
    }
}
