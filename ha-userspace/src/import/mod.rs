//! `halb import`: translating a keepalived.conf (VRRP, LVS `virtual_server`)
//! and a haproxy.cfg (frontends, backends, listens) into one halb config,
//! with a report that accounts for every input line: translated, adjusted
//! (translated with a change the operator should know), or not translated
//! and why. Nothing is dropped silently; the output passes `check-config`.
//!
//! The readers ([`keepalived`], [`haproxy`]) fill a [`Model`]; [`emit`]
//! writes the TOML, each value with a comment naming its source line.

mod emit;
pub mod haproxy;
pub mod keepalived;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use emit::toml_string;

/// What went wrong before anything could be translated.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Includes nest too deep (a loop).
    #[error("{0}: includes nest deeper than 8 levels (a loop?)")]
    IncludeDepth(String),
    /// The written config does not pass check-config (a bug of the importer).
    #[error("the translated config does not pass check-config:\n{0}\n--- config ---\n{1}")]
    Invalid(String, String),
}

/// A place in an input file.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// File name as given (or as included).
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What happened to one input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fate {
    /// Translated as is.
    Translated,
    /// Translated, with a change or a difference in meaning.
    Adjusted,
    /// Not translated: no equivalent in halb, or not needed.
    NotTranslated,
}

/// One report entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where.
    pub loc: Loc,
    /// What happened.
    pub fate: Fate,
    /// The directive, as written.
    pub directive: String,
    /// Into what, or why not.
    pub note: String,
}

/// Every input line's fate.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Entries in the order they were made.
    pub entries: Vec<Entry>,
    /// Every line with content, per file (to find lines nobody accounted for).
    pub lines: BTreeMap<String, BTreeMap<usize, String>>,
    /// Lines whose translation was dropped after all, with why.
    demotions: Vec<(Loc, String)>,
}

impl Report {
    fn add(&mut self, loc: &Loc, fate: Fate, directive: &str, note: impl Into<String>) {
        self.entries.push(Entry {
            loc: loc.clone(),
            fate,
            directive: directive.trim().to_string(),
            note: note.into(),
        });
    }
    /// Translated as is.
    pub fn ok(&mut self, loc: &Loc, directive: &str, note: impl Into<String>) {
        self.add(loc, Fate::Translated, directive, note);
    }
    /// Translated with a difference the operator must know.
    pub fn adjusted(&mut self, loc: &Loc, directive: &str, note: impl Into<String>) {
        self.add(loc, Fate::Adjusted, directive, note);
    }
    /// Not translated.
    pub fn skipped(&mut self, loc: &Loc, directive: &str, why: impl Into<String>) {
        self.add(loc, Fate::NotTranslated, directive, why);
    }

    /// Marks what was translated at `locs` as not translated after all
    /// (its instance or service was left out), with `why`.
    /// (Applied by [`Report::apply_demotions`], in one pass.)
    pub fn demote(&mut self, locs: &[Loc], why: &str) {
        for l in locs {
            self.demotions.push((l.clone(), why.to_string()));
        }
    }

    /// Applies the pending [`Report::demote`] calls.
    fn apply_demotions(&mut self) {
        let pending: std::collections::HashMap<Loc, String> =
            std::mem::take(&mut self.demotions).into_iter().collect();
        for e in &mut self.entries {
            if e.fate == Fate::NotTranslated {
                continue;
            }
            if let Some(why) = pending.get(&e.loc) {
                e.fate = Fate::NotTranslated;
                e.note = format!("{} (left out: {why})", e.note);
            }
        }
    }

    /// Records that `file` has content on `line` (text as written).
    pub fn saw(&mut self, loc: &Loc, text: &str) {
        self.lines
            .entry(loc.file.clone())
            .or_default()
            .insert(loc.line, text.trim().to_string());
    }

