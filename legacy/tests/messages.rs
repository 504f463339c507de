//! User-mode messages through the legacy backend (`sim/testing/messages.rs`, rule 23): the
//! control device, opened through its link `\DosDevices\<name>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

#[path = "../../sim/testing/messages.rs"]
mod messages;

use fsfilter::{IOCTL_FSFILTER_MESSAGE, Status};
use fsfilter_sim::{Caller, DeviceHandle, Machine, StopResult, full_ea};
use messages::{CHANNEL, Client, ECHO};

mod echo {
    fsfilter_legacy::driver!(super::messages::Echo);
}

mod silent {
    fsfilter_legacy::driver!(super::messages::Silent);
}

/// `CreateFile("\\.\<name>")` (the context, if any, as an extended attribute),
/// `DeviceIoControl(IOCTL_FSFILTER_MESSAGE)`, `CloseHandle`.
struct Device;

impl Client for Device {
    type Handle = DeviceHandle;

    fn connect_as(
        &self,
        m: &mut Machine,
        caller: Caller,
        name: &str,
        context: &[u8],
    ) -> Result<DeviceHandle, Status> {
        let ea = (!context.is_empty()).then(|| full_ea("FsFilterContext", context));
        m.open_device_as(caller, &format!(r"\??\{name}"), ea.as_deref())
    }

    fn send(
        &self,
        m: &mut Machine,
        h: DeviceHandle,
        input: &[u8],
        capacity: usize,
    ) -> Result<Vec<u8>, Status> {
        let r = m.device_control(h, IOCTL_FSFILTER_MESSAGE, input, capacity);
        if r.status.is_success() { Ok(r.data) } else { Err(r.status) }
    }

    fn close(&self, m: &mut Machine, h: DeviceHandle) {
        assert_eq!(m.close_device(h), Status::SUCCESS);
    }
}

#[test]
fn a_client_connects_exchanges_messages_and_disconnects_in_both_models() {
    messages::check_exchange(common::install_legacy, echo::ENTRY, &Device);
}

#[test]
fn max_clients_and_refused_connections_are_the_same_in_both_models() {
    messages::check_clients(common::install_legacy, echo::ENTRY, &Device);
}

#[test]
fn a_standard_user_is_refused_and_an_administrator_connects_in_both_models() {
    messages::check_standard_user_refused(common::install_legacy, echo::ENTRY, &Device);
}

#[test]
fn a_second_driver_with_the_same_channel_name_fails_to_load_cleanly_in_both_models() {
    messages::check_name_taken(common::install_legacy, echo::ENTRY, &Device);
}

#[test]
fn a_filter_without_a_channel_has_nothing_to_connect_to_in_both_models() {
    messages::check_no_channel(common::install_legacy, silent::ENTRY, &Device);
}

