//! tally-minifilter.sys: the tally sample on the Filter Manager.

#![no_std]

fsfilter_minifilter::driver!(tally::Tally);
