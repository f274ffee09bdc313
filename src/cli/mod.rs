//! Library side of the CLI subcommands that are more than wiring.

pub mod explain;
pub mod fleet;

use std::path::PathBuf;

use anyhow::Context;

use crate::inputs::Inputs;

/// Reads manifests from files and directories (as `translate` does).
pub fn load_paths(paths: &[PathBuf], controller_name: &str) -> anyhow::Result<Inputs> {
    let mut inputs = Inputs::new(controller_name);
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut loader = crate::provider::file::DirLoader::new(p);
            let (dir_inputs, errors) = loader.load(controller_name);
            if let Some(e) = errors.first() {
                anyhow::bail!("{e}");
            }
            inputs.merge(dir_inputs);
        } else {
            files.push(p.clone());
        }
    }
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let docs = crate::provider::file::parse_documents(&text).map_err(|(line, msg)| {
            anyhow::anyhow!(
                "{}:{}: {msg}",
                f.display(),
                line.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
            )
        })?;
        for d in docs {
            inputs
                .insert_value(d)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        }
    }
    Ok(inputs)
}

/// Loads manifests, assigns addresses and translates: the model `translate`
/// and `explain` work on.
pub fn load_model(
    paths: &[PathBuf],
    controller_name: &str,
    address_pool: &str,
) -> anyhow::Result<crate::ir::Model> {
    let mut inputs = load_paths(paths, controller_name)?;
    crate::provider::addresses::AddressPool::parse(address_pool)?.assign(&mut inputs);
    Ok(crate::translate::translate(&inputs).model)
}
