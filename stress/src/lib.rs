//! fsfilter-stress: random machines and timelines for issue 10's randomized stress.
