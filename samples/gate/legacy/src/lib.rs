//! gate-legacy.sys: the gate sample as a legacy file-system filter.

#![no_std]

fsfilter_legacy::driver!(gate::Gate);
