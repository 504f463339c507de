//! The registry (services' keys, `Parameters`, instance definitions in both layouts of
//! facts.md §2.5) and the kernel handle table.

use std::ffi::c_void;

use fsfilter::Status;

use crate::events::Rule;
use crate::kernel::{FastMap, Kernel};

/// A registry value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegValue {
    /// `REG_SZ`.
    Sz(String),
    /// `REG_EXPAND_SZ`.
    ExpandSz(String),
    /// `REG_MULTI_SZ`.
    MultiSz(Vec<String>),
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_BINARY`.
    Binary(Vec<u8>),
}

impl RegValue {
    /// The `REG_*` type code.
    pub fn type_code(&self) -> u32 {
        match self {
            RegValue::Sz(_) => 1,
            RegValue::ExpandSz(_) => 2,
            RegValue::Binary(_) => 3,
            RegValue::Dword(_) => 4,
            RegValue::MultiSz(_) => 7,
        }
    }

    /// The value's data as the registry stores it (strings as NUL-terminated UTF-16LE).
    pub fn data(&self) -> Vec<u8> {
        let utf16 = |s: &str| -> Vec<u8> {
            s.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect()
        };
        match self {
            RegValue::Sz(s) | RegValue::ExpandSz(s) => utf16(s),
            RegValue::MultiSz(v) => {
                let mut out: Vec<u8> = v.iter().flat_map(|s| utf16(s)).collect();
                out.extend_from_slice(&[0, 0]);
                out
            }
            RegValue::Dword(d) => d.to_le_bytes().to_vec(),
            RegValue::Binary(b) => b.clone(),
        }
    }
}

/// A key.
#[derive(Debug, Default)]
pub struct Key {
    /// Its name (last component).
    pub name: String,
    /// Subkeys, by index.
    pub children: Vec<usize>,
    /// Values in insertion order.
    pub values: Vec<(String, RegValue)>,
}

/// The registry tree; key 0 is `\Registry`.
pub struct Registry {
    /// Every key.
    pub keys: Vec<Key>,
}

/// The services root.
pub const SERVICES: &str = r"\Registry\Machine\System\CurrentControlSet\Services";

impl Registry {
    /// A registry with only its root.
    pub fn new() -> Registry {
        Registry { keys: vec![Key { name: "Registry".into(), ..Key::default() }] }
    }

    fn child(&self, key: usize, name: &str) -> Option<usize> {
        self.keys[key]
            .children
            .iter()
            .copied()
            .find(|&c| self.keys[c].name.eq_ignore_ascii_case(name))
    }

    fn components(path: &str) -> impl Iterator<Item = &str> {
        path.split('\\').filter(|c| !c.is_empty())
    }

    /// The key at an absolute path (`\Registry\Machine\...`), or relative to `root`.
    pub fn find(&self, root: Option<usize>, path: &str) -> Option<usize> {
        let mut comps = Registry::components(path);
        let mut cur = match root {
            Some(r) => r,
            None => {
                let first = comps.next()?;
                if !first.eq_ignore_ascii_case("Registry") {
                    return None;
                }
                0
            }
        };
        for c in comps {
            cur = self.child(cur, c)?;
        }
        Some(cur)
    }

    /// Creates the key at an absolute path (and its parents).
    pub fn create(&mut self, path: &str) -> usize {
        let mut cur = 0;
        for c in Registry::components(path).skip(1) {
            cur = match self.child(cur, c) {
                Some(k) => k,
                None => {
                    let id = self.keys.len();
                    self.keys.push(Key { name: c.to_owned(), ..Key::default() });
                    self.keys[cur].children.push(id);
                    id
                }
            };
        }
        cur
    }

    /// Sets a value (replacing one of the same name).
    pub fn set(&mut self, key: usize, name: &str, value: RegValue) {
        let values = &mut self.keys[key].values;
        match values.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(slot) => slot.1 = value,
            None => values.push((name.to_owned(), value)),
        }
    }

    /// A value.
    pub fn get(&self, key: usize, name: &str) -> Option<&RegValue> {
        self.keys[key].values.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// A value at an absolute key path.
    pub fn value(&self, path: &str, name: &str) -> Option<&RegValue> {
        self.find(None, path).and_then(|k| self.get(k, name))
    }

    /// The names of a key's subkeys.
    pub fn subkeys(&self, key: usize) -> Vec<String> {
        self.keys[key].children.iter().map(|&c| self.keys[c].name.clone()).collect()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// What a kernel handle refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleObject {
    /// A registry key.
    Key(usize),
    /// A section object (by the address the simulator gave it).
    Section(usize),
    /// A file object.
    File(usize),
}

/// The kernel handle table.
#[derive(Default)]
pub struct Handles {
    next: usize,
    /// Open handles.
    pub map: FastMap<usize, HandleObject>,
}

/// Kernel handles have the top bit set on x64; the simulator numbers them like Windows does,
/// in multiples of four.
const KERNEL_HANDLE_BIT: usize = 1 << 63;

impl Handles {
    /// Opens a handle.
    pub fn open(&mut self, object: HandleObject) -> *mut c_void {
        self.next += 4;
        let h = KERNEL_HANDLE_BIT | self.next;
        self.map.insert(h, object);
        h as *mut c_void
    }

    /// What a handle refers to.
    pub fn get(&self, h: *mut c_void) -> Option<HandleObject> {
        self.map.get(&(h as usize)).copied()
    }
}

/// `STATUS_OBJECT_TYPE_MISMATCH`.
pub const OBJECT_TYPE_MISMATCH: Status = Status(0xC000_0024_u32 as i32);

impl Kernel {
    /// The object of a handle a Zw routine `what` uses, as `ObReferenceObjectByHandle` with the
    /// routine's object type finds it: `pick` takes the object of that type.
    /// `STATUS_INVALID_HANDLE` for a handle that is not open (reported: used after its close, or
    /// never opened); `STATUS_OBJECT_TYPE_MISMATCH` for another type's handle.
    pub fn handle_object<T>(
        &mut self,
        h: *mut c_void,
        what: &str,
        pick: impl FnOnce(HandleObject) -> Option<T>,
    ) -> Result<T, Status> {
        let Some(object) = self.handles.get(h) else {
            self.report_current(Rule::InvalidHandle, format!("{what}({h:p}): not an open handle"));
            return Err(Status::INVALID_HANDLE);
        };
        pick(object).ok_or(OBJECT_TYPE_MISMATCH)
    }

    /// Removes a handle from the table (`ZwClose`'s first step); reports an unknown handle.
    pub fn take_handle(&mut self, h: *mut c_void) -> Result<HandleObject, Status> {
        match self.handles.map.remove(&(h as usize)) {
            Some(o) => Ok(o),
            None => {
                self.report_current(
                    Rule::InvalidHandle,
                    format!("ZwClose({h:p}): not an open handle"),
                );
                Err(Status::INVALID_HANDLE)
            }
        }
    }
}
