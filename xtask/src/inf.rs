//! The sample drivers' INF files: a small parser for the documented INF syntax and the checks
//! Windows needs of a file-system filter's INF (`cargo xtask check-inf`, and `cargo xtask drivers`,
//! which also copies each INF beside its .sys).
//!
//! The syntax is Microsoft Learn's "General syntax rules for INF files"
//! (<https://learn.microsoft.com/windows-hardware/drivers/install/general-syntax-rules-for-inf-files>):
//! `[sections]` (names case-insensitive, repeated sections merged), `key = value` entries and
//! value-only lines, values separated by commas, `;` comments except inside a quoted string or a
//! `%strkey%` token, a trailing `\` continuing a line, `%%` for a percent sign and `""` for a quote,
//! and `%strkey%` tokens replaced from `[Strings]` (`%<number>%` tokens are directory ids and stay
//! as they are).
//!
//! [`check`] lists what is verified; every finding names the file, the line where there is one,
//! the section and the key.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fsfilter::{Altitude, LoadOrderGroup};

use crate::drivers::{Driver, Model};

/// The first Windows build whose Filter Manager reads instance definitions from
/// `<service>\Parameters\Instances`: Windows 11 24H2 is Windows 10.0 build 26100 (facts.md §2.5).
pub const PARAMETERS_LAYOUT_BUILD: u32 = 26100;

/// A file-system filter setup class: its load-order group, `Class` and `ClassGuid`, from
/// "File system filter driver classes and class GUIDs"
/// (<https://learn.microsoft.com/windows-hardware/drivers/ifs/file-system-filter-driver-classes-and-class-guids>).
/// The groups Filter, FSFilter Top and FSFilter Bottom have no setup class; FSFilter Imaging has
/// none either (the page: "No load order group defined; use FSFilter Compression"), nor have the
/// three Security groups of the allocated-altitudes page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupClass {
    /// The load-order group the class belongs to.
    pub group: &'static str,
    /// `Class`.
    pub class: &'static str,
    /// `ClassGuid`, lower case, without braces.
    pub guid: &'static str,
}

/// Every documented file-system filter setup class.
pub const SETUP_CLASSES: &[SetupClass] = &[
    class("FSFilter Activity Monitor", "ActivityMonitor", "b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2"),
    class("FSFilter Undelete", "Undelete", "fe8f1572-c67a-48c0-bbac-0b5c6d66cafb"),
    class("FSFilter Anti-Virus", "AntiVirus", "b1d1a169-c54f-4379-81db-bee7d88d7454"),
    class("FSFilter Replication", "Replication", "48d3ebc4-4cf8-48ff-b869-9c68ad42eb9f"),
    class("FSFilter Continuous Backup", "ContinuousBackup", "71aa14f8-6fad-4622-ad77-92bb9d7e6947"),
    class("FSFilter Content Screener", "ContentScreener", "3e3f0674-c83c-4558-bb26-9820e1eba5c5"),
    class("FSFilter Quota Management", "QuotaManagement", "8503c911-a6c7-4919-8f79-5028f5866b0c"),
    class("FSFilter System Recovery", "SystemRecovery", "2db15374-706e-4131-a0c7-d7c78eb0289a"),
    class(
        "FSFilter Cluster File System",
        "CFSMetaDataServer",
        "cdcf0939-b75b-4630-bf76-80f7ba655884",
    ),
    class("FSFilter HSM", "HSM", "d546500a-2aeb-45f6-9482-f4b1799c3177"),
    class("FSFilter Compression", "Compression", "f3586baf-b5aa-49b5-8d6c-0569284c639f"),
    class("FSFilter Encryption", "Encryption", "a0a701c0-a511-42ff-aa6c-06dc0395576f"),
    class("FSFilter Virtualization", "Virtualization", "f75a86c0-10d8-4c3a-b233-ed60e4cdfaac"),
    class(
        "FSFilter Physical Quota Management",
        "PhysicalQuotaManagement",
        "6a0a8e78-bba6-4fc4-a709-1e33cd09d67e",
    ),
    class("FSFilter Open File", "OpenFileBackup", "f8ecafa6-66d1-41a5-899b-66585d7216b7"),
    class("FSFilter Security Enhancer", "SecurityEnhancer", "d02bc3da-0c8e-4945-9bd5-f1883c226c8c"),
    class("FSFilter Copy Protection", "CopyProtection", "89786ff1-9c12-402f-9c9e-17753c7f4375"),
    class("FSFilter System", "FSFilterSystem", "5d1b9aaa-01e2-46af-849f-272b3f324c46"),
    class("FSFilter Infrastructure", "Infrastructure", "e55fa6f9-128c-4d04-abab-630c74b1453a"),
];

const fn class(group: &'static str, class: &'static str, guid: &'static str) -> SetupClass {
    SetupClass { group, class, guid }
}

impl SetupClass {
    /// The class named `class` (case-insensitive).
    pub fn by_class(class: &str) -> Option<&'static SetupClass> {
        SETUP_CLASSES.iter().find(|c| c.class.eq_ignore_ascii_case(class))
    }

    /// The class with this GUID (braces and case ignored).
    pub fn by_guid(guid: &str) -> Option<&'static SetupClass> {
        let guid = normalize_guid(guid);
        SETUP_CLASSES.iter().find(|c| c.guid == guid)
    }

    /// The class of a load-order group, if it has one.
    pub fn by_group(group: &str) -> Option<&'static SetupClass> {
        SETUP_CLASSES.iter().find(|c| c.group.eq_ignore_ascii_case(group))
    }
}

fn normalize_guid(guid: &str) -> String {
    guid.trim().trim_start_matches('{').trim_end_matches('}').to_ascii_lowercase()
}

/// One finding: the file, the line when there is one, the section and the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The INF, as given to the checker.
    pub file: String,
    /// The (first physical) line, 1-based.
    pub line: Option<usize>,
    /// The section, without brackets; empty for the file as a whole.
    pub section: String,
    /// The key, value name or registry path concerned; may be empty.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.section.is_empty() {
            write!(f, "[{}] ", self.section)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// One entry of a section: `key = values` or a value-only line, after string substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The line the entry starts on, 1-based.
    pub line: usize,
    /// The key, for `key = value` entries.
    pub key: Option<String>,
    /// The comma-separated values, quotes removed, escapes and `%strkey%` tokens resolved.
    pub values: Vec<String>,
}

impl Entry {
    /// The first value, or "".
    pub fn value(&self) -> &str {
        self.values.first().map_or("", String::as_str)
    }
}

/// A section and its entries (repeated sections merged, as Windows merges them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name as first written, without brackets.
    pub name: String,
    /// The line of the first header, 1-based.
    pub line: usize,
    /// The entries in file order.
    pub entries: Vec<Entry>,
}

