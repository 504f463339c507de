//! Communication ports (docs/simulator.md, "Communication ports and control devices"): a
//! hand-written minifilter creates a server port in its DriverEntry, as MiniSpy does, and user
//! mode connects, sends messages and disconnects through `Machine`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(missing_docs, reason = "test drivers")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null_mut;

use fsfilter::Status;
use fsfilter_sim::{
    Caller, InstanceLayout, InstanceSpec, InstancesSpec, Machine, MachineConfig, Rule, ServiceSpec,
    StopResult,
};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FltBuildDefaultSecurityDescriptor,
    FltCloseClientPort, FltCloseCommunicationPort, FltCreateCommunicationPort,
    FltFreeSecurityDescriptor, FltRegisterFilter, FltSendMessage, FltStartFiltering,
    FltUnregisterFilter, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, UNICODE_STRING,
};

/// `FLT_PORT_ALL_ACCESS`: `FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL`.
const FLT_PORT_ALL_ACCESS: u32 = 0x0001 | 0x001F_0000;
/// `STATUS_CONNECTION_COUNT_LIMIT`.
const CONNECTION_COUNT_LIMIT: Status = Status::CONNECTION_COUNT_LIMIT;
/// `STATUS_PORT_DISCONNECTED`.
const PORT_DISCONNECTED: Status = Status::PORT_DISCONNECTED;
/// The port's name.
const PORT: &str = r"\SpyPort";

/// How "Spy" behaves.
#[derive(Clone)]
struct Config {
    max_connections: i32,
    /// Its unload closes the server port before FltUnregisterFilter.
    close_server_at_unload: bool,
    /// Its DisconnectNotifyCallback closes the client port.
    close_client_in_disconnect: bool,
    /// Frees the security descriptor after creating the port.
    free_descriptor: bool,
    /// The connect callback refuses with this status.
    refuse: Option<Status>,
    /// The message callback says it returned this many bytes more than it wrote.
    overstate_reply: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_connections: 4,
            close_server_at_unload: true,
            close_client_in_disconnect: true,
            free_descriptor: true,
            refuse: None,
            overstate_reply: 0,
        }
    }
}

/// What "Spy" keeps.
#[derive(Default)]
struct State {
    filter: PFLT_FILTER,
    server: PFLT_PORT,
    /// Client ports by connection number (the cookie is number + 1).
    clients: Vec<PFLT_PORT>,
    /// Copies of the client port variables, kept past FltCloseClientPort (a misuse).
    copies: Vec<PFLT_PORT>,
    /// What its extra FltCreateCommunicationPort calls returned in DriverEntry.
    extra: Vec<(&'static str, Status)>,
    /// `PsGetCurrentProcessId` in each connect and message callback, in order.
    processes: Vec<(&'static str, usize)>,
}

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static CFG: RefCell<Option<Config>> = const { RefCell::new(None) };
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn log(s: String) {
    LOG.with(|l| l.borrow_mut().push(s));
}

fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

fn cfg() -> Config {
    CFG.with(|c| c.borrow().clone().unwrap_or_default())
}

fn state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(s.borrow_mut().get_or_insert_with(State::default)))
}

/// Where a callback runs: its IRQL and the image whose code is running.
fn context() -> String {
    let irql = fsfilter_sim::kernel::current_irql();
    let image = fsfilter_sim::kernel::with(|k| k.current_image_name()).unwrap_or_default();
    format!("irql {irql} in {image}")
}

fn unicode(units: &[u16]) -> UNICODE_STRING {
    UNICODE_STRING {
        Length: (units.len() * 2) as u16,
        MaximumLength: (units.len() * 2) as u16,
        Buffer: units.as_ptr().cast_mut(),
    }
}

/// `FltCreateCommunicationPort` on `name` with `attributes`, as InitializeObjectAttributes
/// sets them up.
unsafe fn create_port(
    filter: PFLT_FILTER,
    name: &str,
    attributes: u32,
    descriptor: *mut c_void,
    max: i32,
    out: &mut PFLT_PORT,
) -> NTSTATUS {
    let units: Vec<u16> = name.encode_utf16().collect();
    let name = unicode(&units);
    let oa = OBJECT_ATTRIBUTES {
        Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: null_mut(),
        ObjectName: &name,
        Attributes: attributes,
        SecurityDescriptor: descriptor.cast_const().cast(),
        SecurityQualityOfService: null_mut(),
    };
    unsafe {
        FltCreateCommunicationPort(
            filter,
            out,
            &oa,
            0x5E5E as *const c_void,
            Some(connect),
            Some(disconnect),
            Some(message),
            max,
        )
    }
}

unsafe extern "system" fn connect(
    client: PFLT_PORT,
    server_cookie: *const c_void,
    context_ptr: *const c_void,
    size: u32,
    cookie: *mut *mut c_void,
) -> NTSTATUS {
    let bytes = if context_ptr.is_null() {
        Vec::new()
    } else {
        unsafe { std::slice::from_raw_parts(context_ptr.cast::<u8>(), size as usize) }.to_vec()
    };
    log(format!(
        "connect server cookie {:#x} context {:?} size {size} {}",
        server_cookie as usize,
        String::from_utf8_lossy(&bytes),
        context()
    ));
    let process = unsafe { fsfilter_sim::exports::ps::PsGetCurrentProcessId() } as usize;
    state(|s| s.processes.push(("connect", process)));
    if let Some(s) = cfg().refuse {
        return s.0;
    }
    let n = state(|s| {
        s.clients.push(client);
        s.copies.push(client);
        s.clients.len()
    });
    unsafe { *cookie = n as *mut c_void };
    0
}

unsafe extern "system" fn disconnect(cookie: *const c_void) {
    let n = cookie as usize;
    log(format!("disconnect {n} {}", context()));
    if !cfg().close_client_in_disconnect {
        return;
    }
    let (filter, mut port) = state(|s| (s.filter, s.clients[n - 1]));
    unsafe { FltCloseClientPort(filter, &mut port) };
    log(format!("closed {n}: variable {port}"));
    state(|s| s.clients[n - 1] = port);
}

unsafe extern "system" fn message(
    cookie: *const c_void,
    input: *const c_void,
    input_length: u32,
    output: *mut c_void,
    output_length: u32,
    returned: *mut u32,
) -> NTSTATUS {
    let n = cookie as usize;
    let bytes = if input.is_null() {
        Vec::new()
    } else {
        unsafe { std::slice::from_raw_parts(input.cast::<u8>(), input_length as usize) }.to_vec()
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    log(format!("message {n} {text:?} output {output_length} {}", context()));
    let process = unsafe { fsfilter_sim::exports::ps::PsGetCurrentProcessId() } as usize;
    state(|s| s.processes.push(("message", process)));
    if let Some(command) = text.strip_prefix("send ") {
        let answer = send_command(command);
        let len = answer.len().min(output_length as usize);
        unsafe { std::ptr::copy_nonoverlapping(answer.as_ptr(), output.cast::<u8>(), len) };
        unsafe { *returned = len as u32 };
        return 0;
    }
    match text.as_str() {
        "fail" => return Status::INVALID_PARAMETER.0,
        "close server" => {
            let server = state(|s| s.server);
            unsafe { FltCloseCommunicationPort(server) };
        }
        "close me" => {
            let filter = state(|s| s.filter);
            let mut port = state(|s| s.clients[n - 1]);
            unsafe { FltCloseClientPort(filter, &mut port) };
            state(|s| s.clients[n - 1] = port);
        }
        _ => {}
    }
    let reply = format!("{n}:{text}");
    let len = reply.len().min(output_length as usize);
    if len > 0 {
        unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), output.cast::<u8>(), len) };
    }
    unsafe { *returned = len as u32 + cfg().overstate_reply };
    0
}

