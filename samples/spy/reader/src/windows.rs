//! The Windows side: the entry point, the console, the channel, the poll loop.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use spy::wire::{Command, VERSION_REPLY_SIZE};
use spy_reader::REPLY_BYTES;
use spy_reader::args::{self, ChannelPath, Model, Options, Request};
use spy_reader::format::{self, Failure};
use spy_reader::out::{Out, Sink};
use windows_sys::Win32::Foundation::{
    CloseHandle, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ATTRIBUTE_NORMAL, OPEN_EXISTING, WriteFile,
};
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FilterConnectCommunicationPort, FilterSendMessage,
};
use windows_sys::Win32::System::Console::{
    CTRL_BREAK_EVENT, CTRL_C_EVENT, GetConsoleMode, GetStdHandle, STD_ERROR_HANDLE, STD_HANDLE,
    STD_OUTPUT_HANDLE, SetConsoleCtrlHandler, WriteConsoleW,
};
use windows_sys::Win32::System::Environment::GetCommandLineW;
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Threading::{ExitProcess, Sleep};

/// Exit codes: the log was read; a call failed; the command line was wrong.
const EXIT_OK: u32 = 0;
const EXIT_FAILED: u32 = 1;
const EXIT_USAGE: u32 = 2;

/// The longest command line Windows passes (`CreateProcess`: 32,767 characters).
const MAX_COMMAND_LINE: usize = 32_767;

/// Set by the console control handler on Ctrl+C or Ctrl+Break.
static STOP: AtomicBool = AtomicBool::new(false);

/// The process's entry point (`/ENTRY:mainCRTStartup`, build.rs).
#[unsafe(no_mangle)]
extern "system" fn mainCRTStartup() -> ! {
    let code = main();
    // SAFETY: ExitProcess ends the process with `code`; it has no other precondition.
    unsafe { ExitProcess(code) }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The code is written without panic paths (the workspace lints); this is the backstop.
    let mut err = Out::new(Console::new(STD_ERROR_HANDLE));
    let _ = err.write_str("spy-reader: internal error\n");
    err.flush();
    // SAFETY: as in mainCRTStartup.
    unsafe { ExitProcess(EXIT_FAILED) }
}

fn main() -> u32 {
    let mut out = Out::new(Console::new(STD_OUTPUT_HANDLE));
    let mut err = Out::new(Console::new(STD_ERROR_HANDLE));
    let mut line = args::split(command_line());
    let _program = line.next();
    let code = match args::parse(line) {
        Ok(Request::Help) => {
            let _ = out.write_str(args::USAGE);
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "spy-reader: {e}\n\n{}", args::USAGE);
            EXIT_USAGE
        }
        Ok(Request::Read(options)) => read(&options, &mut out, &mut err),
    };
    out.flush();
    err.flush();
    code
}

