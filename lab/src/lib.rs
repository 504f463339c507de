//! The fsfilter lab: scenarios (../shared/docs/scenario.md) run in the simulated NT kernel with
//! the samples built against both filter models, and reports of what each filter saw.

#![forbid(unsafe_code)]

pub mod compare;
pub mod demo;
pub mod fltmgr;
pub mod fuzzing;
pub mod gatelog;
pub mod html;
pub mod json;
pub mod run;
pub mod samples;
pub mod scenario;
pub mod spylog;
pub mod sweep;
pub mod text;
pub mod trace;
