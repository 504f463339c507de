//! Bad scenarios (issue 8): every error names the file, the line and the key, with the exact
//! message; a bad scenario never panics, and `fsfilter check` exits with status 2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter_lab::scenario::{Action, LinkKind, ServeReply, parse};

fn error(text: &str) -> String {
    parse("bad.toml", text).expect_err("the scenario must be refused").to_string()
}

const VOLUME: &str = "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n";

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    assert_eq!(
        error("[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\nfilesytem = \"fat\"\n"),
        "bad.toml:4: volume[0].filesytem: unknown key (did you mean `filesystem`?)"
    );
    assert_eq!(
        error("seed = 1\ncolour = \"blue\"\n"),
        "bad.toml:2: colour: unknown key (known here: name, seed, volume, driver, step)"
    );
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"mount\"\nvolume = \"C:\"\nlabel = \"x\"\n")),
        "bad.toml:7: step[0].label: unknown key (known here: action, volume)"
    );
}

#[test]
fn unknown_samples_and_drivers() {
    assert_eq!(
        error("[[driver]]\nname = \"A\"\nsample = \"filespy\"\nmodel = \"legacy\"\n"),
        "bad.toml:3: driver[0].sample: unknown sample `filespy` (samples: passthrough, probe, scanner, spy, gate, redirect, tally)"
    );
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"load\"\ndriver = \"Ghost\"\n")),
        "bad.toml:6: step[0].driver: no driver named `Ghost`"
    );
}

#[test]
fn altitudes_must_be_decimal_and_unique_and_only_for_minifilters() {
    assert_eq!(
        error(
            "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"minifilter\"\naltitude = \"37o000\"\n"
        ),
        "bad.toml:5: driver[0].altitude: altitude `37o000`: an altitude is digits with at most one decimal point; byte 2 is neither"
    );
    assert_eq!(
        error(
            "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"minifilter\"\naltitude = \"370000\"\n\n\
             [[driver]]\nname = \"B\"\nsample = \"probe\"\nmodel = \"minifilter\"\naltitude = \"370000.0\"\n"
        ),
        "bad.toml:11: driver[1].altitude: `A` and `B` both have altitude 370000.0: two instances cannot share an altitude"
    );
    assert_eq!(
        error(
            "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\naltitude = \"370000\"\n"
        ),
        "bad.toml:5: driver[0].altitude: a legacy filter has no altitude: it sits where it attaches"
    );
    assert_eq!(
        error("[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"minifilter\"\n"),
        "bad.toml:1: driver[0].altitude: a minifilter needs the altitude of its default instance"
    );
}

#[test]
fn steps_naming_missing_volumes() {
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"mount\"\nvolume = \"Z:\"\n")),
        "bad.toml:6: step[0].volume: no volume named `Z:`"
    );
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"io\"\nvolume = \"Q:\"\nop = \"read\"\n")),
        "bad.toml:6: step[0].volume: no volume named `Q:`"
    );
}

#[test]
fn wrong_types_values_and_syntax() {
    assert_eq!(
        error("[[volume]]\nname = \"C:\"\nfilesystem = 7\n"),
        "bad.toml:3: volume[0].filesystem: expected a string, found an integer"
    );
    assert_eq!(
        error("[[volume]]\nname = \"C:\"\nfilesystem = \"hpfs\"\n"),
        "bad.toml:3: volume[0].filesystem: unknown value `hpfs` (one of ntfs, fat, exfat, refs, cdfs, udfs, mup, npfs, msfs)"
    );
    assert_eq!(
        error("name = \"x\"\n[[volume]\n"),
        "bad.toml:2: not valid TOML: unclosed array table, expected `]`"
    );
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"teleport\"\n")),
        "bad.toml:7: step[0].op: unknown io op `teleport` (one of create, read, write, query_information, set_information, directory_control, cleanup, close, flush, fsctl, device_control, lock, shutdown, query_volume_information, query_attributes, cancel, map)"
    );
    // The query_attributes extension (README) takes a path, not a class.
    assert_eq!(
        error(&format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"query_attributes\"\nclass = \"basic\"\n"
        )),
        "bad.toml:8: step[0].class: applies to query_information only, not to `query_attributes`"
    );
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"reboot\"\n")),
        "bad.toml:5: step[0].action: unknown action `reboot` (one of load, unload, stop, mount, dismount, remove, attach, detach, io, snapshot, connect, message, disconnect, serve, link)"
    );
    assert_eq!(
        error(
            "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n[[volume]]\nname = \"c:\"\nfilesystem = \"fat\"\n"
        ),
        "bad.toml:5: volume[1].name: volume `c:` is defined twice"
    );
    assert_eq!(
        error(
            "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n[driver.parameters]\nRules = [1, 2]\n"
        ),
        "bad.toml:6: driver[0].parameters.Rules: a parameter is a string (REG_SZ), an integer or a boolean (REG_DWORD)"
    );
}

#[test]
fn garbage_never_panics() {
    // A few shapes the parser must turn into errors, not panics (the fuzz target does more).
    for text in [
        "",
        "[[",
        "volume = 3",
        "[[volume]]",
        "[[step]]\naction = 1",
        "\u{0}\u{ffff}",
        "seed = -1",
        "[[driver]]\nname=\"a\"\nsample=\"probe\"\nmodel=\"minifilter\"\naltitude=\"\"",
        "[[driver]]\nname=\"a\"\nsample=\"probe\"\nmodel=\"legacy\"\ninstance_flags=99999999999",
    ] {
        let _ = parse("x.toml", text);
    }
    assert!(parse("empty.toml", "").is_ok(), "an empty scenario is a machine with nothing in it");
}

/// Runs `fsfilter check` on a file named `name` holding `text`: (exit code, stdout, stderr).
fn check(name: &str, text: &str) -> (Option<i32>, String, String) {
    check_bytes(name, text.as_bytes())
}

/// [`check`] on a file holding `bytes`.
fn check_bytes(name: &str, bytes: &[u8]) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("fsfilter-check-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fsfilter"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn check_exits_2_with_the_message_on_stderr() {
    let (code, _, stderr) = check(
        "bad.toml",
        "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\nfilesytem = \"fat\"\n",
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.ends_with(
            "bad.toml:4: volume[0].filesytem: unknown key (did you mean `filesystem`?)\n"
        ),
        "{stderr}"
    );
}

#[test]
fn check_prints_a_warning_on_stderr_and_exits_0() {
    let (code, stdout, stderr) = check(
        "warn.toml",
        "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n\
         [driver.parameters]\nRules = \"pend:x read\"\n",
    );
    assert_eq!(code, Some(0));
    assert!(
        stderr.starts_with("warning: ")
            && stderr.ends_with(
                "warn.toml:6: driver[0].parameters.Rules: Rules: pend: needs milliseconds: `A` \
                 will fail to load with STATUS_INVALID_PARAMETER\n"
            ),
        "{stderr}"
    );
    assert!(stdout.contains(": ok ("), "{stdout}");
}

#[test]
fn numbers_out_of_range_are_named_at_their_own_line() {
    // The line of the value, not of its table's header.
    let driver = "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"minifilter\"\n";
    assert_eq!(
        error(&format!("{driver}altitude = \"370000\"\n\ninstance_flags = 4294967296\n")),
        "bad.toml:7: driver[0].instance_flags: does not fit a DWORD"
    );
    assert_eq!(
        error(
            "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n\ninstance_flags = 1\n"
        ),
        "bad.toml:6: driver[0].instance_flags: a legacy filter has no instances"
    );
    // A transfer's buffer is the lab's memory: at most 64 MiB.
    assert_eq!(
        error(&format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"write\"\npath = \"a\"\n\nlength = 67108865\n"
        )),
        "bad.toml:10: step[0].length: too large (at most 64 MiB)"
    );
    assert!(
        parse(
            "ok.toml",
            &format!(
                "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"write\"\npath = \"a\"\nlength = 67108864\n"
            )
        )
        .is_ok()
    );
}

