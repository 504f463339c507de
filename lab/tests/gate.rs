//! The lab as the gate's service (lab/scenarios/gate.toml, `serve` steps): the gate as a
//! minifilter and as a legacy filter on one volume, each answered through its own model's
//! channel with the same bytes, the service's own open asked by neither; and a `serve` step on a
//! channel that never sends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use fsfilter::Status;
use fsfilter_lab::gatelog::Served;
use fsfilter_lab::run::{Run, run};
use fsfilter_lab::scenario::{Model, parse};
use fsfilter_lab::spylog::{Decoded, decode_all};

fn gate_run() -> Run {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/gate.toml");
    let s = parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    run(&s)
}

fn names(served: &[&Served]) -> Vec<String> {
    served
        .iter()
        .filter_map(|s| s.question().and_then(Result::ok))
        .map(|q| q.name.rsplit('\\').next().unwrap().to_owned())
        .collect()
}

#[test]
fn both_gates_ask_their_service_and_the_verdicts_decide_the_opens() {
    let r = gate_run();
    assert!(!r.has_findings());
    let status = |i: usize| r.steps[i].status;
    assert_eq!(status(4), Status::PENDING, "the serve step's first get waits");
    assert_eq!(status(6), Status::SUCCESS, "report.txt: both allow");
    assert_eq!(status(7), Status::ACCESS_DENIED, "secret.txt: the minifilter gate denies");
    assert_eq!(status(8), Status::SUCCESS, "notes.txt: the legacy gate times out, fails open");
    assert_eq!(status(10), Status::SUCCESS, "secret.txt by the service's process: not asked");
    assert!(r.served.iter().all(|s| s.at_step != Some(10)), "no question for the service's open");
    let of = |client: &str| -> Vec<&Served> {
        r.served.iter().filter(|s| s.client == client && s.get_status == Status::SUCCESS).collect()
    };
    let (mini, legacy) = (of("mini"), of("legacy"));
    assert_eq!(names(&mini), ["report.txt", "secret.txt", "notes.txt"]);
    // The denied open failed before the legacy gate's post-create: it was not asked.
    assert_eq!(names(&legacy), ["report.txt", "notes.txt"]);
    assert!(mini.iter().all(|s| s.model == Model::Minifilter && s.reply_capacity == Some(4)));
    assert!(legacy.iter().all(|s| s.model == Model::Legacy && s.reply_capacity == Some(4)));
    // The same question bytes in both models, numbered per connection.
    assert_eq!(mini[0].message, legacy[0].message);
    assert_eq!(mini.iter().map(|s| s.message_id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(legacy.iter().map(|s| s.message_id).collect::<Vec<_>>(), [1, 2]);
    // Replies 5 ms after each question (delay_ms), the rule that chose them.
    let words: Vec<String> = mini.iter().map(|s| s.reply_words()).collect();
    assert_eq!(words, ["allow", "deny", "allow"]);
    assert!(mini.iter().all(|s| s.replied_ms == Some(s.at_ms + 5)));
    assert!(mini.iter().all(|s| s.reply_status == Some(Status::SUCCESS)));
    assert_eq!(legacy[1].rule, Some(0));
    assert_eq!((legacy[1].reply.as_ref(), legacy[1].reply_status), (None, None));
    // The legacy gate waited its TimeoutMs (200 ms) for notes.txt.
    let after_notes = r.served.iter().filter(|s| s.at_step == Some(8)).map(|s| s.at_ms).max();
    assert!(after_notes.is_some());
    // The counters, read by get_stats.
    let stats: Vec<(String, gate::wire::Stats)> = decode_all(&r)
        .into_iter()
        .filter_map(|(m, d)| match d {
            Decoded::Stats(s) => Some((m.driver.clone(), s)),
            _ => None,
        })
        .collect();
    assert_eq!(stats.len(), 2);
    let (m, l) = (stats[0].1, stats[1].1);
    assert_eq!((m.asked, m.allowed, m.denied, m.timed_out, m.failed), (3, 2, 1, 0, 0));
    assert_eq!((l.asked, l.allowed, l.denied, l.timed_out, l.failed), (2, 1, 0, 1, 0));
    // The service's own open (rule 26), in each gate.
    assert_eq!((m.unasked, l.unasked), (1, 1));
    // The disconnects end the pending gets: two on the minifilter port, one on the device.
    let ended: Vec<(&str, Status)> = r
        .served
        .iter()
        .filter(|s| s.get_status != Status::SUCCESS)
        .map(|s| (s.client.as_str(), s.get_status))
        .collect();
    assert_eq!(
        ended,
        [("mini", Status::CANCELLED), ("mini", Status::CANCELLED), ("legacy", Status::CANCELLED)]
    );
}

#[test]
fn the_json_has_served_only_when_a_scenario_serves() {
    let r = gate_run();
    let doc = fsfilter_lab::json::document(&r);
    let served = doc["served"].as_array().unwrap();
    assert_eq!(served[0]["question"]["name"], r"\Device\HarddiskVolume1\report.txt");
    assert_eq!(served[0]["reply"], "allow");
    assert_eq!(doc["messages"][0]["stats"]["denied"], 1);
    let spy = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/spy.toml");
    let s = parse(spy, &std::fs::read_to_string(spy).unwrap()).unwrap();
    assert!(fsfilter_lab::json::document(&run(&s)).get("served").is_none());
}

#[test]
fn a_served_channel_that_never_sends_only_ends_its_gets() {
    // The spy answers messages but never sends (no `sends_messages`): the Filter Manager's port
    // takes the gets, which wait until the disconnect cancels them; the legacy control device
    // refuses them (STATUS_INVALID_DEVICE_REQUEST, decision 0010) and the server stops.
    // Raw replies are accepted for a non-gate.
    for (model, ended) in [
        ("minifilter\"\naltitude = \"370520", Status::CANCELLED),
        ("legacy", Status::INVALID_DEVICE_REQUEST),
    ] {
        let text = format!(
            "[[volume]]\nname = \"C:\"\nfilesystem = \"ntfs\"\nfiles = {{ \"a.txt\" = \"x\" }}\n\n\
             [[driver]]\nname = \"Spy\"\nsample = \"spy\"\nmodel = \"{model}\"\n\n\
             [[step]]\naction = \"load\"\ndriver = \"Spy\"\n\n\
             [[step]]\naction = \"connect\"\ndriver = \"Spy\"\nclient = \"r\"\n\n\
             [[step]]\naction = \"serve\"\nclient = \"r\"\ngets = 3\nreply = \"hex:00\"\n\n\
             [[step]]\naction = \"io\"\nvolume = \"C:\"\nop = \"create\"\npath = \"a.txt\"\n\n\
             [[step]]\naction = \"disconnect\"\nclient = \"r\"\n"
        );
        let r = run(&parse("served.toml", &text).unwrap());
        assert!(!r.has_findings(), "{model}");
        assert_eq!(r.steps[3].status, Status::SUCCESS);
        let got: Vec<Status> = r.served.iter().map(|s| s.get_status).collect();
        assert_eq!(got, [ended; 3], "{model}");
    }
}
