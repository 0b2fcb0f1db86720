//! The worker: what runs containers on this host — the OCI runtime ([`runtime`]), container filesystems
//! ([`snapshot`]), networking ([`network`]), services ([`service`]), cache volumes ([`cache_volume`]), scratch folders ([`scratch`]), images ([`oci`]), running without root ([`userns`]), and the
//! collection of what engines that stopped uncleanly left ([`cleanup`], [`collected`]).

pub(crate) mod cache_volume;
pub mod cleanup;
pub(crate) mod collected;
pub mod network;
pub mod oci;
pub mod runtime;
pub(crate) mod scratch;
pub(crate) mod service;
pub mod snapshot;
pub mod userns;