#[test]
fn an_altitude_error_says_what_is_wrong() {
    let long = "1".repeat(49);
    assert_eq!(
        error(&format!(
            "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"minifilter\"\naltitude = \"{long}\"\n"
        )),
        format!(
            "bad.toml:5: driver[0].altitude: altitude `{long}`: altitudes longer than {} characters are not supported",
            fsfilter::ALTITUDE_CAPACITY
        )
    );
}

#[test]
fn a_snapshot_cannot_take_the_final_snapshot_s_label() {
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"snapshot\"\nlabel = \"end\"\n")),
        "bad.toml:6: step[0].label: `end` is the label of the run's final snapshot"
    );
}

#[test]
fn names_the_machine_already_has_are_refused() {
    assert_eq!(
        error("[[driver]]\nname = \"fltmgr\"\nsample = \"probe\"\nmodel = \"legacy\"\n"),
        "bad.toml:2: driver[0].name: `fltmgr` is the simulated machine's own `FltMgr` service"
    );
    assert_eq!(
        error("[[driver]]\nname = \"Ntfs\"\nsample = \"probe\"\nmodel = \"legacy\"\n"),
        "bad.toml:2: driver[0].name: `Ntfs` is the simulated machine's own `Ntfs` service"
    );
    assert_eq!(
        error("[[volume]]\nname = \"\"\nfilesystem = \"ntfs\"\n"),
        "bad.toml:2: volume[0].name: a volume needs a name"
    );
}

#[test]
fn a_misspelt_parameter_is_named_with_a_suggestion() {
    // A driver ignores a value it does not read: the typo would pass silently.
    let driver = "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n";
    assert_eq!(
        error(&format!("{driver}[driver.parameters]\nOperatons = \"create\"\n")),
        "bad.toml:6: driver[0].parameters.Operatons: unknown parameter (did you mean `Operations`?)"
    );
    // Registry value names are compared without case.
    assert!(
        parse("ok.toml", &format!("{driver}[driver.parameters]\noperations = \"create\"\n"))
            .is_ok()
    );
    assert_eq!(
        error(
            "[[driver]]\nname = \"A\"\nsample = \"passthrough\"\nmodel = \"legacy\"\n\
             [driver.parameters]\nColour = 1\n"
        ),
        "bad.toml:6: driver[0].parameters.Colour: unknown parameter (this sample reads: Trace)"
    );
}

#[test]
fn a_parameter_of_the_wrong_registry_type_is_refused_at_its_line() {
    // The lab writes each value with its TOML type; a driver reading a REG_DWORD finds a REG_SZ
    // absent, and the reverse: the value would be ignored without a word.
    let probe = "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n";
    assert_eq!(
        error(&format!("{probe}[driver.parameters]\nAttach = \"disk\"\nPost = \"no\"\n")),
        "bad.toml:7: driver[0].parameters.Post: `Post` is a REG_DWORD: give an integer or a boolean"
    );
    assert_eq!(
        error(&format!("{probe}[driver.parameters]\nUnload = true\n")),
        "bad.toml:6: driver[0].parameters.Unload: `Unload` is a REG_SZ: give a string"
    );
    let pass = "[[driver]]\nname = \"P\"\nsample = \"passthrough\"\nmodel = \"legacy\"\n";
    assert_eq!(
        error(&format!("{pass}[driver.parameters]\ntrace = \"1\"\n")),
        "bad.toml:6: driver[0].parameters.trace: `Trace` is a REG_DWORD: give an integer or a boolean"
    );
    // Booleans are DWORDs.
    let s = parse("ok.toml", &format!("{pass}[driver.parameters]\nTrace = true\n")).unwrap();
    assert!(s.warnings.is_empty());
}

#[test]
fn a_blank_volume_with_files_or_without_media_is_refused_at_the_key() {
    assert_eq!(
        error(
            "[[volume]]\nname = \"X:\"\nfilesystem = \"ntfs\"\nblank = true\n\
             files = { \"a.txt\" = \"a\" }\n"
        ),
        "bad.toml:4: volume[0].blank: unformatted media hold no files: give `files` or `blank`, \
         not both"
    );
    assert_eq!(
        error(
            r#"[[volume]]
name = '\\s\x'
filesystem = "mup"
blank = true
"#
        ),
        "bad.toml:4: volume[0].blank: a mup volume has no media to leave unformatted"
    );
    assert_eq!(
        error("[[volume]]\nname = \"X:\"\nfilesystem = \"fat\"\nblank = 1\n"),
        "bad.toml:4: volume[0].blank: expected true or false, found an integer"
    );
    let s = parse(
        "ok.toml",
        "[[volume]]\nname = \"X:\"\nfilesystem = \"fat\"\nblank = false\n\
                              files = { \"a.txt\" = \"a\" }\n",
    )
    .unwrap();
    assert!(!s.volumes[0].blank);
}

#[test]
fn a_string_parameter_the_driver_cannot_read_is_refused_at_its_line() {
    // The drivers' registry reader returns strings of at most 255 UTF-16 units, into a buffer the
    // sample sizes; a longer value reads as absent, and the driver would lose it without a word
    // (a probe with a 256-character `Rules` loads with no rules at all).
    let probe = "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n";
    let rule = |n: usize| format!("deny create *{}", "a".repeat(n));
    let rules = |last: usize| format!("{};{};{}", rule(70), rule(70), rule(last));
    assert_eq!(rules(74).len(), 255);
    let text = |r: &str| format!("{probe}[driver.parameters]\nRules = \"{r}\"\n");
    let s = parse("ok.toml", &text(&rules(74))).unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(
        error(&text(&rules(75))),
        "bad.toml:6: driver[0].parameters.Rules: `Rules` is 256 characters (UTF-16 units) long, \
         and the drivers read string values of at most 255: `A` would take it for an absent value"
    );
    // Within the units, beyond the bytes the sample reads the value into.
    let scanner = "[[driver]]\nname = \"S\"\nsample = \"scanner\"\nmodel = \"minifilter\"\n\
                   altitude = \"328010\"\n";
    let wide = "\u{6587}".repeat(100);
    assert_eq!(
        error(&format!("{scanner}[driver.parameters]\nPattern = \"{wide}\"\n")),
        "bad.toml:7: driver[0].parameters.Pattern: `Pattern` is 300 bytes of UTF-8, more than `S` \
         reads it into: `S` would take it for an absent value"
    );
}

