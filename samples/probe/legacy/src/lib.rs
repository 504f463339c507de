//! probe-legacy.sys: the probe sample as a legacy file-system filter.

#![no_std]

fsfilter_legacy::driver!(probe::Probe);
