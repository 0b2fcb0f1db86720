//! The GraphQL layer: the HTTP server ([`server`]), the executor ([`executor`]: parse, validate, collect
//! fields, null propagation, request limits — generic over a [`executor::Resolver`]), input coercion
//! ([`input`]), the served schema ([`schema`]), and the core API as a resolver ([`resolver`]).

pub mod executor;
pub mod input;
pub mod resolver;
pub mod schema;
pub mod server;

pub use executor::{Data, Request, Response};
pub use resolver::execute;
