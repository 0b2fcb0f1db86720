//! The operations of the core API, one module per core type: [`directory`], [`file`](mod@file), [`host`],
//! [`secret`], [`service`], [`cache_volume`], [`container`] (state, filesystem, mounts, exec, images); the values they
//! produce ([`value`]); the engine every operation receives ([`engine`]); and the field [`router`] that
//! records builder calls, computes them and answers leaves.

pub(crate) mod args;
pub(crate) mod container;
pub(crate) mod describe;
pub(crate) mod directory;
pub(crate) mod engine;
pub(crate) mod epoch;
pub(crate) mod error;
pub(crate) mod fields;
pub(crate) mod file;
pub(crate) mod host;
pub(crate) mod op;
pub(crate) mod router;
pub(crate) mod secret;
pub(crate) mod service;
pub(crate) mod value;
