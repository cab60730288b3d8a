//! The filter module this controller ships with: read once at start-up from `--filter-file`
//! (in the image, `/filter/plugin.wasm`, built by controller/Dockerfile from the same commit)
//! and served by every replica at a path named by its SHA-256 ([`super::filter_server`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where controller/Dockerfile puts the module built from the same commit.
pub const DEFAULT_FILTER_FILE: &str = "/filter/plugin.wasm";
/// Where `scripts/build-wasm.sh` writes the module in a checkout.
pub const BUILT_FILTER_FILE: &str = "target/wasm32-unknown-unknown/release/modelsplit_filter.wasm";
/// Every WebAssembly binary module starts with these bytes (`\0asm`).
const WASM_MAGIC: &[u8] = b"\0asm";

/// Why the module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FilterModuleError {
    #[error(
        "cannot read the filter module {path}: {cause}. In the controller image it is \
         {DEFAULT_FILTER_FILE} (controller/Dockerfile puts it there); elsewhere run \
         scripts/build-wasm.sh and pass --filter-file={BUILT_FILTER_FILE}, or publish the \
         module yourself and pass --url (and --sha256)"
    )]
    Unreadable {
        path: PathBuf,
        // Not `source`: the message says it, once.
        cause: std::io::Error,
    },
    #[error(
        "the filter module {path} is not a WebAssembly module (it does not start with \\0asm): \
         pass --filter-file with the .wasm that scripts/build-wasm.sh writes ({BUILT_FILTER_FILE})"
    )]
    NotWasm { path: PathBuf },
}

/// The module's bytes and digest. Cheap to clone: the bytes are shared.
#[derive(Clone)]
pub struct FilterModule {
    path: PathBuf,
    bytes: Arc<[u8]>,
    sha256: String,
}

impl std::fmt::Debug for FilterModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterModule")
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl FilterModule {
    /// Reads and checks the module at `path`.
    pub fn load(path: &Path) -> Result<FilterModule, FilterModuleError> {
        let bytes = std::fs::read(path).map_err(|cause| FilterModuleError::Unreadable {
            path: path.to_path_buf(),
            cause,
        })?;
        FilterModule::from_bytes(path, bytes)
    }

    /// A module from bytes already read (`path` only names it in messages).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<FilterModule, FilterModuleError> {
        if !bytes.starts_with(WASM_MAGIC) {
            return Err(FilterModuleError::NotWasm {
                path: path.to_path_buf(),
            });
        }
        let sha256 = sha256_hex(&bytes);
        Ok(FilterModule {
            path: path.to_path_buf(),
            bytes: bytes.into(),
            sha256,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// The SHA-256 of the file, 64 lowercase hex digits: what Istio checks for `http(s)://`.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The path it is served at: `/filter/<sha256>.wasm`. A new module has a new path, so a
    /// gateway never gets a module other than the one its WasmPlugin names.
    pub fn served_path(&self) -> String {
        format!("{}{}.wasm", super::filter_server::PATH_PREFIX, self.sha256)
    }
}

/// Lowercase hex SHA-256, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha256_as_sha256sum_prints_it() {
        // FIPS 180-2 test vector "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_module_is_loaded_with_its_digest_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.wasm");
        let bytes = b"\0asm\x01\0\0\0".to_vec();
        std::fs::write(&path, &bytes).unwrap();
        let module = FilterModule::load(&path).unwrap();
        assert_eq!(module.sha256(), sha256_hex(&bytes));
        assert_eq!(&module.bytes()[..], &bytes[..]);
        assert_eq!(
            module.served_path(),
            format!("/filter/{}.wasm", sha256_hex(&bytes))
        );
    }

    #[test]
    fn a_missing_file_names_itself_and_the_fixes() {
        let error = FilterModule::load(Path::new("/nonexistent/plugin.wasm")).unwrap_err();
        let text = error.to_string();
        for needed in [
            "/nonexistent/plugin.wasm",
            "scripts/build-wasm.sh",
            "--filter-file",
            "--url",
        ] {
            assert!(text.contains(needed), "{needed:?} missing in: {text}");
        }
    }

    #[test]
    fn a_file_that_is_not_wasm_is_refused() {
        let error = FilterModule::from_bytes(Path::new("x.wasm"), b"<html>".to_vec()).unwrap_err();
        assert!(
            matches!(error, FilterModuleError::NotWasm { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("x.wasm"));
    }
}
