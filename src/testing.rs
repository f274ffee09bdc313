//! Helpers shared by unit tests: objects and models from manifest text.

use crate::inputs::{Inputs, DEFAULT_CONTROLLER_NAME};

/// Inputs holding every object of a multi-document YAML text.
pub fn inputs(text: &str) -> Inputs {
    let docs = crate::provider::file::parse_documents(text).expect("manifests parse");
    let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
    for d in docs {
        inputs.insert_value(d).expect("object decodes");
    }
    inputs
}

/// The IR of a YAML text, Gateways getting addresses from `pool`.
pub fn model(text: &str, pool: &str) -> crate::ir::Model {
    let mut inputs = inputs(text);
    crate::provider::addresses::AddressPool::parse(pool)
        .expect("pool")
        .assign(&mut inputs);
    crate::translate::translate(&inputs).model
}
