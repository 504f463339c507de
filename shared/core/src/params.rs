//! Service parameters: the values of a driver's `Services\<name>\Parameters` registry key, read by
//! [`crate::Filter::load`].

/// The longest string value the backends' registry reader returns, in UTF-16 units (the
/// terminating NUL not counted): a longer one reads as absent, like a value of another type.
pub const MAX_STRING_UNITS: usize = 255;

/// A value of the `Parameters` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParameterValue<'a> {
    /// `REG_SZ` (or `REG_EXPAND_SZ`; `REG_MULTI_SZ` entries joined with commas).
    String(&'a str),
    /// `REG_DWORD`.
    Dword(u32),
}

/// Read access to the service's parameters. The backend reads the registry; tests use
/// [`ParameterList`].
pub trait ServiceParameters {
    /// The service name (the last component of the driver's registry path).
    fn service_name(&self) -> &str;

    /// A string value, converted to UTF-8 into `buffer`. `None` when absent, not a string, or
    /// longer than `buffer`.
    fn string<'b>(&self, name: &str, buffer: &'b mut [u8]) -> Option<&'b str>;

    /// A `REG_DWORD` value. `None` when absent or not a DWORD.
    fn dword(&self, name: &str) -> Option<u32>;

    /// A boolean: a DWORD (non-zero is true) or a string `true`/`false`/`yes`/`no`/`1`/`0`.
    fn flag(&self, name: &str) -> Option<bool> {
        if let Some(v) = self.dword(name) {
            return Some(v != 0);
        }
        let mut buf = [0u8; 8];
        // The three false words, then the three true ones.
        let words = crate::text::Names("false\nno\n0\ntrue\nyes\n1\n");
        words.position(crate::text::trim(self.string(name, &mut buf)?)).map(|i| i >= 3)
    }

    /// A zeroed buffer of `len` bytes in non-paged pool that lives as long as the filter: only
    /// for a filter that declares [`crate::Filter::LOAD_BUFFERS`], only in
    /// [`crate::Filter::load`] (docs/callback-model.md, rule 24). The backends refuse an empty
    /// buffer or one above [`crate::MAX_LOAD_BUFFER`] bytes with `STATUS_INVALID_PARAMETER`,
    /// more than [`crate::MAX_LOAD_BUFFERS`] buffers or an exhausted pool with
    /// `STATUS_INSUFFICIENT_RESOURCES`. The default, for filters that do not declare it and for
    /// parameter lists, answers `STATUS_NOT_SUPPORTED`.
    fn allocate(&self, len: usize) -> crate::Result<crate::LoadBuffer> {
        let _ = len;
        Err(crate::Error::NOT_SUPPORTED)
    }
}

/// Parameters from a fixed list: for tests and for samples run without a registry.
#[derive(Clone, Copy, Debug)]
pub struct ParameterList<'a> {
    /// The service name.
    pub service: &'a str,
    /// `(name, value)` pairs; names compare case-insensitively, as registry value names do.
    pub values: &'a [(&'a str, ParameterValue<'a>)],
}

impl ServiceParameters for ParameterList<'_> {
    fn service_name(&self) -> &str {
        self.service
    }

    fn string<'b>(&self, name: &str, buffer: &'b mut [u8]) -> Option<&'b str> {
        let value = self.values.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        let ParameterValue::String(s) = value.1 else { return None };
        let out = buffer.get_mut(..s.len())?;
        crate::text::copy_prefix(out, s.as_bytes());
        core::str::from_utf8(out).ok()
    }

    fn dword(&self, name: &str) -> Option<u32> {
        match self.values.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?.1 {
            ParameterValue::Dword(v) => Some(v),
            ParameterValue::String(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: ParameterList<'static> = ParameterList {
        service: "ProbeA",
        values: &[
            ("Attach", ParameterValue::String("disk,cdrom")),
            ("RefuseUnload", ParameterValue::Dword(1)),
            ("Verbose", ParameterValue::String("yes")),
            ("Long", ParameterValue::String("0123456789abcdef")),
        ],
    };

    #[test]
    fn values_are_found_case_insensitively() {
        let mut buf = [0u8; 32];
        assert_eq!(LIST.string("attach", &mut buf), Some("disk,cdrom"));
        assert_eq!(LIST.dword("REFUSEUNLOAD"), Some(1));
        assert_eq!(LIST.dword("Attach"), None, "a string is not a DWORD");
        assert_eq!(LIST.string("RefuseUnload", &mut buf), None, "a DWORD is not a string");
        assert_eq!(LIST.string("Missing", &mut buf), None);
        assert_eq!(LIST.service_name(), "ProbeA");
    }

    #[test]
    fn too_small_a_buffer_is_absent_not_truncated() {
        let mut small = [0u8; 4];
        assert_eq!(LIST.string("Long", &mut small), None);
    }

    #[test]
    fn a_parameter_list_allocates_nothing() {
        assert_eq!(LIST.allocate(16).unwrap_err(), crate::Error::NOT_SUPPORTED);
    }

    #[test]
    fn flags() {
        assert_eq!(LIST.flag("RefuseUnload"), Some(true));
        assert_eq!(LIST.flag("Verbose"), Some(true));
        assert_eq!(LIST.flag("Attach"), None);
        assert_eq!(LIST.flag("Missing"), None);
    }
}

/// A documented parameter of a sample's `Parameters` key, for `fsfilter samples` and the samples'
/// READMEs.
#[derive(Clone, Copy, Debug)]
pub struct ParameterDoc {
    /// The value's name in the `Parameters` key.
    pub name: &'static str,
    /// `REG_SZ` or `REG_DWORD`.
    pub kind: &'static str,
    /// The value when absent.
    pub default: &'static str,
    /// What it does.
    pub description: &'static str,
}
