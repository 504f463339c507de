//! The Filter Manager's flag sets (facts.md §2.5, §2.6, §3, §4, §5), each with the WDK spelling of
//! its bits for reports.

use bitflags::bitflags;

/// A flag set whose bits have WDK spellings.
pub trait WdkFlags: bitflags::Flags<Bits = u32> + Copy + 'static {
    /// `(bit, WDK spelling)` for every defined bit.
    const WDK_NAMES: &'static [(u32, &'static str)];

    /// The WDK spellings of the set bits, in bit order; unknown bits are skipped (see
    /// [`WdkFlags::unknown_bits`]).
    fn wdk_names(self) -> impl Iterator<Item = &'static str> {
        let bits = self.bits();
        Self::WDK_NAMES.iter().filter(move |(bit, _)| bits & bit != 0).map(|(_, name)| *name)
    }

    /// Bits that no WDK name covers.
    fn unknown_bits(self) -> u32 {
        let known = Self::WDK_NAMES.iter().fold(0, |acc, (bit, _)| acc | bit);
        self.bits() & !known
    }

    /// Parses one WDK spelling.
    fn from_wdk_name(name: &str) -> Option<Self> {
        Self::WDK_NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(bit, _)| Self::from_bits_retain(*bit))
    }
}

bitflags! {
    /// `FLTFL_OPERATION_REGISTRATION_*`: the skip flags of an operation registration (facts.md §3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct OperationFlags: u32 {
        /// Don't call for paging I/O (IRP-based operations only).
        const SKIP_PAGING_IO = 0x1;
        /// Read/write only: skip cached I/O, which includes every fast-I/O read and write.
        const SKIP_CACHED_IO = 0x2;
        /// Skip every operation not issued on a DASD (volume) handle.
        const SKIP_NON_DASD_IO = 0x4;
        /// Read/write only: skip I/O that is neither cached nor paging.
        const SKIP_NON_CACHED_NON_PAGING_IO = 0x8;
    }
}

impl WdkFlags for OperationFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[
        (0x1, "FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO"),
        (0x2, "FLTFL_OPERATION_REGISTRATION_SKIP_CACHED_IO"),
        (0x4, "FLTFL_OPERATION_REGISTRATION_SKIP_NON_DASD_IO"),
        (0x8, "FLTFL_OPERATION_REGISTRATION_SKIP_NON_CACHED_NON_PAGING_IO"),
    ];
}

bitflags! {
    /// `FLTFL_INSTANCE_SETUP_*`: why an instance is being set up (facts.md §2.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct InstanceSetupFlags: u32 {
        /// Load-time enumeration of volumes or a new mount.
        const AUTOMATIC_ATTACHMENT = 0x1;
        /// An explicit attach request (`fltmc attach`, `FltAttachVolume`, `FilterAttach`).
        const MANUAL_ATTACHMENT = 0x2;
        /// The volume has just been mounted.
        const NEWLY_MOUNTED_VOLUME = 0x4;
        /// A dismounted-with-open-files FAT/CDFS volume being attached again.
        const DETACHED_VOLUME = 0x8;
        /// The volume is a Dev Drive.
        const DEV_VOLUME = 0x10;
        /// An administrator trusted the volume.
        const TRUSTED_VOLUME = 0x20;
    }
}

impl WdkFlags for InstanceSetupFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[
        (0x1, "FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT"),
        (0x2, "FLTFL_INSTANCE_SETUP_MANUAL_ATTACHMENT"),
        (0x4, "FLTFL_INSTANCE_SETUP_NEWLY_MOUNTED_VOLUME"),
        (0x8, "FLTFL_INSTANCE_SETUP_DETACHED_VOLUME"),
        (0x10, "FLTFL_INSTANCE_SETUP_DEV_VOLUME"),
        (0x20, "FLTFL_INSTANCE_SETUP_TRUSTED_VOLUME"),
    ];
}

bitflags! {
    /// `FLTFL_INSTANCE_TEARDOWN_*`: why an instance is being torn down (facts.md §2.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct TeardownFlags: u32 {
        /// A manual detach.
        const MANUAL = 0x1;
        /// A non-mandatory filter unload.
        const FILTER_UNLOAD = 0x2;
        /// A mandatory filter unload.
        const MANDATORY_FILTER_UNLOAD = 0x4;
        /// The volume was dismounted, its mount failed, or its file system unregistered.
        const VOLUME_DISMOUNT = 0x8;
        /// An internal error.
        const INTERNAL_ERROR = 0x10;
    }
}