impl Section {
    /// The first entry with this key (case-insensitive).
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)))
    }

    /// The first value of the first entry with this key.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.entry(key).map(Entry::value)
    }

    /// Every non-empty value of every entry with this key (`AddReg = A, B` on one or more lines).
    pub fn list(&self, key: &str) -> Vec<(usize, &str)> {
        self.entries
            .iter()
            .filter(|e| e.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .flat_map(|e| e.values.iter().map(move |v| (e.line, v.as_str())))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }
}

/// A parsed INF.
#[derive(Debug, Clone, Default)]
pub struct Inf {
    /// The file name used in findings.
    pub file: String,
    /// The sections in file order.
    pub sections: Vec<Section>,
}

/// A section before substitution: its name, header line and entries.
struct RawSection {
    name: String,
    line: usize,
    entries: Vec<RawEntry>,
}

/// An entry before substitution: its line, its key and the text right of `=` (or the line).
struct RawEntry {
    line: usize,
    key: Option<String>,
    rest: String,
}

/// A logical line before substitution: its first physical line and its text without comment.
struct RawLine {
    line: usize,
    text: String,
}

impl Inf {
    /// Parses `text`; syntax errors (an entry outside any section, an undefined `%strkey%`, a
    /// lone `%`, an unterminated quote) are returned beside what could be parsed.
    pub fn parse(file: &str, text: &str) -> (Inf, Vec<Violation>) {
        let mut violations = Vec::new();
        let mut error = |line: usize, section: &str, message: String| {
            violations.push(Violation {
                file: file.to_string(),
                line: Some(line),
                section: section.to_string(),
                key: String::new(),
                message,
            });
        };

        let mut raw: Vec<RawSection> = Vec::new();
        let mut current: Option<usize> = None;
        for RawLine { line, text } in logical_lines(text.strip_prefix('\u{feff}').unwrap_or(text)) {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if let Some(header) = text.strip_prefix('[') {
                let Some(end) = header.rfind(']') else {
                    error(line, "", format!("section header `{text}` has no closing `]`"));
                    current = None;
                    continue;
                };
                let name = header[..end].trim().to_string();
                current = Some(match raw.iter().position(|s| s.name.eq_ignore_ascii_case(&name)) {
                    Some(i) => i,
                    None => {
                        raw.push(RawSection { name, line, entries: Vec::new() });
                        raw.len() - 1
                    }
                });
                continue;
            }
            let Some(index) = current else {
                error(line, "", format!("`{text}` is outside any section"));
                continue;
            };
            let (key, rest) = match split_outside_quotes(text, '=') {
                Some((k, v)) => (Some(k.trim().to_string()), v.to_string()),
                None => (None, text.to_string()),
            };
            raw[index].entries.push(RawEntry { line, key, rest });
        }

        let strings: HashMap<String, String> = raw
            .iter()
            .filter(|s| s.name.eq_ignore_ascii_case("Strings"))
            .flat_map(|s| s.entries.iter())
            .filter_map(|e| Some((e.key.as_ref()?.to_ascii_lowercase(), unquote(&e.rest))))
            .collect();

        let mut inf = Inf { file: file.to_string(), sections: Vec::new() };
        for RawSection { name, line, entries } in raw {
            let is_strings = name.eq_ignore_ascii_case("Strings");
            let mut section = Section { name, line, entries: Vec::new() };
            for RawEntry { line, key, rest } in entries {
                if is_strings {
                    section.entries.push(Entry { line, key, values: vec![unquote(&rest)] });
                    continue;
                }
                let mut expand_or_report = |field: &str| match expand(field, &strings) {
                    Ok(v) => v,
                    Err(message) => {
                        error(line, &section.name, message);
                        String::new()
                    }
                };
                let key = key.map(|k| expand_or_report(&k));
                let values = split_fields(&rest).iter().map(|f| expand_or_report(f)).collect();
                section.entries.push(Entry { line, key, values });
            }
            inf.sections.push(section);
        }
        (inf, violations)
    }

    /// The section with this name (case-insensitive).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// The value `[Strings]` gives `key` (case-insensitive).
    pub fn string(&self, key: &str) -> Option<&str> {
        self.section("Strings")?.value(key)
    }
}

/// Joins continued lines and removes comments.
fn logical_lines(text: &str) -> Vec<RawLine> {
    let mut out = Vec::new();
    let mut pending: Option<RawLine> = None;
    for (index, physical) in text.lines().enumerate() {
        let (content, in_quote) = strip_comment(physical);
        let trimmed = content.trim_end();
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) if !in_quote => (body, true),
            _ => (trimmed, false),
        };
        let line = pending.get_or_insert_with(|| RawLine { line: index + 1, text: String::new() });
        line.text.push_str(body);
        if !continues {
            out.extend(pending.take());
        }
    }
    out.extend(pending);
    out
}

/// The line without its comment, and whether it ends inside a quoted string. A `;` starts a
/// comment unless it is inside a quoted string or a `%strkey%` token.
fn strip_comment(line: &str) -> (String, bool) {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut in_quote = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            in_quote = !in_quote;
        } else if c == '%' && !in_quote {
            if let Some(len) = chars[i + 1..].iter().position(|&d| d == '%') {
                out.extend(&chars[i..i + len + 2]);
                i += len + 2;
                continue;
            }
        } else if c == ';' && !in_quote {
            break;
        }
        out.push(c);
        i += 1;
    }
    (out, in_quote)
}

/// Splits at the first `sep` outside quotes.
fn split_outside_quotes(text: &str, sep: char) -> Option<(&str, &str)> {
    let mut in_quote = false;
    for (i, c) in text.char_indices() {
        if c == '"' {
            in_quote = !in_quote;
        } else if c == sep && !in_quote {
            return Some((&text[..i], &text[i + c.len_utf8()..]));
        }
    }
    None
}

/// The comma-separated fields of a value, still quoted.
fn split_fields(text: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut rest = text;
    while let Some((field, tail)) = split_outside_quotes(rest, ',') {
        fields.push(field.to_string());
        rest = tail;
    }
    fields.push(rest.to_string());
    fields
}

/// A `[Strings]` value: trimmed, surrounding quotes removed, `""` unescaped.
fn unquote(value: &str) -> String {
    let value = value.trim();
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => value.to_string(),
    }
}

/// A field with quotes removed, `""` and `%%` unescaped and `%strkey%` tokens replaced.
fn expand(field: &str, strings: &HashMap<String, String>) -> Result<String, String> {
    let chars: Vec<char> = field.trim().chars().collect();
    let mut out = String::new();
    let mut in_quote = false;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' if in_quote && chars.get(i + 1) == Some(&'"') => {
                out.push('"');
                i += 2;
            }
            '"' => {
                in_quote = !in_quote;
                i += 1;
            }
            '%' if chars.get(i + 1) == Some(&'%') => {
                out.push('%');
                i += 2;
            }
            '%' => {
                let Some(len) = chars[i + 1..].iter().position(|&c| c == '%') else {
                    return Err(format!(
                        "a lone `%` in `{}`: write `%%` for a percent sign",
                        field.trim()
                    ));
                };
                let key: String = chars[i + 1..i + 1 + len].iter().collect();
                if key.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) {
                    // A directory id (`%12%`), which Windows substitutes itself.
                    out.push_str(&format!("%{key}%"));
                } else {
                    let value = strings
                        .get(&key.to_ascii_lowercase())
                        .ok_or_else(|| format!("%{key}% is not defined in [Strings]"))?;
                    out.push_str(value);
                }
                i += len + 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    if in_quote {
        return Err(format!("unterminated quoted string in `{}`", field.trim()));
    }
    Ok(out)
}

