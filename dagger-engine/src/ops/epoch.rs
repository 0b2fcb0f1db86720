//! The epoch of the operations: the version of what they compute for a given call.

/// The version of what the operations compute. A call's digest (an object's ID) names what was asked, not
/// how it was computed; when an operation comes to compute something else for the same call (a fix, a
/// behaviour matched to the real Dagger engine), this changes, and results and layers stored under another
/// epoch are not reused (they are left to pruning). Bump it with every such change.
pub(crate) const OPS_EPOCH: &str = "ops-2";