impl WdkFlags for TeardownFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[
        (0x1, "FLTFL_INSTANCE_TEARDOWN_MANUAL"),
        (0x2, "FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD"),
        (0x4, "FLTFL_INSTANCE_TEARDOWN_MANDATORY_FILTER_UNLOAD"),
        (0x8, "FLTFL_INSTANCE_TEARDOWN_VOLUME_DISMOUNT"),
        (0x10, "FLTFL_INSTANCE_TEARDOWN_INTERNAL_ERROR"),
    ];
}

bitflags! {
    /// `FLTFL_FILTER_UNLOAD_*` (facts.md §5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct UnloadFlags: u32 {
        /// A service stop: the callback's answer is ignored.
        const MANDATORY = 0x1;
    }
}

impl WdkFlags for UnloadFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[(0x1, "FLTFL_FILTER_UNLOAD_MANDATORY")];
}

bitflags! {
    /// `FLTFL_REGISTRATION_*` (facts.md §2.6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct RegistrationFlags: u32 {
        /// Service-stop requests fail and the unload callback is not called for them.
        const DO_NOT_SUPPORT_SERVICE_STOP = 0x1;
        /// Opt in to named-pipe and mailslot volumes (Windows 8).
        const SUPPORT_NPFS_MSFS = 0x2;
        /// Opt in to DAX volumes (Windows 10 1607).
        const SUPPORT_DAX_VOLUME = 0x4;
    }
}

impl WdkFlags for RegistrationFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[
        (0x1, "FLTFL_REGISTRATION_DO_NOT_SUPPORT_SERVICE_STOP"),
        (0x2, "FLTFL_REGISTRATION_SUPPORT_NPFS_MSFS"),
        (0x4, "FLTFL_REGISTRATION_SUPPORT_DAX_VOLUME"),
    ];
}

bitflags! {
    /// `FLTFL_POST_OPERATION_*` (facts.md §4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PostFlags: u32 {
        /// The instance is being torn down: the operation may not have completed, only clean up.
        const DRAINING = 0x1;
    }
}

impl WdkFlags for PostFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[(0x1, "FLTFL_POST_OPERATION_DRAINING")];
}

bitflags! {
    /// `FLTFL_CALLBACK_DATA_*`: flags of an operation's callback data (facts.md §3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct CallbackDataFlags: u32 {
        /// An IRP-based operation.
        const IRP_OPERATION = 0x1;
        /// A fast-I/O operation.
        const FAST_IO_OPERATION = 0x2;
        /// An FsFilter callback operation.
        const FS_FILTER_OPERATION = 0x4;
        /// The buffer is a system buffer.
        const SYSTEM_BUFFER = 0x8;
        /// Issued by a filter.
        const GENERATED_IO = 0x1_0000;
        /// Reissued by a filter.
        const REISSUED_IO = 0x2_0000;
        /// A copy handed to a draining post-callback.
        const DRAINING_IO = 0x4_0000;
        /// The operation is in its post phase.
        const POST_OPERATION = 0x8_0000;
        /// A new system buffer was allocated for the operation.
        const NEW_SYSTEM_BUFFER = 0x10_0000;
        /// A filter changed the parameters.
        const DIRTY = 0x8000_0000;
    }
}

impl WdkFlags for CallbackDataFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[
        (0x1, "FLTFL_CALLBACK_DATA_IRP_OPERATION"),
        (0x2, "FLTFL_CALLBACK_DATA_FAST_IO_OPERATION"),
        (0x4, "FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION"),
        (0x8, "FLTFL_CALLBACK_DATA_SYSTEM_BUFFER"),
        (0x1_0000, "FLTFL_CALLBACK_DATA_GENERATED_IO"),
        (0x2_0000, "FLTFL_CALLBACK_DATA_REISSUED_IO"),
        (0x4_0000, "FLTFL_CALLBACK_DATA_DRAINING_IO"),
        (0x8_0000, "FLTFL_CALLBACK_DATA_POST_OPERATION"),
        (0x10_0000, "FLTFL_CALLBACK_DATA_NEW_SYSTEM_BUFFER"),
        (0x8000_0000, "FLTFL_CALLBACK_DATA_DIRTY"),
    ];
}