/// A TargetOSVersion decoration: `nt<arch>[.major[.minor[.product[.suite[.build]]]]]`
/// (<https://learn.microsoft.com/windows-hardware/drivers/install/combining-platform-extensions-with-operating-system-versions>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The architecture, lower case (`amd64`); empty for a bare `nt`.
    pub arch: String,
    /// OSMajorVersion.
    pub major: Option<u32>,
    /// OSMinorVersion.
    pub minor: Option<u32>,
    /// BuildNumber (Windows 10 1607 and later understand it).
    pub build: Option<u32>,
}

impl Target {
    /// Parses a decoration; `None` when it is not of the documented form.
    pub fn parse(decoration: &str) -> Option<Target> {
        let mut parts = decoration.split('.');
        let platform = parts.next()?.to_ascii_lowercase();
        let arch = platform.strip_prefix("nt")?.to_string();
        let mut numbers = [None; 5];
        for (slot, part) in numbers.iter_mut().zip(parts.by_ref()) {
            *slot = if part.is_empty() { None } else { Some(parse_number(part)?) };
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Target { arch, major: numbers[0], minor: numbers[1], build: numbers[4] })
    }

    /// True when only Windows 11 24H2 (10.0 build 26100) and later use the section.
    pub fn is_24h2_or_later(&self) -> bool {
        match (self.major, self.minor, self.build) {
            (Some(major), _, _) if major > 10 => true,
            (Some(10), Some(0), Some(build)) => build >= PARAMETERS_LAYOUT_BUILD,
            (Some(10), Some(minor), _) => minor > 0,
            _ => false,
        }
    }
}

/// A decimal or `0x` hexadecimal number.
fn parse_number(text: &str) -> Option<u32> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A registry value an AddReg line writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    /// `REG_SZ` (AddReg flags 0x00000000).
    Sz(String),
    /// `REG_EXPAND_SZ` (0x00020000).
    ExpandSz(String),
    /// `REG_MULTI_SZ` (0x00010000).
    MultiSz(Vec<String>),
    /// `REG_DWORD` (0x00010001).
    Dword(u32),
    /// `REG_BINARY` (0x00000001).
    Binary(Vec<u8>),
}

impl RegValue {
    /// `REG_SZ`, `REG_DWORD`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            RegValue::Sz(_) => "REG_SZ",
            RegValue::ExpandSz(_) => "REG_EXPAND_SZ",
            RegValue::MultiSz(_) => "REG_MULTI_SZ",
            RegValue::Dword(_) => "REG_DWORD",
            RegValue::Binary(_) => "REG_BINARY",
        }
    }
}

impl fmt::Display for RegValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegValue::Sz(s) | RegValue::ExpandSz(s) => write!(f, "{} {s:?}", self.kind()),
            RegValue::MultiSz(v) => write!(f, "REG_MULTI_SZ {v:?}"),
            RegValue::Dword(d) => write!(f, "REG_DWORD {d:#x}"),
            RegValue::Binary(b) => write!(f, "REG_BINARY {b:02x?}"),
        }
    }
}

/// One value written under the service key by an AddReg line (`HKR,subkey,name,flags,value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegWrite {
    /// The add-registry section.
    pub section: String,
    /// Its line.
    pub line: usize,
    /// The subkey of the service key, as written (`Parameters\Instances\X`).
    pub subkey: String,
    /// The value name.
    pub name: String,
    /// The value.
    pub value: RegValue,
}

/// A service as one install section installs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// The DefaultInstall section.
    pub install: String,
    /// Its decoration.
    pub target: Target,
    /// The service-install section.
    pub section: String,
    /// The service name (AddService).
    pub name: String,
    /// `ServiceType`.
    pub service_type: Option<u32>,
    /// `StartType`.
    pub start_type: Option<u32>,
    /// `ErrorControl`.
    pub error_control: Option<u32>,
    /// `LoadOrderGroup`.
    pub group: Option<String>,
    /// `Dependencies`.
    pub dependencies: Vec<String>,
    /// `ServiceBinary`.
    pub binary: Option<String>,
    /// What its AddReg sections write under the service key.
    pub registry: Vec<RegWrite>,
}

impl Service {
    /// The values written directly under `<service>\Parameters`.
    pub fn parameters(&self) -> Vec<(String, RegValue)> {
        self.registry
            .iter()
            .filter(|w| w.subkey.eq_ignore_ascii_case("Parameters"))
            .map(|w| (w.name.clone(), w.value.clone()))
            .collect()
    }
}

/// Where a minifilter's instance definitions live (facts.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layout {
    /// `<service>\Parameters\Instances`: Windows 11 24H2 and later.
    Parameters,
    /// `<service>\Instances`: earlier Windows.
    Downlevel,
}

impl Layout {
    /// The subkey of the service key.
    pub fn root(self) -> &'static str {
        match self {
            Layout::Parameters => "Parameters\\Instances",
            Layout::Downlevel => "Instances",
        }
    }

    /// Which systems read it.
    pub fn readers(self) -> &'static str {
        match self {
            Layout::Parameters => "Windows 11 24H2 (build 26100) and later read",
            Layout::Downlevel => "Windows before 11 24H2 reads",
        }
    }
}

/// One instance definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance name (the subkey).
    pub name: String,
    /// `Altitude` as written.
    pub altitude: String,
    /// `Flags`.
    pub flags: u32,
}

/// The instance definitions of one layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    /// Which layout.
    pub layout: Layout,
    /// The service-install section whose AddReg writes it.
    pub service_section: String,
    /// `DefaultInstance`.
    pub default_instance: String,
    /// The instances, by lower-cased name.
    pub instances: Vec<Instance>,
}

impl Instances {
    fn same_definitions(&self, other: &Instances) -> bool {
        self.default_instance.eq_ignore_ascii_case(&other.default_instance)
            && self.instances.len() == other.instances.len()
            && self.instances.iter().zip(&other.instances).all(|(a, b)| {
                a.name.eq_ignore_ascii_case(&b.name)
                    && a.flags == b.flags
                    && Altitude::parse(&a.altitude).ok() == Altitude::parse(&b.altitude).ok()
            })
    }
}

impl fmt::Display for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DefaultInstance {:?}", self.default_instance)?;
        for i in &self.instances {
            write!(f, "; {:?} at {} with Flags {:#x}", i.name, i.altitude, i.flags)?;
        }
        Ok(())
    }
}

