//! The operations of the core API, one module per core type: [`directory`], [`file`](mod@file), [`host`],
//! [`secret`], [`cache_volume`], [`container`] (state, filesystem, mounts, exec, images); the values they
//! produce ([`value`]); the engine every operation receives ([`engine`]); and the field [`router`] that
//! records builder calls, computes them and answers leaves.

pub mod args;
pub mod cache_volume;
pub mod container;
pub mod directory;
pub mod engine;
pub mod file;
pub mod host;
pub mod router;
pub mod secret;
pub mod value;
