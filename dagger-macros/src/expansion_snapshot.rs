//! The expansion of one example pipeline, formatted with `rustfmt` and pinned as a snapshot, so reviewers
//! see exactly what users get.

use std::io::Write;
use std::process::{Command, Stdio};

use quote::quote;

fn rustfmt(code: &str) -> String {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("rustfmt is installed (rustup component add rustfmt)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(code.as_bytes())
        .expect("write to rustfmt");
    let out = child.wait_with_output().expect("rustfmt runs");
    assert!(out.status.success(), "rustfmt failed on:\n{code}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn expansion_of_the_ci_pipeline() {
    let input = quote! {
        /// Test, build and publish the app.
        pub ci(src: Directory, registry: String) {
            let tc = toolchain(src);
            let tests = unit_tests(tc);
            let img = image(binary(tc));
            /// The test log.
            out test_log = tests.stdout();
            out image_ref = img.publish(registry) after test_log;
        }
    };
    let expanded = crate::pipeline::expand(input);
    insta::assert_snapshot!(rustfmt(&expanded.to_string()));
}

#[test]
fn expansion_of_a_loop_whose_values_feed_its_steps() {
    // Wave 0 reserves every element's `image_refs`; wave 1 walks the loop again, finds each element's `tc`
    // (saved by element) and value, and builds what they allow.
    let input = quote! {
        pub per_version(src: Directory, versions: Vec<String>, publish_all: bool) {
            for version in versions {
                let tc = toolchain_for(src, version);
                out reported = tc.stdout();
                if publish_all {
                    let img = tagged(tc, reported);
                    out image_refs = img.publish(version);
                }
            }
        }
    };
    let expanded = crate::pipeline::expand(input);
    insta::assert_snapshot!(rustfmt(&expanded.to_string()));
}

#[test]
fn expansion_of_a_step() {
    let item = quote! {
        /// A toolchain with the sources mounted.
        #[allow(clippy::needless_pass_by_value)]
        pub fn toolchain(dag: &Query, src: Directory, image: &str) -> Container {
            dag.container().from(image).with_directory("/src", src)
        }
    };
    let expanded = crate::step::expand(quote!(), item);
    insta::assert_snapshot!(rustfmt(&expanded.to_string()));
}