/// What an INF installs, as far as the checker understood it.
#[derive(Debug, Clone, Default)]
pub struct Package {
    /// `[Version] Class`.
    pub class: String,
    /// `[Version] ClassGuid`.
    pub class_guid: String,
    /// The service of each install section.
    pub services: Vec<Service>,
    /// The instance definitions found, per layout and service section.
    pub instances: Vec<Instances>,
}

impl Package {
    /// The service name (of the first install section).
    pub fn service_name(&self) -> Option<&str> {
        self.services.first().map(|s| s.name.as_str())
    }

    /// The parameters the (first) install section writes under `<service>\Parameters`.
    pub fn parameters(&self) -> Vec<(String, RegValue)> {
        self.services.first().map(Service::parameters).unwrap_or_default()
    }

    /// The instance definitions of `layout` (the first found).
    pub fn instances(&self, layout: Layout) -> Option<&Instances> {
        self.instances.iter().find(|i| i.layout == layout)
    }
}

/// The result of checking one INF.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file, as named in findings.
    pub file: String,
    /// What it installs.
    pub package: Package,
    /// Every finding; empty when the INF passed.
    pub violations: Vec<Violation>,
}

impl Report {
    /// No finding.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks the INF `text` (named `file` in findings) of a driver built as `model`; `binary`, when
/// given, is the .sys the INF must install.
///
/// Verified, each with a finding naming file, line, section and key:
/// - the syntax (above) and ASCII text (an INF without a byte-order mark is read as ANSI);
/// - `[Version]`: `Signature = "$WINDOWS NT$"`, a documented `Class` with its own `ClassGuid`,
///   `Provider`, `DriverVer` as `mm/dd/yyyy,w.x.y.z`, `CatalogFile`;
/// - install sections: only architecture-decorated `[DefaultInstall.NTamd64...]` sections
///   (primitive drivers, Windows 10 1903 and later), each with `CopyFiles` whose file lists have a
///   `[DestinationDirs]` entry, a `.Services` section whose `AddService` names a service-install
///   section; `[DefaultUninstall...]` only with `LegacyUninstall = 1` and no `DelFiles` in the
///   Driver Store (DIRID 13), and whose `.Services` section's `DelService` names the service
///   installed;
/// - the service: `ServiceType = 2` (SERVICE_FILE_SYSTEM_DRIVER), `StartType` 0 to 4,
///   `ErrorControl = 1`, a `LoadOrderGroup` that is a file-system filter group whose setup class
///   is the INF's `Class`, a `ServiceBinary` that is copied by the same install section to the
///   same directory and listed in `[SourceDisksFiles]` (and is `binary`); every install section
///   installs the same service with the same values and the same `Parameters`;
/// - minifilters: `Dependencies` includes FltMgr; the instance keys of both layouts of
///   facts.md §2.5 (`Parameters\Instances`, read from Windows 11 24H2, and `Instances`, read
///   before), each install section writing the layout of the systems that select it; in each
///   layout a `DefaultInstance` naming an instance that exists, and for every instance an
///   `Altitude` (REG_SZ) inside the range of the service's load-order group
///   ([`fsfilter::LoadOrderGroup`]) and `Flags` as REG_DWORD; the layouts identical;
/// - legacy filters: no `Dependencies` on FltMgr and no instance keys at all.
pub fn check(file: &str, text: &str, model: Model, binary: Option<&str>) -> Report {
    let (inf, violations) = Inf::parse(file, text);
    let mut checker = Checker { inf: &inf, violations, package: Package::default() };
    checker.ascii(text);
    checker.version();
    checker.installs(binary);
    checker.uninstalls();
    checker.consistency();
    match model {
        Model::Minifilter => checker.minifilter(),
        Model::Legacy => checker.legacy(),
    }
    Report { file: file.to_string(), package: checker.package, violations: checker.violations }
}

struct Checker<'a> {
    inf: &'a Inf,
    violations: Vec<Violation>,
    package: Package,
}

