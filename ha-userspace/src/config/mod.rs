//! The halb configuration file: its schema, parsing and validation.
//!
//! One TOML file (the README's "Configuration"). Every error carries the
//! file, line and column it is about; unknown keys are errors. [`load`] is the only
//! entry point: it returns a [`Config`] that has passed every check, or the
//! errors, and never touches the network.

mod schema;
mod validate;

pub use validate::read_token;

use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::{
    Api, Backend, Bfd, Bgp, Config, Hash, Health, HealthKind, Instance, Mode, Neighbor, Node,
    Protocol, SyncGroup, TrackScript, Vip, Vrrp, XdpModeCfg, DEFAULT_INSTANCE, MAX_WEIGHT,
    MIN_TOKEN_LEN,
};

/// Where a problem is in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name as given.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is; `None` only when the file could not be read at all.
    pub location: Option<Location>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A configuration that could not be loaded: one or more problems.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Every problem found (parse errors stop at the first; validation reports all).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            location: None,
            message: format!("{}: cannot read: {e}", path.display()),
        }],
    })?;
    parse(path, &text)
}

/// Parses and validates `text`, reporting locations against `file`.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let at = |span: std::ops::Range<usize>| locate(file, text, span.start);
    let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
        problems: vec![Problem {
            // An error about the whole file (a missing section) is placed at its start.
            location: Some(e.span().map_or_else(|| at(0..0), at)),
            message: e.message().trim_end().to_string(),
        }],
    })?;
    let problems = validate::check(&mut config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            problems: problems
                .into_iter()
                .map(|(span, message)| Problem {
                    location: Some(at(span)),
                    message,
                })
                .collect(),
        })
    }
}

/// The problems of an already parsed config whose sections were merged
/// from two files (a reload keeping settings that wait for a restart):
/// every rule of [`parse`], reported without locations, which would point
/// into either file.
pub fn revalidate(config: &Config) -> Vec<String> {
    let mut c = config.clone();
    validate::check(&mut c)
        .into_iter()
        .map(|(_, message)| message)
        .collect()
}

/// Line and column (1-based, in characters) of byte `offset` in `text`.
fn locate(file: &Path, text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    Location {
        file: file.to_path_buf(),
        line,
        column,
    }
}

#[cfg(test)]
mod tests;
