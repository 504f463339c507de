//! scanner-minifilter.sys: the scanner sample on the Filter Manager.

#![no_std]

fsfilter_minifilter::driver!(scanner::Scanner);