#[test]
fn a_value_the_sample_refuses_is_a_warning_at_its_line_and_the_scenario_still_runs() {
    // The sample's own parser, as DriverEntry runs it: the load will fail with
    // STATUS_INVALID_PARAMETER, which a scenario may want to show, so it is not an error.
    let probe = "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n";
    let warnings = |text: &str| -> Vec<String> {
        parse("w.toml", text).unwrap().warnings.iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        warnings(&format!(
            "{probe}[driver.parameters]\nAttach = \"disk\"\nRules = \"deny create; explode read\"\n"
        )),
        [
            "w.toml:7: driver[0].parameters.Rules: Rules: unknown action: `A` will fail to load with \
          STATUS_INVALID_PARAMETER"
        ]
    );
    assert_eq!(
        warnings(&format!("{probe}[driver.parameters]\nAttach = \"disk,floppy\"\n")),
        [
            "w.toml:6: driver[0].parameters.Attach: Attach: unknown word: `A` will fail to load with \
          STATUS_INVALID_PARAMETER"
        ]
    );
    // A required value missing: at the driver, which has no parameters table.
    let scanner = "[[driver]]\nname = \"S\"\nsample = \"scanner\"\nmodel = \"legacy\"\n";
    assert_eq!(
        warnings(scanner),
        [
            "w.toml:1: driver[0].parameters: Pattern: required, and not empty: `S` will fail to load \
          with STATUS_INVALID_PARAMETER"
        ]
    );
    assert_eq!(
        warnings(&format!("{scanner}[driver.parameters]\nPattern = \"hex:4D5\"\n")),
        ["w.toml:6: driver[0].parameters.Pattern: Pattern: after hex:, pairs of hexadecimal \
          digits: `S` will fail to load with STATUS_INVALID_PARAMETER"]
    );
    // Two bad values: the one the sample found first, as a compiler names its first error.
    assert_eq!(
        warnings(&format!("{probe}[driver.parameters]\nUnload = \"never\"\nattach = \"floppy\"\n")),
        [
            "w.toml:7: driver[0].parameters.attach: Attach: unknown word: `A` will fail to load with \
          STATUS_INVALID_PARAMETER"
        ]
    );
    // A message that names no value, with two values it could come from: the table.
    assert_eq!(
        warnings(&format!(
            "{probe}[driver.parameters]\nOperations = \"create,nosuch\"\nRules = \"deny nosuch\"\n"
        )),
        ["w.toml:5: driver[0].parameters: unknown operation name: `A` will fail to load with \
          STATUS_INVALID_PARAMETER"]
    );
    // Good values, and every example scenario: no warning.
    assert!(
        warnings(&format!("{probe}[driver.parameters]\nRules = \"deny create *x*\"\n")).is_empty()
    );
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let s = parse(&path.display().to_string(), &text).unwrap();
        assert!(s.warnings.is_empty(), "{}: {:?}", path.display(), s.warnings);
    }
    // The run goes ahead, and the load fails as the warning said.
    let text = format!(
        "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n{probe}[driver.parameters]\n\
         Rules = \"explode read\"\n[[step]]\naction = \"load\"\ndriver = \"A\"\n"
    );
    let s = parse("w.toml", &text).unwrap();
    let r = fsfilter_lab::run::run(&s);
    assert_eq!(r.steps.first().map(|o| o.status), Some(fsfilter::Status::INVALID_PARAMETER));
}

#[test]
fn io_keys_that_do_not_apply_to_the_op_are_refused() {
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("create", "mode = \"paging\"\n")),
        "bad.toml:9: step[0].mode: applies to read and write only, not to `create`"
    );
    assert_eq!(
        error(&io("read", "data = \"x\"\n")),
        "bad.toml:9: step[0].data: applies to write only, not to `read`"
    );
    assert!(parse("ok.toml", &io("write", "mode = \"noncached\"\ndata = \"x\"\n")).is_ok());
    assert!(parse("ok.toml", &io("read", "mode = \"paging\"\n")).is_ok());
    // `class` (an extension of scenario.md): query_information only, one of the classes named.
    assert_eq!(
        error(&io("read", "class = \"basic\"\n")),
        "bad.toml:9: step[0].class: applies to query_information only, not to `read`"
    );
    let e = error(&io("query_information", "class = \"everything\"\n"));
    assert!(
        e.starts_with(
            "bad.toml:9: step[0].class: unknown value `everything` (one of basic, standard,"
        ),
        "{e}"
    );
    assert!(parse("ok.toml", &io("query_information", "class = \"position\"\n")).is_ok());
    // `notify` and `watch_tree` (an extension): directory_control only, names joined by `|`,
    // `watch_tree` only with `notify`.
    assert_eq!(
        error(&io("read", "notify = \"file_name\"\n")),
        "bad.toml:9: step[0].notify: applies to directory_control only, not to `read`"
    );
    assert_eq!(
        error(&io("directory_control", "notify = \"file_name|colour\"\n")),
        "bad.toml:9: step[0].notify: unknown change `colour`: expected names joined by `|`, of \
         file_name, dir_name, attributes, size, last_write, last_access, creation, security"
    );
    assert_eq!(
        error(&io("directory_control", "watch_tree = true\n")),
        "bad.toml:9: step[0].watch_tree: applies to a change notification only: give `notify` too"
    );
    let ok = parse(
        "ok.toml",
        &io("directory_control", "notify = \"size|last_write\"\nwatch_tree = true\n"),
    );
    let Ok(s) = ok else { panic!("{ok:?}") };
    let Some(Action::Io { notify: Some(n), .. }) = s.steps.first().map(|s| &s.action) else {
        panic!("{s:?}")
    };
    assert_eq!((n.filter, n.watch_tree), (0x18, true));
}

