//! A driver service's `Parameters` key as [`fsfilter::ServiceParameters`]: what `Filter::load`
//! reads, on Windows and in the simulator alike (`ZwOpenKey` / `ZwQueryValueKey`).

use core::ffi::c_void;

use fsfilter::ServiceParameters;
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::System::Registry::KeyValuePartialInformation;
use windows_sys::Win32::Foundation::{
    HANDLE, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, UNICODE_STRING,
};

use crate::ntos::{ZwClose, ZwOpenKey, ZwQueryValueKey};
use crate::unicode::{unicode_string, units};

/// `KEY_READ`.
const KEY_READ: u32 = 0x2_0019;
/// `REG_SZ`, `REG_EXPAND_SZ`, `REG_DWORD`, `REG_MULTI_SZ`.
const REG_SZ: u32 = 1;
const REG_EXPAND_SZ: u32 = 2;
const REG_DWORD: u32 = 4;
const REG_MULTI_SZ: u32 = 7;

/// The longest value this reader returns, in UTF-16 units: a string of
/// [`fsfilter::MAX_STRING_UNITS`] and its terminating NUL.
const MAX_VALUE_UNITS: usize = fsfilter::MAX_STRING_UNITS + 1;
/// The longest value name, in UTF-16 units.
const MAX_NAME_UNITS: usize = 64;
/// The longest service name kept, in bytes.
const MAX_SERVICE_NAME: usize = 64;

/// `<RegistryPath>\Parameters`, opened for reading; absent values when the key does not exist.
pub struct ServiceKey {
    handle: HANDLE,
    service: [u8; MAX_SERVICE_NAME],
    service_len: usize,
}

impl ServiceKey {
    /// Opens the `Parameters` subkey of the service key `DriverEntry` received.
    ///
    /// # Safety
    /// `registry_path` must be null or point to a valid `UNICODE_STRING` for the call.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`.
    pub unsafe fn open(registry_path: *const UNICODE_STRING) -> ServiceKey {
        let mut key = ServiceKey {
            handle: core::ptr::null_mut(),
            service: [0; MAX_SERVICE_NAME],
            service_len: 0,
        };
        if registry_path.is_null() {
            return key;
        }
        // SAFETY: the caller guarantees the string is valid.
        let path = unsafe { &*registry_path };
        // SAFETY: a valid UNICODE_STRING describes its buffer.
        let path = unsafe { units(path) };
        // The service name is the last path component (ASCII in practice; others become '?').
        let start = path.iter().rposition(|&c| c == u16::from(b'\\')).map_or(0, |p| p + 1);
        for &c in path.get(start..).unwrap_or(&[]) {
            let Some(slot) = key.service.get_mut(key.service_len) else { break };
            *slot = if c < 0x80 { c as u8 } else { b'?' };
            key.service_len += 1;
        }
        let suffix = crate::wide!("\\Parameters");
        let mut full = [0u16; 512];
        let total = path.len() + suffix.len();
        if total > full.len() {
            return key;
        }
        for (dst, src) in full.iter_mut().zip(path.iter().chain(suffix)) {
            *dst = *src;
        }
        let name = unicode_string(full.get(..total).unwrap_or(&[]));
        let attributes = OBJECT_ATTRIBUTES {
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: core::ptr::null_mut(),
            ObjectName: &name,
            Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
            SecurityDescriptor: core::ptr::null(),
            SecurityQualityOfService: core::ptr::null(),
        };
        let mut handle: HANDLE = core::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; the handle is a kernel handle we close.
        let status = unsafe { ZwOpenKey(&mut handle, KEY_READ, &attributes) };
        if status >= 0 {
            key.handle = handle;
        }
        key
    }

    /// Queries `name`: the value's type and data, copied into `out`.
    fn query<'o>(
        &self,
        name: &str,
        out: &'o mut [u8; 12 + 2 * MAX_VALUE_UNITS],
    ) -> Option<(u32, &'o [u8])> {
        if self.handle.is_null() {
            return None;
        }
        let mut name_units = [0u16; MAX_NAME_UNITS];
        let mut n = 0;
        for u in name.encode_utf16() {
            *name_units.get_mut(n)? = u;
            n += 1;
        }
        let value_name = unicode_string(name_units.get(..n)?);
        let mut result_len = 0u32;
        // SAFETY: the handle is open; the name and output buffer are valid for the call.
        let status = unsafe {
            ZwQueryValueKey(
                self.handle,
                &value_name,
                KeyValuePartialInformation,
                out.as_mut_ptr().cast::<c_void>(),
                out.len() as u32,
                &mut result_len,
            )
        };
        if status < 0 {
            return None;
        }
        // KEY_VALUE_PARTIAL_INFORMATION: TitleIndex, Type, DataLength (ULONGs), then Data.
        let field =
            |i: usize| out.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let kind = field(4)?;
        let len = field(8)? as usize;
        Some((kind, out.get(12..12 + len)?))
    }
}

impl ServiceParameters for ServiceKey {
    fn service_name(&self) -> &str {
        let name = self.service.get(..self.service_len).unwrap_or(&[]);
        // SAFETY: `open` wrote only ASCII bytes (anything else became '?').
        unsafe { core::str::from_utf8_unchecked(name) }
    }

    fn string<'b>(&self, name: &str, buffer: &'b mut [u8]) -> Option<&'b str> {
        let mut raw = [0u8; 12 + 2 * MAX_VALUE_UNITS];
        let (kind, data) = self.query(name, &mut raw)?;
        if !matches!(kind, REG_SZ | REG_EXPAND_SZ | REG_MULTI_SZ) {
            return None;
        }
        let len = fsfilter::text::utf16le_to_utf8(data, buffer)?;
        let text = buffer.get(..len)?;
        debug_assert!(core::str::from_utf8(text).is_ok());
        // SAFETY: `utf16le_to_utf8` writes UTF-8 only (unpaired surrogates become U+FFFD), which
        // its tests check; validating again would link `core::str::from_utf8` (half a kilobyte)
        // into every driver.
        Some(unsafe { core::str::from_utf8_unchecked(text) })
    }

    fn dword(&self, name: &str) -> Option<u32> {
        let mut raw = [0u8; 12 + 2 * MAX_VALUE_UNITS];
        match self.query(name, &mut raw)? {
            (REG_DWORD, [a, b, c, d]) => Some(u32::from_le_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }
}

impl Drop for ServiceKey {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: a kernel handle this key opened and closes once.
            unsafe { ZwClose(self.handle) };
        }
    }
}
