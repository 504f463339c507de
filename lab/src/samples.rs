//! The samples a scenario can load, each built against both backends, and the parameters each
//! reads (`fsfilter samples`).

use fsfilter::ServiceParameters;
use fsfilter_sim::DriverEntry;

use crate::scenario::Model;

pub use fsfilter::ParameterDoc as Parameter;

/// A sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Its name in scenarios.
    pub name: &'static str,
    /// One line about it.
    pub summary: &'static str,
    /// Its entry point as a minifilter.
    pub minifilter: DriverEntry,
    /// Its entry point as a legacy filter.
    pub legacy: DriverEntry,
    /// The load-order group its INFs use.
    pub group: &'static str,
    /// The parameters it reads.
    pub parameters: &'static [Parameter],
    /// Parses a set of parameter values as the sample's `DriverEntry` does: `Err` with the
    /// sample's own message when the driver would fail to load (`STATUS_INVALID_PARAMETER`).
    pub check: fn(&dyn ServiceParameters) -> Result<(), String>,
    /// The name of its message channel (`Filter::MESSAGES`), if it has one.
    pub channel: Option<&'static str>,
}

impl Sample {
    /// The entry point for `model`.
    pub fn entry(&self, model: Model) -> DriverEntry {
        match model {
            Model::Minifilter => self.minifilter,
            Model::Legacy => self.legacy,
        }
    }
}

/// Every sample.
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "passthrough",
        summary: "every operation, pre and post, changes nothing (Microsoft's passThrough)",
        minifilter: passthrough_minifilter::ENTRY,
        legacy: passthrough_legacy::ENTRY,
        group: "FSFilter Activity Monitor",
        parameters: passthrough::PARAMETERS,
        // Loads whatever its parameters.
        check: |_| Ok(()),
        channel: None,
    },
    Sample {
        name: "probe",
        summary: "the lab's instrument: records every callback, behaviour from its Parameters key",
        minifilter: probe_minifilter::ENTRY,
        legacy: probe_legacy::ENTRY,
        group: "FSFilter Activity Monitor",
        parameters: probe::PARAMETERS,
        check: |p| probe::Probe::from_parameters(p).map(drop).map_err(|e| e.to_string()),
        channel: None,
    },
    Sample {
        name: "scanner",
        summary: "denies files whose contents match a pattern, scanning through data-scan sections",
        minifilter: scanner_minifilter::ENTRY,
        legacy: scanner_legacy::ENTRY,
        group: "FSFilter Anti-Virus",
        parameters: scanner::PARAMETERS,
        check: |p| scanner::Scanner::from_parameters(p).map(drop).map_err(|e| e.to_string()),
        channel: None,
    },
    Sample {
        name: "spy",
        summary: "records every operation in a log a user-mode reader takes (FileSpy, MiniSpy)",
        minifilter: spy_minifilter::ENTRY,
        legacy: spy_legacy::ENTRY,
        group: "FSFilter Activity Monitor",
        parameters: spy::PARAMETERS,
        check: |p| spy::Settings::from_parameters(p).map(drop).map_err(|e| e.to_string()),
        channel: match <spy::Spy as fsfilter::Filter>::MESSAGES {
            Some(c) => Some(c.name),
            None => None,
        },
    },
    Sample {
        name: "gate",
        summary: "asks a user-mode service about each open and cancels the denied ones (scanner, avscan)",
        minifilter: gate_minifilter::ENTRY,
        legacy: gate_legacy::ENTRY,
        group: "FSFilter Anti-Virus",
        parameters: gate::PARAMETERS,
        check: |p| gate::Settings::from_parameters(p).map(drop).map_err(|e| e.to_string()),
        channel: match <gate::Gate as fsfilter::Filter>::MESSAGES {
            Some(c) => Some(c.name),
            None => None,
        },
    },
    Sample {
        name: "redirect",
        summary: "redirects opens under one name prefix to another by STATUS_REPARSE (SimRep)",
        minifilter: redirect_minifilter::ENTRY,
        legacy: redirect_legacy::ENTRY,
        group: "FSFilter Virtualization",
        parameters: redirect::PARAMETERS,
        check: |p| redirect::Redirect::from_parameters(p).map(drop).map_err(|e| e.to_string()),
        channel: None,
    },
    Sample {
        name: "tally",
        summary: "counts each stream's opens, reads, writes and bytes in a stream context (ctx)",
        minifilter: tally_minifilter::ENTRY,
        legacy: tally_legacy::ENTRY,
        group: "FSFilter Activity Monitor",
        parameters: tally::PARAMETERS,
        // Reads no parameters: loads whatever the key holds.
        check: |_| Ok(()),
        channel: None,
    },
];

/// The sample named `name`.
pub fn find(name: &str) -> Option<&'static Sample> {
    SAMPLES.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// The names of the samples with a message channel.
pub fn with_channel() -> Vec<&'static str> {
    SAMPLES.iter().filter(|s| s.channel.is_some()).map(|s| s.name).collect()
}

/// The names of every sample.
pub fn names() -> Vec<&'static str> {
    SAMPLES.iter().map(|s| s.name).collect()
}

/// The `fsfilter samples` listing.
pub fn listing() -> String {
    let mut out = String::new();
    for s in SAMPLES {
        out.push_str(&format!("{} — {}\n  group: {}\n", s.name, s.summary, s.group));
        if let Some(c) = s.channel {
            out.push_str(&format!(
                "  message channel: {c} (connect, message, disconnect, serve steps)\n"
            ));
        }
        if s.parameters.is_empty() {
            out.push_str("  parameters: none\n");
        }
        for p in s.parameters {
            out.push_str(&format!(
                "  {:<16} {:<9} default {:<10} {}\n",
                p.name,
                p.kind,
                if p.default.is_empty() { "(empty)" } else { p.default },
                p.description
            ));
        }
        out.push('\n');
    }
    out
}
