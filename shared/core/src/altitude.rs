//! `Altitude`: the Filter Manager's decimal-string altitudes with Windows' ordering, and the
//! load-order groups with their altitude ranges (facts.md §2.3).

use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};

use crate::slots;

/// The longest altitude string the model stores (bytes). Windows' altitudes are infinite-precision
/// decimals; real ones are a handful of digits (`"325000.3"`), so the model keeps them inline, with
/// no allocation, and rejects longer strings with [`AltitudeError::TooLong`].
pub const ALTITUDE_CAPACITY: usize = 48;

/// Why a string is not an altitude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AltitudeError {
    /// The string is empty or has no digit.
    Empty,
    /// A byte that is neither a digit nor the decimal point, at this byte offset.
    InvalidCharacter(usize),
    /// A second decimal point, at this byte offset.
    SecondDecimalPoint(usize),
    /// Longer than [`ALTITUDE_CAPACITY`].
    TooLong,
}

impl fmt::Display for AltitudeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AltitudeError::Empty => f.write_str("an altitude needs at least one digit"),
            AltitudeError::InvalidCharacter(at) => write!(
                f,
                "an altitude is digits with at most one decimal point; byte {at} is neither"
            ),
            AltitudeError::SecondDecimalPoint(at) => {
                write!(f, "an altitude has at most one decimal point; a second one is at byte {at}")
            }
            AltitudeError::TooLong => {
                write!(f, "altitudes longer than {ALTITUDE_CAPACITY} characters are not supported")
            }
        }
    }
}

/// A minifilter altitude: an infinite-precision decimal string; higher is farther from the file
/// system (facts.md §2.3).
///
/// Ordering and equality are by value: leading zeros of the integer part and trailing zeros of
/// the fraction are ignored, so `"03333"` is higher than `"100.123456"` and `"370000.0"` equals
/// `"370000"`. [`Altitude::as_str`] keeps the string as given, for reports.
///
/// # Invariants
/// `text[..len]` is ASCII digits with at most one `.` and at least one digit.
#[derive(Clone, Copy)]
pub struct Altitude {
    text: [u8; ALTITUDE_CAPACITY],
    len: u8,
}

impl Altitude {
    /// Parses an altitude string.
    pub const fn parse(s: &str) -> Result<Altitude, AltitudeError> {
        let bytes = s.as_bytes();
        if bytes.len() > ALTITUDE_CAPACITY {
            return Err(AltitudeError::TooLong);
        }
        let mut text = [0u8; ALTITUDE_CAPACITY];
        let mut digits = 0;
        let mut point = false;
        let mut i = 0;
        let mut rest = bytes;
        while let [b, tail @ ..] = rest {
            let b = *b;
            rest = tail;
            if b == b'.' {
                if point {
                    return Err(AltitudeError::SecondDecimalPoint(i));
                }
                point = true;
            } else if b.is_ascii_digit() {
                digits += 1;
            } else {
                return Err(AltitudeError::InvalidCharacter(i));
            }
            // i < bytes.len() <= ALTITUDE_CAPACITY, checked above.
            slots::set(&mut text, i, b);
            i += 1;
        }
        if digits == 0 {
            return Err(AltitudeError::Empty);
        }
        Ok(Altitude { text, len: bytes.len() as u8 })
    }

    /// An altitude for a literal, checked when the constant is evaluated: an invalid literal is a
    /// compile error.
    ///
    /// ```
    /// use fsfilter::Altitude;
    /// const PASSTHROUGH: Altitude = Altitude::from_literal("370030");
    /// assert!(PASSTHROUGH > Altitude::from_literal("370020"));
    /// ```
    ///
    /// ```compile_fail,E0080
    /// use fsfilter::Altitude;
    /// const BAD: Altitude = Altitude::from_literal("370.000.1");
    /// ```
    #[expect(clippy::panic, reason = "const-evaluated: the panic is a compile error")]
    pub const fn from_literal(s: &str) -> Altitude {
        match Altitude::parse(s) {
            Ok(a) => a,
            Err(_) => panic!("not an altitude: digits with at most one decimal point"),
        }
    }

