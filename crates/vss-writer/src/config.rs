//! Reading a writer's TOML configuration file, with errors that name the
//! file, the key and what to do (feature `config`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use vss_types::{VssCode, VssError};

/// Configuration files larger than this are refused (a real one is a few
/// KiB; this keeps a wrong `--config` from being read whole).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Names a writer program's configuration in its errors and hints.
#[derive(Clone, Copy, Debug)]
pub struct ConfigFile {
    /// What the configuration belongs to: `"SQLite writer"`.
    pub writer: &'static str,
    /// The program that checks it with `--config FILE --check`.
    pub program: &'static str,
    /// What to write into a missing file, and where to find an example.
    pub create_hint: &'static str,
}

impl ConfigFile {
    /// An error about `file` at the TOML key `field` (empty for the file as
    /// a whole), with the general hint: fix it and check it.
    pub fn error(
        &self,
        file: &Path,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            writer: self.writer,
            file: file.to_owned(),
            field: field.into(),
            message: message.into(),
            hint: format!(
                "Fix {} (format: docs/WRITERS.md), then start the writer again (`{} --config FILE --check` checks it).",
                file.display(),
                self.program
            ),
        }
    }

    /// The text of the file at `path`: a regular file of at most
    /// [`MAX_FILE_BYTES`].
    pub fn read(&self, path: &Path) -> Result<String, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            let err = self.error(path, "", format!("cannot read the file: {e}"));
            if e.kind() == std::io::ErrorKind::NotFound {
                err.with_hint(format!(
                    "Create {} {} (format: docs/WRITERS.md), or name another file with --config.",
                    path.display(),
                    self.create_hint
                ))
            } else {
                err
            }
        })?;
        if !meta.is_file() {
            return Err(self.error(path, "", "not a regular file"));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(self.error(
                path,
                "",
                format!(
                    "the file is {} bytes; the configuration is limited to {MAX_FILE_BYTES}",
                    meta.len()
                ),
            ));
        }
        std::fs::read_to_string(path)
            .map_err(|e| self.error(path, "", format!("cannot read the file: {e}")))
    }

    /// Deserializes `text` (the contents of `file`); a mistake names its key
    /// and its line and column.
    pub fn parse<T: DeserializeOwned>(&self, text: &str, file: &Path) -> Result<T, ConfigError> {
        parse_toml(text).map_err(|(field, message)| self.error(file, field, message))
    }
}

/// Deserializes TOML `text`. A mistake comes back as (the key, dotted as in
/// TOML and empty for the top level; the message, with its line and
/// column where known).
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .span()
            .map(|s| {
                let (line, col) = line_col(text, s.start);
                format!("line {line}, column {col}: ")
            })
            .unwrap_or_default();
        // serde_path_to_error says "." for the top level.
        let field = if field == "." { String::new() } else { field };
        (field, format!("{at}{}", inner.message().trim()))
    })
}

/// Line and column (from 1, in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// A configuration that cannot be used: which file, which key, what is
/// wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{message}", file.display(), if field.is_empty() { String::new() } else { format!("`{field}`: ") })]
pub struct ConfigError {
    /// Whose configuration: `"SQLite writer"`.
    pub writer: &'static str,
    pub file: PathBuf,
    /// The key, dotted as in TOML (`database[1].path`); empty for the file
    /// as a whole.
    pub field: String,
    pub message: String,
    pub hint: String,
}

impl ConfigError {
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

/// A bad configuration is a bad argument, as for vssd's own file.
impl From<ConfigError> for VssError {
    fn from(e: ConfigError) -> VssError {
        let hint = e.hint.clone();
        VssError::new(
            VssCode::InvalidArg,
            format!("{} configuration {e}", e.writer),
        )
        .with_hint(hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: ConfigFile = ConfigFile {
        writer: "Test writer",
        program: "vss-writer-test",
        create_hint: "with a name",
    };

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        size: u32,
    }

    #[test]
    fn a_mistake_names_its_key_line_and_column() {
        let text = "name = \"x\"\n[[items]]\nsize = 1\n[[items]]\nsize = \"big\"\n";
        let e = FILE
            .parse::<Cfg>(text, Path::new("/etc/t.toml"))
            .unwrap_err();
        assert_eq!(e.field, "items[1].size");
        assert!(e.message.starts_with("line 5, column 8: "), "{e}");
        let v = VssError::from(e);
        assert_eq!(v.code, VssCode::InvalidArg);
        assert!(
            v.message
                .starts_with("Test writer configuration /etc/t.toml: `items[1].size`: "),
            "{v:?}"
        );
        assert!(
            v.hint().contains("vss-writer-test --config FILE --check"),
            "{v:?}"
        );
    }

    #[test]
    fn the_top_level_has_no_key() {
        let e = FILE
            .parse::<Cfg>("items = []\n", Path::new("t.toml"))
            .unwrap_err();
        assert_eq!(e.field, "");
        assert!(e.message.contains("name"), "{e}");
    }

    #[test]
    fn a_missing_file_says_what_to_create() {
        let dir = tempfile::tempdir().unwrap();
        let e = FILE.read(&dir.path().join("none.toml")).unwrap_err();
        assert!(e.hint.starts_with("Create "), "{e:?}");
        assert!(e.hint.contains("with a name"), "{e:?}");
        let e = FILE.read(dir.path()).unwrap_err();
        assert_eq!(e.message, "not a regular file");
    }
}
