//! A new volume whose device its file system leaves `DO_DEVICE_INITIALIZING` for a while after
//! the mount (`VolumeSpec::initialize_late`), through the legacy backend with the probe sample.
//!
//! facts.md §1.3: an attach to a stack whose top is initializing fails with
//! `STATUS_NO_SUCH_DEVICE`; §1.5: right after a mount the volume device can still be
//! initializing, and sfilter retries 8 times with a delay. The backend's mount path
//! (legacy/src/attach.rs `mount_volume` → `attach_to_volume` → `attach`) tries
//! `ATTACH_RETRIES` = 8 times, `ATTACH_RETRY_DELAY_MS` = 500 ms apart: tries at 0, 500, ...,
//! 3500 ms after the mount request came back, 8 × 500 = 4000 ms of retry time in all.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;
#[path = "../../sim/testing/late_volume.rs"]
mod shared;

use common::*;
use fsfilter::{InstanceSetupFlags as F, MajorFunction, Status, TeardownFlags};
use fsfilter_sim::{Callback, Machine, StartType, VolumeId};
use shared::{late_volume, pres_on_e, read_back};

/// legacy/src/attach.rs `ATTACH_RETRIES`.
const ATTACH_RETRIES: u64 = 8;
/// legacy/src/attach.rs `ATTACH_RETRY_DELAY_MS`.
const ATTACH_RETRY_DELAY_MS: u64 = 500;
/// When the backend's last try is made, after the mount request came back.
const LAST_TRY_MS: u64 = (ATTACH_RETRIES - 1) * ATTACH_RETRY_DELAY_MS;

/// A machine with the probe as boot-start legacy filter ProbeA and an NTFS volume E: mounted
/// by a step, whose device NTFS leaves initializing for `late_ms` after the mount; booted.
fn late_machine(late_ms: u64) -> (Machine, VolumeId) {
    let mut m = machine();
    let v = m.add_volume(late_volume(late_ms));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    (m, v)
}

/// ProbeA's devices that are not deleted.
fn probe_devices(m: &Machine) -> usize {
    m.kernel(|k| {
        k.objects
            .devices
            .iter()
            .filter(|d| !d.deleted && k.objects.driver(d.driver).service == "ProbeA")
            .count()
    })
}

#[test]
fn the_backend_retries_until_the_new_volume_device_is_initialized() {
    // 1200 ms: the third try (1000 ms) fails, the fourth (1500 ms) attaches; 3400 ms: only the
    // last try (3500 ms) can attach. Both within the retry time.
    for late_ms in [1200, LAST_TRY_MS - 100] {
        let (mut m, v) = late_machine(late_ms);
        let devices = probe_devices(&m);
        let before = m.now_ms();
        assert_eq!(m.mount(v), Status::SUCCESS, "{late_ms}");
        // The backend held the mount request while it retried: it came back once the device
        // was initialized, at the next try.
        let next_try = late_ms.div_ceil(ATTACH_RETRY_DELAY_MS) * ATTACH_RETRY_DELAY_MS;
        assert_eq!(m.now_ms(), before + next_try, "{late_ms}");
        assert_eq!(m.volume_stack_drivers(v), ["ProbeA", "Ntfs"], "{late_ms}");
        assert_eq!(probe_devices(&m), devices + 1, "{late_ms}: one new device, on E:");
        let newly = F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME;
        assert_eq!(setups(&m, "ProbeA"), [(Some("E:".into()), newly, Status::SUCCESS)]);
        assert_eq!(read_back(&mut m, v), b"late");
        assert_eq!(pres_on_e(&m, MajorFunction::Create), 1, "{late_ms}");
        assert_eq!(pres_on_e(&m, MajorFunction::Read), 1, "{late_ms}");
        assert!(findings(&m).is_empty(), "{late_ms}: {:?}", findings(&m));
    }
}

/// What the backend does when the volume device is initializing past its last try: it gives up
/// (no retry after the mount; facts.md §1.5 has sfilter give up too). Its precreated device is
/// deleted, nothing of it is on the volume or left behind, the volume serves I/O that the filter
/// does not see, and nothing is a finding: the file system cleared the flag itself, later, and
/// the backend cleaned up. Its unload finds nothing leaked either.
#[test]
fn the_backend_gives_up_cleanly_on_a_volume_device_initialized_too_late() {
    let (mut m, v) = late_machine(10_000);
    let devices = probe_devices(&m);
    let before = m.now_ms();
    assert_eq!(m.mount(v), Status::SUCCESS);
    // Every try was made, and the mount request went back after the last one.
    assert_eq!(m.now_ms(), before + LAST_TRY_MS);
    assert_eq!(probe_devices(&m), devices, "the device made for E: is gone");
    assert_eq!(m.volume_stack_drivers(v), ["Ntfs"]);
    // The volume serves I/O while its device is initializing and after.
    assert_eq!(read_back(&mut m, v), b"late");
    m.settle();
    assert!(m.now_ms() >= before + 10_000, "NTFS's worker ran");
    assert_eq!(read_back(&mut m, v), b"late");
    assert_eq!(m.volume_stack_drivers(v), ["Ntfs"], "no later attach");
    assert_eq!(pres_on_e(&m, MajorFunction::Create), 0);
    assert_eq!(pres_on_e(&m, MajorFunction::Read), 0);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    // No device of the backend leaked: its unload leaves nothing behind.
    let stopped = m.stop("ProbeA");
    assert_eq!(probe_devices(&m), 0, "{stopped:?}");
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

/// docs/callback-model.md rule 20: teardown start and complete bracket every instance's end; the
/// semantics row "refusal": no instance, no callback for the volume. The Filter Manager's frame
/// attaches before it sets instances up, so when it cannot attach no setup is called (minifilter
/// `late_volume.rs`). The legacy backend calls `instance_setup` before its attach
/// (`attach_locked`): when every try fails, the instance the filter accepted is torn down, start
/// and complete with `INTERNAL_ERROR`, before the device goes. (Before a fix of December 6 it
/// dropped the accepted state with no teardown: the filter was told of an instance that never
/// saw an operation and never ended.)
#[test]
fn an_accepted_setup_on_a_volume_the_backend_cannot_attach_to_is_torn_down_or_never_made() {
    let (mut m, v) = late_machine(10_000);
    assert_eq!(m.mount(v), Status::SUCCESS);
    m.settle();
    assert_eq!(m.volume_stack_drivers(v), ["Ntfs"]);
    let on_e: Vec<Callback> = callbacks(&m, "ProbeA")
        .into_iter()
        .filter(|(v, _)| v.as_deref() == Some("E:"))
        .map(|(_, c)| c)
        .collect();
    let accepted = on_e
        .iter()
        .filter(|c| matches!(c, Callback::InstanceSetup { status, .. } if status.is_success()))
        .count();
    let started = on_e.iter().filter(|c| matches!(c, Callback::TeardownStart { .. })).count();
    let completed = on_e.iter().filter(|c| matches!(c, Callback::TeardownComplete { .. })).count();
    assert_eq!((started, completed), (accepted, accepted), "{on_e:?}");
    assert_eq!(accepted, 1, "{on_e:?}");
    let reasons: Vec<TeardownFlags> = on_e
        .iter()
        .filter_map(|c| match c {
            Callback::TeardownStart { reason } | Callback::TeardownComplete { reason } => {
                Some(*reason)
            }
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [TeardownFlags::INTERNAL_ERROR; 2]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
