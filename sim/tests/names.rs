//! The interning budget of `fsfilter_sim::Name` (sim/src/name.rs): in a process of its own, since
//! spending the budget changes how every later name of the process is stored (not what it reads).

use fsfilter_sim::Name;
use fsfilter_sim::name::{INTERN_BUDGET, INTERN_MAX_LEN, interned_bytes};

#[test]
fn once_the_budget_is_spent_new_names_are_counted_and_memory_stays_bounded() {
    let early = Name::from("Filter0");
    assert!(early.is_interned());
    // New names without end, as the scenario fuzzer makes them.
    let mut made = Vec::new();
    let mut i = 0u64;
    while made.last().is_none_or(Name::is_interned) {
        made.push(Name::from(format!("driver number {i:>40}")));
        i += 1;
        assert!(i < 1_000_000, "the budget was never reached");
    }
    let spent = interned_bytes();
    assert!(spent <= INTERN_BUDGET, "{spent} bytes interned, beyond the budget {INTERN_BUDGET}");
    // From now on every new text is counted and freed with its names...
    for j in 0..1000 {
        let n = Name::from(format!("later name {j}"));
        assert!(!n.is_interned());
        assert_eq!(n, format!("later name {j}"));
    }
    assert_eq!(interned_bytes(), spent);
    // ...while a text interned before is still found, and every name reads as it did.
    assert!(Name::from("Filter0").is_interned());
    assert_eq!(Name::from("Filter0").as_ptr(), early.as_ptr());
    assert!(made.iter().enumerate().all(|(k, n)| *n == format!("driver number {k:>40}")));
    assert!(!Name::from("w".repeat(INTERN_MAX_LEN + 1)).is_interned());
}
