//! The GraphQL layer: the HTTP server ([`server`]), the executor ([`executor`]: parse, validate, collect
//! fields, null propagation, request limits — generic over a [`executor::Resolver`]), input coercion
//! ([`input`]), the served schema ([`schema`]), the core API as a resolver ([`resolver`]), and the error of a
//! field in a response ([`error`]), which the layers' own errors become here.

pub mod error;
pub mod executor;
pub mod input;
pub mod resolver;
pub mod schema;
pub mod server;

pub use executor::{Data, Request, Response};
pub use resolver::execute;