impl Checker<'_> {
    fn report(&mut self, line: Option<usize>, section: &str, key: &str, message: String) {
        self.violations.push(Violation {
            file: self.inf.file.clone(),
            line,
            section: section.to_string(),
            key: key.to_string(),
            message,
        });
    }

    fn ascii(&mut self, text: &str) {
        if let Some((index, _)) = text.lines().enumerate().find(|(_, l)| !l.is_ascii()) {
            self.report(
                Some(index + 1),
                "",
                "",
                "non-ASCII text: Windows reads an INF without a byte-order mark as ANSI; keep \
                 INFs ASCII"
                    .into(),
            );
        }
    }

    fn version(&mut self) {
        let Some(version) = self.inf.section("Version") else {
            self.report(None, "Version", "", "missing: every INF starts with [Version]".into());
            return;
        };
        let at = |key: &str| version.entry(key).map(|e| e.line);
        let signature = version.value("Signature").unwrap_or("");
        if !signature.eq_ignore_ascii_case("$WINDOWS NT$") {
            self.report(
                at("Signature").or(Some(version.line)),
                "Version",
                "Signature",
                format!("is {signature:?}, not \"$WINDOWS NT$\""),
            );
        }
        let class = version.value("Class").unwrap_or("").to_string();
        let guid = version.value("ClassGuid").unwrap_or("").to_string();
        self.package.class = class.clone();
        self.package.class_guid = guid.clone();
        match SetupClass::by_class(&class) {
            None => self.report(
                at("Class").or(Some(version.line)),
                "Version",
                "Class",
                format!(
                    "{class:?} is not a file-system filter setup class \
                     (ifs/file-system-filter-driver-classes-and-class-guids)"
                ),
            ),
            Some(expected) if normalize_guid(&guid) != expected.guid => {
                let owner = SetupClass::by_guid(&guid)
                    .map(|c| format!("the GUID of class {}", c.class))
                    .unwrap_or_else(|| "not a file-system filter class GUID".into());
                self.report(
                    at("ClassGuid").or(Some(version.line)),
                    "Version",
                    "ClassGuid",
                    format!(
                        "{guid} is {owner}; class {} has {{{}}}",
                        expected.class, expected.guid
                    ),
                );
            }
            Some(_) => {}
        }
        if version.value("Provider").unwrap_or("").trim().is_empty() {
            self.report(at("Provider"), "Version", "Provider", "missing or empty".into());
        }
        match version.entry("DriverVer") {
            None => self.report(None, "Version", "DriverVer", "missing".into()),
            Some(e) if !driver_ver_ok(&e.values) => self.report(
                Some(e.line),
                "Version",
                "DriverVer",
                format!("{:?} is not mm/dd/yyyy,w.x.y.z", e.values.join(",")),
            ),
            Some(_) => {}
        }
        if version.entry("CatalogFile").is_none() {
            self.report(None, "Version", "CatalogFile", "missing".into());
        }
    }

    /// `[DestinationDirs]` entry of a file-list section: its directory id.
    fn destination(&self, list: &str) -> Option<u32> {
        let dirs = self.inf.section("DestinationDirs")?;
        dirs.value(list).and_then(parse_number)
    }

    fn installs(&mut self, binary: Option<&str>) {
        let installs: Vec<&Section> = self
            .inf
            .sections
            .iter()
            .filter(|s| {
                let name = s.name.to_ascii_lowercase();
                name.starts_with("defaultinstall") && !name.ends_with(".services")
            })
            .collect();
        if installs.is_empty() {
            self.report(
                None,
                "DefaultInstall.NTamd64",
                "",
                "missing: right-click Install, pnputil and InstallHinfSection start there".into(),
            );
        }
        for install in installs {
            let decoration = &install.name["DefaultInstall".len()..];
            let Some(target) = decoration.strip_prefix('.').and_then(Target::parse) else {
                self.report(
                    Some(install.line),
                    &install.name,
                    "",
                    "needs an architecture decoration such as .NTamd64: Windows 10 1903 and \
                     later install DefaultInstall-based INFs as primitive drivers only then \
                     (develop/creating-a-primitive-driver)"
                        .into(),
                );
                continue;
            };
            if target.arch != "amd64" {
                self.report(
                    Some(install.line),
                    &install.name,
                    "",
                    "the drivers are built for x64 only: decorate with .NTamd64".into(),
                );
                continue;
            }
            if let Some(service) = self.service(install, target, binary) {
                self.package.services.push(service);
            }
        }
    }

    /// The service an install section installs.
    fn service(
        &mut self,
        install: &Section,
        target: Target,
        binary: Option<&str>,
    ) -> Option<Service> {
        // Files copied, with their directory ids.
        let mut copied: Vec<(String, Option<u32>)> = Vec::new();
        let lists = install.list("CopyFiles");
        if lists.is_empty() {
            self.report(Some(install.line), &install.name, "CopyFiles", "missing".into());
        }
        for (line, list) in lists {
            let dirid = self.destination(list);
            if dirid.is_none() {
                self.report(
                    Some(line),
                    &install.name,
                    "CopyFiles",
                    format!("[{list}] has no [DestinationDirs] entry"),
                );
            }
            match self.inf.section(list) {
                None => self.report(
                    Some(line),
                    &install.name,
                    "CopyFiles",
                    format!("section [{list}] does not exist"),
                ),
                Some(files) => {
                    for entry in &files.entries {
                        let name = entry.key.clone().unwrap_or_else(|| entry.value().to_string());
                        copied.push((name, dirid));
                    }
                }
            }
        }

        let services_name = format!("{}.Services", install.name);
        let Some(services) = self.inf.section(&services_name) else {
            self.report(
                Some(install.line),
                &services_name,
                "",
                "missing: it holds the AddService directive".into(),
            );
            return None;
        };
        let Some(add) = services.entry("AddService") else {
            self.report(Some(services.line), &services.name, "AddService", "missing".into());
            return None;
        };
        let name = add.value().to_string();
        let section_name = add.values.get(2).cloned().unwrap_or_default();
        let Some(section) = self.inf.section(&section_name) else {
            self.report(
                Some(add.line),
                &services.name,
                "AddService",
                format!("service-install section [{section_name}] does not exist"),
            );
            return None;
        };
        let number = |key: &str| section.value(key).and_then(parse_number);
        let mut service = Service {
            install: install.name.clone(),
            target,
            section: section.name.clone(),
            name,
            service_type: number("ServiceType"),
            start_type: number("StartType"),
            error_control: number("ErrorControl"),
            group: section.value("LoadOrderGroup").map(str::to_string),
            dependencies: section.list("Dependencies").iter().map(|(_, d)| d.to_string()).collect(),
            binary: section.value("ServiceBinary").map(str::to_string),
            registry: Vec::new(),
        };
        let line = |key: &str| section.entry(key).map(|e| e.line).or(Some(section.line));

        if service.service_type != Some(2) {
            self.report(
                line("ServiceType"),
                &section.name,
                "ServiceType",
                format!(
                    "is {:?}; a file-system filter is 2 (SERVICE_FILE_SYSTEM_DRIVER)",
                    section.value("ServiceType")
                ),
            );
        }
        if !matches!(service.start_type, Some(0..=4)) {
            self.report(
                line("StartType"),
                &section.name,
                "StartType",
                format!("is {:?}; a start type is 0 to 4", section.value("StartType")),
            );
        }
        if service.error_control != Some(1) {
            self.report(
                line("ErrorControl"),
                &section.name,
                "ErrorControl",
                format!(
                    "is {:?}; file-system filters use 1 (SERVICE_ERROR_NORMAL)",
                    section.value("ErrorControl")
                ),
            );
        }
        self.group(&service, section);
        self.binary(&service, section, &copied, binary);
        for (line, list) in section.list("AddReg") {
            match self.inf.section(list) {
                None => self.report(
                    Some(line),
                    &section.name,
                    "AddReg",
                    format!("section [{list}] does not exist"),
                ),
                Some(add_reg) => service.registry.extend(self.registry(add_reg)),
            }
        }
        Some(service)
    }

    fn group(&mut self, service: &Service, section: &Section) {
        let line = section.entry("LoadOrderGroup").map(|e| e.line).or(Some(section.line));
        let Some(group) = service.group.as_deref() else {
            self.report(
                line,
                &section.name,
                "LoadOrderGroup",
                "missing: file-system filters name their load-order group".into(),
            );
            return;
        };
        if LoadOrderGroup::by_name(group).is_none() {
            self.report(
                line,
                &section.name,
                "LoadOrderGroup",
                format!("{group:?} is not a file-system filter load-order group"),
            );
            return;
        }
        if let Some(expected) = SetupClass::by_group(group) {
            if !expected.class.eq_ignore_ascii_case(&self.package.class) {
                let class = self.package.class.clone();
                self.report(
                    line,
                    &section.name,
                    "LoadOrderGroup",
                    format!(
                        "{group:?} belongs to class {} ({{{}}}), but [Version] Class is {class:?}",
                        expected.class, expected.guid
                    ),
                );
            }
        }
    }

    fn binary(
        &mut self,
        service: &Service,
        section: &Section,
        copied: &[(String, Option<u32>)],
        expected: Option<&str>,
    ) {
        let line = section.entry("ServiceBinary").map(|e| e.line).or(Some(section.line));
        let Some(path) = service.binary.as_deref() else {
            self.report(line, &section.name, "ServiceBinary", "missing".into());
            return;
        };
        let (dir, file) = path.rsplit_once('\\').unwrap_or(("", path));
        let dirid = dir.strip_prefix('%').and_then(|d| d.strip_suffix('%')).and_then(parse_number);
        if let Some(expected) = expected {
            if !file.eq_ignore_ascii_case(expected) {
                self.report(
                    line,
                    &section.name,
                    "ServiceBinary",
                    format!("installs {file}, not {expected}"),
                );
            }
        }
        match copied.iter().find(|(name, _)| name.eq_ignore_ascii_case(file)) {
            None => self.report(
                line,
                &section.name,
                "ServiceBinary",
                format!("{file} is not copied by [{}]", service.install),
            ),
            Some((_, copied_to)) if dirid.is_none() || *copied_to != dirid => self.report(
                line,
                &section.name,
                "ServiceBinary",
                format!(
                    "{path} is not where [{}] copies {file} (DIRID {})",
                    service.install,
                    copied_to.map_or("?".into(), |d| d.to_string())
                ),
            ),
            Some(_) => {}
        }
        let listed = self.inf.section("SourceDisksFiles").is_some_and(|s| {
            s.entry(file).is_some() || s.entries.iter().any(|e| e.value() == file)
        });
        if !listed {
            self.report(
                line,
                &section.name,
                "ServiceBinary",
                format!("{file} is not listed in [SourceDisksFiles]"),
            );
        }
    }

    /// The values an add-registry section writes under the service key.
    fn registry(&mut self, section: &Section) -> Vec<RegWrite> {
        let mut writes = Vec::new();
        for entry in &section.entries {
            let fields = &entry.values;
            let field = |i: usize| fields.get(i).map_or("", String::as_str);
            let key = format!("{}\\{}", field(1), field(2));
            if !field(0).eq_ignore_ascii_case("HKR") {
                self.report(
                    Some(entry.line),
                    &section.name,
                    &key,
                    format!(
                        "root {:?}: a service's AddReg writes under its own key (HKR)",
                        field(0)
                    ),
                );
                continue;
            }
            let Some(flags) = (if field(3).is_empty() { Some(0) } else { parse_number(field(3)) })
            else {
                self.report(
                    Some(entry.line),
                    &section.name,
                    &key,
                    format!("AddReg flags {:?} are not a number", field(3)),
                );
                continue;
            };
            const NOCLOBBER: u32 = 0x2;
            let value = match flags & !NOCLOBBER {
                0x0000_0000 => Some(RegValue::Sz(field(4).to_string())),
                0x0002_0000 => Some(RegValue::ExpandSz(field(4).to_string())),
                0x0001_0000 => Some(RegValue::MultiSz(fields.iter().skip(4).cloned().collect())),
                0x0001_0001 => parse_number(field(4)).map(RegValue::Dword),
                0x0000_0001 => fields
                    .iter()
                    .skip(4)
                    .map(|b| u8::from_str_radix(b.trim(), 16).ok())
                    .collect::<Option<Vec<u8>>>()
                    .map(RegValue::Binary),
                _ => {
                    self.report(
                        Some(entry.line),
                        &section.name,
                        &key,
                        format!("AddReg flags {flags:#010x} are not modelled by this checker"),
                    );
                    continue;
                }
            };
            let Some(value) = value else {
                self.report(
                    Some(entry.line),
                    &section.name,
                    &key,
                    format!("value {:?} does not fit flags {flags:#010x}", field(4)),
                );
                continue;
            };
            writes.push(RegWrite {
                section: section.name.clone(),
                line: entry.line,
                subkey: field(1).trim_matches('\\').to_string(),
                name: field(2).to_string(),
                value,
            });
        }
        writes
    }

    fn uninstalls(&mut self) {
        let sections: Vec<&Section> = self
            .inf
            .sections
            .iter()
            .filter(|s| {
                let name = s.name.to_ascii_lowercase();
                name.starts_with("defaultuninstall") && !name.ends_with(".services")
            })
            .collect();
        let installed: Vec<String> = self.package.services.iter().map(|s| s.name.clone()).collect();
        for section in sections {
            let services_name = format!("{}.Services", section.name);
            if let (Some(services), Some(first)) =
                (self.inf.section(&services_name), installed.first())
            {
                for entry in services.entries.iter().filter(|e| {
                    e.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("DelService"))
                }) {
                    let name = entry.value();
                    if !installed.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                        self.report(
                            Some(entry.line),
                            &services.name,
                            "DelService",
                            format!(
                                "{name:?} is not the service the install sections add \
                                 ({first:?}): the uninstall would leave it registered"
                            ),
                        );
                    }
                }
            }
            if section.value("LegacyUninstall").and_then(parse_number) != Some(1) {
                self.report(
                    Some(section.line),
                    &section.name,
                    "LegacyUninstall",
                    "must be 1: primitive drivers may only carry a DefaultUninstall section \
                     that Windows 10 1903 and later ignore (develop/creating-a-primitive-driver)"
                        .into(),
                );
            }
            for (line, list) in section.list("DelFiles") {
                if self.destination(list) == Some(13) {
                    self.report(
                        Some(line),
                        &section.name,
                        "DelFiles",
                        format!(
                            "[{list}] is in the Driver Store (DIRID 13), where DelFiles must not \
                             be used (install/using-dirids)"
                        ),
                    );
                }
            }
        }
    }

    /// Every install section installs the same service.
    fn consistency(&mut self) {
        let services = self.package.services.clone();
        let Some((first, others)) = services.split_first() else { return };
        for other in others {
            let mut differs = |key: &str, a: String, b: String| {
                if !a.eq_ignore_ascii_case(&b) {
                    self.report(
                        None,
                        &other.section,
                        key,
                        format!("{b} differs from {a} in [{}]", first.section),
                    );
                }
            };
            differs("AddService", first.name.clone(), other.name.clone());
            differs(
                "ServiceType",
                format!("{:?}", first.service_type),
                format!("{:?}", other.service_type),
            );
            differs(
                "StartType",
                format!("{:?}", first.start_type),
                format!("{:?}", other.start_type),
            );
            differs(
                "ErrorControl",
                format!("{:?}", first.error_control),
                format!("{:?}", other.error_control),
            );
            differs("LoadOrderGroup", format!("{:?}", first.group), format!("{:?}", other.group));
            differs(
                "Dependencies",
                format!("{:?}", first.dependencies),
                format!("{:?}", other.dependencies),
            );
            let (a, b) = (first.parameters(), other.parameters());
            if a != b {
                self.report(
                    None,
                    &other.section,
                    "Parameters",
                    format!("{b:?} differ from {a:?} in [{}]", first.section),
                );
            }
        }
    }

    fn minifilter(&mut self) {
        let services = self.package.services.clone();
        let any_24h2 = services.iter().any(|s| s.target.is_24h2_or_later());
        let mut reported = Vec::new();
        for service in &services {
            if !service.dependencies.iter().any(|d| d.eq_ignore_ascii_case("FltMgr")) {
                self.report(
                    None,
                    &service.section,
                    "Dependencies",
                    format!(
                        "{:?} lacks FltMgr: every minifilter depends on the Filter Manager \
                         (ifs/creating-an-inf-file-for-a-minifilter-driver)",
                        service.dependencies
                    ),
                );
            }
            // The layouts the systems that select this install section read.
            let wanted: &[Layout] = if service.target.is_24h2_or_later() {
                &[Layout::Parameters]
            } else if any_24h2 {
                &[Layout::Downlevel]
            } else {
                &[Layout::Parameters, Layout::Downlevel]
            };
            for layout in [Layout::Parameters, Layout::Downlevel] {
                match self.instances(service, layout) {
                    Some(instances) => self.package.instances.push(instances),
                    None if wanted.contains(&layout) => {
                        reported.push(layout);
                        self.report(
                            None,
                            &service.section,
                            "AddReg",
                            format!(
                                "writes no {} keys: {} the instance definitions only there \
                                 (facts.md section 2.5), and [{}] is the install section they \
                                 use",
                                layout.root(),
                                layout.readers(),
                                service.install
                            ),
                        );
                    }
                    None => {}
                }
            }
        }
        let all = self.package.instances.clone();
        for layout in [Layout::Parameters, Layout::Downlevel] {
            if !services.is_empty()
                && !all.iter().any(|i| i.layout == layout)
                && !reported.contains(&layout)
            {
                self.report(
                    None,
                    "",
                    layout.root(),
                    format!(
                        "no install section writes this layout: {} the instance definitions \
                         only there (facts.md section 2.5)",
                        layout.readers()
                    ),
                );
            }
        }
        if let Some((first, others)) = all.split_first() {
            for other in others {
                if !first.same_definitions(other) {
                    self.report(
                        None,
                        &other.service_section,
                        other.layout.root(),
                        format!(
                            "differs from {} in [{}]: {other} versus {first}",
                            first.layout.root(),
                            first.service_section
                        ),
                    );
                }
            }
        }
    }

    /// The instance definitions of `layout` that `service` writes, checked; `None` when it
    /// writes none.
    fn instances(&mut self, service: &Service, layout: Layout) -> Option<Instances> {
        let root = layout.root().to_ascii_lowercase();
        let writes: Vec<&RegWrite> = service
            .registry
            .iter()
            .filter(|w| {
                let key = w.subkey.to_ascii_lowercase();
                key == root || key.starts_with(&format!("{root}\\"))
            })
            .collect();
        if writes.is_empty() {
            return None;
        }
        let group = service.group.as_deref().and_then(LoadOrderGroup::by_name);
        let mut result = Instances {
            layout,
            service_section: service.section.clone(),
            default_instance: String::new(),
            instances: Vec::new(),
        };
        let mut default_at = None;
        // Instance name -> (altitude write, flags write).
        let mut found: Vec<(String, Option<&RegWrite>, Option<&RegWrite>)> = Vec::new();
        for w in &writes {
            let rest = &w.subkey[layout.root().len()..];
            match rest.strip_prefix('\\') {
                None if w.name.eq_ignore_ascii_case("DefaultInstance") => {
                    default_at = Some(*w);
                }
                None => {}
                Some(name) if !name.contains('\\') => {
                    let slot = match found.iter().position(|f| f.0.eq_ignore_ascii_case(name)) {
                        Some(i) => i,
                        None => {
                            found.push((name.to_string(), None, None));
                            found.len() - 1
                        }
                    };
                    if w.name.eq_ignore_ascii_case("Altitude") {
                        found[slot].1 = Some(*w);
                    } else if w.name.eq_ignore_ascii_case("Flags") {
                        found[slot].2 = Some(*w);
                    }
                }
                Some(_) => {}
            }
        }
        let first = writes[0];
        match default_at {
            None => self.report(
                Some(first.line),
                &first.section,
                &format!("{}\\DefaultInstance", layout.root()),
                "missing: the Filter Manager uses the default instance for automatic attachment"
                    .into(),
            ),
            Some(w) => match &w.value {
                RegValue::Sz(name) => result.default_instance = name.clone(),
                other => self.report(
                    Some(w.line),
                    &w.section,
                    &format!("{}\\DefaultInstance", layout.root()),
                    format!("must be REG_SZ (AddReg flags 0x00000000), found {other}"),
                ),
            },
        }
        for (name, altitude, flags) in found {
            let key = |value: &str| format!("{}\\{name}\\{value}", layout.root());
            let mut instance = Instance { name: name.clone(), altitude: String::new(), flags: 0 };
            match altitude {
                None => self.report(
                    Some(first.line),
                    &first.section,
                    &key("Altitude"),
                    "missing: every instance needs an altitude".into(),
                ),
                Some(w) => match &w.value {
                    RegValue::Sz(text) => {
                        instance.altitude = text.clone();
                        self.altitude(w, &key("Altitude"), text, group);
                    }
                    other => self.report(
                        Some(w.line),
                        &w.section,
                        &key("Altitude"),
                        format!("must be REG_SZ (AddReg flags 0x00000000), found {other}"),
                    ),
                },
            }
            match flags {
                None => self.report(
                    Some(first.line),
                    &first.section,
                    &key("Flags"),
                    "missing: every instance needs Flags (REG_DWORD)".into(),
                ),
                Some(w) => match &w.value {
                    RegValue::Dword(f) => instance.flags = *f,
                    other => self.report(
                        Some(w.line),
                        &w.section,
                        &key("Flags"),
                        format!("must be REG_DWORD (AddReg flags 0x00010001), found {other}"),
                    ),
                },
            }
            result.instances.push(instance);
        }
        result.instances.sort_by_key(|i| i.name.to_ascii_lowercase());
        if let Some(w) = default_at {
            if !result.default_instance.is_empty()
                && !result
                    .instances
                    .iter()
                    .any(|i| i.name.eq_ignore_ascii_case(&result.default_instance))
            {
                self.report(
                    Some(w.line),
                    &w.section,
                    &format!("{}\\DefaultInstance", layout.root()),
                    format!(
                        "names {:?}, which has no {}\\{} key with an Altitude",
                        result.default_instance,
                        layout.root(),
                        result.default_instance
                    ),
                );
            }
        }
        Some(result)
    }

    fn altitude(&mut self, w: &RegWrite, key: &str, text: &str, group: Option<&LoadOrderGroup>) {
        match Altitude::parse(text) {
            Err(e) => self.report(Some(w.line), &w.section, key, format!("{text:?}: {e}")),
            Ok(altitude) => {
                if let Some(group) = group {
                    if !group.contains(&altitude) {
                        self.report(
                            Some(w.line),
                            &w.section,
                            key,
                            format!(
                                "{text} is outside {} ({}-{})",
                                group.name, group.low, group.high
                            ),
                        );
                    }
                }
            }
        }
    }

    fn legacy(&mut self) {
        let services = self.package.services.clone();
        for service in &services {
            if service.dependencies.iter().any(|d| d.eq_ignore_ascii_case("FltMgr")) {
                self.report(
                    None,
                    &service.section,
                    "Dependencies",
                    "names FltMgr: a legacy filter does not use the Filter Manager".into(),
                );
            }
            for w in &service.registry {
                let key = w.subkey.to_ascii_lowercase();
                let instances = ["instances", "parameters\\instances"];
                if instances.iter().any(|r| key == *r || key.starts_with(&format!("{r}\\"))) {
                    self.report(
                        Some(w.line),
                        &w.section,
                        &format!("{}\\{}", w.subkey, w.name),
                        "a legacy filter has no instances: instance keys belong to minifilters"
                            .into(),
                    );
                }
            }
        }
    }
}