/// `send <connection> <message> <reply capacity | -> <timeout ms | @absolute ms | 0 | -> [how]`:
/// FltSendMessage on the client port variable of connection <connection> (0: a NULL
/// variable), in the caller's thread, from the filter's code. `how`: `dispatch` calls it at
/// DISPATCH_LEVEL, `null-port` with a NULL ClientPort pointer, `copy` through a copy of the
/// variable made before the filter closed the port. Answers `<status> <reply length> <reply>`.
fn send_command(command: &str) -> String {
    let words: Vec<&str> = command.split(' ').collect();
    let n: usize = words[0].parse().unwrap();
    let message = words[1].as_bytes();
    let capacity: Option<usize> = words[2].parse().ok();
    let timeout: Option<i64> = match words[3] {
        "-" => None,
        t if t.starts_with('@') => {
            let mut now = 0i64;
            unsafe { windows_sys::Wdk::System::SystemServices::KeQuerySystemTimePrecise(&mut now) };
            Some(now + t[1..].parse::<i64>().unwrap() * 10_000)
        }
        t => Some(-t.parse::<i64>().unwrap() * 10_000),
    };
    let how = words.get(4).copied().unwrap_or("");
    let filter = state(|s| s.filter);
    let port: PFLT_PORT = match how {
        "copy" => state(|s| s.copies[n - 1]),
        _ if n == 0 => 0,
        _ => state(|s| s.clients[n - 1]),
    };
    let mut reply = vec![0u8; capacity.unwrap_or(0)];
    let mut reply_length = capacity.unwrap_or(0) as u32;
    let reply_ptr = if capacity.is_some() { reply.as_mut_ptr().cast() } else { null_mut() };
    let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const i64);
    let port_ptr: *const PFLT_PORT = if how == "null-port" { std::ptr::null() } else { &port };
    if how == "dispatch" {
        fsfilter_sim::kernel::with(|k| k.set_irql(2));
    }
    let s = unsafe {
        FltSendMessage(
            filter,
            port_ptr,
            message.as_ptr().cast(),
            message.len() as u32,
            reply_ptr,
            &mut reply_length,
            timeout_ptr,
        )
    };
    if how == "dispatch" {
        fsfilter_sim::kernel::with(|k| k.set_irql(0));
    }
    match capacity {
        Some(_) => {
            let got = &reply[..(reply_length as usize).min(reply.len())];
            format!("{:#x} {reply_length} {}", s as u32, String::from_utf8_lossy(got))
        }
        None => format!("{:#x} -", s as u32),
    }
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    let (filter, server) = state(|s| (s.filter, s.server));
    if cfg().close_server_at_unload {
        unsafe { FltCloseCommunicationPort(server) };
    }
    log("unregister".to_owned());
    unsafe { FltUnregisterFilter(filter) };
    log("unregistered".to_owned());
    0
}

unsafe extern "system" fn spy_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    let c = cfg();
    let ops = Box::leak(Box::new([FLT_OPERATION_REGISTRATION {
        MajorFunction: 0x80,
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: null_mut(),
    }]));
    let reg = Box::leak(Box::new(FLT_REGISTRATION {
        Size: size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        Flags: 0,
        ContextRegistration: null_mut(),
        OperationRegistration: ops.as_ptr(),
        FilterUnloadCallback: Some(unload),
        InstanceSetupCallback: None,
        InstanceQueryTeardownCallback: None,
        InstanceTeardownStartCallback: None,
        InstanceTeardownCompleteCallback: None,
        GenerateFileNameCallback: None,
        NormalizeNameComponentCallback: None,
        NormalizeContextCleanupCallback: None,
        TransactionNotificationCallback: None,
        NormalizeNameComponentExCallback: None,
        SectionNotificationCallback: None,
    }));
    let mut filter: PFLT_FILTER = 0;
    let s = unsafe { FltRegisterFilter(driver, reg, &mut filter) };
    if s < 0 {
        return s;
    }
    state(|st| st.filter = filter);
    let mut sd: *mut c_void = null_mut();
    let s = unsafe { FltBuildDefaultSecurityDescriptor(&mut sd, FLT_PORT_ALL_ACCESS) };
    assert_eq!(Status(s), Status::SUCCESS);
    let mut server: PFLT_PORT = 0;
    let attributes = OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE;
    let s = unsafe { create_port(filter, PORT, attributes, sd, c.max_connections, &mut server) };
    // The documented refusals, each with a port of its own that is never created.
    let mut extra = Vec::new();
    for (what, name, attrs, max) in [
        ("same name", r"\SPYPORT", attributes, 1),
        ("no OBJ_KERNEL_HANDLE", r"\Other", OBJ_CASE_INSENSITIVE, 1),
        ("no connection allowed", r"\Other", attributes, 0),
    ] {
        let mut p: PFLT_PORT = 0;
        let r = unsafe { create_port(filter, name, attrs, sd, max, &mut p) };
        extra.push((what, Status(r)));
    }
    if c.free_descriptor {
        unsafe { FltFreeSecurityDescriptor(sd) };
    }
    state(|st| {
        st.server = server;
        st.extra = extra;
    });
    if s < 0 {
        unsafe { FltUnregisterFilter(filter) };
        return s;
    }
    let s = unsafe { FltStartFiltering(filter) };
    if s < 0 {
        unsafe { FltCloseCommunicationPort(server) };
        unsafe { FltUnregisterFilter(filter) };
    }
    s
}

