//! redirect-legacy.sys: the redirect sample as a legacy file-system filter.

#![no_std]

fsfilter_legacy::driver!(redirect::Redirect);