    /// Lines with content that no entry accounts for.
    fn unreported(&self) -> Vec<(Loc, String)> {
        let covered: BTreeSet<(&str, usize)> = self
            .entries
            .iter()
            .map(|e| (e.loc.file.as_str(), e.loc.line))
            .collect();
        self.lines
            .iter()
            .flat_map(|(file, lines)| {
                lines
                    .iter()
                    .filter(|(line, _)| !covered.contains(&(file.as_str(), **line)))
                    .map(|(line, text)| {
                        let loc = Loc {
                            file: file.clone(),
                            line: *line,
                        };
                        (loc, text.clone())
                    })
            })
            .collect()
    }

    /// Reports every line with content that no entry accounts for, so
    /// that nothing is dropped without a word.
    fn close(&mut self) {
        for (loc, text) in self.unreported() {
            self.skipped(&loc, &text, "not understood by halb import");
        }
    }

    /// Entries of `fate`.
    pub fn count(&self, fate: Fate) -> usize {
        self.entries.iter().filter(|e| e.fate == fate).count()
    }

    /// Whether every line with content has an entry.
    pub fn accounts_for_every_line(&self) -> bool {
        self.unreported().is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "halb import: {} translated, {} adjusted, {} not translated",
            self.count(Fate::Translated),
            self.count(Fate::Adjusted),
            self.count(Fate::NotTranslated)
        )?;
        for (fate, title) in [
            (
                Fate::NotTranslated,
                "Not translated (no halb equivalent, or not needed)",
            ),
            (Fate::Adjusted, "Translated with a difference"),
            (Fate::Translated, "Translated"),
        ] {
            let mut es: Vec<&Entry> = self.entries.iter().filter(|e| e.fate == fate).collect();
            if es.is_empty() {
                continue;
            }
            es.sort_by(|a, b| a.loc.cmp(&b.loc));
            writeln!(f, "\n{title}:")?;
            for e in es {
                writeln!(f, "  {}: {}: {}", e.loc, e.directive, e.note)?;
            }
        }
        Ok(())
    }
}

/// A value with the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    /// The value.
    pub value: T,
    /// Its source.
    pub loc: Loc,
}

/// Wraps `value` with `loc`.
pub fn at<T>(value: T, loc: &Loc) -> At<T> {
    At {
        value,
        loc: loc.clone(),
    }
}

/// A keepalived `vrrp_script` as halb's `track_script`.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Name.
    pub name: String,
    /// Where it was defined.
    pub loc: Option<Loc>,
    /// Keys (TOML name → value text) with their sources.
    pub keys: Vec<(String, At<String>)>,
    /// Interval and timeout (ms), to keep timeout below interval.
    pub interval_ms: u32,
    /// Timeout (ms), when set.
    pub timeout_ms: Option<u32>,
}

/// One VRRP instance.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    /// Name.
    pub name: String,
    /// Where it starts.
    pub loc: Option<Loc>,
    /// Keys in halb's `[[vrrp_instance]]` (TOML name → value text).
    pub keys: Vec<(String, At<String>)>,
    /// Its addresses (`virtual_ipaddress`).
    pub addresses: Vec<At<Ipv4Addr>>,
    /// Its interface.
    pub interface: Option<String>,
    /// VRRP version (2 or 3) when set.
    pub version: Option<u8>,
    /// Advert interval (ms) when set.
    pub advert_ms: Option<At<u32>>,
    /// Tracked scripts.
    pub scripts: Vec<Script>,
    /// The password, kept until the version is known.
    pub auth_pass: Option<At<String>>,
    /// Every line of its block.
    pub locs: Vec<Loc>,
}

/// A sync group.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Name.
    pub name: String,
    /// Where it starts.
    pub loc: Option<Loc>,
    /// Member instances.
    pub instances: Vec<At<String>>,
    /// Its notify hook.
    pub notify: Option<At<String>>,
}

/// Health-check settings of a VIP.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `tcp` or `http` (None: no check).
    pub kind: Option<At<&'static str>>,
    /// Other keys (TOML name → value text).
    pub keys: Vec<(String, At<String>)>,
    /// Interval (ms) when set.
    pub interval_ms: Option<At<u32>>,
    /// Timeout (ms) when set.
    pub timeout_ms: Option<At<u32>>,
}

