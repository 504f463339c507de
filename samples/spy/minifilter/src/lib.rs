//! spy-minifilter.sys: the spy sample on the Filter Manager.

#![no_std]

fsfilter_minifilter::driver!(spy::Spy);
