//! The schema the engine serves: exactly the contract `schema/core.graphql`.

use std::sync::OnceLock;

use apollo_compiler::Name;
use apollo_compiler::Schema;
use apollo_compiler::collections::HashMap;
use apollo_compiler::schema::{ExtendedType, Implementers};
use apollo_compiler::validation::Valid;

/// The contract, compiled into the engine.
pub const SDL: &str = include_str!("../../../schema/core.graphql");

/// The parsed and validated schema, with its implementers map (for `node` and introspection).
pub struct Served {
    /// The schema.
    pub schema: Valid<Schema>,
    /// Which types implement which interfaces.
    pub implementers: HashMap<Name, Implementers>,
}

/// The schema, parsed once.
pub fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        // The SDL is part of the build and checked by tests; failing here means the binary is broken.
        #[allow(clippy::expect_used)]
        Served::parse(SDL, "schema/core.graphql").expect("the contract schema is valid")
    })
}

impl Served {
    /// Parses and validates a schema (`path` names it in errors).
    pub fn parse(sdl: &str, path: &str) -> Result<Served, String> {
        let schema = Schema::parse_and_validate(sdl, path).map_err(|e| e.to_string())?;
        let implementers = schema.implementers_map();
        Ok(Served { schema, implementers })
    }

    /// Whether `name` is an object type.
    pub fn is_object(&self, name: &str) -> bool {
        matches!(self.schema.types.get(name), Some(ExtendedType::Object(_)))
    }
}