/// One backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Name.
    pub name: String,
    /// Address.
    pub address: Ipv4Addr,
    /// Weight (halb's range).
    pub weight: u32,
    /// Source line.
    pub loc: Loc,
    /// Written commented out, with this reason (HAProxy `backup`).
    pub commented: Option<String>,
}

/// One service.
#[derive(Debug, Clone)]
pub struct Vip {
    /// Name.
    pub name: String,
    /// Address.
    pub address: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// `dsr`, `ipip` or `gue`.
    pub mode: &'static str,
    /// GUE port (`mode = "gue"`).
    pub gue_port: Option<u16>,
    /// Source-IP affinity.
    pub source_hash: Option<Loc>,
    /// Where it starts.
    pub loc: Loc,
    /// Health check.
    pub health: Health,
    /// Backends.
    pub backends: Vec<Backend>,
    /// The lines it was made from (demoted in the report when left out).
    pub locs: Vec<Loc>,
}

/// Everything read, before it is written.
#[derive(Debug, Default)]
pub struct Model {
    /// `[node] interface`, when known.
    pub interface: Option<At<String>>,
    /// VRRP instances.
    pub instances: Vec<Instance>,
    /// Sync groups.
    pub groups: Vec<Group>,
    /// Services.
    pub vips: Vec<Vip>,
    /// Default VRRP version (`global_defs vrrp_version`).
    pub default_version: Option<At<u8>>,
    /// Instance-wide defaults from `global_defs` (TOML key → value).
    pub instance_defaults: Vec<(String, At<String>)>,
}

/// The result: a config and its report.
#[derive(Debug)]
pub struct Imported {
    /// halb.toml text (passes check-config).
    pub config: String,
    /// What happened to every input line.
    pub report: Report,
}

/// Reads `path` for an importer.
pub(crate) fn read(path: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Translates the given files (either may be absent) into one config.
pub fn import(
    keepalived_conf: Option<&Path>,
    haproxy_cfg: Option<&Path>,
) -> Result<Imported, ImportError> {
    let mut model = Model::default();
    let mut report = Report::default();
    if let Some(p) = keepalived_conf {
        keepalived::read_into(p, &mut model, &mut report)?;
    }
    if let Some(p) = haproxy_cfg {
        haproxy::read_into(p, &mut model, &mut report)?;
    }
    report.close();
    let mut config = emit::emit(&mut model, &mut report, keepalived_conf, haproxy_cfg);
    // What emit did not foresee, halb's own validation finds: each refused
    // line (or table) is commented out and reported, until the file passes.
    for _ in 0..64 {
        let e = match crate::config::parse(Path::new("imported.toml"), &config) {
            Ok(_) => {
                report.apply_demotions();
                return Ok(Imported { config, report });
            }
            Err(e) => e,
        };
        match emit::refuse(&config, &e, &mut report) {
            Some(next) => config = next,
            None => return Err(ImportError::Invalid(e.to_string(), config)),
        }
    }
    let why = "still refused after 64 lines were left out".to_string();
    Err(ImportError::Invalid(why, config))
}

/// A name halb accepts (1-64 of A-Z a-z 0-9 . _ -), made from `raw`.
pub fn token(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        s.push('x');
    }
    s
}

/// `base` with suffix `-n`, cut so that the whole stays a valid name (the
/// suffix always survives, so numbered names differ).
pub fn numbered(base: &str, n: usize) -> String {
    let suffix = format!("-{n}");
    let keep = 64usize.saturating_sub(suffix.len());
    let head: String = token(base).chars().take(keep).collect();
    format!("{head}{suffix}")
}

/// halb's largest weight.
pub const MAX_WEIGHT: u32 = crate::config::MAX_WEIGHT;

#[cfg(test)]
mod tests;