#[test]
fn a_volume_cannot_take_a_namespace_device_s_name() {
    assert_eq!(
        error(
            "[[volume]]\nname = \"\\\\Device\\\\NamedPipe\"\nfilesystem = \"ntfs\"\n\n\
             [[volume]]\nname = \"X:\"\nfilesystem = \"npfs\"\n"
        ),
        "bad.toml:2: volume[0].name: `\\Device\\NamedPipe` is the simulated machine's own \\Device\\NamedPipe device"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_named_at_the_line_of_the_bad_byte() {
    use fsfilter_lab::scenario::parse_bytes;
    // Latin-1 in a comment on line 4 (a file saved by an editor in the wrong encoding).
    let latin1 = b"name = \"x\"\n\n[[volume]]\n# caf\xe9\nname = \"C:\"\nfilesystem = \"ntfs\"\n";
    assert_eq!(
        parse_bytes("bad.toml", latin1).unwrap_err().to_string(),
        "bad.toml:4: not valid UTF-8 (byte 0xE9 at column 6): a scenario is UTF-8 text"
    );
    // UTF-16 (Notepad's "Unicode"), with its byte-order mark.
    let utf16: Vec<u8> = std::iter::once(0xFEFF_u16)
        .chain("seed = 1\n".encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_eq!(
        parse_bytes("bad.toml", &utf16).unwrap_err().to_string(),
        "bad.toml:1: the file is UTF-16: a scenario is UTF-8 text"
    );
    // UTF-8 with a byte-order mark is UTF-8.
    assert!(parse_bytes("ok.toml", b"\xef\xbb\xbfseed = 1\n").is_ok());
    let (code, _, stderr) = check_bytes("latin1.toml", latin1);
    assert_eq!(code, Some(2));
    assert!(
        stderr.ends_with(":4: not valid UTF-8 (byte 0xE9 at column 6): a scenario is UTF-8 text\n"),
        "{stderr}"
    );
    assert!(stderr.contains("latin1.toml:4:"), "{stderr}");
}

#[test]
fn a_misspelt_required_key_is_named_at_its_line_with_a_suggestion() {
    // Not "filesystem: missing (required)" at the table's header: the key the user wrote.
    assert_eq!(
        error("[[volume]]\nname = \"C:\"\nfilesytem = \"ntfs\"\n"),
        "bad.toml:3: volume[0].filesytem: unknown key (did you mean `filesystem`?)"
    );
    assert_eq!(
        error("[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodle = \"legacy\"\n"),
        "bad.toml:4: driver[0].modle: unknown key (did you mean `model`?)"
    );
    assert_eq!(
        error(&format!("{VOLUME}[[step]]\naction = \"mount\"\nvolum = \"C:\"\n")),
        "bad.toml:6: step[0].volum: unknown key (did you mean `volume`?)"
    );
    // A required key that is simply absent is still named as missing.
    assert_eq!(
        error("[[volume]]\nname = \"C:\"\n"),
        "bad.toml:1: volume[0].filesystem: missing (required)"
    );
}

#[test]
fn a_driver_name_the_service_control_manager_refuses_is_refused() {
    // CreateService: a service name is 1 to 256 characters, without `/` or `\`.
    let driver = |name: &str| {
        format!("[[driver]]\nname = '{name}'\nsample = \"probe\"\nmodel = \"legacy\"\n")
    };
    assert_eq!(
        error(&driver("")),
        "bad.toml:2: driver[0].name: a driver needs a name (its service name)"
    );
    assert_eq!(
        error(&driver("a\\b")),
        "bad.toml:2: driver[0].name: `a\\b`: `/` and `\\` are not valid in a service name"
    );
    assert_eq!(
        error(&driver("a/b")),
        "bad.toml:2: driver[0].name: `a/b`: `/` and `\\` are not valid in a service name"
    );
    let long = "x".repeat(257);
    assert_eq!(
        error(&driver(&long)),
        "bad.toml:2: driver[0].name: a service name is at most 256 characters, not 257"
    );
    assert!(parse("ok.toml", &driver(&"x".repeat(256))).is_ok());
}

#[test]
fn a_parameter_given_twice_in_other_cases_is_refused_at_the_second() {
    // Registry value names ignore case: `post` would silently replace `Post`.
    let driver = "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"legacy\"\n";
    assert_eq!(
        error(&format!("{driver}[driver.parameters]\nPost = 1\npost = 0\n")),
        "bad.toml:7: driver[0].parameters.post: `Post` is given twice (registry value names \
         ignore case)"
    );
}

#[test]
fn an_integer_too_large_for_64_bits_is_not_called_negative() {
    assert_eq!(
        error("seed = 18446744073709551616\n"),
        "bad.toml:1: seed: must be at most 18446744073709551615"
    );
    assert_eq!(error("seed = -1\n"), "bad.toml:1: seed: must be a non-negative integer");
    assert!(parse("ok.toml", "seed = 18446744073709551615\n").is_ok());
}

#[test]
fn a_bounded_integer_beyond_64_bits_gets_its_own_bound_in_the_message() {
    let driver = "[[driver]]\nname = \"A\"\nsample = \"probe\"\nmodel = \"minifilter\"\n";
    assert_eq!(
        error(&format!("{driver}altitude = \"370000\"\ninstance_flags = 99999999999999999999\n")),
        "bad.toml:6: driver[0].instance_flags: does not fit a DWORD"
    );
}

#[test]
fn files_that_would_overwrite_or_vanish_are_refused_at_their_line() {
    let volume = |files: &str| format!("[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n{files}");
    // Paths ignore case and leading separators: the second would replace the first's contents.
    assert_eq!(
        error(&volume("[volume.files]\n\"a.txt\" = \"one\"\n\"\\\\A.TXT\" = \"two\"\n")),
        "bad.toml:6: volume[0].files.\\A.TXT: the same file as `a.txt` (paths ignore case)"
    );
    // A file cannot hold another: the second would silently not exist.
    assert_eq!(
        error(&volume("[volume.files]\n\"a.txt\" = \"one\"\n\"a.txt\\\\b\" = \"two\"\n")),
        "bad.toml:6: volume[0].files.a.txt\\b: `a.txt` is a file: `a.txt\\b` cannot be inside it"
    );
    // A path naming no file (the root).
    assert_eq!(
        error(&volume("[volume.files]\n\"\\\\\" = \"x\"\n")),
        "bad.toml:5: volume[0].files.\\: a file needs a path"
    );
    // Directories (a trailing separator) and files in them are fine.
    assert!(
        parse(
            "ok.toml",
            &volume("files = { \"d\\\\\" = \"\", \"d\\\\x\" = \"1\", \"D\\\\y\" = \"2\" }\n")
        )
        .is_ok()
    );
}

#[test]
fn io_keys_the_run_ignores_for_the_op_are_a_warning_at_their_line() {
    // Not refused (scenarios that give them keep running, scenario.md lists them for every io
    // step), but never silent: `check` and `run` print the warning.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    let warnings = |text: &str| -> Vec<String> {
        parse("w.toml", text).unwrap().warnings.iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        warnings(&io("create", "offset = 512\n")),
        [
            "w.toml:9: step[0].offset: ignored: applies to read, write and lock only, not to `create`"
        ]
    );
    assert_eq!(
        warnings(&io("flush", "length = 16\n")),
        ["w.toml:9: step[0].length: ignored: applies to read, write, lock, query_information, \
          set_information, directory_control, device_control and query_volume_information only, \
          not to `flush`"]
    );
    assert_eq!(
        warnings(&io("shutdown", "")),
        ["w.toml:8: step[0].path: ignored: a shutdown is for the whole volume"]
    );
    assert!(warnings(&io("read", "offset = 8\nlength = 8\n")).is_empty());
    assert!(warnings(&io("lock", "offset = 8\nlength = 8\n")).is_empty());
    assert!(warnings(&io("set_information", "length = 8\n")).is_empty());
}

#[test]
fn a_volume_cannot_take_a_device_name_the_machine_gives_another_device() {
    // A DOS-named volume gets \Device\HarddiskVolumeN (N from 1) or \Device\CdRomN (N from 0)
    // (docs/simulator.md, "Names"); a volume named by that device path collided with it, the
    // Storage driver failed to load and the run reported verifier findings against it.
    assert_eq!(
        error(
            "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\n\n\
             [[volume]]\nname = '\\Device\\HarddiskVolume1'\nfilesystem = \"fat\"\n"
        ),
        "bad.toml:6: volume[1].name: `\\Device\\HarddiskVolume1` is the device the simulated \
         machine gives volume `C:`"
    );
    // In either order.
    assert_eq!(
        error(
            "[[volume]]\nname = '\\device\\cdrom0'\nfilesystem = \"udfs\"\n\n\
             [[volume]]\nname = \"D:\"\nfilesystem = \"cdfs\"\n"
        ),
        "bad.toml:2: volume[0].name: `\\device\\cdrom0` is the device the simulated machine gives \
         volume `D:`"
    );
    // RAW's devices: RAW failed to load with STATUS_OBJECT_NAME_COLLISION.
    assert_eq!(
        error("[[volume]]\nname = '\\Device\\RawDisk'\nfilesystem = \"ntfs\"\n"),
        "bad.toml:2: volume[0].name: `\\Device\\RawDisk` is the simulated machine's own \
         \\Device\\RawDisk device"
    );
    // A device name no other volume gets is fine (D: is the first disk: HarddiskVolume1).
    assert!(
        parse(
            "ok.toml",
            "[[volume]]\nname = '\\Device\\HarddiskVolume2'\nfilesystem = \"ntfs\"\n\n\
             [[volume]]\nname = \"D:\"\nfilesystem = \"ntfs\"\n\n\
             [[volume]]\nname = \"E:\"\nfilesystem = \"cdfs\"\n"
        )
        .is_ok()
    );
}

#[test]
fn an_empty_write_data_with_a_length_is_a_warning() {
    // A write's data repeats to fill `length`; empty data fills nothing, and the write moved
    // 0 bytes where the scenario asked for `length`.
    let text = format!(
        "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"write\"\npath = \"a\"\n\
         length = 512\ndata = \"\"\n"
    );
    let s = parse("w.toml", &text).unwrap();
    let warnings: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["w.toml:10: step[0].data: empty: nothing to repeat to fill `length` (512 bytes), the \
          write moves 0 bytes"]
    );
}

#[test]
fn driver_and_volume_names_ignore_case_beyond_ascii() {
    // Windows compares service and object names case-insensitively through its upcase table,
    // not only for ASCII letters: `Äpfel` and `äPFEL` are one service, `\Device\Über` and
    // `\Device\über` one device. The lab folds each character to its Unicode uppercase when
    // that is one character.
    let driver = |name: &str| {
        format!("[[driver]]\nname = \"{name}\"\nsample = \"probe\"\nmodel = \"legacy\"\n")
    };
    assert_eq!(
        error(&format!("{}{}", driver("Äpfel"), driver("äPFEL"))),
        "bad.toml:6: driver[1].name: driver `äPFEL` is defined twice"
    );
    assert_eq!(
        error(&format!("{}{}", driver("Σοφία"), driver("ΣΟΦΊΑ"))),
        "bad.toml:6: driver[1].name: driver `ΣΟΦΊΑ` is defined twice"
    );
    let volume = |name: &str| format!("[[volume]]\nname = '{name}'\nfilesystem = \"ntfs\"\n");
    assert_eq!(
        error(&format!("{}{}", volume("\\Device\\Über"), volume("\\Device\\über"))),
        "bad.toml:5: volume[1].name: volume `\\Device\\über` is defined twice"
    );
    // A step names a driver or volume in any case; the run uses the spelling of its definition.
    let text = format!(
        "{}{}[[step]]\naction = \"load\"\ndriver = \"äPFEL\"\n\
         [[step]]\naction = \"mount\"\nvolume = '\\device\\ÜBER'\n",
        volume("\\Device\\Über"),
        driver("Äpfel")
    );
    let s = parse("ok.toml", &text).unwrap();
    assert!(matches!(&s.steps[0].action, Action::Load { driver } if driver == "Äpfel"));
    assert!(matches!(&s.steps[1].action, Action::Mount { volume } if volume == "\\Device\\Über"));
    assert_eq!(s.driver("ÄPFEL").map(|d| d.name.as_str()), Some("Äpfel"));
    // A character whose uppercase is two characters keeps its own: `ß` is not `SS`.
    assert!(parse("ok.toml", &format!("{}{}", driver("Maß"), driver("MASS"))).is_ok());
}

#[test]
fn a_cancel_step_takes_a_path_and_nothing_of_a_request() {
    // `cancel` (an extension): CancelIoEx on the path's handle. It sends no request, so the
    // request keys are refused (`mode`, `data`, `class`, `notify`) or ignored with a warning
    // (`offset`, `length`), as for any op they do not apply to.
    let io = |extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"cancel\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("notify = \"file_name\"\n")),
        "bad.toml:9: step[0].notify: applies to directory_control only, not to `cancel`"
    );
    assert_eq!(
        error(&io("mode = \"paging\"\n")),
        "bad.toml:9: step[0].mode: applies to read and write only, not to `cancel`"
    );
    let s = parse("w.toml", &io("offset = 4\n")).unwrap();
    let warnings: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "w.toml:9: step[0].offset: ignored: applies to read, write and lock only, not to `cancel`"
        ]
    );
    let Some(Action::Cancel { volume, path, handle }) = s.steps.first().map(|s| &s.action) else {
        panic!("{s:?}")
    };
    assert_eq!((volume.as_str(), path.as_deref(), handle), ("C:", Some("a"), &None));
    assert_eq!(s.steps[0].action.name(), "io");
}