    /// An integral altitude.
    pub const fn from_integer(value: u32) -> Altitude {
        // u32::MAX has 10 digits; write them from the right.
        let mut n = 1;
        let mut rest = value / 10;
        while rest > 0 {
            n += 1;
            rest /= 10;
        }
        let mut text = [0u8; ALTITUDE_CAPACITY];
        let mut v = value;
        let mut i = n;
        while i > 0 {
            i -= 1;
            slots::set(&mut text, i, b'0' + (v % 10) as u8);
            v /= 10;
        }
        Altitude { text, len: n as u8 }
    }

    /// The string as given.
    pub fn as_str(&self) -> &str {
        // The invariant makes the stored bytes ASCII; `from_utf8` cannot fail, and an empty string
        // would only be shown if it did.
        core::str::from_utf8(self.text.get(..self.len as usize).unwrap_or(&[])).unwrap_or("")
    }

    fn bytes(&self) -> &[u8] {
        self.text.get(..self.len as usize).unwrap_or(&[])
    }

    /// (integer digits without leading zeros, fraction digits without trailing zeros).
    fn parts(&self) -> (&[u8], &[u8]) {
        let b = self.bytes();
        let (int, frac) = match b.iter().position(|&c| c == b'.') {
            Some(p) => (b.get(..p).unwrap_or(&[]), b.get(p + 1..).unwrap_or(&[])),
            None => (b, &[][..]),
        };
        let lead = int.iter().take_while(|&&c| c == b'0').count();
        let trail = frac.iter().rev().take_while(|&&c| c == b'0').count();
        (int.get(lead..).unwrap_or(&[]), frac.get(..frac.len() - trail).unwrap_or(&[]))
    }

    /// The integral part, if it fits a `u64` (for display and group lookups).
    pub fn integer_part(&self) -> Option<u64> {
        let (int, _) = self.parts();
        int.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }

    /// True when the altitude has a non-zero fractional part.
    pub fn is_fractional(&self) -> bool {
        !self.parts().1.is_empty()
    }
}

impl Ord for Altitude {
    fn cmp(&self, other: &Altitude) -> Ordering {
        let (ai, af) = self.parts();
        let (bi, bf) = other.parts();
        ai.len().cmp(&bi.len()).then_with(|| ai.cmp(bi)).then_with(|| af.cmp(bf))
    }
}

impl PartialOrd for Altitude {
    fn partial_cmp(&self, other: &Altitude) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Altitude {
    fn eq(&self, other: &Altitude) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Altitude {}

impl Hash for Altitude {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (int, frac) = self.parts();
        int.hash(state);
        frac.hash(state);
    }
}

impl fmt::Display for Altitude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Altitude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Altitude({:?})", self.as_str())
    }
}

impl core::str::FromStr for Altitude {
    type Err = AltitudeError;
    fn from_str(s: &str) -> Result<Altitude, AltitudeError> {
        Altitude::parse(s)
    }
}

/// Which Microsoft page a group's range comes from (they differ; facts.md §10.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSource {
    /// "Load order groups and altitudes for minifilter drivers" \[S27\].
    LoadOrderPage,
    /// Only on the "Allocated altitudes" page \[S28\].
    AllocatedPage,
}

/// A load-order group and the altitude range Microsoft allocates for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOrderGroup {
    /// The group's name as a service's `Group` value spells it.
    pub name: &'static str,
    /// The lowest integral altitude of the range.
    pub low: u32,
    /// The highest integral altitude of the range (inclusive).
    pub high: u32,
    /// Where the range comes from.
    pub source: GroupSource,
}

