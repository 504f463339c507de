//! Bounds-checked element access usable in `const fn` (slice `get` is not const): the
//! registration and altitude builders run at compile time and at run time, and must never panic.

/// `s[i]`, or `None` when out of bounds.
pub(crate) const fn get<T: Copy>(s: &[T], i: usize) -> Option<T> {
    match s.split_at_checked(i) {
        Some((_, rest)) => match rest.first() {
            Some(v) => Some(*v),
            None => None,
        },
        None => None,
    }
}

/// `s[i] = v`; false (and no change) when out of bounds.
pub(crate) const fn set<T: Copy>(s: &mut [T], i: usize, v: T) -> bool {
    match s.split_at_mut_checked(i) {
        Some((_, rest)) => match rest.first_mut() {
            Some(slot) => {
                *slot = v;
                true
            }
            None => false,
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_and_out_of_bounds() {
        let mut a = [1u8, 2, 3];
        assert!(set(&mut a, 2, 9));
        assert!(!set(&mut a, 3, 9));
        assert_eq!(a, [1, 2, 9]);
        assert_eq!(get(&a, 0), Some(1));
        assert_eq!(get(&a, 3), None);
        assert_eq!(get::<u8>(&[], 0), None);
    }
}
