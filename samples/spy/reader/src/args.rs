//! The command line: split into arguments as the Microsoft C runtime splits it, then read as the
//! reader's options.
//!
//! `spy-reader [--legacy] [--name <channel>] [--once] [--interval <ms>]`
//!
//! The splitting rules are those of Learn's "Parsing C command-line arguments": arguments are
//! separated by spaces and tabs; the first (the program) ends at the first space or tab outside
//! double quotes, and its quotes are dropped, nothing else; in the others a double-quoted part
//! may hold spaces, `2n` backslashes before a double quote are `n` backslashes and the quote
//! delimits, `2n + 1` are `n` backslashes and a literal quote, other backslashes are literal, and
//! inside quotes a doubled quote is a literal quote (that ends the quoted part).

use core::fmt;

use fsfilter::MAX_CHANNEL_NAME;

/// The longest argument kept, in UTF-16 units; a longer one is marked too long.
pub const ARG_UNITS: usize = 128;

/// The default poll interval, in milliseconds.
pub const DEFAULT_INTERVAL_MS: u32 = 500;

/// The longest poll interval accepted, in milliseconds (an hour).
pub const MAX_INTERVAL_MS: u32 = 3_600_000;

/// The usage text.
pub const USAGE: &str = "\
usage: spy-reader [--legacy] [--name <channel>] [--once] [--interval <ms>]

Prints the spy filter's log: one line per operation it recorded, and how many it could not.

  --legacy         read spy-legacy.sys (the control device \\\\.\\<channel>); by default
                   spy-minifilter.sys (the communication port \\<channel>)
  --name <channel> the channel's name (default FsFilterSpy)
  --once           read one batch and exit
  --interval <ms>  poll every <ms> milliseconds, 1 to 3600000 (default 500), until Ctrl+C
  --help           show this text
";

/// One argument, as UTF-16 units.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    units: [u16; ARG_UNITS],
    len: usize,
    too_long: bool,
}

impl Arg {
    const fn new() -> Arg {
        Arg { units: [0; ARG_UNITS], len: 0, too_long: false }
    }

    fn push(&mut self, unit: u16) {
        match self.units.get_mut(self.len) {
            Some(slot) => {
                *slot = unit;
                self.len += 1;
            }
            None => self.too_long = true,
        }
    }

    /// The argument's units (the first [`ARG_UNITS`] of a longer one).
    pub fn units(&self) -> &[u16] {
        self.units.get(..self.len).unwrap_or(&[])
    }

    /// True when the argument was longer than [`ARG_UNITS`] units.
    pub const fn is_too_long(&self) -> bool {
        self.too_long
    }

    /// True when the argument is exactly `s` (ASCII).
    pub fn is(&self, s: &str) -> bool {
        !self.too_long && self.units().iter().copied().eq(s.bytes().map(u16::from))
    }

    /// The argument's characters, unpaired surrogates as U+FFFD.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        char::decode_utf16(self.units().iter().copied())
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.chars() {
            f.write_char(c)?;
        }
        if self.too_long {
            f.write_str("...")?;
        }
        Ok(())
    }
}

const SPACE: u16 = b' ' as u16;
const TAB: u16 = b'\t' as u16;
const QUOTE: u16 = b'"' as u16;
const BACKSLASH: u16 = b'\\' as u16;

/// The arguments of a command line (`GetCommandLineW`'s string, without its NUL), the program
/// first.
#[derive(Clone, Debug)]
pub struct CommandLine<'a> {
    rest: &'a [u16],
    first: bool,
}

/// Splits `line` into its arguments.
pub fn split(line: &[u16]) -> CommandLine<'_> {
    CommandLine { rest: line, first: true }
}