/// `mm/dd/yyyy,w.x.y.z`.
fn driver_ver_ok(values: &[String]) -> bool {
    let [date, version] = values else { return false };
    let date: Vec<&str> = date.trim().split('/').collect();
    let date_ok = match date.as_slice() {
        [m, d, y] => {
            matches!(m.parse::<u32>(), Ok(1..=12))
                && matches!(d.parse::<u32>(), Ok(1..=31))
                && y.len() == 4
                && y.parse::<u32>().is_ok()
        }
        _ => false,
    };
    let parts: Vec<&str> = version.trim().split('.').collect();
    let version_ok =
        (1..=4).contains(&parts.len()) && parts.iter().all(|p| p.parse::<u16>().is_ok());
    date_ok && version_ok
}

/// Where a driver's INF is: `samples/<sample>/<model>/<sample>-<model>.inf`, beside its
/// `Cargo.toml`.
pub fn inf_path(root: &Path, driver: &Driver) -> PathBuf {
    root.join("samples")
        .join(&driver.sample)
        .join(driver.model.as_str())
        .join(format!("{}.inf", driver.name()))
}

/// The model an INF is for, from its name (`*-minifilter.inf`, `*-legacy.inf`).
pub fn model_from_file_name(path: &Path) -> Option<Model> {
    let stem = path.file_stem()?.to_str()?.to_ascii_lowercase();
    if stem.ends_with("-minifilter") {
        Some(Model::Minifilter)
    } else if stem.ends_with("-legacy") {
        Some(Model::Legacy)
    } else {
        None
    }
}

