//! gate-minifilter.sys: the gate sample on the Filter Manager.

#![no_std]

fsfilter_minifilter::driver!(gate::Gate);