impl CommandLine<'_> {
    fn peek(&self) -> Option<u16> {
        self.rest.first().copied()
    }

    fn bump(&mut self) {
        self.rest = self.rest.get(1..).unwrap_or(&[]);
    }

    /// The program: up to the first space or tab outside quotes, quotes dropped.
    fn program(&mut self) -> Arg {
        let mut arg = Arg::new();
        let mut quoted = false;
        while let Some(u) = self.peek() {
            if !quoted && (u == SPACE || u == TAB) {
                break;
            }
            self.bump();
            if u == QUOTE {
                quoted = !quoted;
            } else {
                arg.push(u);
            }
        }
        arg
    }

    /// Any other argument, the current position on its first unit.
    fn argument(&mut self) -> Arg {
        let mut arg = Arg::new();
        let mut quoted = false;
        while let Some(u) = self.peek() {
            match u {
                SPACE | TAB if !quoted => break,
                BACKSLASH => {
                    let mut n = 0usize;
                    while self.peek() == Some(BACKSLASH) {
                        n += 1;
                        self.bump();
                    }
                    if self.peek() == Some(QUOTE) {
                        for _ in 0..n / 2 {
                            arg.push(BACKSLASH);
                        }
                        if n % 2 == 1 {
                            arg.push(QUOTE);
                            self.bump();
                        }
                        // An even count leaves the quote to delimit, on the next turn.
                    } else {
                        for _ in 0..n {
                            arg.push(BACKSLASH);
                        }
                    }
                }
                QUOTE => {
                    self.bump();
                    if quoted && self.peek() == Some(QUOTE) {
                        arg.push(QUOTE);
                        self.bump();
                        quoted = false;
                    } else {
                        quoted = !quoted;
                    }
                }
                _ => {
                    arg.push(u);
                    self.bump();
                }
            }
        }
        arg
    }
}

impl Iterator for CommandLine<'_> {
    type Item = Arg;

    fn next(&mut self) -> Option<Arg> {
        if self.first {
            self.first = false;
            return Some(self.program());
        }
        while matches!(self.peek(), Some(SPACE | TAB)) {
            self.bump();
        }
        self.peek()?;
        Some(self.argument())
    }
}

/// Which build of the spy to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// `spy-minifilter.sys`: the communication port `\<name>`, through fltlib.dll.
    Minifilter,
    /// `spy-legacy.sys`: its control device, opened as `\\.\<name>`, and device controls.
    Legacy,
}

impl Model {
    /// How the lines name it.
    pub const fn describe(self) -> &'static str {
        match self {
            Model::Minifilter => "minifilter communication port",
            Model::Legacy => "legacy filter control device",
        }
    }
}

/// A channel name: 1 to [`MAX_CHANNEL_NAME`] printable ASCII characters without a backslash, the
/// rule of `fsfilter::MessageChannel`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelName {
    bytes: [u8; MAX_CHANNEL_NAME],
    len: usize,
}