#[test]
fn wait_is_for_a_lock_step_and_a_boolean() {
    // `wait` (an extension): a lock that waits for a conflicting range (FailImmediately FALSE).
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("read", "wait = true\n")),
        "bad.toml:9: step[0].wait: applies to lock only, not to `read`"
    );
    assert!(error(&io("lock", "wait = \"yes\"\n")).starts_with("bad.toml:9: step[0].wait:"));
    let s = parse("ok.toml", &io("lock", "wait = true\n")).unwrap();
    let Some(Action::Io { wait, .. }) = s.steps.first().map(|s| &s.action) else { panic!("{s:?}") };
    assert!(*wait);
    let s = parse("ok.toml", &io("lock", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { wait: false, .. }));
}

#[test]
fn overlapped_is_for_a_create_step_and_a_boolean() {
    // `overlapped` (an extension): the path's handle is opened for asynchronous I/O.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("read", "overlapped = true\n")),
        "bad.toml:9: step[0].overlapped: applies to create only, not to `read`"
    );
    assert!(
        error(&io("create", "overlapped = 1\n")).starts_with("bad.toml:9: step[0].overlapped:")
    );
    let s = parse("ok.toml", &io("create", "overlapped = true\n")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { overlapped: true, .. }), "{s:?}");
    let s = parse("ok.toml", &io("create", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { overlapped: false, .. }));
}

#[test]
fn protection_is_for_a_map_step_and_one_of_the_page_protections() {
    // `protection` (an extension): the page protection of the section a `map` step creates.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("read", "protection = \"readonly\"\n")),
        "bad.toml:9: step[0].protection: applies to map only, not to `read`"
    );
    assert!(
        error(&io("map", "protection = \"execute_maybe\"\n"))
            .starts_with("bad.toml:9: step[0].protection: unknown value `execute_maybe`")
    );
    let s = parse("ok.toml", &io("map", "protection = \"execute_read\"\n")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { protection: Some(0x20), .. }), "{s:?}");
    let s = parse("ok.toml", &io("map", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { protection: None, .. }));
}

#[test]
fn writer_is_for_a_paging_write_and_one_of_the_page_writers() {
    // `writer` (an extension): who writes a paging write's pages back.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("read", "mode = \"paging\"\nwriter = \"flush\"\n")),
        "bad.toml:10: step[0].writer: applies to write only, not to `read`"
    );
    // The page writers write pages: not a cached or non-cached write.
    assert_eq!(
        error(&io("write", "writer = \"flush\"\n")),
        "bad.toml:9: step[0].writer: applies to a write with mode = \"paging\" only"
    );
    assert_eq!(
        error(&io("write", "mode = \"noncached\"\nwriter = \"flush\"\n")),
        "bad.toml:10: step[0].writer: applies to a write with mode = \"paging\" only"
    );
    assert!(
        error(&io("write", "mode = \"paging\"\nwriter = \"mapped-writer\"\n"))
            .starts_with("bad.toml:10: step[0].writer: unknown value `mapped-writer`")
    );
    let paging = |w: &str| io("write", &format!("mode = \"paging\"\nwriter = \"{w}\"\n"));
    for (name, writer) in fsfilter_lab::scenario::WRITERS {
        let s = parse("ok.toml", &paging(name)).unwrap();
        assert!(
            matches!(s.steps[0].action, Action::Io { writer: Some(w), .. } if w == writer),
            "{s:?}"
        );
    }
    let s = parse("ok.toml", &io("write", "mode = \"paging\"\n")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { writer: None, .. }));
}

