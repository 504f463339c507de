//! passthrough-legacy.sys: the passthrough sample as a legacy file-system filter.

#![no_std]

fsfilter_legacy::driver!(passthrough::Passthrough);