/// A machine with the Filter Manager and "Spy" started with `c`.
fn machine(c: Config) -> Machine {
    CFG.with(|x| *x.borrow_mut() = Some(c));
    STATE.with(|s| *s.borrow_mut() = None);
    take_log();
    let mut m = Machine::new(MachineConfig { seed: 1 });
    m.install_filter_manager();
    let mut spec = ServiceSpec::new("Spy", spy_entry, "minifilter");
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(InstancesSpec {
        default_instance: "Spy Instance".into(),
        instances: vec![InstanceSpec {
            name: "Spy Instance".into(),
            altitude: "385100".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Legacy,
    });
    m.install(spec);
    m.boot();
    assert_eq!(m.start("Spy"), Status::SUCCESS);
    m
}

fn rules(m: &Machine) -> Vec<Rule> {
    m.findings().into_iter().map(|(r, _, _)| r).collect()
}

#[test]
fn connect_message_and_disconnect_reach_the_filter_in_order_with_their_arguments() {
    // FltCreateCommunicationPort's reference page: ConnectNotifyCallback gets the new client
    // port, the server port's cookie and the context FilterConnectCommunicationPort passed;
    // the cookie it returns comes back to MessageNotifyCallback and DisconnectNotifyCallback,
    // each at PASSIVE_LEVEL (the caller's thread, the filter's code). FltCloseClientPort sets
    // the caller's variable to NULL (its reference page).
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"hello").unwrap();
    assert_eq!(
        take_log(),
        [r#"connect server cookie 0x5e5e context "hello" size 5 irql 0 in Spy"#]
    );
    let reply = m.send_message(port, b"ping", 16).unwrap();
    assert_eq!(reply, b"1:ping");
    // A reply cut to the buffer the caller offers; no buffer at all.
    assert_eq!(m.send_message(port, b"pong", 3).unwrap(), b"1:p");
    assert_eq!(m.send_message(port, b"", 0).unwrap(), b"");
    assert_eq!(m.send_message(port, b"fail", 8), Err(Status::INVALID_PARAMETER));
    assert_eq!(
        take_log(),
        [
            r#"message 1 "ping" output 16 irql 0 in Spy"#,
            r#"message 1 "pong" output 3 irql 0 in Spy"#,
            r#"message 1 "" output 0 irql 0 in Spy"#,
            r#"message 1 "fail" output 8 irql 0 in Spy"#,
        ]
    );
    // No context: NULL and 0.
    let second = m.connect_communication_port(PORT, b"").unwrap();
    assert_eq!(m.send_message(second, b"x", 8).unwrap(), b"2:x");
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert_eq!(m.close_port(second), Status::SUCCESS);
    assert_eq!(
        take_log(),
        [
            r#"connect server cookie 0x5e5e context "" size 0 irql 0 in Spy"#,
            r#"message 2 "x" output 8 irql 0 in Spy"#,
            "disconnect 1 irql 0 in Spy",
            "closed 1: variable 0",
            "disconnect 2 irql 0 in Spy",
            "closed 2: variable 0",
        ]
    );
    // A closed handle is no handle.
    assert_eq!(m.send_message(port, b"late", 8), Err(Status::INVALID_HANDLE));
    assert_eq!(rules(&m), [Rule::InvalidHandle]);
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    assert_eq!(take_log(), ["unregister", "unregistered"]);
    assert_eq!(rules(&m), [Rule::InvalidHandle], "a well-behaved filter: {:?}", m.findings());
}

#[test]
fn connect_and_message_callbacks_run_in_the_callers_process() {
    // The simulator runs ConnectNotifyCallback and MessageNotifyCallback in the user-mode
    // caller's thread (docs/simulator.md, "Communication ports"), so PsGetCurrentProcessId
    // names the caller's process, as Microsoft's scanner sample relies on when it saves
    // IoGetCurrentProcess in its connect callback (docs/simulator.md, "Processes").
    let mut m = machine(Config::default());
    let svc = m.new_process("svc").unwrap();
    let port = m.as_process(svc, |m| m.connect_communication_port(PORT, b"").unwrap());
    m.send_message(port, b"x", 8).unwrap();
    m.as_process(svc, |m| m.send_message(port, b"y", 8).unwrap());
    let _ = take_log();
    assert_eq!(
        state(|s| s.processes.clone()),
        [("connect", 0x1004), ("message", 0x1000), ("message", 0x1004)]
    );
    assert_eq!(m.close_port(port), Status::SUCCESS);
}

#[test]
fn the_documented_refusals_of_fltcreatecommunicationport() {
    // Its reference page: a name already taken is STATUS_OBJECT_NAME_COLLISION (the object
    // manager compares without case); without OBJ_KERNEL_HANDLE STATUS_INVALID_PARAMETER;
    // MaxConnections must be greater than zero.
    let _m = machine(Config::default());
    let extra = state(|s| s.extra.clone());
    assert_eq!(
        extra,
        [
            ("same name", Status::OBJECT_NAME_COLLISION),
            ("no OBJ_KERNEL_HANDLE", Status::INVALID_PARAMETER),
            ("no connection allowed", Status::INVALID_PARAMETER),
        ]
    );
}

#[test]
fn connections_beyond_max_connections_are_refused_until_one_ends() {
    // MaxConnections is the most simultaneous connections (its reference page): one more is
    // refused before the filter hears of it; a connection that ends frees its place.
    let mut m = machine(Config { max_connections: 1, ..Config::default() });
    let first = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    assert_eq!(m.connect_communication_port(PORT, b"b"), Err(CONNECTION_COUNT_LIMIT));
    assert!(take_log().is_empty(), "the filter never sees the refused connection");
    assert_eq!(m.close_port(first), Status::SUCCESS);
    take_log();
    let second = m.connect_communication_port(PORT, b"c").unwrap();
    assert_eq!(m.send_message(second, b"hi", 8).unwrap(), b"2:hi");
    assert_eq!(m.close_port(second), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_connection_the_connect_callback_refuses_fails_with_its_status() {
    let mut m = machine(Config { refuse: Some(Status::ACCESS_DENIED), ..Config::default() });
    assert_eq!(m.connect_communication_port(PORT, b"a"), Err(Status::ACCESS_DENIED));
    // A port nobody created.
    assert_eq!(
        m.connect_communication_port(r"\NoSuchPort", b""),
        Err(Status::OBJECT_NAME_NOT_FOUND)
    );
    assert_eq!(take_log().len(), 1, "one connect callback");
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_standard_user_is_refused_a_port_whose_descriptor_is_the_default_one() {
    // FltBuildDefaultSecurityDescriptor's reference page: applied to an object, the descriptor
    // gives access only to SYSTEM and administrators. The port is opened (and access checked)
    // before the connection is counted or the filter hears of it, so the refusal is
    // STATUS_ACCESS_DENIED and takes no place (FilterConnectCommunicationPort returns it as
    // E_ACCESSDENIED, HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)).
    let mut m = machine(Config { max_connections: 1, ..Config::default() });
    assert_eq!(
        m.connect_communication_port_as(Caller::StandardUser, PORT, b"user"),
        Err(Status::ACCESS_DENIED)
    );
    assert!(take_log().is_empty(), "the filter never sees the refused connection");
    let port = m.connect_communication_port_as(Caller::Administrator, PORT, b"admin").unwrap();
    assert_eq!(
        take_log(),
        [r#"connect server cookie 0x5e5e context "admin" size 5 irql 0 in Spy"#]
    );
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn closing_the_server_port_refuses_new_connections_and_keeps_the_existing_ones() {
    // FltCloseCommunicationPort: "existing connections are not affected. However, no more
    // incoming connections will be accepted."
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    assert_eq!(m.send_message(port, b"close server", 32).unwrap(), b"1:close server");
    assert_eq!(m.connect_communication_port(PORT, b"b"), Err(Status::OBJECT_NAME_NOT_FOUND));
    assert_eq!(m.send_message(port, b"still", 8).unwrap(), b"1:still");
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert!(take_log().contains(&"closed 1: variable 0".to_owned()));
    // The unload closes it again: the port is gone.
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    assert_eq!(rules(&m), [Rule::InvalidFltObject], "{:?}", m.findings());
}

#[test]
fn a_connection_the_filter_closed_fails_its_messages_and_gets_no_disconnect() {
    // "Closing either endpoint (kernel or user) terminates that connection" (Communication
    // Between User Mode and Kernel Mode).
    let mut m = machine(Config { max_connections: 1, ..Config::default() });
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    assert_eq!(m.send_message(port, b"close me", 16).unwrap(), b"1:close me");
    assert_eq!(m.send_message(port, b"again", 16), Err(PORT_DISCONNECTED));
    // The connection ended: its place is free.
    let other = m.connect_communication_port(PORT, b"b").unwrap();
    take_log();
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert!(take_log().is_empty(), "no DisconnectNotifyCallback for a connection gone");
    assert_eq!(m.close_port(other), Status::SUCCESS);
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_filter_manager_ends_the_connections_left_when_the_filter_unregisters() {
    // "The filter manager terminates existing connections when the minifilter driver unloads"
    // (Communication Between User Mode and Kernel Mode): DisconnectNotifyCallback runs for
    // each, "when the minifilter driver is about to be unloaded" (FltCloseClientPort).
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    assert_eq!(
        take_log(),
        ["unregister", "disconnect 1 irql 0 in Spy", "closed 1: variable 0", "unregistered"]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // The user's handle is still there, its connection gone.
    assert_eq!(m.send_message(port, b"x", 8), Err(PORT_DISCONNECTED));
    assert_eq!(m.close_port(port), Status::SUCCESS);
}

#[test]
fn unregistering_with_the_server_port_open_is_reported() {
    // "Closing the Communication Server Port": the FilterUnloadCallback must close it before
    // calling FltUnregisterFilter, or the unload hangs.
    let mut m = machine(Config { close_server_at_unload: false, ..Config::default() });
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    let found = m.findings();
    assert_eq!(rules(&m), [Rule::CommunicationPortOpenAtUnregister], "{found:?}");
    assert_eq!(found[0].1.as_deref(), Some("Spy"));
    assert!(found[0].2.contains(PORT), "{found:?}");
    assert_eq!(
        Rule::CommunicationPortOpenAtUnregister.name(),
        "COMMUNICATION_PORT_OPEN_AT_UNREGISTER"
    );
}

#[test]
fn a_client_port_never_closed_is_reported_at_unregistration() {
    // FltCreateCommunicationPort: "The minifilter driver must eventually close this client
    // port ... usually from the minifilter driver's DisconnectNotifyCallback routine."
    let mut m = machine(Config { close_client_in_disconnect: false, ..Config::default() });
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert!(m.findings().is_empty(), "it may still close it later: {:?}", m.findings());
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    let found = m.findings();
    assert_eq!(rules(&m), [Rule::ClientPortLeaked], "{found:?}");
    assert_eq!(Rule::ClientPortLeaked.name(), "CLIENT_PORT_LEAKED_AT_UNLOAD");
}

#[test]
fn a_security_descriptor_never_freed_is_a_pool_leak() {
    // FltBuildDefaultSecurityDescriptor allocates from paged pool; FltFreeSecurityDescriptor
    // frees it (their reference pages).
    let mut m = machine(Config { free_descriptor: false, ..Config::default() });
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    let found = m.findings();
    assert_eq!(rules(&m), [Rule::PoolLeaked], "{found:?}");
    assert!(found[0].2.contains("FltS"), "{found:?}");
}

#[test]
fn a_reply_length_beyond_the_output_buffer_is_reported_and_cut() {
    // PFLT_MESSAGE_NOTIFY: ReturnOutputBufferLength "receives the number of bytes returned in
    // the buffer that OutputBuffer points to": no more than OutputBufferLength.
    let mut m = machine(Config { overstate_reply: 100, ..Config::default() });
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    assert_eq!(m.send_message(port, b"ping", 8).unwrap(), b"1:ping\0\0");
    assert_eq!(rules(&m), [Rule::MessageReplyBeyondBuffer], "{:?}", m.findings());
    assert_eq!(Rule::MessageReplyBeyondBuffer.name(), "MESSAGE_REPLY_LENGTH_BEYOND_BUFFER");
    assert_eq!(m.close_port(port), Status::SUCCESS);
}

// FltSendMessage: the filter-to-user direction. Spy sends from its MessageNotifyCallback on
// the command `send ...` (see `send_command`), so the test's FilterSendMessage call is the
// filter's thread; the user's FilterGetMessage completions and replies run as user actions
// (completion-port threads) while the sender waits.

/// What a completed get received, for the log.
fn describe(r: &Result<Vec<u8>, Status>) -> String {
    match r {
        Ok(bytes) => {
            let h = fsfilter::MessageHeader::from_bytes(bytes).unwrap();
            let body = String::from_utf8_lossy(&bytes[fsfilter::MESSAGE_HEADER_LEN..]);
            format!("got id {} reply length {} {body:?}", h.message_id, h.reply_length)
        }
        Err(s) => format!("get failed {:#x}", s.0 as u32),
    }
}

/// The message id of a get's bytes.
fn message_id(bytes: &[u8]) -> u64 {
    fsfilter::MessageHeader::from_bytes(bytes).unwrap().message_id
}

/// A FILTER_REPLY_HEADER for `id` and `data`.
fn reply_to(id: u64, data: &[u8]) -> Vec<u8> {
    let mut v = fsfilter::ReplyHeader { status: 0, message_id: id }.to_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

/// A get of `capacity` bytes on `port` that logs what it receives and, when `answer` is given,
/// replies with it at once.
fn get_and_reply(
    m: &mut Machine,
    port: fsfilter_sim::PortHandle,
    capacity: usize,
    answer: Option<&'static [u8]>,
) -> Status {
    m.get_message(port, capacity, move |m, r| {
        log(describe(&r));
        if let (Ok(bytes), Some(answer)) = (&r, answer) {
            let s = m.reply_message(port, &reply_to(message_id(bytes), answer));
            log(format!("replied {:#x}", s.0 as u32));
        }
    })
}

/// The filter's FltSendMessage answer for `command` sent through `port`.
fn send(m: &mut Machine, port: fsfilter_sim::PortHandle, command: &str) -> String {
    let r = m.send_message(port, format!("send {command}").as_bytes(), 64).unwrap();
    String::from_utf8(r).unwrap()
}

/// The log without the filter's "message" lines (the commands themselves).
fn take_gets() -> Vec<String> {
    take_log().into_iter().filter(|l| !l.starts_with("message ")).collect()
}

#[test]
fn a_message_sent_while_a_get_waits_is_delivered_at_once_and_the_reply_comes_back() {
    // FltSendMessage: "If the application calls FilterGetMessage to get the message before the
    // minifilter driver calls FltSendMessage to send it, the message is delivered immediately";
    // with a ReplyBuffer the caller then waits for FilterReplyMessage. FILTER_MESSAGE_HEADER:
    // ReplyLength is the expected reply "including the FILTER_REPLY_HEADER header", MessageId
    // the id the reply must name; the minifilter's reply buffer receives what follows the
    // FILTER_REPLY_HEADER (the scanner sample: ReplyLength sizeof(SCANNER_REPLY) in the kernel,
    // FILTER_REPLY_HEADER + SCANNER_REPLY from user mode).
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    assert_eq!(get_and_reply(&mut m, port, 64, Some(b"ok")), Status::PENDING);
    assert!(take_log().is_empty(), "the get waits");
    assert_eq!(send(&mut m, port, "1 hello 8 -"), "0x0 2 ok");
    assert_eq!(take_gets(), [r#"got id 1 reply length 24 "hello""#, "replied 0x0"]);
    // Ids count per connection; a message without a reply buffer returns once delivered (its
    // header says no reply is expected) and a reply to it finds no waiter.
    assert_eq!(get_and_reply(&mut m, port, 64, Some(b"late")), Status::PENDING);
    assert_eq!(send(&mut m, port, "1 quiet - -"), "0x0 -");
    m.settle();
    assert_eq!(
        take_gets(),
        [r#"got id 2 reply length 0 "quiet""#, "replied 0xc01c0020"],
        "STATUS_FLT_NO_WAITER_FOR_REPLY"
    );
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_message_waits_in_the_queue_for_a_get_until_its_timeout() {
    // "If Timeout is nonzero and the application calls FilterGetMessage before the Timeout
    // interval expires, the message is delivered"; otherwise "the message is not delivered,
    // and FltSendMessage returns STATUS_TIMEOUT" (a success code). Negative timeouts are
    // relative, positive ones absolute system times; one deadline covers the delivery and the
    // reply.
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    m.schedule(5, move |m| {
        // The message waits in the queue: the get takes it at once.
        assert_eq!(get_and_reply(m, port, 64, Some(b"yes")), Status::SUCCESS);
    });
    let start = m.now_ms();
    assert_eq!(send(&mut m, port, "1 first 8 100"), "0x0 3 yes");
    assert_eq!(m.now_ms() - start, 5, "delivered when the get came");
    // Nobody gets it: taken back at the deadline, never delivered.
    assert_eq!(send(&mut m, port, "1 lost 8 10"), "0x102 8 \0\0\0\0\0\0\0\0");
    assert_eq!(m.now_ms() - start, 15);
    // An absolute deadline 20 ms from now, the get 5 ms later.
    m.schedule(5, move |m| {
        get_and_reply(m, port, 64, Some(b"abs"));
    });
    assert_eq!(send(&mut m, port, "1 third 8 @20"), "0x0 3 abs");
    // An absolute deadline already past, or a zero one: no wait at all.
    assert_eq!(send(&mut m, port, "1 past - @-1"), "0x102 -");
    assert_eq!(send(&mut m, port, "1 zero - 0"), "0x102 -");
    assert_eq!(
        take_gets(),
        [
            r#"got id 1 reply length 24 "first""#,
            "replied 0x0",
            r#"got id 3 reply length 24 "third""#,
            "replied 0x0",
        ],
        "messages 2, 4 and 5 never reached user mode"
    );
    // Two messages queued are taken in order by the gets that come.
    m.schedule(1, move |m| {
        get_and_reply(m, port, 64, None);
    });
    assert_eq!(send(&mut m, port, "1 sixth - 50"), "0x0 -");
    assert_eq!(take_gets(), [r#"got id 6 reply length 0 "sixth""#]);
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_reply_after_the_timeout_finds_no_waiter_and_a_long_reply_overflows() {
    // The timeout covers the wait for the reply too: the sender returns STATUS_TIMEOUT and a
    // later FilterReplyMessage answers STATUS_FLT_NO_WAITER_FOR_REPLY (facts.md). A reply
    // larger than the sender's ReplyLength: FltSendMessage returns STATUS_BUFFER_OVERFLOW
    // (FilterReplyMessage's remarks), the buffer filled (the simulator's choice).
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    m.get_message(port, 64, move |m, r| {
        log(describe(&r));
        let id = message_id(r.as_ref().unwrap());
        m.schedule(30, move |m| {
            let s = m.reply_message(port, &reply_to(id, b"slow"));
            log(format!("replied {:#x}", s.0 as u32));
        });
    });
    assert_eq!(send(&mut m, port, "1 wait 8 20"), "0x102 8 \0\0\0\0\0\0\0\0");
    m.settle();
    assert_eq!(take_gets(), [r#"got id 1 reply length 24 "wait""#, "replied 0xc01c0020"]);
    assert_eq!(get_and_reply(&mut m, port, 64, Some(b"much too long")), Status::PENDING);
    assert_eq!(send(&mut m, port, "1 short 4 -"), "0x80000005 4 much");
    assert_eq!(take_gets(), [r#"got id 2 reply length 20 "short""#, "replied 0x0"]);
    // A reply buffer shorter than the header; an unknown id.
    assert_eq!(m.reply_message(port, &[0; 8]), Status::INVALID_PARAMETER);
    assert_eq!(m.reply_message(port, &reply_to(99, b"x")), Status::FLT_NO_WAITER_FOR_REPLY);
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_get_too_small_for_the_message_fails_and_the_message_waits_for_the_next() {
    // Not documented: the simulator fails a get whose buffer cannot hold the header and the
    // message with STATUS_BUFFER_TOO_SMALL (ERROR_INSUFFICIENT_BUFFER) and keeps the message
    // queued for the next get (docs/simulator.md).
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    assert_eq!(get_and_reply(&mut m, port, 18, Some(b"no")), Status::PENDING);
    m.schedule(5, move |m| {
        // A queued message the buffer cannot hold: refused at once, `then` never runs.
        assert_eq!(get_and_reply(m, port, 20, Some(b"no")), Status::BUFFER_TOO_SMALL);
        assert_eq!(get_and_reply(m, port, 21, Some(b"fits")), Status::SUCCESS);
    });
    assert_eq!(send(&mut m, port, "1 hello 8 100"), "0x0 4 fits");
    assert_eq!(
        take_gets(),
        ["get failed 0xc0000023", r#"got id 1 reply length 24 "hello""#, "replied 0x0"]
    );
    assert_eq!(m.close_port(port), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_connection_that_ends_wakes_its_sender_and_ends_its_gets() {
    // FltSendMessage returns STATUS_PORT_DISCONNECTED when "the communication port was
    // disconnected". The user's close cancels its waiting gets (the handle's cleanup:
    // STATUS_CANCELLED); the filter's FltCloseClientPort fails them with
    // STATUS_PORT_DISCONNECTED (the scanner sample reads the failed completion as "port is
    // disconnected, probably due to scanner filter unloading"), and later gets fail at once.
    let mut m = machine(Config::default());
    let first = m.connect_communication_port(PORT, b"a").unwrap();
    let second = m.connect_communication_port(PORT, b"b").unwrap();
    take_log();
    assert_eq!(get_and_reply(&mut m, second, 8, None), Status::PENDING);
    m.schedule(5, move |m| {
        assert_eq!(m.close_port(second), Status::SUCCESS);
    });
    // The message is too big for the waiting get: it stays queued until the close.
    assert_eq!(send(&mut m, first, "2 never 8 -"), "0xc0000037 8 \0\0\0\0\0\0\0\0");
    assert_eq!(
        take_gets(),
        ["get failed 0xc0000023", "disconnect 2 irql 0 in Spy", "closed 2: variable 0"]
    );
    // The variable FltCloseClientPort set to NULL: disconnected, no finding.
    assert_eq!(send(&mut m, first, "2 again 8 -"), "0xc0000037 8 \0\0\0\0\0\0\0\0");
    // The filter closes its end of the first connection while a get waits there.
    let third = m.connect_communication_port(PORT, b"c").unwrap();
    assert_eq!(get_and_reply(&mut m, first, 64, None), Status::PENDING);
    take_log();
    assert_eq!(m.send_message(first, b"close me", 16).unwrap(), b"1:close me");
    m.settle();
    assert_eq!(take_gets(), ["get failed 0xc0000037"]);
    assert_eq!(get_and_reply(&mut m, first, 64, None), Status::PORT_DISCONNECTED);
    assert_eq!(m.reply_message(first, &reply_to(1, b"x")), Status::PORT_DISCONNECTED);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // A copy of its variable made before the close: an INVALID_FLT_OBJECT finding.
    assert_eq!(send(&mut m, third, "1 stale - - copy"), "0xc0000037 -");
    assert_eq!(rules(&m), [Rule::InvalidFltObject], "{:?}", m.findings());
    assert_eq!(m.close_port(first), Status::SUCCESS);
    assert_eq!(m.close_port(third), Status::SUCCESS);
}

#[test]
fn a_connection_that_ends_after_the_delivery_wakes_the_sender_waiting_for_its_reply() {
    // The wait for the reply ends too when the connection does (STATUS_PORT_DISCONNECTED); a
    // reply the user gave before its close still reaches the sender.
    let mut m = machine(Config::default());
    let first = m.connect_communication_port(PORT, b"a").unwrap();
    let second = m.connect_communication_port(PORT, b"b").unwrap();
    take_log();
    m.get_message(second, 64, move |m, r| {
        log(describe(&r));
        m.schedule(5, move |m| {
            assert_eq!(m.close_port(second), Status::SUCCESS);
        });
    });
    let start = m.now_ms();
    assert_eq!(send(&mut m, first, "2 unanswered 8 -"), "0xc0000037 8 \0\0\0\0\0\0\0\0");
    assert_eq!(m.now_ms() - start, 5);
    let third = m.connect_communication_port(PORT, b"c").unwrap();
    m.get_message(third, 64, move |m, r| {
        log(describe(&r));
        let s = m.reply_message(third, &reply_to(message_id(r.as_ref().unwrap()), b"bye"));
        log(format!("replied {:#x}", s.0 as u32));
        assert_eq!(m.close_port(third), Status::SUCCESS);
    });
    assert_eq!(send(&mut m, first, "3 answered 8 -"), "0x0 3 bye");
    assert_eq!(
        take_gets(),
        [
            r#"got id 1 reply length 24 "unanswered""#,
            "disconnect 2 irql 0 in Spy",
            "closed 2: variable 0",
            r#"connect server cookie 0x5e5e context "c" size 1 irql 0 in Spy"#,
            r#"got id 1 reply length 24 "answered""#,
            "replied 0x0",
            "disconnect 3 irql 0 in Spy",
            "closed 3: variable 0",
        ]
    );
    assert_eq!(m.close_port(first), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn cancel_io_on_the_port_cancels_its_waiting_gets() {
    // CancelIoEx on the port handle: the gets complete with STATUS_CANCELLED
    // (ERROR_OPERATION_ABORTED); with none waiting, STATUS_NOT_FOUND (ERROR_NOT_FOUND).
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    assert_eq!(get_and_reply(&mut m, port, 64, None), Status::PENDING);
    assert_eq!(get_and_reply(&mut m, port, 64, None), Status::PENDING);
    assert_eq!(m.cancel_port_io(port), Status::SUCCESS);
    m.settle();
    assert_eq!(take_gets(), ["get failed 0xc0000120", "get failed 0xc0000120"]);
    assert_eq!(m.cancel_port_io(port), Status::NOT_FOUND);
    // The unload ends a connection with a get waiting: STATUS_PORT_DISCONNECTED.
    assert_eq!(get_and_reply(&mut m, port, 64, None), Status::PENDING);
    assert_eq!(m.stop("Spy"), StopResult::Unloaded);
    m.settle();
    assert!(take_gets().contains(&"get failed 0xc0000037".to_owned()));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn fltsendmessage_misuse_is_reported() {
    // IRQL <= APC_LEVEL (its reference page): above, an IRQL_TOO_HIGH finding (Driver
    // Verifier's IRQL check) and STATUS_INVALID_DEVICE_STATE, nothing sent. ClientPort is
    // required: a NULL pointer is dereferenced on Windows (a BUGCHECK finding here). A send
    // without a timeout that nothing can ever receive hangs on Windows: a DEADLOCK finding and
    // STATUS_TIMEOUT here.
    let mut m = machine(Config::default());
    let port = m.connect_communication_port(PORT, b"a").unwrap();
    take_log();
    assert_eq!(send(&mut m, port, "1 high - - dispatch"), "0xc0000184 -");
    assert_eq!(rules(&m), [Rule::IrqlTooHigh]);
    assert_eq!(send(&mut m, port, "1 x - - null-port"), "0xc000000d -");
    assert_eq!(rules(&m), [Rule::IrqlTooHigh, Rule::Bugcheck]);
    assert_eq!(send(&mut m, port, "1 forever - -"), "0x102 -");
    assert_eq!(rules(&m), [Rule::IrqlTooHigh, Rule::Bugcheck, Rule::Deadlock]);
    // The message taken back: a later get does not see it.
    assert_eq!(get_and_reply(&mut m, port, 64, None), Status::PENDING);
    m.settle();
    assert!(take_gets().is_empty());
    assert_eq!(m.close_port(port), Status::SUCCESS);
}

// "CtlSpy", a legacy-style driver with a named control device and a symbolic link to it, as
// FileSpy names its control device for user mode: the legacy channel's transport.

mod control_device {
    use super::*;
    use fsfilter_kernel::irp::{IoCompleteRequest, IoGetCurrentIrpStackLocation, IoMarkIrpPending};
    use fsfilter_kernel::params::{self, io};
    use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP};
    use windows_sys::Wdk::Storage::FileSystem::SeTokenIsAdmin;
    use windows_sys::Wdk::System::SystemServices::{
        IoCreateDevice, IoCreateSymbolicLink, IoDeleteDevice, IoDeleteSymbolicLink,
    };

    pub(super) const DEVICE: &str = r"\FileSystem\Filters\CtlSpy";
    pub(super) const LINK: &str = r"\DosDevices\CtlSpy";
    /// CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS).
    pub(super) const IOCTL_MESSAGE: u32 = (0x22 << 16) | (0x800 << 2);
    /// A control the driver holds pending (cancelable) until [`IOCTL_RELEASE`].
    pub(super) const IOCTL_HOLD: u32 = (0x22 << 16) | (0x803 << 2);
    /// Completes the oldest held control with the 8 bytes "released".
    pub(super) const IOCTL_RELEASE: u32 = (0x22 << 16) | (0x804 << 2);

    thread_local! {
        static DEV: RefCell<usize> = const { RefCell::new(0) };
        /// Per create: (ClientToken is NULL, SeTokenIsAdmin on the token
        /// SeQuerySubjectContextToken picks).
        pub(super) static TOKENS: RefCell<Vec<(bool, bool)>> = const { RefCell::new(Vec::new()) };
        pub(super) static LINK_RESULTS: RefCell<Vec<Status>> = const { RefCell::new(Vec::new()) };
        /// The controls held (IOCTL_HOLD), oldest first.
        static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    }

    /// Reads the EA list of a create: (name, value) of its first entry.
    fn first_ea(buffer: *const u8, length: u32) -> Option<(String, Vec<u8>)> {
        if buffer.is_null() || length < 8 {
            return None;
        }
        let b = unsafe { std::slice::from_raw_parts(buffer, length as usize) };
        let name_len = usize::from(b[5]);
        let value_len = usize::from(u16::from_le_bytes([b[6], b[7]]));
        let name = String::from_utf8_lossy(&b[8..8 + name_len]).into_owned();
        let value = b[8 + name_len + 1..8 + name_len + 1 + value_len].to_vec();
        Some((name, value))
    }

    unsafe extern "system" fn dispatch(_d: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
        let s = unsafe { &*IoGetCurrentIrpStackLocation(irp) };
        let i = unsafe { &mut *irp };
        let mode = i.RequestorMode;
        let system = unsafe { i.AssociatedIrp.SystemBuffer }.cast::<u8>();
        let (mut status, mut information) = (0, 0);
        match s.MajorFunction {
            0x00 => {
                let c = unsafe { io::<params::IoCreate>(&s.Parameters) };
                let ea = first_ea(system, c.EaLength);
                let subject =
                    unsafe { &(*(*c.SecurityContext).AccessState).SubjectSecurityContext };
                let token = if subject.ClientToken.is_null() {
                    subject.PrimaryToken
                } else {
                    subject.ClientToken
                };
                let admin = unsafe { SeTokenIsAdmin(token) };
                TOKENS.with(|t| t.borrow_mut().push((subject.ClientToken.is_null(), admin)));
                log(format!("create mode {mode} ea {ea:?} {}", context()));
                if ea.is_some_and(|(_, v)| v == b"refuse") {
                    status = Status::ACCESS_DENIED.0;
                }
            }
            0x0e if unsafe { io::<params::IoDeviceIoControl>(&s.Parameters) }.IoControlCode
                == IOCTL_HOLD =>
            {
                // Held until IOCTL_RELEASE, cancelable, as an inverted call's GET is.
                log(format!("hold flags {:#x} {}", i.Flags, context()));
                unsafe { IoMarkIrpPending(irp) };
                i.CancelRoutine = Some(cancel_held);
                HELD.with(|h| h.borrow_mut().push(irp as usize));
                return Status::PENDING.0;
            }
            0x0e if unsafe { io::<params::IoDeviceIoControl>(&s.Parameters) }.IoControlCode
                == IOCTL_RELEASE =>
            {
                let held = HELD.with(|h| {
                    let mut h = h.borrow_mut();
                    (!h.is_empty()).then(|| h.remove(0))
                });
                if let Some(held) = held {
                    let held = held as *mut IRP;
                    let out = unsafe { (*held).AssociatedIrp.SystemBuffer }.cast::<u8>();
                    unsafe {
                        (*held).CancelRoutine = None;
                        std::ptr::copy_nonoverlapping(b"released".as_ptr(), out, 8);
                        (*held).IoStatus.Anonymous.Status = 0;
                        (*held).IoStatus.Information = 8;
                        IoCompleteRequest(held, 0);
                    }
                } else {
                    status = Status::NOT_FOUND.0;
                }
            }
            0x12 => {
                // The cleanup completes what the handle left held.
                log(format!("irp 0x12 mode {mode}"));
                for held in HELD.with(|h| std::mem::take(&mut *h.borrow_mut())) {
                    let held = held as *mut IRP;
                    unsafe {
                        (*held).CancelRoutine = None;
                        (*held).IoStatus.Anonymous.Status = Status::CANCELLED.0;
                        (*held).IoStatus.Information = 0;
                        IoCompleteRequest(held, 0);
                    }
                }
            }
            0x0e => {
                let c = unsafe { io::<params::IoDeviceIoControl>(&s.Parameters) };
                let input =
                    unsafe { std::slice::from_raw_parts(system, c.InputBufferLength as usize) }
                        .to_vec();
                let text = String::from_utf8_lossy(&input).into_owned();
                log(format!(
                    "control {:#x} mode {mode} input {text:?} output {} flags {:#x} {}",
                    c.IoControlCode,
                    c.OutputBufferLength,
                    i.Flags,
                    context()
                ));
                let reply = format!("re:{text}");
                let n = reply.len().min(c.OutputBufferLength as usize);
                unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), system, n) };
                information = n;
            }
            major => log(format!("irp {major:#x} mode {mode}")),
        }
        i.IoStatus.Anonymous.Status = status;
        i.IoStatus.Information = information;
        unsafe { IoCompleteRequest(irp, 0) };
        status
    }

    /// The cancel routine of a held control: releases the cancel spin lock with the IRQL
    /// IoCancelIrp saved, takes the IRP out of the queue, completes it STATUS_CANCELLED.
    unsafe extern "system" fn cancel_held(_d: *mut DEVICE_OBJECT, irp: *mut IRP) {
        log(format!("cancel routine {}", context()));
        unsafe {
            windows_sys::Wdk::System::SystemServices::IoReleaseCancelSpinLock((*irp).CancelIrql)
        };
        HELD.with(|h| h.borrow_mut().retain(|x| *x != irp as usize));
        unsafe {
            (*irp).IoStatus.Anonymous.Status = Status::CANCELLED.0;
            (*irp).IoStatus.Information = 0;
            IoCompleteRequest(irp, 0);
        }
    }

    unsafe extern "system" fn unload(_driver: *const DRIVER_OBJECT) {
        let units: Vec<u16> = LINK.encode_utf16().collect();
        let link = unicode(&units);
        let s = unsafe { IoDeleteSymbolicLink(&link) };
        log(format!("unload: link deleted {:#x}", s as u32));
        let dev = DEV.with(|d| *d.borrow()) as *mut DEVICE_OBJECT;
        unsafe { IoDeleteDevice(dev) };
    }

    /// A code the fast-I/O routine of [`entry_with_fast_io`] serves itself.
    pub(super) const IOCTL_FAST: u32 = (0x22 << 16) | (0x801 << 2);

    /// `FastIoDeviceControl`: logs its arguments; serves [`IOCTL_FAST`] (the reply written
    /// straight into the caller's output buffer), declines every other code.
    unsafe extern "system" fn fast_device_control(
        _file: *const windows_sys::Wdk::Foundation::FILE_OBJECT,
        wait: bool,
        input: *const c_void,
        input_length: u32,
        output: *mut c_void,
        output_length: u32,
        code: u32,
        iosb: *mut windows_sys::Win32::System::IO::IO_STATUS_BLOCK,
        _device: *const DEVICE_OBJECT,
    ) -> bool {
        let text = if input.is_null() {
            String::new()
        } else {
            let bytes =
                unsafe { std::slice::from_raw_parts(input.cast::<u8>(), input_length as usize) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        log(format!(
            "fast control {code:#x} wait {wait} input {text:?} output {output_length} {}",
            context()
        ));
        if code != IOCTL_FAST {
            return false;
        }
        let reply = format!("fast:{text}");
        let n = reply.len().min(output_length as usize);
        if n > 0 {
            unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), output.cast::<u8>(), n) };
        }
        unsafe {
            (*iosb).Anonymous.Status = 0;
            (*iosb).Information = n;
        }
        true
    }

    /// CtlSpy with a `FAST_IO_DISPATCH` whose only routine is `FastIoDeviceControl`.
    pub(super) unsafe extern "system" fn entry_with_fast_io(
        driver: *const DRIVER_OBJECT,
        path: *const UNICODE_STRING,
    ) -> NTSTATUS {
        let s = unsafe { entry(driver, path) };
        let mut table: Box<windows_sys::Wdk::Foundation::FAST_IO_DISPATCH> =
            Box::new(unsafe { std::mem::zeroed() });
        table.SizeOfFastIoDispatch =
            size_of::<windows_sys::Wdk::Foundation::FAST_IO_DISPATCH>() as u32;
        table.FastIoDeviceControl = Some(fast_device_control);
        unsafe { (*driver.cast_mut()).FastIoDispatch = Box::leak(table) };
        s
    }

    pub(super) unsafe extern "system" fn entry(
        driver: *const DRIVER_OBJECT,
        _path: *const UNICODE_STRING,
    ) -> NTSTATUS {
        let d = unsafe { &mut *driver.cast_mut() };
        for f in d.MajorFunction.iter_mut() {
            *f = Some(dispatch);
        }
        d.DriverUnload = Some(unload);
        let units: Vec<u16> = DEVICE.encode_utf16().collect();
        let name = unicode(&units);
        let mut dev = null_mut();
        // FILE_DEVICE_DISK_FILE_SYSTEM, as FileSpy's control device.
        let s = unsafe { IoCreateDevice(driver, 0, &name, 8, 0, false, &mut dev) };
        if s < 0 {
            return s;
        }
        DEV.with(|x| *x.borrow_mut() = dev as usize);
        let link_units: Vec<u16> = LINK.encode_utf16().collect();
        let link = unicode(&link_units);
        let other: Vec<u16> = r"\??\CTLSPY".encode_utf16().collect();
        let missing: Vec<u16> = r"\DosDevices\NoSuchLink".encode_utf16().collect();
        let results = unsafe {
            vec![
                Status(IoCreateSymbolicLink(&link, &name)),
                // The same link by its other spelling.
                Status(IoCreateSymbolicLink(&unicode(&other), &name)),
                Status(IoDeleteSymbolicLink(&unicode(&missing))),
            ]
        };
        LINK_RESULTS.with(|r| *r.borrow_mut() = results);
        unsafe { (*dev).Flags &= !0x80 };
        0
    }
}

fn legacy_machine() -> Machine {
    take_log();
    let mut m = Machine::new(MachineConfig { seed: 1 });
    m.install(ServiceSpec::new("CtlSpy", control_device::entry, "legacy"));
    assert_eq!(m.start("CtlSpy"), Status::SUCCESS);
    m
}

#[test]
fn io_create_symbolic_link_refuses_a_link_that_exists_and_delete_one_that_does_not() {
    // ReactOS' IoCreateSymbolicLink: a permanent, case-insensitive link object; an existing
    // name is a collision (\DosDevices and \?? are one directory); IoDeleteSymbolicLink opens
    // the link first.
    let _m = legacy_machine();
    let results = control_device::LINK_RESULTS.with(|r| r.borrow().clone());
    assert_eq!(
        results,
        [Status::SUCCESS, Status::OBJECT_NAME_COLLISION, Status::OBJECT_NAME_NOT_FOUND]
    );
}

#[test]
fn a_control_device_opened_through_its_link_gets_the_create_ea_a_buffered_control_and_the_close() {
    // NtCreateFile passes its EaBuffer in the create IRP's system buffer (EaLength in the
    // stack location); a METHOD_BUFFERED control carries input and output in the system buffer
    // and Information is the output's length; CloseHandle sends the cleanup, then the close.
    // Each request comes in user mode (RequestorMode), at PASSIVE_LEVEL in the driver.
    let mut m = legacy_machine();
    let ea = fsfilter_sim::full_ea("FsFilterContext", b"ctx");
    let h = m.open_device(r"\??\ctlspy", Some(&ea)).unwrap();
    assert_eq!(
        take_log(),
        [r#"create mode 1 ea Some(("FsFilterContext", [99, 116, 120])) irql 0 in CtlSpy"#]
    );
    let r = m.device_control(h, control_device::IOCTL_MESSAGE, b"ping", 16);
    assert_eq!((r.status, r.information, r.data.as_slice()), (Status::SUCCESS, 7, &b"re:ping"[..]));
    // An output buffer shorter than the reply: what the driver wrote in it.
    let r = m.device_control(h, control_device::IOCTL_MESSAGE, b"pong", 4);
    assert_eq!((r.status, r.information, r.data.as_slice()), (Status::SUCCESS, 4, &b"re:p"[..]));
    // IRP_BUFFERED_IO | IRP_DEALLOCATE_BUFFER | IRP_INPUT_OPERATION.
    assert_eq!(
        take_log(),
        [
            r#"control 0x222000 mode 1 input "ping" output 16 flags 0x70 irql 0 in CtlSpy"#,
            r#"control 0x222000 mode 1 input "pong" output 4 flags 0x70 irql 0 in CtlSpy"#,
        ]
    );
    assert_eq!(m.close_device(h), Status::SUCCESS);
    // IRP_MJ_CLEANUP and IRP_MJ_CLOSE come from the I/O manager (kernel mode).
    assert_eq!(take_log(), ["irp 0x12 mode 0", "irp 0x2 mode 0"]);
    assert_eq!(
        m.device_control(h, control_device::IOCTL_MESSAGE, b"late", 4).status,
        Status::INVALID_HANDLE
    );
    assert_eq!(rules(&m), [Rule::InvalidHandle]);
    // Without an EA, by the device's own name.
    let h = m.open_device(control_device::DEVICE, None).unwrap();
    assert_eq!(take_log(), ["create mode 1 ea None irql 0 in CtlSpy"]);
    // A create the driver fails gives no handle.
    let refused = fsfilter_sim::full_ea("FsFilterContext", b"refuse");
    assert_eq!(m.open_device(control_device::LINK, Some(&refused)), Err(Status::ACCESS_DENIED));
    // An open handle keeps the stop pending (facts.md §1.9); its close lets the unload run,
    // which deletes the link.
    take_log();
    assert_eq!(m.stop("CtlSpy"), StopResult::Pending);
    assert_eq!(m.close_device(h), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), ["irp 0x12 mode 0", "irp 0x2 mode 0", "unload: link deleted 0x0"]);
    assert_eq!(m.open_device(r"\??\CtlSpy", None), Err(Status::OBJECT_NAME_NOT_FOUND));
    assert_eq!(rules(&m), [Rule::InvalidHandle], "{:?}", m.findings());
}

#[test]
fn a_device_control_goes_to_the_drivers_fast_io_device_control_first() {
    // NtDeviceIoControlFile calls the top device's FastIoDeviceControl, when its driver has
    // one, with the caller's own buffers and Wait TRUE; TRUE ends the call with the routine's
    // status block (no IRP), FALSE sends the IRP (ReactOS iofunc.c, IopDeviceFsIoControl).
    take_log();
    let mut m = Machine::new(MachineConfig { seed: 1 });
    m.install(ServiceSpec::new("CtlSpy", control_device::entry_with_fast_io, "legacy"));
    assert_eq!(m.start("CtlSpy"), Status::SUCCESS);
    let h = m.open_device(control_device::LINK, None).unwrap();
    take_log();
    let r = m.device_control(h, control_device::IOCTL_FAST, b"hi", 16);
    assert_eq!((r.status, r.information, r.data.as_slice()), (Status::SUCCESS, 7, &b"fast:hi"[..]));
    assert_eq!(
        take_log(),
        [r#"fast control 0x222004 wait true input "hi" output 16 irql 0 in CtlSpy"#]
    );
    // Declined: the IRP follows, as without the routine.
    let r = m.device_control(h, control_device::IOCTL_MESSAGE, b"ping", 16);
    assert_eq!((r.status, r.information, r.data.as_slice()), (Status::SUCCESS, 7, &b"re:ping"[..]));
    assert_eq!(
        take_log(),
        [
            r#"fast control 0x222000 wait true input "ping" output 16 irql 0 in CtlSpy"#,
            r#"control 0x222000 mode 1 input "ping" output 16 flags 0x70 irql 0 in CtlSpy"#,
        ]
    );
    assert_eq!(m.close_device(h), Status::SUCCESS);
    assert_eq!(rules(&m), [], "{:?}", m.findings());
}

#[test]
fn a_user_mode_create_carries_the_callers_token_for_se_token_is_admin() {
    // NtCreateFile captures the subject context (SeCaptureSubjectContext) into the create's
    // IO_SECURITY_CONTEXT->AccessState: without impersonation ClientToken is NULL and
    // PrimaryToken is the process's token; SeTokenIsAdmin is TRUE for a token holding the
    // local Administrators group (its reference page). The driver decides: CtlSpy admits both.
    let mut m = legacy_machine();
    control_device::TOKENS.with(|t| t.borrow_mut().clear());
    let admin = m.open_device(control_device::LINK, None).unwrap();
    let user = m.open_device_as(Caller::StandardUser, control_device::LINK, None).unwrap();
    let explicit = m.open_device_as(Caller::Administrator, control_device::LINK, None).unwrap();
    assert_eq!(
        control_device::TOKENS.with(|t| t.borrow().clone()),
        [(true, true), (true, false), (true, true)]
    );
    for h in [admin, user, explicit] {
        assert_eq!(m.close_device(h), Status::SUCCESS);
    }
    assert_eq!(rules(&m), [], "{:?}", m.findings());
}

/// What an overlapped control's completion found, for the log.
fn control_done(what: &'static str) -> impl FnOnce(&mut Machine, fsfilter_sim::IoResult) {
    move |_m, r| {
        log(format!(
            "{what} done {:#x} {} {:?}",
            r.status.0 as u32,
            r.information,
            String::from_utf8_lossy(&r.data)
        ));
    }
}

#[test]
fn an_overlapped_device_control_a_driver_holds_completes_later_into_its_completion() {
    // CreateFile with FILE_FLAG_OVERLAPPED opens an asynchronous file object; DeviceIoControl
    // with an OVERLAPPED on it returns ERROR_IO_PENDING for a request the driver pended
    // (STATUS_PENDING from its dispatch routine) and completes later (its completion packet or
    // event); the request references the file object until it completes (WRK
    // IopXxxControlFile, IopCompleteRequest).
    let mut m = legacy_machine();
    let h = m.open_device_overlapped(control_device::LINK, None).unwrap();
    take_log();
    let s = m.device_control_then(h, control_device::IOCTL_HOLD, b"", 16, control_done("hold"));
    assert_eq!(s, Status::PENDING);
    m.settle();
    // IRP_BUFFERED_IO | IRP_DEALLOCATE_BUFFER | IRP_INPUT_OPERATION, in the driver at
    // PASSIVE_LEVEL; nothing completed yet.
    assert_eq!(take_log(), ["hold flags 0x70 irql 0 in CtlSpy"]);
    // Completed at once: the completion runs too.
    let s = m.device_control_then(h, control_device::IOCTL_MESSAGE, b"hi", 16, control_done("now"));
    assert_eq!(s, Status::SUCCESS);
    let r = m.device_control(h, control_device::IOCTL_RELEASE, b"", 0);
    assert_eq!(r.status, Status::SUCCESS);
    m.settle();
    let log = take_log();
    assert!(log.contains(&r#"now done 0x0 5 "re:hi""#.to_owned()), "{log:?}");
    assert!(log.contains(&r#"hold done 0x0 8 "released""#.to_owned()), "{log:?}");
    // Held at the close: the cleanup completes it, then the close comes.
    let s = m.device_control_then(h, control_device::IOCTL_HOLD, b"", 16, control_done("left"));
    assert_eq!(s, Status::PENDING);
    take_log();
    assert_eq!(m.close_device(h), Status::SUCCESS);
    m.settle();
    assert_eq!(take_log(), ["irp 0x12 mode 0", "irp 0x2 mode 0", r#"left done 0xc0000120 0 """#]);
    assert_eq!(rules(&m), [], "{:?}", m.findings());
}

#[test]
fn cancel_io_on_a_device_handle_runs_the_holders_cancel_routine() {
    // CancelIoEx: IoCancelIrp on each of the handle's outstanding requests; the holder's cancel
    // routine runs (at DISPATCH_LEVEL, holding the cancel spin lock) and completes the request
    // STATUS_CANCELLED; with nothing outstanding, STATUS_NOT_FOUND.
    let mut m = legacy_machine();
    let h = m.open_device_overlapped(control_device::LINK, None).unwrap();
    let s = m.device_control_then(h, control_device::IOCTL_HOLD, b"", 16, control_done("one"));
    assert_eq!(s, Status::PENDING);
    let s = m.device_control_then(h, control_device::IOCTL_HOLD, b"", 16, control_done("two"));
    assert_eq!(s, Status::PENDING);
    take_log();
    assert_eq!(m.cancel_io(h), Status::SUCCESS);
    m.settle();
    let log = take_log();
    assert_eq!(
        log.iter().filter(|l| *l == "cancel routine irql 2 in CtlSpy").count(),
        2,
        "{log:?}"
    );
    assert!(log.contains(&r#"one done 0xc0000120 0 """#.to_owned()), "{log:?}");
    assert!(log.contains(&r#"two done 0xc0000120 0 """#.to_owned()), "{log:?}");
    assert_eq!(m.cancel_io(h), Status::NOT_FOUND);
    // A closed handle: refused at once, the completion never runs.
    assert_eq!(m.close_device(h), Status::SUCCESS);
    take_log();
    let s = m.device_control_then(h, control_device::IOCTL_HOLD, b"", 16, control_done("never"));
    assert_eq!(s, Status::INVALID_HANDLE);
    m.settle();
    assert!(!take_log().iter().any(|l| l.starts_with("never")));
    assert_eq!(rules(&m), [Rule::InvalidHandle], "{:?}", m.findings());
}

#[test]
fn an_overlapped_device_control_on_a_synchronous_handle_waits() {
    // "If hDevice was opened without specifying FILE_FLAG_OVERLAPPED, lpOverlapped is ignored"
    // (the lpOverlapped parameter of the control-code pages; CreateFile's FILE_FLAG_OVERLAPPED:
    // without it I/O is serialized "even if the calls ... specify an OVERLAPPED structure"):
    // the I/O manager waits on a FO_SYNCHRONOUS_IO file object.
    let mut m = legacy_machine();
    let h = m.open_device(control_device::LINK, None).unwrap();
    let held = m.open_device_overlapped(control_device::LINK, None).unwrap();
    take_log();
    // A request held on the other handle is released 5 ms from now, by another caller.
    m.schedule(5, move |m| {
        let s = m.device_control_then(
            held,
            control_device::IOCTL_RELEASE,
            b"",
            0,
            control_done("release"),
        );
        assert_eq!(s, Status::SUCCESS);
    });
    let start = m.now_ms();
    let s = m.device_control_then(h, control_device::IOCTL_HOLD, b"", 16, control_done("sync"));
    assert_eq!(s, Status::SUCCESS, "the final status (IopSynchronousServiceTail)");
    assert_eq!(m.now_ms() - start, 5, "the call returned once the request completed");
    m.settle();
    let log = take_log();
    assert!(log.contains(&r#"sync done 0x0 8 "released""#.to_owned()), "{log:?}");
    assert_eq!(m.close_device(h), Status::SUCCESS);
    assert_eq!(m.close_device(held), Status::SUCCESS);
    assert_eq!(rules(&m), [], "{:?}", m.findings());
}
