//! A new volume whose device its file system leaves `DO_DEVICE_INITIALIZING` for a while after
//! the mount (`VolumeSpec::initialize_late`), through the minifilter backend with the probe
//! sample.
//!
//! facts.md §1.3: an attach to a stack whose top is initializing fails with
//! `STATUS_NO_SUCH_DEVICE`; §1.5: right after a mount the volume device can still be
//! initializing, and sfilter retries 8 times with a delay. The Filter Manager is a legacy filter
//! too: its frame's device attaches to the new volume from the mount request's completion
//! (sim/src/fltmgr/frames.rs `mount` → `frame_mounted`), and only then sets the frame's instances
//! up. The simulated frame retries as sfilter does (`MOUNT_ATTACH_TRIES` = 8 tries,
//! `MOUNT_ATTACH_DELAY_MS` = 500 ms apart; the real Filter Manager's numbers are not documented,
//! docs/simulator.md "Frames").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;
#[path = "../../sim/testing/late_volume.rs"]
mod shared;

use common::*;
use fsfilter::{InstanceSetupFlags as F, MajorFunction, Status};
use fsfilter_sim::{Machine, StartType, VolumeId};
use shared::{late_volume, on_e, pres_on_e, read_back};

/// When the frame's last try is made, after the mount request came back: 7 waits of 500 ms.
const LAST_TRY_MS: u64 = 7 * 500;

/// A machine with the Filter Manager, the probe as boot-start minifilter ProbeA at 370000, and
/// an NTFS volume E: mounted by a step, whose device NTFS leaves initializing for `late_ms` after
/// the mount; booted.
fn late_machine(late_ms: u64) -> (Machine, VolumeId) {
    let mut m = machine();
    let v = m.add_volume(late_volume(late_ms));
    install_probe(&mut m, "ProbeA", StartType::Boot, "370000", &[]);
    m.boot();
    (m, v)
}

/// The Filter Manager's devices on E:'s volume stack.
fn frame_devices_on(m: &Machine, v: VolumeId) -> usize {
    m.kernel(|k| {
        let Some(vdo) = k.volume(v).vdo else { return 0 };
        let mut n = 0;
        let mut cur = k.objects.above(vdo);
        while let Some(d) = cur {
            if k.objects.driver(k.objects.device(d).driver).service == "FltMgr" {
                n += 1;
            }
            cur = k.objects.above(d);
        }
        n
    })
}

#[test]
fn the_frame_retries_and_sets_the_instance_up_once_the_volume_device_is_initialized() {
    for late_ms in [1200, LAST_TRY_MS - 100] {
        let (mut m, v) = late_machine(late_ms);
        let before = m.now_ms();
        assert_eq!(m.mount(v), Status::SUCCESS, "{late_ms}");
        // The frame held the mount request while it retried: it came back once the frame had
        // attached, at the first try after the device was initialized.
        assert_eq!(m.now_ms(), before + late_ms.div_ceil(500) * 500, "{late_ms}");
        assert_eq!(frame_devices_on(&m, v), 1, "{late_ms}");
        assert_eq!(instances_top_down(&m, v), ["ProbeA", "Ntfs"], "{late_ms}");
        let newly = F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME;
        assert_eq!(setups(&m, "ProbeA"), [(Some("E:".into()), newly, Status::SUCCESS)]);
        assert_eq!(read_back(&mut m, v), b"late");
        assert_eq!(pres_on_e(&m, MajorFunction::Create), 1, "{late_ms}");
        assert_eq!(pres_on_e(&m, MajorFunction::Read), 1, "{late_ms}");
        assert!(findings(&m).is_empty(), "{late_ms}: {:?}", findings(&m));
    }
}

/// Past the frame's last try the Filter Manager gives up on the volume: no frame device there,
/// no instance setup called (the frame could not attach, so no instance can exist), the volume
/// serves I/O that the filter does not see, no finding; the filter unloads cleanly.
#[test]
fn the_frame_gives_up_on_a_volume_device_initialized_too_late_without_a_setup() {
    let (mut m, v) = late_machine(10_000);
    let before = m.now_ms();
    assert_eq!(m.mount(v), Status::SUCCESS);
    assert_eq!(m.now_ms(), before + LAST_TRY_MS, "every try was made");
    assert_eq!(frame_devices_on(&m, v), 0);
    assert_eq!(read_back(&mut m, v), b"late");
    m.settle();
    assert!(m.now_ms() >= before + 10_000, "NTFS's worker ran");
    assert_eq!(read_back(&mut m, v), b"late");
    assert_eq!(frame_devices_on(&m, v), 0, "no later attach");
    assert_eq!(instances_top_down(&m, v), ["Ntfs"]);
    assert!(on_e(&m).is_empty(), "{:?}", on_e(&m));
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    let _ = m.stop("ProbeA");
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
