//! The output buffer: text from `core::fmt` gathered in a fixed buffer and handed to a [`Sink`]
//! when the buffer is full and on [`Out::flush`] (the reader flushes after each batch).
//!
//! A console takes UTF-16 (`WriteConsoleW`: the console shows every character whatever its code
//! page); a file or a pipe takes UTF-8 bytes (`WriteFile`). The buffer holds one or the other.

use core::fmt;

/// Where the text goes.
pub trait Sink {
    /// Whether the sink takes UTF-16 ([`Sink::write_units`]) rather than UTF-8.
    fn wide(&self) -> bool;
    /// Writes UTF-8 bytes, all of them; false on failure.
    fn write_bytes(&mut self, bytes: &[u8]) -> bool;
    /// Writes UTF-16 units, all of them; false on failure.
    fn write_units(&mut self, units: &[u16]) -> bool;
}

/// The buffer's size, in bytes or in units.
pub const BUFFER: usize = 1024;

/// A buffered `fmt::Write` over a [`Sink`].
#[derive(Debug)]
pub struct Out<S: Sink> {
    sink: S,
    bytes: [u8; BUFFER],
    units: [u16; BUFFER],
    len: usize,
    failed: bool,
}

impl<S: Sink> Out<S> {
    /// An empty buffer over `sink`.
    pub const fn new(sink: S) -> Out<S> {
        Out { sink, bytes: [0; BUFFER], units: [0; BUFFER], len: 0, failed: false }
    }

    /// Hands the buffered text to the sink; false if this or an earlier write failed.
    pub fn flush(&mut self) -> bool {
        if self.len > 0 {
            let ok = if self.sink.wide() {
                self.sink.write_units(self.units.get(..self.len).unwrap_or(&[]))
            } else {
                self.sink.write_bytes(self.bytes.get(..self.len).unwrap_or(&[]))
            };
            self.failed |= !ok;
            self.len = 0;
        }
        !self.failed
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Appends one character's code units (at most 4 bytes or 2 units), flushing first if they
    /// do not fit.
    fn push(&mut self, c: char) {
        if self.sink.wide() {
            let mut utf16 = [0u16; 2];
            let units = c.encode_utf16(&mut utf16);
            if self.len + units.len() > BUFFER {
                self.flush();
            }
            for u in units.iter() {
                if let Some(dst) = self.units.get_mut(self.len) {
                    *dst = *u;
                    self.len += 1;
                }
            }
        } else {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if self.len + bytes.len() > BUFFER {
                self.flush();
            }
            for b in bytes {
                if let Some(dst) = self.bytes.get_mut(self.len) {
                    *dst = *b;
                    self.len += 1;
                }
            }
        }
    }
}

impl<S: Sink> fmt::Write for Out<S> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.chars().for_each(|c| self.push(c));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::fmt::Write as _;
    use std::string::String;
    use std::vec::Vec;

    #[derive(Default)]
    struct Recorder {
        wide: bool,
        writes: Vec<usize>,
        text: String,
        fail: bool,
    }

    impl Sink for Recorder {
        fn wide(&self) -> bool {
            self.wide
        }
        fn write_bytes(&mut self, bytes: &[u8]) -> bool {
            self.writes.push(bytes.len());
            self.text.push_str(core::str::from_utf8(bytes).unwrap());
            !self.fail
        }
        fn write_units(&mut self, units: &[u16]) -> bool {
            self.writes.push(units.len());
            self.text.push_str(&String::from_utf16(units).unwrap());
            !self.fail
        }
    }

    fn text() -> String {
        // Two- and four-byte UTF-8 characters (one and two UTF-16 units) across the buffer's end.
        let mut t = String::new();
        for i in 0..1400 {
            t.push_str(if i % 3 == 0 { "\u{e9}" } else { "\u{1F50E}" });
            t.push('x');
        }
        t
    }

    #[test]
    fn text_reaches_the_sink_whole_in_either_encoding() {
        for wide in [false, true] {
            let mut out = Out::new(Recorder { wide, ..Recorder::default() });
            write!(out, "{}", text()).unwrap();
            assert!(out.sink().writes.iter().all(|n| *n <= BUFFER && *n > BUFFER - 4));
            assert!(out.flush());
            assert!(out.flush(), "an empty flush writes nothing");
            let sink = out.sink();
            assert_eq!(sink.text, text(), "wide: {wide}");
            let total = if wide { text().encode_utf16().count() } else { text().len() };
            assert_eq!(sink.writes.iter().sum::<usize>(), total);
            assert!(sink.writes.len() > 2);
        }
    }

    #[test]
    fn a_failed_write_is_remembered() {
        let mut out = Out::new(Recorder { fail: true, ..Recorder::default() });
        write!(out, "a").unwrap();
        assert!(!out.flush());
        out.sink.fail = false;
        write!(out, "b").unwrap();
        assert!(!out.flush(), "the earlier failure stays");
        assert_eq!(out.sink().text, "ab");
    }
}
