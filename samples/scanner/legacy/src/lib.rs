//! scanner-legacy.sys: the scanner sample as a legacy file-system filter.

#![no_std]

fsfilter_legacy::driver!(scanner::Scanner);
