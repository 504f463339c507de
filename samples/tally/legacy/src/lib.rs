//! tally-legacy.sys: the tally sample as a legacy file-system filter.

#![no_std]

fsfilter_legacy::driver!(tally::Tally);