/// An open handle to the control device keeps the I/O manager from calling `DriverUnload` (WRK
/// loadunld.c `IopCheckUnloadDriver`): the stop is pending, messages still work, and the close
/// disconnects the client, after which the unload runs and the link is gone.
#[test]
fn an_unload_waits_for_the_clients_to_close_in_the_legacy_model() {
    let mut m = messages::machine(common::install_legacy, ECHO, echo::ENTRY);
    let h = Device.connect(&mut m, CHANNEL, b"stay").expect("connects");
    assert_eq!(m.stop(ECHO), StopResult::Pending);
    assert_eq!(Device.send(&mut m, h, b"hi", 8), Ok(b"1:hi".to_vec()));
    assert_eq!(messages::take(), ["connect 1 stay", "message 1 hi (8 reply bytes)"]);
    Device.close(&mut m, h);
    assert_eq!(messages::take(), ["disconnect 1", "unload"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(Device.connect(&mut m, CHANNEL, b"late").err(), Some(Status::OBJECT_NAME_NOT_FOUND));
}

/// Other device controls on the control device are refused as before the channel.
#[test]
fn other_control_codes_are_invalid_device_requests_in_the_legacy_model() {
    let mut m = messages::machine(common::install_legacy, ECHO, echo::ENTRY);
    let h = Device.connect(&mut m, CHANNEL, b"").expect("connects");
    let r = m.device_control(h, fsfilter::ctl_code(0x22, 0x801, 0, 0), b"x", 8);
    assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST);
    Device.close(&mut m, h);
    assert_eq!(messages::take(), ["connect 1 ", "disconnect 1"]);
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A device control on the control device reaches `message` only for a file object whose create
/// connected and whose cleanup has not come yet (rule 23: no message of a client starts after
/// its `client_disconnect`). A kernel caller can send one otherwise: `IoGetDeviceObjectPointer`
/// opens the control device and closes its handle at once (connect, then the cleanup's
/// disconnect) and keeps the file object, and `IoBuildDeviceIoControlRequest` sets no file
/// object at all. Both are refused with `STATUS_INVALID_DEVICE_STATE`, the filter not asked.
#[test]
fn a_message_without_a_connected_client_is_refused_in_the_legacy_model() {
    use fsfilter_kernel::irp::{IoCallDriver, IoGetNextIrpStackLocation};
    use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, KEVENT};
    use windows_sys::Wdk::System::SystemServices::{
        IoBuildDeviceIoControlRequest, IoGetDeviceObjectPointer, KeInitializeEvent,
        ObfDereferenceObject,
    };
    use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

    fn send(device: *mut DEVICE_OBJECT, file: *mut FILE_OBJECT) -> (Status, Vec<u8>) {
        // SAFETY: all-zero is valid for both before use.
        let mut event: KEVENT = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
        // SAFETY: our event.
        unsafe { KeInitializeEvent(&mut event, 0, false) };
        let mut out = [0u8; 8];
        // SAFETY: the live control device, our buffers and event.
        let irp = unsafe {
            IoBuildDeviceIoControlRequest(
                IOCTL_FSFILTER_MESSAGE,
                device,
                b"hi".as_ptr().cast(),
                2,
                out.as_mut_ptr().cast(),
                8,
                false,
                &event,
                &mut iosb,
            )
        };
        assert!(!irp.is_null());
        // SAFETY: the IRP built above, not sent yet.
        let next = unsafe { IoGetNextIrpStackLocation(irp) };
        // SAFETY: its first stack location, ours to fill.
        unsafe { (*next).FileObject = file };
        // SAFETY: the control device and the IRP built for it.
        let s = Status(unsafe { IoCallDriver(device, irp) });
        // Written at completion.
        let n = iosb.Information;
        (s, out[..n.min(8)].to_vec())
    }

    let mut m = messages::machine(common::install_legacy, ECHO, echo::ENTRY);
    let units: Vec<u16> = format!(r"\FileSystem\Filters\{ECHO}").encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let (mut file, mut device) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: a valid name and out pointers.
    let s = unsafe { IoGetDeviceObjectPointer(&name, 0x8000_0000, &mut file, &mut device) };
    assert_eq!(Status(s), Status::SUCCESS);
    assert_eq!(messages::take(), ["connect 1 ", "disconnect 1"]);
    // The file object whose handle was closed, then no file object.
    assert_eq!(send(device, file), (Status::INVALID_DEVICE_STATE, Vec::new()));
    assert_eq!(send(device, std::ptr::null_mut()), (Status::INVALID_DEVICE_STATE, Vec::new()));
    assert_eq!(messages::take(), Vec::<String>::new(), "the filter is not asked");
    // A user's client still talks as before.
    let h = Device.connect(&mut m, CHANNEL, b"user").expect("connects");
    assert_eq!(Device.send(&mut m, h, b"hi", 8), Ok(b"2:hi".to_vec()));
    Device.close(&mut m, h);
    assert_eq!(
        messages::take(),
        ["connect 2 user", "message 2 hi (8 reply bytes)", "disconnect 2"]
    );
    // SAFETY: the reference IoGetDeviceObjectPointer gave.
    unsafe { ObfDereferenceObject(file.cast()) };
    assert_eq!(m.stop(ECHO), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
