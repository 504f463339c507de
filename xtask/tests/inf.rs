//! The INF checker on the sample INFs, and on copies of them with one thing broken: each
//! broken copy must be rejected with a message that names the file, the section and the key.
//! Also: the INFs' `Parameters` agree with the samples' documented `PARAMETERS` tables (and load),
//! the sample READMEs list those tables, and `cargo xtask check-inf` exits non-zero on a bad file.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap fails the test")]
#![allow(clippy::expect_used, reason = "tests: a failed expect fails the test")]
#![allow(clippy::panic, reason = "tests")]
#![allow(clippy::indexing_slicing, reason = "tests")]

use std::path::PathBuf;
use std::process::Command;

use fsfilter::{Filter, ParameterList, ParameterValue};
use xtask::drivers::{self, Driver, Model, Workspace};
use xtask::inf::{self, Layout, RegValue, Report};

fn workspace() -> (PathBuf, Workspace) {
    let root = drivers::workspace_root();
    let ws = Workspace::discover(&root).unwrap();
    (root, ws)
}

fn driver(name: &str) -> Driver {
    workspace().1.driver(name).unwrap_or_else(|| panic!("no driver package {name}")).clone()
}

/// The text of a sample's INF.
fn text(name: &str) -> String {
    let (root, _) = workspace();
    std::fs::read_to_string(inf::inf_path(&root, &driver(name))).unwrap()
}