#[test]
fn control_is_for_fsctl_and_complete_if_oplocked_for_create() {
    // `control` and `complete_if_oplocked` (an extension): the FSCTL an fsctl step sends (the
    // oplock requests and acknowledgements), and FILE_COMPLETE_IF_OPLOCKED on a create.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("read", "control = \"request_oplock_level_1\"\n")),
        "bad.toml:9: step[0].control: applies to fsctl only, not to `read`"
    );
    assert!(
        error(&io("fsctl", "control = \"request_oplock_level_3\"\n"))
            .starts_with("bad.toml:9: step[0].control: unknown value `request_oplock_level_3`")
    );
    // The Windows 7 levels are R, RW, RH and RWH only (REQUEST_OPLOCK_INPUT_BUFFER).
    assert!(
        error(&io("fsctl", "control = \"request_oplock_wh\"\n"))
            .starts_with("bad.toml:9: step[0].control: unknown value `request_oplock_wh`")
    );
    assert_eq!(
        error(&io("fsctl", "complete_if_oplocked = true\n")),
        "bad.toml:9: step[0].complete_if_oplocked: applies to create only, not to `fsctl`"
    );
    assert!(error(&io("create", "complete_if_oplocked = 1\n")).starts_with("bad.toml:9:"));
    for (name, code) in fsfilter_lab::scenario::CONTROLS {
        let s = parse("ok.toml", &io("fsctl", &format!("control = \"{name}\"\n"))).unwrap();
        assert!(
            matches!(s.steps[0].action, Action::Io { control: Some(c), .. } if c == code),
            "{s:?}"
        );
    }
    // Without the keys, as before the extension: FSCTL_IS_VOLUME_MOUNTED, no option.
    let s = parse("ok.toml", &io("fsctl", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { control: None, .. }));
    let s = parse("ok.toml", &io("create", "complete_if_oplocked = true\n")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { complete_if_oplocked: true, .. }));
}

#[test]
fn handle_names_one_of_a_paths_handles_and_only_on_requests_on_a_handle() {
    // `handle` (an extension): which of the path's handles a step uses, for several handles on
    // one file; shutdown and query_attributes use none, and a name is not empty.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("query_attributes", "handle = \"second\"\n")),
        "bad.toml:9: step[0].handle: applies to requests on a handle only, not to \
         `query_attributes`"
    );
    assert_eq!(
        error(&io("read", "handle = \"\"\n")),
        "bad.toml:9: step[0].handle: empty: a handle's name (the path's own handle has none)"
    );
    assert!(error(&io("read", "handle = 2\n")).starts_with("bad.toml:9: step[0].handle"));
    let s = parse("ok.toml", &io("create", "handle = \"second\"\n")).unwrap();
    assert!(
        matches!(&s.steps[0].action, Action::Io { handle: Some(h), .. } if h == "second"),
        "{s:?}"
    );
    let s = parse("ok.toml", &io("cancel", "handle = \"second\"\n")).unwrap();
    assert!(
        matches!(&s.steps[0].action, Action::Cancel { handle: Some(h), .. } if h == "second"),
        "{s:?}"
    );
    // Without the key, as before the extension: the path's own handle.
    let s = parse("ok.toml", &io("read", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { handle: None, .. }));
}

/// A spy and a probe, both legacy filters (no altitude needed).
const SPY: &str = "[[driver]]\nname = \"Spy\"\nsample = \"spy\"\nmodel = \"legacy\"\n\n\
                   [[driver]]\nname = \"Probe\"\nsample = \"probe\"\nmodel = \"legacy\"\n";

#[test]
fn reader_steps_name_a_channel_an_open_connection_and_what_to_send() {
    // The lines: 1-4 the spy, 6-9 the probe, 10 the first [[step]].
    let steps = |body: &str| error(&format!("{SPY}{body}"));
    assert_eq!(
        steps("[[step]]\naction = \"connect\"\ndriver = \"Probe\"\n"),
        "bad.toml:12: step[0].driver: `Probe` is a probe driver, which has no message channel \
         (samples with one: spy, gate)"
    );
    assert_eq!(
        steps("[[step]]\naction = \"connect\"\ndriver = \"Ghost\"\n"),
        "bad.toml:12: step[0].driver: no driver named `Ghost`"
    );
    assert_eq!(
        steps("[[step]]\naction = \"message\"\nclient = \"reader\"\ncommand = \"get_log\"\n"),
        "bad.toml:12: step[0].client: no open connection `reader` (open: none)"
    );
    let connected = "[[step]]\naction = \"connect\"\ndriver = \"Spy\"\nclient = \"r\"\n\n";
    assert_eq!(
        steps(&format!(
            "{connected}[[step]]\naction = \"connect\"\ndriver = \"Spy\"\nclient = \"r\"\n"
        )),
        "bad.toml:18: step[1].client: connection `r` is open already (a `disconnect` step closes it)"
    );
    assert_eq!(
        steps(&format!(
            "{connected}[[step]]\naction = \"message\"\nclient = \"r\"\ncommand = \"get_everything\"\n"
        )),
        "bad.toml:18: step[1].command: unknown value `get_everything` (one of get_log, get_version)"
    );
    assert_eq!(
        steps(&format!("{connected}[[step]]\naction = \"message\"\nclient = \"r\"\n")),
        "bad.toml:15: step[1].command: missing: a message needs `command` (get_log, get_version) \
         or `data`"
    );
    assert_eq!(
        steps(&format!(
            "{connected}[[step]]\naction = \"message\"\nclient = \"r\"\ncommand = \"get_log\"\ndata = \"x\"\n"
        )),
        "bad.toml:19: step[1].data: give `command` or `data`, not both"
    );
    assert_eq!(
        steps(&format!(
            "{connected}[[step]]\naction = \"message\"\nclient = \"r\"\ndata = \"x\"\nreply = 70000\n"
        )),
        "bad.toml:19: step[1].reply: must be at most 65536 (bytes)"
    );
    assert_eq!(
        steps(&format!(
            "{connected}[[step]]\naction = \"message\"\nclient = \"r\"\ndata = \"x\"\nreplies = 8\n"
        )),
        "bad.toml:19: step[1].replies: unknown key (known here: action, client, command, data, reply)"
    );
    assert_eq!(
        steps("[[step]]\naction = \"connect\"\ndriver = \"Spy\"\nuser = \"guest\"\n"),
        "bad.toml:13: step[0].user: unknown value `guest` (one of administrator, standard)"
    );
    // After a disconnect the name is free again, and messages on it are refused.
    let closed = format!("{connected}[[step]]\naction = \"disconnect\"\nclient = \"r\"\n\n");
    assert_eq!(
        steps(&format!("{closed}[[step]]\naction = \"disconnect\"\nclient = \"r\"\n")),
        "bad.toml:21: step[2].client: no open connection `r` (open: none)"
    );
    let again =
        format!("{closed}[[step]]\naction = \"connect\"\ndriver = \"Spy\"\nclient = \"r\"\n");
    let s = parse("good.toml", &format!("{SPY}{again}")).unwrap();
    assert!(matches!(&s.steps[2].action, Action::Connect { client, context: None, user, .. }
            if client == "r" && *user == fsfilter_sim::Caller::Administrator));
}

/// A spy and a gate, both legacy filters, each connected (lines 1-4, 6-9; the steps from 10).
const SERVED: &str = "[[driver]]\nname = \"Spy\"\nsample = \"spy\"\nmodel = \"legacy\"\n\n\
                      [[driver]]\nname = \"Gate\"\nsample = \"gate\"\nmodel = \"legacy\"\n\n\
                      [[step]]\naction = \"connect\"\ndriver = \"Spy\"\nclient = \"s\"\n\n\
                      [[step]]\naction = \"connect\"\ndriver = \"Gate\"\nclient = \"g\"\n\n";

