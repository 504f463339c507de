//! Identifiers of simulated objects. Sequential per machine, so every run numbers alike.

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            /// The index into the owning table.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    )*};
}

ids! {
    /// A driver image (the code and its one global), native or loaded.
    ImageId,
    /// A driver object.
    DriverId,
    /// A device object.
    DeviceId,
    /// A simulated thread (a user thread or a system worker).
    ThreadId,
    /// A user-mode I/O request.
    RequestId,
    /// A volume of the machine.
    VolumeId,
}
