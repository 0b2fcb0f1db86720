//! A step library: steps and a small `lint` pipeline, exported for other pipelines to use — here by the two
//! pipelines of [`crate::composed`], and by `tests/tests/pipeline_compose.rs` in another crate.
//!
//! A pipeline uses it as `let checks = lint::lint::run(image, src);`: its inputs are bound like a step's
//! arguments, its outputs are scheduled with the using pipeline's own (one graph, batched as one), and they
//! come back as the field `checks` of the using pipeline's outputs. Its `sync` output `ready` is an object
//! there, `checks.ready`, which the using pipeline builds on.

use dagger::prelude::*;

/// A shell script linter's toolchain: the image with the project's sources.
#[step]
pub fn toolchain(dag: &Query, image: String, src: Directory) -> Container {
    dag.container()
        .from(image)
        .with_directory("/src", src)
        .with_workdir("/src")
}

/// Every script parses (`sh -n`).
#[step]
pub fn syntax(toolchain: Container) -> Container {
    toolchain.with_exec([
        "sh",
        "-c",
        "for f in *.sh; do sh -n \"$f\" || exit 1; done; echo syntax ok",
    ])
}

/// No line ends with a space or a tab.
#[step]
pub fn whitespace(toolchain: Container) -> Container {
    toolchain.with_exec([
        "sh",
        "-c",
        "if grep -n '[[:blank:]]$' *.sh; then echo 'trailing whitespace' >&2; exit 1; fi; echo whitespace ok",
    ])
}

pipeline! {
    /// Lints a project's shell scripts: the syntax and the whitespace, side by side, on a synced toolchain.
    pub lint(image: String, src: Directory) {
        let tc = toolchain(image, src);
        let parsed = syntax(tc);
        let spaces = whitespace(tc);
        /// The toolchain, synced: the pipelines using `lint` build on it as `checks.ready`.
        out ready = tc.sync();
        /// What the syntax check printed.
        out syntax_log = parsed.stdout() after ready;
        /// What the whitespace check printed.
        out whitespace_log = spaces.stdout() after ready;
    }
}
