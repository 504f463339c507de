//! [`Name`]: the text of a driver, volume, instance or altitude name, shared between the
//! simulator's tables and the events that mention it.
//!
//! Every callback and Filter Manager operation logs an event naming its driver, its volume and
//! (for the Filter Manager) its instance and altitude; with owned strings, that was an
//! allocation, a copy and a free per name per event. A `Name` clones by counting a reference.
//! It reads as a `&str` (it dereferences to one), compares with `str`, `&str` and `String` in
//! both directions, and prints (`Display` and `Debug`) exactly as the `String` it replaces.
//!
//! The count is not atomic (`Rc`, not `Arc`): a machine lives on one thread, and so do its
//! events; an atomic count made every named event pay a locked increment and, when the log was
//! cleared, a locked decrement per name (some six of each per filter callback, issue 9). A
//! `Name`, and so an event, does not cross threads: what leaves a machine's thread is printed
//! or converted (`String::from`) first.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

/// A shared, immutable name. See the [module](self).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Rc<str>);

impl Name {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(Rc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(Rc::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name(Rc::from(s.as_str()))
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0.as_ref().to_owned()
    }
}

impl From<&Name> for String {
    fn from(n: &Name) -> String {
        n.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn a_name_reads_compares_and_prints_as_its_string() {
        let s = String::from("Filter0 Instance");
        let n = Name::from(s.as_str());
        assert_eq!(n, s);
        assert_eq!(s, n);
        assert_eq!(n, "Filter0 Instance");
        assert_eq!(*"Filter0 Instance", n);
        assert_eq!(format!("{n}"), format!("{s}"));
        assert_eq!(format!("{n:?}"), format!("{s:?}"));
        assert_eq!(format!("{:?}", Some(n.clone())), format!("{:?}", Some(s.clone())));
        assert_eq!(String::from(n.clone()), s);
        assert_eq!(n.len(), s.len());
        assert!(n != "Filter1 Instance");
    }
}
