//! [`Name`]: the text of a driver, volume, instance or altitude name, shared between the
//! simulator's tables and the events that mention it.
//!
//! Every callback and Filter Manager operation logs an event naming its driver, its volume and
//! (for the Filter Manager) its instance and altitude; with owned strings, that was an
//! allocation, a copy and a free per name per event. A `Name` reads as a `&str` (it dereferences
//! to one), compares, orders and hashes as its text, compares with `str`, `&str` and `String` in
//! both directions, and prints (`Display` and `Debug`) exactly as the `String` it replaces.
//!
//! # Interned, within a budget
//!
//! A name is interned: its text is kept once for the life of the process, and a `Name` is a
//! reference to it, which clones by copying and drops with nothing to do. That is what makes a
//! named event cheap: a reference count (the representation before, issue 9) had every event
//! touch each name's count when it was made and again when the log was cleared, about a tenth of
//! the simulator's time through a 4-filter stack.
//!
//! Interned text is never freed, so the process keeps at most [`INTERN_BUDGET`] bytes of it,
//! names of at most [`INTERN_MAX_LEN`] bytes. A long run that keeps making new names (the
//! scenario fuzzer, a sweep that numbers its drivers without end) fills the budget, and every
//! name made after that is counted instead (an `Rc`, freed with its last holder), as all names
//! were before: memory stays bounded, and only the speed-up is lost. The lab's scenarios name a
//! handful of drivers, volumes and instances, and a sweep's scenarios share them.
//!
//! A `Name` does not cross threads (a counted name's count is not atomic): what leaves a
//! machine's thread is printed or converted (`String::from`) first.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{Mutex, PoisonError};

/// Bytes of name text the process interns at most ([module](self)), counting each name's
/// length and [`INTERN_OVERHEAD`].
pub const INTERN_BUDGET: usize = 1 << 20;

/// The longest name interned; longer ones are counted.
pub const INTERN_MAX_LEN: usize = 256;

/// What each interned name is charged beyond its text (its allocation and its set entry).
const INTERN_OVERHEAD: usize = 32;

/// The interned names and the bytes charged for them.
struct Interned {
    names: Option<HashSet<&'static str>>,
    charged: usize,
}

static INTERNED: Mutex<Interned> = Mutex::new(Interned { names: None, charged: 0 });

std::thread_local! {
    /// The interned names this thread has asked for: found again without the process-wide
    /// lock, which the lab's sweep threads would otherwise take for every name of every
    /// scenario (a sweep's scenarios share their names). At most as many as are interned.
    static SEEN: std::cell::RefCell<HashSet<&'static str>> =
        std::cell::RefCell::new(HashSet::new());
}

/// `text` interned, or None when it is too long or the budget is spent (and it is not interned
/// already).
fn intern(text: &str) -> Option<&'static str> {
    if text.len() > INTERN_MAX_LEN {
        return None;
    }
    let seen = SEEN.try_with(|s| s.try_borrow().ok()?.get(text).copied()).ok().flatten();
    if seen.is_some() {
        return seen;
    }
    let kept = intern_shared(text)?;
    let _ = SEEN.try_with(|s| s.try_borrow_mut().map(|mut s| s.insert(kept)));
    Some(kept)
}

/// [`intern`] through the process-wide set.
fn intern_shared(text: &str) -> Option<&'static str> {
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    let charged = interned.charged;
    let names = interned.names.get_or_insert_with(HashSet::new);
    if let Some(&known) = names.get(text) {
        return Some(known);
    }
    let charge = text.len() + INTERN_OVERHEAD;
    if charged + charge > INTERN_BUDGET {
        return None;
    }
    let kept: &'static str = Box::leak(Box::<str>::from(text));
    names.insert(kept);
    interned.charged = charged + charge;
    Some(kept)
}

/// Bytes charged to the interned names so far (at most [`INTERN_BUDGET`]).
pub fn interned_bytes() -> usize {
    INTERNED.lock().unwrap_or_else(PoisonError::into_inner).charged
}

/// The tag bit of [`Name::len`]: the text is an `Rc<str>`'s, counted, not interned.
const COUNTED: usize = 1 << (usize::BITS - 1);

/// A shared, immutable name. See the [module](self).
///
/// Two words, as the `Rc<str>` it replaces, so that events do not grow: the text's address and
/// its length, whose top bit ([`COUNTED`]) says whether the text belongs to an `Rc<str>` (made
/// with `Rc::into_raw`, one count held by each `Name`) rather than to the interned names.
pub struct Name {
    ptr: NonNull<u8>,
    len: usize,
}

impl Name {
    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: `ptr` and the length (without its tag) are those of a `str`, which lives at
        // least as long as `self`: interned text for the process, counted text while a count is
        // held, and `self` holds one.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len & !COUNTED) };
        // SAFETY: the bytes of a `str`.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// Whether the text is interned (false once the budget was spent when it was made, or for a
    /// name longer than [`INTERN_MAX_LEN`]).
    pub fn is_interned(&self) -> bool {
        self.len & COUNTED == 0
    }

