//! passthrough-minifilter.sys: the passthrough sample on the Filter Manager.

#![no_std]

fsfilter_minifilter::driver!(passthrough::Passthrough);