bitflags! {
    /// The `IRP_*` flags the model reads from an IRP (facts.md §7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct IrpFlags: u32 {
        /// `IRP_NOCACHE`: non-cached I/O.
        const NOCACHE = 0x1;
        /// `IRP_PAGING_IO`: paging I/O.
        const PAGING_IO = 0x2;
        /// `IRP_SYNCHRONOUS_API`.
        const SYNCHRONOUS_API = 0x4;
        /// `IRP_SYNCHRONOUS_PAGING_IO`.
        const SYNCHRONOUS_PAGING_IO = 0x40;
    }
}

impl IrpFlags {
    /// `IRP_MOUNT_COMPLETION` shares its bit with `IRP_PAGING_IO` (facts.md §7).
    pub const MOUNT_COMPLETION: IrpFlags = IrpFlags::PAGING_IO;
}

impl WdkFlags for IrpFlags {
    const WDK_NAMES: &'static [(u32, &'static str)] = &[
        (0x1, "IRP_NOCACHE"),
        (0x2, "IRP_PAGING_IO"),
        (0x4, "IRP_SYNCHRONOUS_API"),
        (0x40, "IRP_SYNCHRONOUS_PAGING_IO"),
    ];
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn names<F: WdkFlags>(f: F) -> Vec<&'static str> {
        f.wdk_names().collect()
    }

    #[test]
    fn values_match_fltkernel_h() {
        // facts.md §2.5, §2.6, §3, §4, §5.
        assert_eq!(InstanceSetupFlags::AUTOMATIC_ATTACHMENT.bits(), 0x1);
        assert_eq!(InstanceSetupFlags::TRUSTED_VOLUME.bits(), 0x20);
        assert_eq!(TeardownFlags::VOLUME_DISMOUNT.bits(), 0x8);
        assert_eq!(TeardownFlags::INTERNAL_ERROR.bits(), 0x10);
        assert_eq!(RegistrationFlags::SUPPORT_DAX_VOLUME.bits(), 0x4);
        assert_eq!(OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO.bits(), 0x8);
        assert_eq!(CallbackDataFlags::POST_OPERATION.bits(), 0x8_0000);
        assert_eq!(CallbackDataFlags::DIRTY.bits(), 0x8000_0000);
        assert_eq!(IrpFlags::SYNCHRONOUS_PAGING_IO.bits(), 0x40);
    }

    #[test]
    fn wdk_spellings() {
        let f = InstanceSetupFlags::AUTOMATIC_ATTACHMENT | InstanceSetupFlags::NEWLY_MOUNTED_VOLUME;
        assert_eq!(
            names(f),
            [
                "FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT",
                "FLTFL_INSTANCE_SETUP_NEWLY_MOUNTED_VOLUME"
            ]
        );
        assert_eq!(names(UnloadFlags::MANDATORY), ["FLTFL_FILTER_UNLOAD_MANDATORY"]);
        assert_eq!(
            TeardownFlags::from_wdk_name("FLTFL_INSTANCE_TEARDOWN_MANUAL"),
            Some(TeardownFlags::MANUAL)
        );
        assert_eq!(TeardownFlags::from_wdk_name("FLTFL_NOPE"), None);
    }

    #[test]
    fn every_defined_bit_has_exactly_one_name() {
        fn check<F: WdkFlags>() {
            for flag in F::all().iter() {
                assert_eq!(names(flag).len(), 1, "{:#x}", flag.bits());
            }
            assert_eq!(F::WDK_NAMES.len(), F::all().iter().count());
        }
        check::<OperationFlags>();
        check::<InstanceSetupFlags>();
        check::<TeardownFlags>();
        check::<UnloadFlags>();
        check::<RegistrationFlags>();
        check::<PostFlags>();
        check::<CallbackDataFlags>();
        check::<IrpFlags>();
    }

    #[test]
    fn unknown_bits_are_kept_and_reported() {
        let f = InstanceSetupFlags::from_bits_retain(0x41);
        assert_eq!(names(f), ["FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT"]);
        assert_eq!(f.unknown_bits(), 0x40);
    }
}
