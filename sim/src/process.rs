//! Processes (docs/simulator.md, "Processes"): the System process (id 4), whose threads are the
//! kernel's and the system workers', and user processes, each with one user thread in which its
//! requests run. Every `Machine` call runs in the default user process's thread ("user") unless
//! made inside [`crate::Machine::as_process`].
//!
//! Drivers see processes and threads through opaque pointers (`PEPROCESS`, `PETHREAD`) the
//! simulator never dereferences: addresses it gives each process and thread, and maps back.

use crate::ids::ThreadId;
use crate::kernel::Kernel;
pub use fsfilter::ProcessId;

/// The System process's id.
pub const SYSTEM: ProcessId = ProcessId(4);

/// The default user process's id: the first user process; later ones follow by 4.
pub const FIRST_USER: ProcessId = ProcessId(0x1000);

/// The default user process's name.
pub const DEFAULT_NAME: &str = "user";

/// The thread of the default user process (the one every `Machine` call ran in before
/// processes were modelled: `PsGetCurrentThreadId` answers 4 in it).
pub const DEFAULT_THREAD: ThreadId = ThreadId(1);

/// The base of the thread ids of processes made with [`crate::Machine::new_process`] (501 on;
/// below the modified-page writer, 999, and the system workers, from 1000).
const FIRST_PROCESS_THREAD: u32 = 500;

/// The thread the lazy writer writes in: the cache manager's worker, a System process thread
/// (not a user process's: theirs are 501 on).
pub const LAZY_WRITER_THREAD: ThreadId = ThreadId(FIRST_PROCESS_THREAD);

/// How many processes a machine may have besides System (the thread ids left for them).
pub const MAX_PROCESSES: usize = (crate::sched::FIRST_WORKER - 1 - FIRST_PROCESS_THREAD) as usize;

/// The address the simulator gives the System process (`IoGetCurrentProcess` in a system
/// thread).
pub const SYSTEM_EPROCESS: usize = 0x4000;

/// Base of the addresses of user processes' `EPROCESS` (id * 16 above it).
const EPROCESS_BASE: usize = 0x0400_0000;

/// Base of the addresses of threads' `ETHREAD` (id * 16 above it).
const ETHREAD_BASE: usize = 0x0800_0000;

/// One user process.
#[derive(Clone, Debug)]
pub struct Process {
    /// Its id.
    pub id: ProcessId,
    /// Its name (the lab's `process = "<name>"`).
    pub name: String,
    /// Its one user thread.
    pub thread: ThreadId,
}

/// The machine's user processes, and which one `Machine` calls run in.
#[derive(Debug)]
pub struct Processes {
    /// Every user process, the default one first.
    pub list: Vec<Process>,
    /// The thread user-mode requests run in now (the acting process's).
    pub acting: ThreadId,
}

impl Default for Processes {
    fn default() -> Processes {
        Processes {
            list: vec![Process {
                id: FIRST_USER,
                name: DEFAULT_NAME.to_string(),
                thread: DEFAULT_THREAD,
            }],
            acting: DEFAULT_THREAD,
        }
    }
}

impl Processes {
    /// Adds a user process named `name` with a fresh id and thread; `None` when one of that
    /// name exists or there are [`MAX_PROCESSES`] already.
    pub fn add(&mut self, name: &str) -> Option<ProcessId> {
        if self.by_name(name).is_some() || self.list.len() >= MAX_PROCESSES {
            return None;
        }
        let n = self.list.len() as u32;
        let id = ProcessId(FIRST_USER.0 + 4 * n);
        let thread = ThreadId(FIRST_PROCESS_THREAD + n);
        self.list.push(Process { id, name: name.to_string(), thread });
        Some(id)
    }

    /// The user process named `name`.
    pub fn by_name(&self, name: &str) -> Option<ProcessId> {
        self.list.iter().find(|p| p.name == name).map(|p| p.id)
    }

    /// The user thread of process `id` (`None` for System or an unknown id).
    pub fn thread_of(&self, id: ProcessId) -> Option<ThreadId> {
        self.list.iter().find(|p| p.id == id).map(|p| p.thread)
    }

    /// The process thread `t` belongs to: its user process, else System (the kernel's initial
    /// thread, the system threads, the workers, the modified-page writer).
    pub fn process_of(&self, t: ThreadId) -> ProcessId {
        self.list.iter().find(|p| p.thread == t).map_or(SYSTEM, |p| p.id)
    }

    /// Whether `id` is a process of this machine (System or a user process).
    pub fn exists(&self, id: ProcessId) -> bool {
        id == SYSTEM || self.thread_of(id).is_some()
    }
}

/// The `EPROCESS` address of process `id`.
pub fn eprocess(id: ProcessId) -> usize {
    if id == SYSTEM { SYSTEM_EPROCESS } else { EPROCESS_BASE + id.0 as usize * 16 }
}

/// The process whose `EPROCESS` address is `address`, if it is one of `k`'s.
pub fn from_eprocess(k: &Kernel, address: usize) -> Option<ProcessId> {
    if address == SYSTEM_EPROCESS {
        return Some(SYSTEM);
    }
    let off = address.checked_sub(EPROCESS_BASE)?;
    if off % 16 != 0 {
        return None;
    }
    let id = ProcessId(u32::try_from(off / 16).ok()?);
    (id != SYSTEM && k.processes.exists(id)).then_some(id)
}

/// The `ETHREAD` address of thread `t`.
pub fn ethread(t: ThreadId) -> usize {
    ETHREAD_BASE + t.0 as usize * 16
}

/// The thread whose `ETHREAD` address is `address` (any address of the thread range: every
/// thread id is a thread of the machine, a worker's once it ran).
pub fn from_ethread(address: usize) -> Option<ThreadId> {
    let off = address.checked_sub(ETHREAD_BASE)?;
    if off % 16 != 0 {
        return None;
    }
    Some(ThreadId(u32::try_from(off / 16).ok()?))
}

impl Kernel {
    /// The process of the running thread.
    pub fn current_process(&self) -> ProcessId {
        self.processes.process_of(self.thread)
    }

    /// The process of the thread whose `ETHREAD` is `thread` (NULL: none).
    pub fn thread_process(&self, thread: usize) -> Option<ProcessId> {
        from_ethread(thread).map(|t| self.processes.process_of(t))
    }
}