    fn new(text: &str) -> Name {
        match intern(text) {
            Some(s) => Name::interned(s),
            None => {
                let raw = Rc::into_raw(Rc::<str>::from(text));
                Name {
                    // SAFETY: `Rc::into_raw` never answers null (it points into the `Rc`'s
                    // allocation); the pointer keeps its provenance for the count's updates.
                    ptr: unsafe { NonNull::new_unchecked(raw.cast::<u8>().cast_mut()) },
                    len: text.len() | COUNTED,
                }
            }
        }
    }

    fn interned(s: &'static str) -> Name {
        Name { ptr: NonNull::from(s.as_bytes()).cast(), len: s.len() }
    }

    /// The counted text as the pointer `Rc::into_raw` gave, when it is counted.
    #[inline]
    fn counted(&self) -> Option<*const str> {
        (self.len & COUNTED != 0).then(|| {
            std::ptr::slice_from_raw_parts(self.ptr.as_ptr() as *const u8, self.len & !COUNTED)
                as *const str
        })
    }
}

impl Clone for Name {
    #[inline]
    fn clone(&self) -> Name {
        if let Some(raw) = self.counted() {
            // SAFETY: `raw` came from `Rc::into_raw` and `self` holds a count, so the `Rc` is
            // alive; the new `Name` holds the count taken here.
            unsafe { Rc::increment_strong_count(raw) };
        }
        Name { ptr: self.ptr, len: self.len }
    }
}

impl Drop for Name {
    #[inline]
    fn drop(&mut self) {
        if let Some(raw) = self.counted() {
            // SAFETY: `raw` came from `Rc::into_raw` and `self` holds one count, given back here
            // once (the text is freed with the last).
            unsafe { Rc::decrement_strong_count(raw) };
        }
    }
}

impl Default for Name {
    fn default() -> Name {
        Name::interned("")
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Deref for Name {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::new(s)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name::new(&s)
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.as_str().to_owned()
    }
}

impl From<&Name> for String {
    fn from(n: &Name) -> String {
        n.as_str().to_owned()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        *self.as_str() == *other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        *self.as_str() == **other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.as_str() == **other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        *self == *other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.as_str()
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.as_str()
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

    #[test]
    fn the_same_text_is_interned_once_and_a_long_name_is_counted() {
        let a = Name::from("Filter7 Instance");
        let b = Name::from(String::from("Filter7 Instance"));
        assert!(a.is_interned() && b.is_interned());
        // One copy of the text for the process.
        assert_eq!(a.as_ptr(), b.as_ptr());
        let long = "x".repeat(super::INTERN_MAX_LEN + 1);
        let counted = Name::from(long.as_str());
        assert!(!counted.is_interned());
        assert_eq!(counted, long);
        assert_eq!(Name::default(), "");
    }

    #[test]
    fn counted_names_clone_and_drop_their_shared_text() {
        let long = "y".repeat(super::INTERN_MAX_LEN + 7);
        let first = Name::from(long.as_str());
        let copies: Vec<Name> = (0..100).map(|_| first.clone()).collect();
        // Clones share the text (one allocation), and read it after the original is gone.
        assert!(copies.iter().all(|c| c.as_ptr() == first.as_ptr()));
        drop(first);
        assert!(copies.iter().all(|c| *c == long && !c.is_interned()));
        let last = copies.into_iter().next_back();
        assert_eq!(last.as_deref(), Some(long.as_str()));
    }

    #[test]
    fn names_hash_order_and_compare_as_their_text_whichever_their_storage() {
        use std::collections::{BTreeSet, HashMap};
        let long = "z".repeat(super::INTERN_MAX_LEN + 1);
        let short = Name::from("C:");
        let counted = Name::from(long.as_str());
        let mut by_text: HashMap<Name, u32> = HashMap::new();
        by_text.insert(short.clone(), 1);
        by_text.insert(counted.clone(), 2);
        // Looked up by `&str` (`Borrow<str>` hashes as the text).
        assert_eq!(by_text.get("C:"), Some(&1));
        assert_eq!(by_text.get(long.as_str()), Some(&2));
        let sorted: Vec<String> = [counted, short, Name::from("B:")]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(sorted, vec!["B:".to_owned(), "C:".to_owned(), long]);
    }

    #[test]
    fn a_text_interned_on_one_thread_is_the_same_text_on_another() {
        // Each thread finds the names it asked for before without the process-wide lock; a text
        // new to a thread comes from the process-wide set, so both threads share one copy.
        let here = Name::from("Shared Across Threads").as_ptr() as usize;
        let again = Name::from("Shared Across Threads").as_ptr() as usize;
        let there =
            std::thread::spawn(|| Name::from("Shared Across Threads").as_ptr() as usize).join();
        assert_eq!(again, here);
        assert_eq!(there.ok(), Some(here));
    }
}
