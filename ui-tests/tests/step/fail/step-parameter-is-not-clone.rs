use dagger::prelude::*;

/// Settings that cannot be cloned (no `#[derive(Clone)]`).
pub struct Settings {
    pub image: String,
}

#[step]
fn build(dag: &Query, settings: Settings) -> Container {
    dag.container().from(settings.image)
}

fn main() {}