/// The process's command line, without its NUL.
fn command_line() -> &'static [u16] {
    // SAFETY: GetCommandLineW has no precondition; it returns the process's command line.
    let line = unsafe { GetCommandLineW() };
    if line.is_null() {
        return &[];
    }
    let mut len = 0;
    // SAFETY: the command line is NUL-terminated and at most MAX_COMMAND_LINE units long; the
    // loop reads up to its NUL only (and never past the bound).
    while len < MAX_COMMAND_LINE && unsafe { *line.wrapping_add(len) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` units before the NUL were just read; the string lives, unchanged by this
    // program, until the process ends.
    unsafe { core::slice::from_raw_parts(line, len) }
}

/// A standard handle: a console (UTF-16, `WriteConsoleW`) or a file or pipe (UTF-8,
/// `WriteFile`).
struct Console {
    handle: HANDLE,
    wide: bool,
}

impl Console {
    fn new(which: STD_HANDLE) -> Console {
        // SAFETY: GetStdHandle takes any of the STD_*_HANDLE values and returns a handle that
        // the process does not own (never closed here), null, or INVALID_HANDLE_VALUE.
        let handle = unsafe { GetStdHandle(which) };
        let mut mode = 0;
        // SAFETY: `mode` is a valid place for the mode; a handle that is no console (or none)
        // makes the call fail, which is the answer sought.
        let wide = unsafe { GetConsoleMode(handle, &mut mode) } != 0;
        Console { handle, wide }
    }

    fn usable(&self) -> bool {
        !self.handle.is_null() && self.handle != INVALID_HANDLE_VALUE
    }
}

impl Sink for Console {
    fn wide(&self) -> bool {
        self.wide
    }

    fn write_bytes(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() && self.usable() {
            let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            let mut written = 0u32;
            // SAFETY: `bytes` is readable for `n` bytes (n <= its length); `written` is a valid
            // place; no OVERLAPPED: a synchronous write.
            let ok = unsafe {
                WriteFile(self.handle, bytes.as_ptr(), n, &mut written, core::ptr::null_mut())
            };
            if ok == 0 || written == 0 {
                return false;
            }
            bytes = bytes.get(written as usize..).unwrap_or(&[]);
        }
        bytes.is_empty()
    }

    fn write_units(&mut self, mut units: &[u16]) -> bool {
        while !units.is_empty() && self.usable() {
            let n = u32::try_from(units.len()).unwrap_or(u32::MAX);
            let mut written = 0u32;
            // SAFETY: `units` is readable for `n` units (n <= its length); `written` is a valid
            // place; the reserved argument is null as required.
            let ok = unsafe {
                WriteConsoleW(self.handle, units.as_ptr(), n, &mut written, core::ptr::null())
            };
            if ok == 0 || written == 0 {
                return false;
            }
            units = units.get(written as usize..).unwrap_or(&[]);
        }
        units.is_empty()
    }
}

/// A connection to the spy's channel, closed when dropped.
struct Channel {
    handle: HANDLE,
    model: Model,
}

impl Channel {
    /// Connects: FilterConnectCommunicationPort on the port (no context: the spy takes none), or
    /// CreateFileW on the control device's link.
    fn connect(model: Model, path: &ChannelPath) -> Result<Channel, Failure> {
        let name = path.with_nul();
        match model {
            Model::Minifilter => {
                let mut port: HANDLE = core::ptr::null_mut();
                // SAFETY: `name` is a NUL-terminated UTF-16 string; no context (null, 0 bytes);
                // default security; `port` is a valid place for the handle.
                let hr = unsafe {
                    FilterConnectCommunicationPort(
                        name.as_ptr(),
                        0,
                        core::ptr::null(),
                        0,
                        core::ptr::null(),
                        &mut port,
                    )
                };
                if hr < 0 || port.is_null() || port == INVALID_HANDLE_VALUE {
                    return Err(Failure::HResult(hr as u32));
                }
                Ok(Channel { handle: port, model })
            }
            Model::Legacy => {
                // SAFETY: `name` is a NUL-terminated UTF-16 string; no sharing, default
                // security, an existing object, no template.
                let handle = unsafe {
                    CreateFileW(
                        name.as_ptr(),
                        GENERIC_READ | GENERIC_WRITE,
                        0,
                        core::ptr::null(),
                        OPEN_EXISTING,
                        FILE_ATTRIBUTE_NORMAL,
                        core::ptr::null_mut(),
                    )
                };
                if handle == INVALID_HANDLE_VALUE || handle.is_null() {
                    return Err(last_error());
                }
                Ok(Channel { handle, model })
            }
        }
    }

    /// Sends `command`; the length of the reply written into `reply` (at most its length).
    fn send(&self, command: Command, reply: &mut [u8]) -> Result<usize, Failure> {
        let message = command.message();
        let in_len = message.len() as u32; // 8
        let out_len = u32::try_from(reply.len()).unwrap_or(u32::MAX);
        let mut returned = 0u32;
        match self.model {
            Model::Minifilter => {
                // SAFETY: `message` is readable for `in_len` bytes and `reply` writable for
                // `out_len` (at most its length); `returned` is a valid place.
                let hr = unsafe {
                    FilterSendMessage(
                        self.handle,
                        message.as_ptr().cast(),
                        in_len,
                        reply.as_mut_ptr().cast(),
                        out_len,
                        &mut returned,
                    )
                };
                if hr < 0 {
                    return Err(Failure::HResult(hr as u32));
                }
            }
            Model::Legacy => {
                // SAFETY: as above; no OVERLAPPED (the handle was opened for synchronous I/O).
                let ok = unsafe {
                    DeviceIoControl(
                        self.handle,
                        fsfilter::IOCTL_FSFILTER_MESSAGE,
                        message.as_ptr().cast(),
                        in_len,
                        reply.as_mut_ptr().cast(),
                        out_len,
                        &mut returned,
                        core::ptr::null_mut(),
                    )
                };
                if ok == 0 {
                    return Err(last_error());
                }
            }
        }
        // Never trust a length beyond the buffer.
        Ok((returned as usize).min(reply.len()))
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by `connect` and is closed only here, once. Closing the
        // port disconnects (the filter's DisconnectNotify); closing the device's handle sends
        // its IRP_MJ_CLEANUP and IRP_MJ_CLOSE.
        unsafe { CloseHandle(self.handle) };
    }
}

fn last_error() -> Failure {
    // SAFETY: GetLastError has no precondition.
    Failure::Win32(unsafe { GetLastError() })
}

/// The console control handler: Ctrl+C and Ctrl+Break end the loop; other events (the console
/// closing, logoff, shutdown) go to the default handler, which ends the process.
unsafe extern "system" fn on_control(event: u32) -> i32 {
    if event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT {
        STOP.store(true, Ordering::SeqCst);
        1
    } else {
        0
    }
}

/// Sleeps `ms` milliseconds in steps of 100, returning early on Ctrl+C.
fn sleep(ms: u32) {
    let mut left = ms;
    while left > 0 && !STOP.load(Ordering::SeqCst) {
        let step = left.min(100);
        // SAFETY: Sleep has no precondition.
        unsafe { Sleep(step) };
        left -= step;
    }
}

fn read(options: &Options, out: &mut Out<Console>, err: &mut Out<Console>) -> u32 {
    let path = options.path();
    let _ = writeln!(out, "spy-reader: connecting to {path} ({})", options.model.describe());
    out.flush();
    let channel = match Channel::connect(options.model, &path) {
        Ok(c) => c,
        Err(f) => {
            let load = match options.model {
                Model::Minifilter => "fltmc load spy-minifilter",
                Model::Legacy => "sc start spy-legacy",
            };
            let _ = writeln!(
                err,
                "spy-reader: cannot connect to {path}: {f}\n(is the spy loaded: `{load}`? Is \
                 another reader connected? Run as an administrator.)"
            );
            return EXIT_FAILED;
        }
    };

    let mut version = [0u8; VERSION_REPLY_SIZE];
    let checked = channel
        .send(Command::GetVersion, &mut version)
        .map_err(|f| {
            let _ = writeln!(err, "spy-reader: GetVersion failed: {f}");
        })
        .and_then(|n| format::version(out, version.get(..n).unwrap_or(&[])).map_err(|_| ()));
    if checked.is_err() {
        return EXIT_FAILED;
    }

    // SAFETY: `on_control` is a valid handler for the process's lifetime (a function).
    if unsafe { SetConsoleCtrlHandler(Some(on_control), 1) } == 0 && !options.once {
        let _ = writeln!(
            err,
            "spy-reader: cannot catch Ctrl+C ({}); it ends the program",
            last_error()
        );
    }
    let _ = writeln!(out, "{}", format::TITLE);
    out.flush();

    let (mut records, mut dropped, mut pending) = (0u64, 0u64, 0u32);
    let mut reply = [0u8; REPLY_BYTES];
    let mut code = EXIT_OK;
    loop {
        let n = match channel.send(Command::GetLog, &mut reply) {
            Ok(n) => n,
            Err(f) => {
                let _ = writeln!(err, "spy-reader: GetLog failed: {f}");
                code = EXIT_FAILED;
                break;
            }
        };
        let batch = match format::log(out, reply.get(..n).unwrap_or(&[])) {
            Ok(batch) => {
                records += u64::from(batch.records);
                dropped += u64::from(batch.dropped);
                pending = batch.pending;
                batch
            }
            Err(e) => {
                let _ = writeln!(err, "spy-reader: {e}");
                code = EXIT_FAILED;
                break;
            }
        };
        if !out.flush() {
            // The output is gone (a closed pipe): nothing more can be shown.
            code = EXIT_FAILED;
            break;
        }
        if options.once || STOP.load(Ordering::SeqCst) {
            break;
        }
        // A full reply with records still held: ask again at once; otherwise (nothing held, or
        // only operations in progress) wait for more.
        if !format::ask_again_at_once(&batch, n, reply.len()) {
            sleep(options.interval_ms);
            if STOP.load(Ordering::SeqCst) {
                break;
            }
        }
    }
    drop(channel);
    let _ = format::summary(out, records, dropped, pending);
    code
}