impl LoadOrderGroup {
    /// Every group, from the top of the stack down (the reverse of load order).
    ///
    /// The three "Security" groups exist only on the allocated-altitudes page; for the groups
    /// where the two pages disagree (facts.md §10.4) the load-order page's bounds are used.
    pub const ALL: &'static [LoadOrderGroup] = &[
        group("Filter", 420000, 429999, GroupSource::LoadOrderPage),
        group("FSFilter Top", 400000, 409999, GroupSource::LoadOrderPage),
        group("FSFilter Security Monitor", 392000, 394999, GroupSource::AllocatedPage),
        group("FSFilter Activity Monitor", 360000, 389999, GroupSource::LoadOrderPage),
        group("FSFilter Undelete", 340000, 349999, GroupSource::LoadOrderPage),
        group("FSFilter Anti-Virus", 320000, 329999, GroupSource::LoadOrderPage),
        group("FSFilter Replication", 300000, 309999, GroupSource::LoadOrderPage),
        group("FSFilter Continuous Backup", 280000, 289999, GroupSource::LoadOrderPage),
        group("FSFilter Security Content Screener", 272000, 274999, GroupSource::AllocatedPage),
        group("FSFilter Content Screener", 260000, 269999, GroupSource::LoadOrderPage),
        group("FSFilter Quota Management", 240000, 249999, GroupSource::LoadOrderPage),
        group("FSFilter System Recovery", 220000, 229999, GroupSource::LoadOrderPage),
        group("FSFilter Cluster File System", 200000, 209999, GroupSource::LoadOrderPage),
        group("FSFilter HSM", 180000, 189999, GroupSource::LoadOrderPage),
        group("FSFilter Imaging", 170000, 175000, GroupSource::LoadOrderPage),
        group("FSFilter Compression", 160000, 169999, GroupSource::LoadOrderPage),
        group("FSFilter Encryption", 140000, 149999, GroupSource::LoadOrderPage),
        group("FSFilter Virtualization", 130000, 139999, GroupSource::LoadOrderPage),
        group("FSFilter Physical Quota Management", 120000, 129999, GroupSource::LoadOrderPage),
        group("FSFilter Open File", 100000, 109999, GroupSource::LoadOrderPage),
        group("FSFilter Security Enhancer", 80000, 89999, GroupSource::LoadOrderPage),
        group("FSFilter Copy Protection", 60000, 69999, GroupSource::LoadOrderPage),
        group("FSFilter Security Bottom", 52000, 54999, GroupSource::AllocatedPage),
        group("FSFilter Bottom", 40000, 49999, GroupSource::LoadOrderPage),
        group("FSFilter System", 20000, 29999, GroupSource::LoadOrderPage),
        group("FSFilter Infrastructure", 0, 19999, GroupSource::LoadOrderPage),
    ];

    /// The group with this name (case-insensitive, as service group names are).
    pub fn by_name(name: &str) -> Option<&'static LoadOrderGroup> {
        LoadOrderGroup::ALL.iter().find(|g| g.name.eq_ignore_ascii_case(name))
    }

    /// The group whose range holds `altitude`, if any.
    pub fn for_altitude(altitude: &Altitude) -> Option<&'static LoadOrderGroup> {
        LoadOrderGroup::ALL.iter().find(|g| g.contains(altitude))
    }

    /// True when `altitude` is in this group's range. A range covers its integral allocations
    /// and every fraction minted from them: `[low, high + 1)`, so `"325000.3"` is Anti-Virus.
    pub fn contains(&self, altitude: &Altitude) -> bool {
        *altitude >= Altitude::from_integer(self.low)
            && *altitude < Altitude::from_integer(self.high.saturating_add(1))
    }

    /// Position in load order: 0 loads first (FSFilter Infrastructure), and a group that loads
    /// earlier attaches closer to the file system.
    pub fn load_rank(&self) -> usize {
        let from_top = LoadOrderGroup::ALL.iter().position(|g| g.name == self.name).unwrap_or(0);
        LoadOrderGroup::ALL.len() - 1 - from_top
    }

    /// The altitude `fltmc filters` shows for a legacy filter in this group: the group's upper
    /// bound minus 0.01 (`389998.99` for Activity Monitor). An observation, not documented
    /// (facts.md §8).
    pub fn legacy_display_altitude(&self) -> LegacyAltitude {
        LegacyAltitude(self.high.saturating_sub(1))
    }
}

/// The altitude `fltmc` displays for a legacy filter: `<integer>.99`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyAltitude(u32);

impl fmt::Display for LegacyAltitude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.99", self.0)
    }
}

