//! `voice-agent-operator crd`: the CRDs and their reference documentation,
//! generated from the `voice-agent-api` types.

use std::fs;
use std::path::Path;

use thiserror::Error;

/// Errors while generating CRD files.
#[derive(Debug, Error)]
pub enum CrdGenError {
    /// A CRD could not be serialized.
    #[error("serializing CRDs: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Every generated file and its content, relative to the repository root:
/// `crds/<plural>.yaml` for each kind and `docs/api.md`.
pub fn generated_files() -> Result<Vec<(String, String)>, CrdGenError> {
    let crds = voice_agent_api::crds();
    let mut files = Vec::with_capacity(crds.len() + 1);
    for crd in &crds {
        files.push((
            format!("crds/{}", voice_agent_api::crd_file_name(crd)),
            voice_agent_api::crd_yaml(crd)?,
        ));
    }
    files.push((
        "docs/api.md".to_string(),
        voice_agent_api::docs::markdown(&crds),
    ));
    Ok(files)
}

/// Writes every generated file below `root`. Returns the paths written.
pub fn write_all(root: &Path) -> Result<Vec<String>, CrdGenError> {
    let mut written = Vec::new();
    for (rel, content) in generated_files()? {
        let path = root.join(&rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| CrdGenError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        fs::write(&path, content).map_err(|source| CrdGenError::Io {
            path: path.display().to_string(),
            source,
        })?;
        written.push(rel);
    }
    Ok(written)
}

/// The files under `root` whose content differs from what the types generate.
pub fn drifted(root: &Path) -> Result<Vec<String>, CrdGenError> {
    Ok(generated_files()?
        .into_iter()
        .filter(|(rel, content)| {
            fs::read_to_string(root.join(rel)).ok().as_deref() != Some(content)
        })
        .map(|(rel, _)| rel)
        .collect())
}
