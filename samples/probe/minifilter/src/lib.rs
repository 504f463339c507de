//! probe-minifilter.sys: the probe sample on the Filter Manager.

#![no_std]

fsfilter_minifilter::driver!(probe::Probe);