/// `text` with `from` replaced by `to`; `from` must occur.
fn mutate(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` is not in the INF");
    text.replace(from, to)
}

fn check_minifilter(text: &str) -> Report {
    inf::check("broken-minifilter.inf", text, Model::Minifilter, None)
}

/// The findings as text; asserts that one contains every part of `expected`.
fn assert_rejected(report: &Report, expected: &[&str]) {
    let found: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    assert!(
        found.iter().any(|v| expected.iter().all(|e| v.contains(e))),
        "no finding contains {expected:?}; findings:\n{}",
        found.join("\n")
    );
}

const PASSTHROUGH: &str = "passthrough-minifilter";

#[test]
fn every_sample_inf_passes_and_says_what_windows_needs() {
    let (root, ws) = workspace();
    let names: Vec<String> = ws.drivers.iter().map(Driver::name).collect();
    for expected in [
        "passthrough-minifilter",
        "passthrough-legacy",
        "probe-minifilter",
        "probe-legacy",
        "scanner-minifilter",
        "scanner-legacy",
        "spy-minifilter",
        "spy-legacy",
        "gate-minifilter",
        "gate-legacy",
        "redirect-minifilter",
        "redirect-legacy",
        "tally-minifilter",
        "tally-legacy",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} not found in {names:?}");
    }
    for d in &ws.drivers {
        let report = inf::check_driver(&root, d).unwrap();
        assert!(report.passed(), "{}:\n{:#?}", report.file, report.violations);
        let package = &report.package;
        let (class, group) = match d.sample.as_str() {
            "scanner" | "gate" => ("AntiVirus", "FSFilter Anti-Virus"),
            "redirect" => ("Virtualization", "FSFilter Virtualization"),
            _ => ("ActivityMonitor", "FSFilter Activity Monitor"),
        };
        assert_eq!(package.class, class, "{}", report.file);
        assert_eq!(package.service_name(), Some(d.name().as_str()));
        assert!(!package.services.is_empty());
        for service in &package.services {
            assert_eq!(service.service_type, Some(2));
            assert_eq!(service.start_type, Some(3), "demand start");
            assert_eq!(service.error_control, Some(1));
            assert_eq!(service.group.as_deref(), Some(group));
            let fltmgr = service.dependencies.iter().any(|s| s.eq_ignore_ascii_case("FltMgr"));
            assert_eq!(fltmgr, d.model == Model::Minifilter, "{}", report.file);
            assert!(service.binary.as_deref().unwrap().ends_with(&d.sys_name()));
        }
        match d.model {
            Model::Minifilter => {
                // One install section per layout: 24H2 and later, and everything before.
                assert_eq!(package.services.len(), 2, "{}", report.file);
                assert!(package.services.iter().any(|s| s.target.is_24h2_or_later()));
                assert!(package.services.iter().any(|s| !s.target.is_24h2_or_later()));
                let new = package.instances(Layout::Parameters).unwrap();
                let old = package.instances(Layout::Downlevel).unwrap();
                assert_eq!(new.default_instance, old.default_instance);
                assert_eq!(new.instances, old.instances);
                let default = &new.instances[0];
                assert_eq!(new.default_instance, default.name);
                assert_eq!(default.flags, 0);
                let altitude = fsfilter::Altitude::parse(&default.altitude).unwrap();
                let range = fsfilter::LoadOrderGroup::by_name(group).unwrap();
                assert!(range.contains(&altitude), "{} outside {group}", default.altitude);
            }
            Model::Legacy => {
                assert_eq!(package.services.len(), 1, "{}", report.file);
                assert!(package.instances.is_empty());
            }
        }
    }
}

#[test]
fn an_altitude_outside_its_group_is_rejected() {
    let broken = mutate(
        &text(PASSTHROUGH),
        "Instance.Altitude  = \"370500\"",
        "Instance.Altitude  = \"328010\"",
    );
    let report = check_minifilter(&broken);
    for section in ["[Passthrough.Instances]", "[PassthroughDownlevel.Instances]"] {
        assert_rejected(
            &report,
            &[
                "broken-minifilter.inf:",
                section,
                "Instances\\Passthrough Instance\\Altitude",
                "328010 is outside FSFilter Activity Monitor (360000-389999)",
            ],
        );
    }
    // An altitude that is no number at all.
    let broken = mutate(&text(PASSTHROUGH), "\"370500\"", "\"370.500.1\"");
    assert_rejected(&check_minifilter(&broken), &["Altitude", "at most one decimal point"]);
}

#[test]
fn a_missing_windows_11_24h2_layout_is_rejected() {
    let broken = mutate(
        &text(PASSTHROUGH),
        "AddReg         = Passthrough.Parameters, Passthrough.Instances",
        "AddReg         = Passthrough.Parameters",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "broken-minifilter.inf: [Passthrough.Service] AddReg:",
            "writes no Parameters\\Instances keys",
            "Windows 11 24H2 (build 26100) and later",
            "[DefaultInstall.NTamd64.10.0...26100]",
        ],
    );
}

#[test]
fn a_missing_down_level_layout_is_rejected() {
    let broken = mutate(
        &text(PASSTHROUGH),
        "AddReg         = Passthrough.Parameters, PassthroughDownlevel.Instances",
        "AddReg         = Passthrough.Parameters",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "[PassthroughDownlevel.Service] AddReg:",
            "writes no Instances keys",
            "Windows before 11 24H2",
            "[DefaultInstall.NTamd64]",
        ],
    );
}

#[test]
fn layouts_that_differ_are_rejected() {
    let broken = mutate(
        &text(PASSTHROUGH),
        "HKR,\"Instances\\\"%Instance.Name%,\"Altitude\",0x00000000,%Instance.Altitude%",
        "HKR,\"Instances\\\"%Instance.Name%,\"Altitude\",0x00000000,\"370501\"",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "[PassthroughDownlevel.Service] Instances:",
            "differs from Parameters\\Instances in [Passthrough.Service]",
            "370501",
        ],
    );
}

#[test]
fn one_install_section_must_write_both_layouts() {
    // Without a 24H2 section the one install section serves every Windows: both layouts.
    let base = text(PASSTHROUGH);
    let one_section = mutate(
        &base,
        "AddReg         = Passthrough.Parameters, PassthroughDownlevel.Instances",
        "AddReg         = Passthrough.Parameters, PassthroughDownlevel.Instances, Passthrough.Instances",
    );
    let one_section = mutate(&one_section, "[DefaultInstall.NTamd64.10.0...26100]", "[Unused.A]");
    let one_section =
        mutate(&one_section, "[DefaultInstall.NTamd64.10.0...26100.Services]", "[Unused.B]");
    let report = check_minifilter(&one_section);
    assert!(report.passed(), "{:#?}", report.violations);
    assert_eq!(report.package.services.len(), 1);
    assert_eq!(report.package.instances.len(), 2);

    let only_old = mutate(
        &one_section,
        "PassthroughDownlevel.Instances, Passthrough.Instances",
        "PassthroughDownlevel.Instances",
    );
    assert_rejected(
        &check_minifilter(&only_old),
        &["[PassthroughDownlevel.Service] AddReg:", "writes no Parameters\\Instances keys"],
    );
}

#[test]
fn a_class_guid_that_is_not_the_classes_is_rejected() {
    let broken = mutate(
        &text(PASSTHROUGH),
        "{b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2}",
        "{b1d1a169-c54f-4379-81db-bee7d88d7454}",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "broken-minifilter.inf:21: [Version] ClassGuid:",
            "is the GUID of class AntiVirus",
            "class ActivityMonitor has {b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2}",
        ],
    );
    let broken = mutate(
        &text(PASSTHROUGH),
        "{b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2}",
        "{00000000-0000-0000-0000-000000000000}",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &["ClassGuid", "not a file-system filter class GUID"],
    );
}

#[test]
fn a_class_that_does_not_match_the_group_is_rejected() {
    let broken = mutate(&text(PASSTHROUGH), "\"ActivityMonitor\"", "\"AntiVirus\"");
    let broken = mutate(
        &broken,
        "{b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2}",
        "{b1d1a169-c54f-4379-81db-bee7d88d7454}",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "[Passthrough.Service] LoadOrderGroup:",
            "\"FSFilter Activity Monitor\" belongs to class ActivityMonitor",
            "[Version] Class is \"AntiVirus\"",
        ],
    );
}

#[test]
fn flags_that_are_not_a_dword_are_rejected() {
    let broken = mutate(
        &text(PASSTHROUGH),
        "HKR,\"Parameters\\Instances\\\"%Instance.Name%,\"Flags\",0x00010001,%Instance.Flags%",
        "HKR,\"Parameters\\Instances\\\"%Instance.Name%,\"Flags\",0x00000000,%Instance.Flags%",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "[Passthrough.Instances] Parameters\\Instances\\Passthrough Instance\\Flags:",
            "must be REG_DWORD (AddReg flags 0x00010001), found REG_SZ \"0x0\"",
        ],
    );
    let missing = mutate(
        &text(PASSTHROUGH),
        "HKR,\"Instances\\\"%Instance.Name%,\"Flags\",0x00010001,%Instance.Flags%\n",
        "",
    );
    assert_rejected(
        &check_minifilter(&missing),
        &["Instances\\Passthrough Instance\\Flags:", "missing"],
    );
}

#[test]
fn a_default_instance_that_does_not_exist_is_rejected() {
    let broken = mutate(
        &text(PASSTHROUGH),
        "DefaultInstance    = \"Passthrough Instance\"",
        "DefaultInstance    = \"Top Instance\"",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "[Passthrough.Instances] Parameters\\Instances\\DefaultInstance:",
            "names \"Top Instance\", which has no Parameters\\Instances\\Top Instance key",
        ],
    );
}

#[test]
fn a_minifilter_without_fltmgr_is_rejected() {
    let broken = mutate(&text(PASSTHROUGH), "Dependencies   = \"FltMgr\"\n", "");
    assert_rejected(
        &check_minifilter(&broken),
        &["[Passthrough.Service] Dependencies:", "lacks FltMgr"],
    );
}

#[test]
fn service_values_windows_needs_are_checked() {
    let base = text(PASSTHROUGH);
    let cases = [
        (
            "ServiceType    = 2",
            "ServiceType    = 1",
            "ServiceType: is Some(\"1\"); a file-system filter is 2",
        ),
        (
            "StartType      = 3",
            "StartType      = 7",
            "StartType: is Some(\"7\"); a start type is 0 to 4",
        ),
        ("ErrorControl   = 1", "ErrorControl   = 3", "ErrorControl: is Some(\"3\")"),
        (
            "LoadOrderGroup = \"FSFilter Activity Monitor\"",
            "LoadOrderGroup = \"FSFilter Nonsense\"",
            "LoadOrderGroup: \"FSFilter Nonsense\" is not a file-system filter load-order group",
        ),
        (
            "ServiceBinary  = %13%\\passthrough-minifilter.sys",
            "ServiceBinary  = %12%\\passthrough-minifilter.sys",
            "ServiceBinary: %12%\\passthrough-minifilter.sys is not where [DefaultInstall.NTamd64.10.0...26100] copies",
        ),
        (
            "[DefaultInstall.NTamd64]",
            "[DefaultInstall]",
            "[DefaultInstall] needs an architecture decoration",
        ),
        ("LegacyUninstall = 1\n", "", "[DefaultUninstall.NTamd64] LegacyUninstall: must be 1"),
        ("Signature   = \"$WINDOWS NT$\"", "Signature   = \"$CHICAGO$\"", "[Version] Signature"),
        ("DriverVer   = 11/22/2026,0.1.0.0", "DriverVer   = 2026-11-22", "[Version] DriverVer"),
    ];
    for (from, to, expected) in cases {
        // Replace the first occurrence only: one service section broken.
        assert!(base.contains(from), "`{from}` is not in the INF");
        let broken = base.replacen(from, to, 1);
        assert_rejected(&check_minifilter(&broken), &["broken-minifilter.inf", expected]);
    }
    let wrong_binary = inf::check("p.inf", &base, Model::Minifilter, Some("other.sys"));
    assert_rejected(
        &wrong_binary,
        &["ServiceBinary: installs passthrough-minifilter.sys, not other.sys"],
    );
}

#[test]
fn legacy_infs_have_no_instances_and_no_fltmgr() {
    let base = text("passthrough-legacy");
    let report = inf::check("broken-legacy.inf", &base, Model::Legacy, None);
    assert!(report.passed(), "{:#?}", report.violations);

    let with_instances = format!(
        "{}\n[Passthrough.Instances]\nHKR,\"Instances\",\"DefaultInstance\",0x00000000,\"X\"\n",
        mutate(
            &base,
            "AddReg         = Passthrough.Parameters",
            "AddReg         = Passthrough.Parameters, Passthrough.Instances"
        )
    );
    assert_rejected(
        &inf::check("broken-legacy.inf", &with_instances, Model::Legacy, None),
        &[
            "broken-legacy.inf:",
            "[Passthrough.Instances] Instances\\DefaultInstance:",
            "a legacy filter has no instances",
        ],
    );
    let with_fltmgr = mutate(
        &base,
        "AddReg         = Passthrough.Parameters",
        "AddReg         = Passthrough.Parameters\nDependencies   = FltMgr",
    );
    assert_rejected(
        &inf::check("broken-legacy.inf", &with_fltmgr, Model::Legacy, None),
        &["[Passthrough.Service] Dependencies:", "names FltMgr"],
    );
    // A minifilter INF is not a legacy INF, and the other way round.
    let as_legacy = inf::check("m.inf", &text(PASSTHROUGH), Model::Legacy, None);
    assert_rejected(&as_legacy, &["Dependencies: names FltMgr"]);
    let as_minifilter = inf::check("l.inf", &base, Model::Minifilter, None);
    assert_rejected(&as_minifilter, &["writes no Parameters\\Instances keys"]);
}

#[test]
fn a_lone_percent_sign_is_a_syntax_error() {
    let broken = mutate(&text("scanner-minifilter"), "\"X5O!P%%@AP\"", "\"X5O!P%@AP\"");
    assert_rejected(
        &check_minifilter(&broken),
        &["[Scanner.Parameters] a lone `%`", "write `%%` for a percent sign"],
    );
}

fn parameter_list(params: &[(String, RegValue)]) -> Vec<(&str, ParameterValue<'_>)> {
    params
        .iter()
        .map(|(name, value)| {
            let value = match value {
                RegValue::Sz(s) => ParameterValue::String(s),
                RegValue::Dword(d) => ParameterValue::Dword(*d),
                other => panic!("{name}: {other} is not a type the samples read"),
            };
            (name.as_str(), value)
        })
        .collect()
}

/// The documented (name, kind, default) of a value as the INF writes it.
fn as_documented(value: &RegValue) -> (&'static str, String) {
    match value {
        RegValue::Sz(s) => ("REG_SZ", s.clone()),
        RegValue::Dword(d) => ("REG_DWORD", d.to_string()),
        other => (other.kind(), other.to_string()),
    }
}

/// Each sample's documented parameters.
const DOCUMENTED: &[(&str, &[fsfilter::ParameterDoc])] = &[
    ("passthrough", passthrough::PARAMETERS),
    ("probe", probe::PARAMETERS),
    ("scanner", scanner::PARAMETERS),
    ("spy", spy::PARAMETERS),
    ("gate", gate::PARAMETERS),
    ("redirect", redirect::PARAMETERS),
    ("tally", tally::PARAMETERS),
];

#[test]
fn every_inf_writes_every_documented_parameter_at_its_default() {
    let (root, ws) = workspace();
    for d in &ws.drivers {
        let (_, documented) = DOCUMENTED
            .iter()
            .find(|(sample, _)| *sample == d.sample)
            .unwrap_or_else(|| panic!("{}: no documented parameters in this test", d.name()));
        let report = inf::check_driver(&root, d).unwrap();
        let params = report.package.parameters();
        for (written, _) in &params {
            assert!(
                documented.iter().any(|doc| doc.name.eq_ignore_ascii_case(written)),
                "{} writes {written}, which its PARAMETERS table does not document",
                report.file
            );
        }
        for doc in *documented {
            let (_, value) = params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(doc.name))
                .unwrap_or_else(|| panic!("{} does not write {}", report.file, doc.name));
            let (kind, text) = as_documented(value);
            assert_eq!(kind, doc.kind, "{}: {}", report.file, doc.name);
            if doc.default != "(required)" {
                assert_eq!(text, doc.default, "{}: {}", report.file, doc.name);
            }
        }
        // The filter loads from exactly these values.
        let list = parameter_list(&params);
        let parameters =
            ParameterList { service: report.package.service_name().unwrap(), values: &list };
        match d.sample.as_str() {
            "passthrough" => {
                let filter = <passthrough::Passthrough as Filter>::load(&parameters).unwrap();
                assert!(!filter.traces(), "{}: Trace is off by default", report.file);
            }
            "probe" => {
                let probe = probe::Probe::from_parameters(&parameters);
                assert!(probe.is_ok(), "{}: {probe:?}", report.file);
            }
            "scanner" => {
                let scanner = scanner::Scanner::from_parameters(&parameters)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", report.file));
                // `%%` in the INF is one percent sign in the registry.
                assert_eq!(scanner.pattern(), b"X5O!P%@AP", "{}", report.file);
            }
            "spy" => {
                let spy = spy::Settings::from_parameters(&parameters)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", report.file));
                assert_eq!(spy.max_records, spy::DEFAULT_RECORDS, "{}", report.file);
            }
            "gate" => {
                let gate = gate::Settings::from_parameters(&parameters)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", report.file));
                assert_eq!(gate.timeout_ms, gate::DEFAULT_TIMEOUT_MS, "{}", report.file);
                assert!(!gate.fail_closed, "{}", report.file);
            }
            "redirect" => {
                // SimRep's default mapping, \x\y to \a\b, on the first disk volume.
                let r = redirect::Redirect::from_parameters(&parameters)
                    .unwrap_or_else(|e| panic!("{}: {e}", report.file));
                let text = |u: &[u16]| String::from_utf16(u).unwrap();
                let m = r.mapping();
                assert_eq!(text(m.old()), r"\Device\HarddiskVolume1\x\y", "{}", report.file);
                assert_eq!(text(m.new_prefix()), r"\Device\HarddiskVolume1\a\b", "{}", report.file);
                assert!(r.notes(), "{}", report.file);
            }
            "tally" => {
                // No parameters: it loads from an empty key and writes none.
                assert!(params.is_empty(), "{}: {params:?}", report.file);
                let tally = <tally::Tally as Filter>::load(&parameters).unwrap();
                assert_eq!(tally.totals(), tally::Totals::default(), "{}", report.file);
            }
            other => panic!("{other}: unknown sample"),
        }
    }
}

/// The README row of a documented parameter.
fn readme_row(name: &str, kind: &str, default: &str, description: &str) -> String {
    let default = match default {
        "" => "(empty)".to_string(),
        d if d.starts_with('(') => d.to_string(),
        d => format!("`{d}`"),
    };
    format!("| `{name}` | {kind} | {default} | {} |", description.replace('|', "\\|"))
}

#[test]
fn the_sample_readmes_list_the_documented_parameters() {
    let (root, _) = workspace();
    for (sample, documented) in DOCUMENTED {
        let path = root.join("samples").join(sample).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        for d in *documented {
            let row = readme_row(d.name, d.kind, d.default, d.description);
            assert!(readme.contains(&row), "{} lacks the row\n{row}", path.display());
        }
    }
}

#[test]
fn check_inf_exits_non_zero_and_names_file_section_and_key() {
    let xtask = env!("CARGO_BIN_EXE_xtask");
    let output = Command::new(xtask).arg("check-inf").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().filter(|l| l.contains(".inf: ok")).count(), 14, "{stdout}");

    let dir = std::env::temp_dir().join(format!("xtask-inf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad-minifilter.inf");
    let broken = mutate(&text(PASSTHROUGH), "\"370500\"", "\"500\"");
    std::fs::write(&bad, broken).unwrap();
    let output = Command::new(xtask).arg("check-inf").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad-minifilter.inf:")
            && stderr.contains("[Passthrough.Instances] Parameters\\Instances\\Passthrough Instance\\Altitude: 500 is outside"),
        "{stderr}"
    );

    let unnamed = dir.join("something.inf");
    std::fs::write(&unnamed, text(PASSTHROUGH)).unwrap();
    let output = Command::new(xtask).arg("check-inf").arg(&unnamed).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("-minifilter.inf or *-legacy.inf"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The passthrough minifilter INF moved to another load-order group and setup class.
fn in_group(group: &str, class: &str, guid: &str, altitude: &str) -> String {
    let text = mutate(&text(PASSTHROUGH), "\"ActivityMonitor\"", &format!("\"{class}\""));
    let text = mutate(&text, "{b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2}", &format!("{{{guid}}}"));
    let text = mutate(&text, "\"FSFilter Activity Monitor\"", &format!("\"{group}\""));
    mutate(&text, "\"370500\"", &format!("\"{altitude}\""))
}

#[test]
fn every_documented_setup_class_is_accepted_with_its_group() {
    // ifs/file-system-filter-driver-classes-and-class-guids (2023) lists these two, and
    // devguid.h has their GUIDs (GUID_DEVCLASS_FSFILTER_SYSTEMRECOVERY, _VIRTUALIZATION).
    let cases = [
        (
            "FSFilter System Recovery",
            "SystemRecovery",
            "2db15374-706e-4131-a0c7-d7c78eb0289a",
            "225000",
        ),
        (
            "FSFilter Virtualization",
            "Virtualization",
            "f75a86c0-10d8-4c3a-b233-ed60e4cdfaac",
            "135500",
        ),
    ];
    for (group, class, guid, altitude) in cases {
        let report = check_minifilter(&in_group(group, class, guid, altitude));
        assert!(report.passed(), "{group}: {:#?}", report.violations);
        // The group's class is enforced: ActivityMonitor does not go with this group.
        let wrong =
            in_group(group, "ActivityMonitor", "b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2", altitude);
        assert_rejected(
            &check_minifilter(&wrong),
            &[
                &format!("\"{group}\" belongs to class {class}"),
                "[Version] Class is \"ActivityMonitor\"",
            ],
        );
    }
}

#[test]
fn an_uninstall_that_deletes_another_service_is_rejected() {
    // Older Windows run [DefaultUninstall.NTamd64]: a DelService naming anything but the service
    // that AddService installed leaves that service registered, its image deleted.
    let broken = mutate(
        &text(PASSTHROUGH),
        "DelService = %ServiceName%,0x200",
        "DelService = passthrough,0x200",
    );
    assert_rejected(
        &check_minifilter(&broken),
        &[
            "broken-minifilter.inf:",
            "[DefaultUninstall.NTamd64.Services] DelService:",
            "\"passthrough\" is not the service the install sections add (\"passthrough-minifilter\")",
        ],
    );
}
