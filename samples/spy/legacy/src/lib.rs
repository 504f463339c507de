//! spy-legacy.sys: the spy sample as a legacy file-system filter.

#![no_std]

fsfilter_legacy::driver!(spy::Spy);