/// Reads and checks an INF file.
pub fn check_file(path: &Path, model: Model, binary: Option<&str>) -> Result<Report> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(check(&path.display().to_string(), &text, model, binary))
}

/// Checks a sample driver's INF (named relative to the workspace root in findings).
pub fn check_driver(root: &Path, driver: &Driver) -> Result<Report> {
    let path = inf_path(root, driver);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("{}: reading its INF {}", driver.sys_name(), path.display()))?;
    let name = path.strip_prefix(root).unwrap_or(&path).display().to_string();
    Ok(check(&name, &text, driver.model, Some(&driver.sys_name())))
}

/// Checks a sample driver's INF and copies it to `out_dir/<sample>-<model>.inf`, beside the
/// .sys, so that the directory holds a complete package.
pub fn package(root: &Path, driver: &Driver, out_dir: &Path) -> Result<(Report, PathBuf)> {
    let report = check_driver(root, driver)?;
    let to = out_dir.join(format!("{}.inf", driver.name()));
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    fs::copy(inf_path(root, driver), &to)
        .with_context(|| format!("copying {}'s INF to {}", driver.sys_name(), to.display()))?;
    Ok((report, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Inf {
        let (inf, violations) = Inf::parse("t.inf", text);
        assert!(violations.is_empty(), "{violations:?}");
        inf
    }

    #[test]
    fn comments_quotes_tokens_and_escapes() {
        let inf = parse(
            "; header\n\
             [A]\n\
             Key = \"x;y\" , %Name% ; comment\n\
             HKR,\"Parameters\\Instances\\\"%Name%,\"V\",0,\"50%% \"\"quoted\"\"\"\n\
             Dir = %12%\\file.sys\n\
             [strings]\n\
             Name = \"My Instance\"\n",
        );
        let a = inf.section("a").unwrap();
        assert_eq!(a.entry("key").unwrap().values, ["x;y", "My Instance"]);
        assert_eq!(
            a.entries[1].values,
            ["HKR", "Parameters\\Instances\\My Instance", "V", "0", "50% \"quoted\""]
        );
        assert_eq!(a.value("Dir"), Some("%12%\\file.sys"));
        assert_eq!(inf.string("NAME"), Some("My Instance"));
    }

    #[test]
    fn continuation_lines_and_merged_sections() {
        let inf = parse(
            "[S]\n\
             CopyFiles = \"Dir\\\"\\ ; comment\n\
             ,File\n\
             [T]\n\
             X = 1\n\
             [s]\n\
             Y = 2\n",
        );
        let s = inf.section("S").unwrap();
        assert_eq!(s.entry("CopyFiles").unwrap().values, ["Dir\\", "File"]);
        assert_eq!(s.entry("CopyFiles").unwrap().line, 2);
        assert_eq!(s.value("Y"), Some("2"));
        assert_eq!(inf.sections.len(), 2);
    }

    #[test]
    fn syntax_errors_name_file_line_and_section() {
        let (_, v) = Inf::parse("t.inf", "X = 1\n[A]\nK = %Nope%\nL = 100%\nM = \"open\n");
        let text: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:?}");
        assert!(text[0].starts_with("t.inf:1: `X = 1` is outside any section"), "{text:?}");
        assert!(text[1].contains("t.inf:3: [A] %Nope% is not defined in [Strings]"), "{text:?}");
        assert!(text[2].contains("t.inf:4: [A] a lone `%`"), "{text:?}");
        assert!(text[3].contains("t.inf:5: [A] unterminated quoted string"), "{text:?}");
    }

    #[test]
    fn decorations() {
        let t = Target::parse("NTamd64.10.0...26100").unwrap();
        assert_eq!(
            (t.arch.as_str(), t.major, t.minor, t.build),
            ("amd64", Some(10), Some(0), Some(26100))
        );
        assert!(t.is_24h2_or_later());
        assert!(!Target::parse("NTamd64.10.0...22631").unwrap().is_24h2_or_later());
        assert!(!Target::parse("NTamd64").unwrap().is_24h2_or_later());
        assert!(!Target::parse("ntamd64.6.3").unwrap().is_24h2_or_later());
        assert_eq!(Target::parse("nt").unwrap().arch, "");
        assert!(Target::parse("amd64").is_none());
        assert!(Target::parse("NTamd64.10.x").is_none());
        assert!(Target::parse("NTamd64.1.2.3.4.5.6").is_none());
    }

    #[test]
    fn setup_classes_match_the_altitude_groups() {
        for class in SETUP_CLASSES {
            assert!(LoadOrderGroup::by_name(class.group).is_some(), "{}", class.group);
            assert_eq!(
                SetupClass::by_guid(&format!("{{{}}}", class.guid.to_uppercase())),
                Some(class)
            );
        }
        assert!(SetupClass::by_group("FSFilter Top").is_none());
    }

    #[test]
    fn driver_versions() {
        let v = |s: &str| driver_ver_ok(&s.split(',').map(str::to_string).collect::<Vec<_>>());
        assert!(v("11/22/2026,0.1.0.0"));
        assert!(v("1/2/2001,1.0"));
        assert!(!v("13/22/2026,0.1.0.0"));
        assert!(!v("11/22/26,0.1.0.0"));
        assert!(!v("11/22/2026"));
        assert!(!v("11/22/2026,1.2.3.4.5"));
        assert!(!v("11/22/2026,70000.0"));
    }
}