#[test]
fn serve_steps_name_an_open_connection_and_well_formed_replies() {
    // The serve step starts at line 21, its keys after `action` at 23.
    let serve = |body: &str| error(&format!("{SERVED}[[step]]\naction = \"serve\"\n{body}"));
    assert_eq!(
        serve("client = \"nobody\"\n"),
        "bad.toml:23: step[2].client: no open connection `nobody` (open: s, g)"
    );
    assert_eq!(
        serve("client = \"s\"\n"),
        "bad.toml:21: step[2].reply: missing: what the server answers (none, hex:<bytes>, or text)"
    );
    assert_eq!(
        serve("client = \"s\"\nreply = \"deny\"\n"),
        "bad.toml:24: step[2].reply: `deny` is a verdict of the gate sample, and this \
         connection's driver is not a gate: give hex:<bytes> or text"
    );
    assert_eq!(
        serve("client = \"g\"\nreply = \"hex:0g\"\n"),
        "bad.toml:24: step[2].reply: `hex:0g`: hex: needs pairs of hex digits"
    );
    assert_eq!(
        serve("client = \"g\"\nrules = [{ contains = \"x\", reply = \"hex:123\" }]\n"),
        "bad.toml:24: step[2].rules[0].reply: `hex:123`: hex: needs pairs of hex digits"
    );
    assert_eq!(
        serve("client = \"g\"\nrules = [{ reply = \"deny\" }]\n"),
        "bad.toml:24: step[2].rules[0].contains: missing (required)"
    );
    assert_eq!(
        serve("client = \"g\"\nrules = [{ contains = \"x\", reply = \"deny\", when = 1 }]\n"),
        "bad.toml:24: step[2].rules[0].when: unknown key (known here: contains, reply)"
    );
    assert_eq!(
        serve("client = \"s\"\nreply = \"none\"\ndeny_if_contains = [\"x\"]\n"),
        "bad.toml:25: step[2].deny_if_contains: `deny_if_contains` answers the gate sample's \
         questions, and `s` is connected to another driver: use `rules`"
    );
    assert_eq!(serve("client = \"g\"\ngets = 17\n"), "bad.toml:24: step[2].gets: must be 1 to 16");
    assert_eq!(serve("client = \"g\"\ngets = 0\n"), "bad.toml:21: step[2].gets: must be 1 to 16");
    assert_eq!(
        serve("client = \"g\"\ndeny_if_contains = \"x\"\n"),
        "bad.toml:24: step[2].deny_if_contains: expected an array of strings, found a string"
    );
    assert_eq!(
        serve("client = \"g\"\ndelay = 5\n"),
        "bad.toml:24: step[2].delay: unknown key (known here: action, client, gets, delay_ms, \
         capacity, reply, rules, deny_if_contains)"
    );
    // A gate defaults to `allow`; a served legacy connection is opened overlapped.
    let s = parse("ok.toml", &format!("{SERVED}[[step]]\naction = \"serve\"\nclient = \"g\"\n"))
        .unwrap();
    let Action::Serve(serve) = &s.steps[2].action else { panic!("{s:?}") };
    assert_eq!(serve.reply, ServeReply::Verdict(gate::wire::Verdict::Allow));
    assert_eq!((serve.gets, serve.delay_ms, serve.gate), (1, 0, true));
    assert!(matches!(&s.steps[1].action, Action::Connect { overlapped: true, .. }));
    assert!(matches!(&s.steps[0].action, Action::Connect { overlapped: false, .. }));
    // Replies as written: none, hex, text; `get_stats` only for a gate.
    let s = parse(
        "ok.toml",
        &format!(
            "{SERVED}[[step]]\naction = \"serve\"\nclient = \"s\"\nreply = \"hex:00ff\"\n\
             rules = [{{ contains = \"a\", reply = \"none\" }}, {{ contains = \"b\", reply = \"ok\" }}]\n"
        ),
    )
    .unwrap();
    let Action::Serve(serve) = &s.steps[2].action else { panic!("{s:?}") };
    assert_eq!(serve.reply, ServeReply::Bytes(vec![0, 0xff]));
    assert_eq!(serve.rules[0].reply, ServeReply::Nothing);
    assert_eq!(serve.rules[1].reply, ServeReply::Bytes(b"ok".to_vec()));
    assert_eq!(
        error(&format!(
            "{SERVED}[[step]]\naction = \"message\"\nclient = \"s\"\ncommand = \"get_stats\"\n"
        )),
        "bad.toml:24: step[2].command: unknown value `get_stats` (one of get_log, get_version)"
    );
    assert_eq!(
        error(&format!(
            "{SERVED}[[step]]\naction = \"message\"\nclient = \"g\"\ncommand = \"get_log\"\n"
        )),
        "bad.toml:24: step[2].command: unknown value `get_log` (one of get_stats)"
    );
}

#[test]
fn io_and_connect_steps_name_the_process_that_makes_them() {
    // The lines: 1-3 the volume, 5-8 the spy, 10 the first [[step]].
    let head =
        format!("{VOLUME}\n[[driver]]\nname = \"Spy\"\nsample = \"spy\"\nmodel = \"legacy\"\n\n");
    let s = parse(
        "good.toml",
        &format!(
            "{head}[[step]]\naction = \"connect\"\ndriver = \"Spy\"\nprocess = \"svc\"\n\n\
             [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"a\"\n\
             process = \"svc\"\n\n\
             [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"b\"\n\
             process = \"user\"\n\n\
             [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"c\"\n"
        ),
    )
    .unwrap();
    assert!(matches!(&s.steps[0].action, Action::Connect { process: Some(p), .. } if p == "svc"));
    assert!(matches!(&s.steps[1].action, Action::Io { process: Some(p), .. } if p == "svc"));
    // `user` is the default process: the same as no key.
    assert_eq!(s.steps[2].action.process(), None);
    assert_eq!(s.steps[3].action.process(), None);
    let io = |extra: &str| {
        error(&format!(
            "{head}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"a\"\n{extra}"
        ))
    };
    assert_eq!(io("process = \"\"\n"), "bad.toml:15: step[0].process: empty: a process's name");
    assert_eq!(
        io("process = \"System\"\n"),
        "bad.toml:15: step[0].process: the System process makes no user-mode requests (name a \
         user process; `user` is the default one)"
    );
    assert_eq!(
        io("process = 4\n"),
        "bad.toml:15: step[0].process: expected a string, found an integer"
    );
    assert_eq!(
        error(&format!(
            "{head}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"cancel\"\npath = \"a\"\n\
             process = \"svc\"\n"
        )),
        "bad.toml:15: step[0].process: applies to requests, not to `cancel` (the handle's \
         requests are cancelled whoever sent them)"
    );
    assert_eq!(
        error(&format!(
            "{head}[[step]]\naction = \"connect\"\ndriver = \"Spy\"\nprocess = \"system\"\n"
        )),
        "bad.toml:13: step[0].process: the System process makes no user-mode requests (name a \
         user process; `user` is the default one)"
    );
    assert_eq!(
        error(&format!("{head}[[step]]\naction = \"mount\"\nvolume = \"C:\"\nprocess = \"svc\"\n")),
        "bad.toml:13: step[0].process: unknown key (known here: action, volume)"
    );
    // More processes than the simulator has threads for.
    let mut many = head.clone();
    for i in 0..=fsfilter_lab::scenario::MAX_PROCESSES {
        many.push_str(&format!(
            "[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"a\"\n\
             process = \"p{i}\"\n\n"
        ));
    }
    let last = 10 + 7 * fsfilter_lab::scenario::MAX_PROCESSES + 5;
    assert_eq!(
        error(&many),
        format!(
            "bad.toml:{last}: step[{}].process: more than {} processes in one scenario",
            fsfilter_lab::scenario::MAX_PROCESSES,
            fsfilter_lab::scenario::MAX_PROCESSES
        )
    );
}