const fn group(name: &'static str, low: u32, high: u32, source: GroupSource) -> LoadOrderGroup {
    LoadOrderGroup { name, low, high, source }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    fn a(s: &str) -> Altitude {
        Altitude::parse(s).unwrap()
    }

    #[test]
    fn ordering_follows_facts_examples() {
        // facts.md §2.3: "03333" is higher than "100.123456".
        assert!(a("03333") > a("100.123456"));
        assert!(a("370030") > a("370020"));
        assert!(a("325000.3") > a("325000"));
        assert!(a("325000.3") < a("325000.31"));
        assert!(a("360500.5") > a("40500"));
        assert!(a("0.1") < a("0.12"));
        assert!(a("9") < a("10"));
    }

    #[test]
    fn leading_and_trailing_zeros_are_ignored() {
        assert_eq!(a("0370000"), a("370000"));
        assert_eq!(a("370000.000"), a("370000"));
        assert_eq!(a("370000."), a("370000"));
        assert_eq!(a(".5"), a("0.50"));
        assert_eq!(a("0"), a("000.000"));
        // ...but the string is kept as given.
        assert_eq!(a("0370000").as_str(), "0370000");
        assert_eq!(a("0370000").to_string(), "0370000");
    }

    #[test]
    fn equal_altitudes_hash_alike() {
        use std::collections::HashSet;
        let set: HashSet<Altitude> = [a("370000"), a("0370000.0")].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn invalid_strings_are_rejected_with_the_reason() {
        assert_eq!(Altitude::parse(""), Err(AltitudeError::Empty));
        assert_eq!(Altitude::parse("."), Err(AltitudeError::Empty));
        assert_eq!(Altitude::parse("37a"), Err(AltitudeError::InvalidCharacter(2)));
        assert_eq!(Altitude::parse("-1"), Err(AltitudeError::InvalidCharacter(0)));
        assert_eq!(Altitude::parse(" 1"), Err(AltitudeError::InvalidCharacter(0)));
        assert_eq!(Altitude::parse("1.2.3"), Err(AltitudeError::SecondDecimalPoint(3)));
        let long = "1".repeat(ALTITUDE_CAPACITY + 1);
        assert_eq!(Altitude::parse(&long), Err(AltitudeError::TooLong));
        assert!(Altitude::parse(&"1".repeat(ALTITUDE_CAPACITY)).is_ok());
    }

    #[test]
    fn integers() {
        assert_eq!(Altitude::from_integer(0).as_str(), "0");
        assert_eq!(Altitude::from_integer(385100).as_str(), "385100");
        assert_eq!(Altitude::from_integer(u32::MAX).as_str(), "4294967295");
        assert_eq!(a("00385100.9").integer_part(), Some(385100));
        assert!(a("1.01").is_fractional());
        assert!(!a("1.00").is_fractional());
    }

    #[test]
    fn groups_hold_the_documented_allocations() {
        // facts.md §2.3 well-known allocations.
        let g = |s| LoadOrderGroup::for_altitude(&a(s)).map(|g| g.name);
        assert_eq!(g("385200"), Some("FSFilter Activity Monitor")); // Procmon11
        assert_eq!(g("370030"), Some("FSFilter Activity Monitor")); // passThrough
        assert_eq!(g("328010"), Some("FSFilter Anti-Virus")); // WdFilter
        assert_eq!(g("265000"), Some("FSFilter Content Screener")); // scanner
        assert_eq!(g("141100"), Some("FSFilter Encryption")); // FileCrypt
        assert_eq!(g("409800"), Some("FSFilter Top")); // bindflt
        assert_eq!(g("425000"), Some("Filter"));
        assert_eq!(g("325000.3"), Some("FSFilter Anti-Virus"));
        assert_eq!(g("175000"), Some("FSFilter Imaging"));
        assert_eq!(g("150000"), None); // bfs.sys sits outside every group
        assert_eq!(g("19999.5"), Some("FSFilter Infrastructure"));
    }

    #[test]
    fn group_lookup_and_load_order() {
        let infra = LoadOrderGroup::by_name("fsfilter infrastructure").unwrap();
        let av = LoadOrderGroup::by_name("FSFilter Anti-Virus").unwrap();
        let top = LoadOrderGroup::by_name("Filter").unwrap();
        assert_eq!(infra.load_rank(), 0);
        assert!(infra.load_rank() < av.load_rank());
        assert!(av.load_rank() < top.load_rank());
        assert!(LoadOrderGroup::by_name("No Such Group").is_none());
    }

    #[test]
    fn legacy_altitudes_as_fltmc_shows_them() {
        // facts.md §8: 389998.99 (Activity Monitor), 149998.99 (Encryption), 329998.99 (Anti-Virus).
        let shown = |n| LoadOrderGroup::by_name(n).unwrap().legacy_display_altitude().to_string();
        assert_eq!(shown("FSFilter Activity Monitor"), "389998.99");
        assert_eq!(shown("FSFilter Encryption"), "149998.99");
        assert_eq!(shown("FSFilter Anti-Virus"), "329998.99");
    }
}