impl ChannelName {
    /// The name, if `chars` make a valid one.
    pub fn new(chars: impl IntoIterator<Item = char>) -> Option<ChannelName> {
        let mut name = ChannelName { bytes: [0; MAX_CHANNEL_NAME], len: 0 };
        for c in chars {
            let b = u8::try_from(c).ok().filter(|b| (b'!'..=b'~').contains(b) && *b != b'\\')?;
            *name.bytes.get_mut(name.len)? = b;
            name.len += 1;
        }
        (name.len > 0).then_some(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl Default for ChannelName {
    /// The spy's channel, [`spy::CHANNEL_NAME`].
    fn default() -> ChannelName {
        ChannelName::new(spy::CHANNEL_NAME.chars())
            .unwrap_or(ChannelName { bytes: [b'?'; MAX_CHANNEL_NAME], len: 1 })
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The longest channel path: `\\.\`, the name, the NUL.
pub const PATH_UNITS: usize = 4 + MAX_CHANNEL_NAME + 1;

/// The NUL-terminated UTF-16 path a reader opens for a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelPath {
    units: [u16; PATH_UNITS],
    len: usize,
}

impl ChannelPath {
    /// The path of `name` in `model`: the port `\<name>` (FilterConnectCommunicationPort takes
    /// the port's object name) or `\\.\<name>` (the Win32 name of `\DosDevices\<name>`, the link
    /// to the control device, for CreateFileW).
    pub fn new(model: Model, name: &ChannelName) -> ChannelPath {
        let prefix: &str = match model {
            Model::Minifilter => "\\",
            Model::Legacy => "\\\\.\\",
        };
        let mut path = ChannelPath { units: [0; PATH_UNITS], len: 0 };
        for (slot, b) in path.units.iter_mut().zip(prefix.bytes().chain(name.as_str().bytes())) {
            *slot = u16::from(b);
            path.len += 1;
        }
        // The NUL: `len` is at most PATH_UNITS - 1 (a name is at most MAX_CHANNEL_NAME bytes),
        // and the array is zeroed.
        path
    }

    /// The path with its terminating NUL, for the Windows calls.
    pub fn with_nul(&self) -> &[u16] {
        self.units.get(..self.len + 1).unwrap_or(&self.units)
    }

    /// The path's characters, without the NUL.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        self.units.iter().take(self.len).map(|u| char::from_u32(u32::from(*u)).unwrap_or('?'))
    }
}

impl fmt::Display for ChannelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        self.chars().try_for_each(|c| f.write_char(c))
    }
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The spy's build.
    pub model: Model,
    /// The channel's name.
    pub name: ChannelName,
    /// Read one batch and stop.
    pub once: bool,
    /// The poll interval, in milliseconds.
    pub interval_ms: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            model: Model::Minifilter,
            name: ChannelName::default(),
            once: false,
            interval_ms: DEFAULT_INTERVAL_MS,
        }
    }
}

impl Options {
    /// The path to open.
    pub fn path(&self) -> ChannelPath {
        ChannelPath::new(self.model, &self.name)
    }
}

/// The command line's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read the log.
    Read(Options),
    /// Print the usage.
    Help,
}

/// A command line the reader does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// An argument that is no option.
    Unknown(Arg),
    /// An option without its value.
    Missing(&'static str),
    /// `--interval` with a value that is not 1 to [`MAX_INTERVAL_MS`].
    Interval(Arg),
    /// `--name` with a value that is no channel name.
    Name(Arg),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Unknown(a) => write!(f, "unknown argument `{a}`"),
            ArgError::Missing(option) => write!(f, "{option} needs a value"),
            ArgError::Interval(a) => {
                write!(f, "--interval `{a}`: milliseconds, 1 to {MAX_INTERVAL_MS}")
            }
            ArgError::Name(a) => {
                write!(f, "--name `{a}`: {}", fsfilter::ChannelError::Name.message())
            }
        }
    }
}

/// A decimal number of 1 to [`MAX_INTERVAL_MS`].
fn interval(arg: &Arg) -> Option<u32> {
    if arg.units().is_empty() || arg.is_too_long() {
        return None;
    }
    let mut value: u32 = 0;
    for u in arg.units() {
        let digit = u.checked_sub(u16::from(b'0')).filter(|d| *d <= 9)?;
        value = value.checked_mul(10)?.checked_add(u32::from(digit))?;
    }
    (1..=MAX_INTERVAL_MS).contains(&value).then_some(value)
}

/// Reads the options from the arguments after the program's.
#[expect(
    clippy::result_large_err,
    reason = "no allocator to box the argument in; parsed once, at start-up"
)]
pub fn parse(args: impl IntoIterator<Item = Arg>) -> Result<Request, ArgError> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg.is("--help") || arg.is("-h") || arg.is("/?") {
            return Ok(Request::Help);
        } else if arg.is("--legacy") {
            options.model = Model::Legacy;
        } else if arg.is("--minifilter") {
            options.model = Model::Minifilter;
        } else if arg.is("--once") {
            options.once = true;
        } else if arg.is("--name") {
            let value = args.next().ok_or(ArgError::Missing("--name"))?;
            options.name = ChannelName::new(value.chars())
                .filter(|_| !value.is_too_long())
                .ok_or(ArgError::Name(value))?;
        } else if arg.is("--interval") {
            let value = args.next().ok_or(ArgError::Missing("--interval"))?;
            options.interval_ms = interval(&value).ok_or(ArgError::Interval(value))?;
        } else {
            return Err(ArgError::Unknown(arg));
        }
    }
    Ok(Request::Read(options))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn argv(line: &str) -> Vec<String> {
        split(&wide(line)).map(|a| a.to_string()).collect()
    }

    fn args(list: &[&str]) -> Vec<Arg> {
        // Each test argument through the splitter, quoted, so it is one argument.
        list.iter()
            .map(|a| {
                let line = std::format!("p \"{a}\"");
                split(&wide(&line)).nth(1).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_program_keeps_its_backslashes_and_drops_its_quotes() {
        assert_eq!(
            argv(r#""C:\Program Files\spy\spy-reader.exe" --once"#),
            [r"C:\Program Files\spy\spy-reader.exe", "--once"]
        );
        assert_eq!(argv(r#"C:\a"b c"\r.exe x"#), [r"C:\ab c\r.exe", "x"]);
        assert_eq!(argv("spy-reader"), ["spy-reader"]);
        assert_eq!(argv(""), [""]);
    }

    #[test]
    fn arguments_split_as_the_c_runtime_splits_them() {
        // Learn, "Parsing C command-line arguments": the examples' table.
        assert_eq!(argv(r#"p "a b c" d e"#), ["p", "a b c", "d", "e"]);
        assert_eq!(argv(r#"p "ab\"c" "\\" d"#), ["p", "ab\"c", "\\", "d"]);
        assert_eq!(argv(r#"p a\\\b d"e f"g h"#), ["p", r"a\\\b", "de fg", "h"]);
        assert_eq!(argv(r#"p a\\\"b c d"#), ["p", r#"a\"b"#, "c", "d"]);
        assert_eq!(argv(r#"p a\\\\"b c" d e"#), ["p", r"a\\b c", "d", "e"]);
        assert_eq!(argv(r#"p a"b"" c d"#), ["p", "ab\"", "c", "d"]);
        // Tabs and runs of blanks separate; trailing blanks add nothing.
        assert_eq!(argv("p\t--once  \t --legacy  "), ["p", "--once", "--legacy"]);
        // An unterminated quote runs to the end.
        assert_eq!(argv(r#"p "a b"#), ["p", "a b"]);
        // An empty quoted argument is an argument.
        assert_eq!(argv(r#"p "" x"#), ["p", "", "x"]);
    }

    #[test]
    fn a_long_argument_is_cut_and_marked() {
        let long = "x".repeat(ARG_UNITS + 5);
        let line = wide(&std::format!("p {long} --once"));
        let all: Vec<Arg> = split(&line).collect();
        assert_eq!(all.len(), 3);
        assert!(all[1].is_too_long());
        assert_eq!(all[1].units().len(), ARG_UNITS);
        assert!(!all[1].is(&long[..ARG_UNITS]), "a cut argument equals nothing");
        assert!(all[2].is("--once"));
    }

    #[test]
    fn defaults() {
        let Ok(Request::Read(o)) = parse(args(&[])) else { panic!("no options") };
        assert_eq!(o, Options::default());
        assert_eq!(o.model, Model::Minifilter);
        assert_eq!(o.name.as_str(), spy::CHANNEL_NAME);
        assert!(!o.once);
        assert_eq!(o.interval_ms, 500);
        assert_eq!(o.path().to_string(), r"\FsFilterSpy");
        assert_eq!(o.path().with_nul().last(), Some(&0));
    }

    #[test]
    fn every_option() {
        let parsed = parse(args(&["--legacy", "--name", "Other", "--once", "--interval", "25"]));
        let Ok(Request::Read(o)) = parsed else { panic!("{parsed:?}") };
        assert_eq!(o.model, Model::Legacy);
        assert_eq!(o.name.as_str(), "Other");
        assert!(o.once);
        assert_eq!(o.interval_ms, 25);
        assert_eq!(o.path().to_string(), r"\\.\Other");
        assert_eq!(o.path().with_nul(), &wide("\\\\.\\Other\0")[..]);
        // The last of two model options wins.
        let Ok(Request::Read(o)) = parse(args(&["--legacy", "--minifilter"])) else { panic!() };
        assert_eq!(o.model, Model::Minifilter);
        for help in ["--help", "-h", "/?"] {
            assert_eq!(parse(args(&["--once", help, "--bogus"])), Ok(Request::Help));
        }
    }

    #[test]
    fn mistakes_are_named() {
        let err = |list: &[&str]| parse(args(list)).unwrap_err().to_string();
        assert_eq!(err(&["--onse"]), "unknown argument `--onse`");
        assert_eq!(err(&["--once", "x"]), "unknown argument `x`");
        assert_eq!(err(&["--name"]), "--name needs a value");
        assert_eq!(err(&["--interval"]), "--interval needs a value");
        for bad in ["0", "-5", "abc", "3600001", "99999999999", "", "1.5"] {
            assert_eq!(
                err(&["--interval", bad]),
                std::format!("--interval `{bad}`: milliseconds, 1 to 3600000")
            );
        }
        assert_eq!(parse(args(&["--interval", "3600000"])).map(|_| ()), Ok(()));
        let long = "n".repeat(MAX_CHANNEL_NAME + 1);
        for bad in ["", r"a\b", "a b", "caf\u{e9}", &long[..]] {
            let e = err(&["--name", bad]);
            assert!(
                e.starts_with(&std::format!("--name `{bad}`: a channel name is 1 to 64")),
                "{e}"
            );
        }
        let longest = "n".repeat(MAX_CHANNEL_NAME);
        let Ok(Request::Read(o)) = parse(args(&["--name", &longest, "--legacy"])) else { panic!() };
        assert_eq!(o.path().with_nul().len(), PATH_UNITS, "the longest path and its NUL fit");
    }
}