#[test]
fn a_link_step_names_a_path_a_target_and_a_kind() {
    // `link` (an extension): a symbolic link or a junction made with FSCTL_SET_REPARSE_POINT.
    let link =
        |extra: &str| format!("{VOLUME}[[step]]\naction = \"link\"\nvolume = \"C:\"\n{extra}");
    assert_eq!(
        error(&link("target = \"D:\\\\x\"\n")),
        "bad.toml:4: step[0].path: missing (required)"
    );
    assert_eq!(error(&link("path = \"l\"\n")), "bad.toml:4: step[0].target: missing (required)");
    assert_eq!(
        error(&link("path = \"\\\\\"\ntarget = \"D:\\\\x\"\n")),
        "bad.toml:7: step[0].path: a link needs a name on the volume (the root directory cannot \
         be one)"
    );
    assert_eq!(
        error(&link("path = \"l\"\ntarget = \"\"\n")),
        "bad.toml:8: step[0].target: empty: what the link names"
    );
    assert_eq!(
        error(&link("path = \"l\"\ntarget = \"x\"\nkind = \"hardlink\"\n")),
        "bad.toml:9: step[0].kind: unknown value `hardlink` (one of symlink, junction)"
    );
    assert_eq!(
        error(&link("path = \"j\"\ntarget = \"..\\\\x\"\nkind = \"junction\"\n")),
        "bad.toml:8: step[0].target: a junction names an absolute path (`D:\\dir`, \
         `\\??\\D:\\dir`), not `..\\x`: only a symlink may be relative"
    );
    assert_eq!(
        error(&link("path = \"j\"\ntarget = \"D:\\\\x\"\nkind = \"junction\"\ndirectory = true\n")),
        "bad.toml:10: step[0].directory: applies to a symlink only (a junction is always a \
         directory)"
    );
    assert_eq!(
        error(&link("path = \"l\"\ntarget = \"x\"\nmode = \"cached\"\n")),
        "bad.toml:9: step[0].mode: unknown key (known here: action, volume, path, target, kind, \
         directory)"
    );
    assert_eq!(
        error(&format!(
            "{VOLUME}[[step]]\naction = \"link\"\nvolume = \"Z:\"\npath = \"l\"\ntarget = \"x\"\n"
        )),
        "bad.toml:6: step[0].volume: no volume named `Z:`"
    );
    let s = parse("ok.toml", &link("path = \"l\"\ntarget = \"..\\\\x\"\n")).unwrap();
    assert!(
        matches!(
            &s.steps[0].action,
            Action::Link { kind: LinkKind::Symlink, directory: false, .. }
        ),
        "{s:?}"
    );
    let junction = link("path = \"j\"\ntarget = \"D:\\\\x\"\nkind = \"junction\"\n");
    let s = parse("ok.toml", &junction).unwrap();
    assert!(
        matches!(
            &s.steps[0].action,
            Action::Link { kind: LinkKind::Junction, directory: true, .. }
        ),
        "{s:?}"
    );
}

#[test]
fn delete_on_close_is_for_a_create_step_and_a_boolean() {
    // `delete_on_close` (an extension): FILE_DELETE_ON_CLOSE on a create.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("write", "delete_on_close = true\n")),
        "bad.toml:9: step[0].delete_on_close: applies to create only, not to `write`"
    );
    assert!(
        error(&io("create", "delete_on_close = 1\n"))
            .starts_with("bad.toml:9: step[0].delete_on_close:")
    );
    let s = parse("ok.toml", &io("create", "delete_on_close = true\n")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { delete_on_close: true, .. }), "{s:?}");
    let s = parse("ok.toml", &io("create", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { delete_on_close: false, .. }));
}

#[test]
fn open_reparse_point_is_for_a_create_step_and_a_boolean() {
    // `open_reparse_point` (an extension): FILE_OPEN_REPARSE_POINT on a create.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("read", "open_reparse_point = true\n")),
        "bad.toml:9: step[0].open_reparse_point: applies to create only, not to `read`"
    );
    assert!(
        error(&io("create", "open_reparse_point = \"yes\"\n"))
            .starts_with("bad.toml:9: step[0].open_reparse_point:")
    );
    let s = parse("ok.toml", &io("create", "open_reparse_point = true\n")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { open_reparse_point: true, .. }), "{s:?}");
    let s = parse("ok.toml", &io("create", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { open_reparse_point: false, .. }));
}

#[test]
fn disposition_is_for_a_create_step_and_one_of_the_six() {
    // `disposition` (an extension): the create's disposition, FILE_SUPERSEDE (0) to
    // FILE_OVERWRITE_IF (5) by their names; without it the create is FILE_OPEN_IF, as before.
    let io = |op: &str, extra: &str| {
        format!(
            "{VOLUME}[[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"{op}\"\npath = \"a\"\n{extra}"
        )
    };
    assert_eq!(
        error(&io("read", "disposition = \"open\"\n")),
        "bad.toml:9: step[0].disposition: applies to create only, not to `read`"
    );
    assert_eq!(
        error(&io("query_attributes", "disposition = \"open\"\n")),
        "bad.toml:9: step[0].disposition: applies to create only, not to `query_attributes`"
    );
    assert_eq!(
        error(&io("create", "disposition = \"truncate\"\n")),
        "bad.toml:9: step[0].disposition: unknown value `truncate` (one of supersede, open, \
         create, open_if, overwrite, overwrite_if)"
    );
    assert!(
        error(&io("create", "disposition = 5\n")).starts_with("bad.toml:9: step[0].disposition:")
    );
    let names = ["supersede", "open", "create", "open_if", "overwrite", "overwrite_if"];
    assert_eq!(fsfilter_lab::scenario::DISPOSITIONS.map(|(n, _)| n), names);
    for (value, name) in names.iter().enumerate() {
        let s = parse("ok.toml", &io("create", &format!("disposition = \"{name}\"\n"))).unwrap();
        let Action::Io { disposition, .. } = s.steps[0].action else { panic!("{s:?}") };
        assert_eq!(disposition, Some(value as u32), "{name}");
    }
    let s = parse("ok.toml", &io("create", "")).unwrap();
    assert!(matches!(s.steps[0].action, Action::Io { disposition: None, .. }));
}

#[test]
fn a_remove_step_takes_a_volume_and_a_boolean_surprise() {
    let step = |extra: &str| format!("{VOLUME}[[step]]\naction = \"remove\"\n{extra}");
    assert_eq!(
        error(&step("volume = \"D:\"\n")),
        "bad.toml:6: step[0].volume: no volume named `D:`"
    );
    assert_eq!(
        error(&step("volume = \"C:\"\nsurprise = \"yes\"\n")),
        "bad.toml:7: step[0].surprise: expected true or false, found a string"
    );
    assert_eq!(
        error(&step("volume = \"C:\"\nsuprise = true\n")),
        "bad.toml:7: step[0].suprise: unknown key (did you mean `surprise`?)"
    );
    let s = parse("ok.toml", &step("volume = \"C:\"\nsurprise = true\n")).unwrap();
    assert_eq!(s.steps[0].action, Action::Remove { volume: "C:".into(), surprise: true });
    let s = parse("ok.toml", &step("volume = \"C:\"\n")).unwrap();
    assert_eq!(s.steps[0].action, Action::Remove { volume: "C:".into(), surprise: false });
    assert_eq!(s.steps[0].action.name(), "remove");
}
