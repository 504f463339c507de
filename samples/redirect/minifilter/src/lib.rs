//! redirect-minifilter.sys: the redirect sample on the Filter Manager.

#![no_std]

fsfilter_minifilter::driver!(redirect::Redirect);
