//! Test support for filter logic, behind the `testing` feature (off by default; a sample's logic
//! crate enables it as a dev-dependency feature only, so no driver build compiles this module).
//!
//! Host code: it uses `std` (heap, locks) and leaks what a [`Services`] answer must hold for
//! `'static` (names, section views, stream contexts), which a test process can afford.
//!
//! - [`FakeServices`]: a [`Services`] whose every answer is configured by the test and whose
//!   every request is recorded for the test to read back (notes, names asked, sections, cancels,
//!   waits, replaced names, messages sent, stream contexts asked).
//! - [`StreamContexts`]: stream contexts as rule 28 has them (one per stream, referenced by each
//!   guard, freed once when detached and no longer referenced), for [`FakeServices`] to hand out.
//! - [`FakeParameters`]: service parameters whose `allocate` gives leaked zeroed memory or
//!   refuses.
//! - [`irp`], [`fast_io`], [`instance`], [`instance_of`], [`instance_setup`], [`pre`], [`post`],
//!   [`post_when_safe`]: the operation views and instances a backend would build, and the calls
//!   of a filter's callbacks with them.

use core::cell::{Cell, RefCell};
use core::sync::atomic::AtomicU64;
use std::boxed::Box;
use std::string::String;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::vec::Vec;

use crate::{
    Buffer, CallbackDataFlags, ClientId, ContextRequest, DataScanMode, Error, FileNameInformation,
    FilesystemType, Filter, Instance, InstanceId, InstanceSetup, InstanceSetupFlags, IoStatus,
    IrpFlags, Irql, LazyHeader, LoadBuffer, MajorFunction, MessageSent, NameBackend, NameId,
    NameKind, NameParts, OperationBuffer, OperationHeader, OperationKind, ParameterList,
    ParameterValue, Parameters, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome,
    ProcessId, RequestorMode, ScanSection, SectionBackend, SectionId, ServiceParameters, Services,
    Status, StreamContext, StreamContextBackend, StreamContextId, VolumeDeviceType, VolumeInfo,
    parse_name,
};

/// A lock that a panicking test thread left poisoned is still usable: the fakes' state is
/// consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Names

struct NameSlot {
    units: &'static [u16],
    released: bool,
}

/// Every name any fake handed out; a [`NameId`] is an index.
struct Names(Mutex<Vec<NameSlot>>);

static NAMES: Names = Names(Mutex::new(Vec::new()));

/// The length of a leading `\Device\Name` (the volume's device name), 0 without one.
fn volume_len(units: &[u16]) -> usize {
    const SEP: u16 = b'\\' as u16;
    let prefix: Vec<u16> = r"\Device\".encode_utf16().collect();
    if !units.starts_with(&prefix) {
        return 0;
    }
    let rest = units.get(prefix.len()..).unwrap_or(&[]);
    prefix.len() + rest.iter().position(|c| *c == SEP).unwrap_or(rest.len())
}

impl NameBackend for Names {
    fn parts(&self, id: NameId) -> Option<NameParts<'_>> {
        let units = lock(&self.0).get(id.0)?.units;
        Some(NameParts::from_ranges(units, &parse_name(units, volume_len(units), 0)))
    }

    fn release(&self, id: NameId) {
        if let Some(slot) = lock(&self.0).get_mut(id.0) {
            assert!(!slot.released, "name {} released twice", id.0);
            slot.released = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sections

struct SectionSlot {
    data: &'static [u8],
    conflicted: bool,
    closed: bool,
}

/// Every data-scan section any fake created; a [`SectionId`] is an index.
struct Sections(Mutex<Vec<SectionSlot>>);

static SECTIONS: Sections = Sections(Mutex::new(Vec::new()));

impl SectionBackend for Sections {
    fn view(&self, id: SectionId) -> Option<&[u8]> {
        lock(&self.0).get(id.0).filter(|s| !s.closed).map(|s| s.data)
    }

    fn conflicted(&self, id: SectionId) -> bool {
        lock(&self.0).get(id.0).is_some_and(|s| s.conflicted)
    }

    fn close(&self, id: SectionId) {
        if let Some(slot) = lock(&self.0).get_mut(id.0) {
            assert!(!slot.closed, "section {} closed twice", id.0);
            slot.closed = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream contexts

/// One context of [`StreamContexts`].
struct ContextSlot {
    stream: usize,
    words: &'static [AtomicU64],
    refs: usize,
    attached: bool,
    freed: bool,
}

/// What a context's free calls: the filter's [`Filter::stream_context_freed`].
type FreedCallback = Box<dyn Fn(&[AtomicU64]) + Send + Sync>;

/// Stream contexts as rule 28 has them: one per stream and instance, referenced by each
/// [`StreamContext`] guard, detached by a delete or the stream's teardown, and freed (the
/// filter's [`Filter::stream_context_freed`] called, once) when detached and no longer
/// referenced. Leaked: a guard needs its backend for `'static`.
pub struct StreamContexts {
    count: usize,
    freed: FreedCallback,
    slots: Mutex<Vec<ContextSlot>>,
}

impl StreamContexts {
    /// Contexts of `words` words each, whose free calls `freed`.
    pub fn new(
        words: usize,
        freed: impl Fn(&[AtomicU64]) + Send + Sync + 'static,
    ) -> &'static StreamContexts {
        Box::leak(Box::new(StreamContexts {
            count: words,
            freed: Box::new(freed),
            slots: Mutex::new(Vec::new()),
        }))
    }

    /// The contexts of `filter`: [`Filter::STREAM_CONTEXT_WORDS`] words each, freed through its
    /// [`Filter::stream_context_freed`].
    pub fn for_filter<F: Filter>(filter: &'static F) -> &'static StreamContexts {
        StreamContexts::new(F::STREAM_CONTEXT_WORDS, move |words| {
            filter.stream_context_freed(words);
        })
    }

    /// The handle contexts of `filter` (rule 29): [`Filter::HANDLE_CONTEXT_WORDS`] words each,
    /// freed through its [`Filter::handle_context_freed`]; keyed by file object.
    pub fn for_filter_handles<F: Filter>(filter: &'static F) -> &'static StreamContexts {
        StreamContexts::new(F::HANDLE_CONTEXT_WORDS, move |words| {
            filter.handle_context_freed(words);
        })
    }

    /// What [`Services::stream_context`] answers for `stream`: the attached context (a new
    /// reference), or with [`ContextRequest::GetOrCreate`] a new one with every word zero;
    /// `STATUS_NOT_FOUND` for a [`ContextRequest::Get`] without one.
    pub fn request(
        &'static self,
        stream: usize,
        request: ContextRequest,
    ) -> Result<StreamContext, Error> {
        let mut slots = lock(&self.slots);
        if let Some((i, s)) =
            slots.iter_mut().enumerate().find(|(_, s)| s.stream == stream && s.attached)
        {
            s.refs += 1;
            return Ok(StreamContext::new(StreamContextId(i), self, false));
        }
        if !request.creates() {
            return Err(Error::NOT_FOUND);
        }
        let words: Vec<AtomicU64> = (0..self.count).map(|_| AtomicU64::new(0)).collect();
        let words = Box::leak(words.into_boxed_slice());
        slots.push(ContextSlot { stream, words, refs: 1, attached: true, freed: false });
        Ok(StreamContext::new(StreamContextId(slots.len() - 1), self, true))
    }

    /// The file system tears `stream` down (`FsRtlTeardownPerStreamContexts`), or with `None`
    /// the instance tears down (every stream): the contexts are detached, and freed unless
    /// referenced.
    pub fn tear_down(&'static self, stream: Option<usize>) {
        let ids: Vec<usize> = lock(&self.slots)
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.attached && stream.is_none_or(|t| s.stream == t))
            .map(|(i, s)| {
                // The teardown's own reference, released below outside the lock.
                s.attached = false;
                s.refs += 1;
                i
            })
            .collect();
        for i in ids {
            self.release(StreamContextId(i));
        }
    }

    /// The words of the context attached to `stream`.
    pub fn words_of(&self, stream: usize) -> Option<&'static [AtomicU64]> {
        lock(&self.slots).iter().find(|s| s.stream == stream && s.attached).map(|s| s.words)
    }

    /// The references held on every context: 0 once every guard was dropped.
    pub fn live_references(&self) -> usize {
        lock(&self.slots).iter().map(|s| s.refs).sum()
    }

    /// How many contexts were created, and how many of them were freed.
    pub fn created_and_freed(&self) -> (usize, usize) {
        let slots = lock(&self.slots);
        (slots.len(), slots.iter().filter(|s| s.freed).count())
    }
}

impl StreamContextBackend for StreamContexts {
    fn words(&self, id: StreamContextId) -> &[AtomicU64] {
        lock(&self.slots).get(id.0).map_or(&[], |s| s.words)
    }

    fn release(&self, id: StreamContextId) {
        let freed = {
            let mut slots = lock(&self.slots);
            let Some(s) = slots.get_mut(id.0) else { return };
            assert!(s.refs > 0, "context {} released more than referenced", id.0);
            s.refs -= 1;
            let free = s.refs == 0 && !s.attached;
            assert!(!(free && s.freed), "context {} freed twice", id.0);
            s.freed |= free;
            free.then_some(s.words)
        };
        // Outside the lock, as a backend calls it.
        if let Some(words) = freed {
            (self.freed)(words);
        }
    }

    fn delete(&self, id: StreamContextId) {
        if let Some(s) = lock(&self.slots).get_mut(id.0) {
            s.attached = false;
        }
        self.release(id);
    }
}

// ---------------------------------------------------------------------------------------------
// Services

/// One [`Services::send_message`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The client it was sent to.
    pub client: ClientId,
    /// The message.
    pub message: Vec<u8>,
    /// The timeout asked for.
    pub timeout_ms: Option<u32>,
}

/// What a [`FakeServices`] answers.
#[derive(Clone)]
struct Config<'h> {
    irql: Irql,
    strict_irql: bool,
    data_scan: DataScanMode,
    name: Result<&'static [u16], Error>,
    before_name: Option<&'h dyn Fn()>,
    section: Result<&'static [u8], Error>,
    cancel: Result<(), Error>,
    wait: Result<(), Error>,
    requestor: Option<ProcessId>,
    clients: Vec<(ClientId, ProcessId)>,
    replace: Result<(), Error>,
    contexts: Option<(&'static StreamContexts, usize)>,
    handle_contexts: Option<(&'static StreamContexts, usize)>,
    context_refusal: Option<Error>,
    reply: Result<Option<Vec<u8>>, Error>,
}

/// What a [`FakeServices`] was asked.
#[derive(Default)]
struct Records {
    notes: RefCell<Vec<String>>,
    names_asked: RefCell<Vec<NameKind>>,
    names: RefCell<Vec<NameId>>,
    sections_asked: Cell<usize>,
    sections: RefCell<Vec<SectionId>>,
    cancels: RefCell<Vec<Status>>,
    waits: RefCell<Vec<u32>>,
    replaced: RefCell<Vec<String>>,
    sent: RefCell<Vec<Sent>>,
    contexts_asked: RefCell<Vec<ContextRequest>>,
}

/// A [`Services`] for unit tests of filter logic: each answer is configured (builder methods,
/// from [`FakeServices::new`]'s defaults), each request recorded.
///
/// The defaults: `PASSIVE_LEVEL`; no data scanning ([`DataScanMode::NotRequested`], sections
/// refused with `STATUS_INVALID_PARAMETER`); names, stream contexts and messages not supported
/// (`STATUS_NOT_SUPPORTED`, as a filter that declares none of them gets); `cancel_file_open`,
/// `wait` and `replace_file_name` succeed; no requestor process and no client processes.
///
/// Each service answers at any IRQL unless [`FakeServices::strict_irql`] is set: the filter's own
/// IRQL discipline is then what a test checks. Not `Sync`: one per thread.
pub struct FakeServices<'h> {
    config: Config<'h>,
    records: Records,
}

impl Default for FakeServices<'_> {
    fn default() -> Self {
        FakeServices::new()
    }
}

impl<'h> FakeServices<'h> {
    /// Services with the defaults (see the type).
    pub fn new() -> FakeServices<'h> {
        FakeServices {
            config: Config {
                irql: Irql::PASSIVE,
                strict_irql: false,
                data_scan: DataScanMode::NotRequested,
                name: Err(Error::NOT_SUPPORTED),
                before_name: None,
                section: Err(Error::INVALID_PARAMETER),
                cancel: Ok(()),
                wait: Ok(()),
                requestor: None,
                clients: Vec::new(),
                replace: Ok(()),
                contexts: None,
                handle_contexts: None,
                context_refusal: None,
                reply: Err(Error::NOT_SUPPORTED),
            },
            records: Records::default(),
        }
    }

    /// The same answers, at `irql`, with nothing recorded yet: the services of the same
    /// operation in another callback (a post's worker at `PASSIVE_LEVEL`, say).
    pub fn again_at(&self, irql: Irql) -> FakeServices<'h> {
        FakeServices { config: Config { irql, ..self.config.clone() }, records: Records::default() }
    }

    /// The IRQL [`Services::irql`] answers.
    pub fn at_irql(mut self, irql: Irql) -> Self {
        self.config.irql = irql;
        self
    }

    /// Each service refuses above its documented IRQL with `STATUS_INVALID_DEVICE_STATE`:
    /// names, sections, waits, cancels and replaced names above `PASSIVE_LEVEL`, stream contexts
    /// and messages above `APC_LEVEL`.
    pub fn strict_irql(mut self) -> Self {
        self.config.strict_irql = true;
        self
    }

    /// What [`Services::data_scan_mode`] answers.
    pub fn data_scan(mut self, mode: DataScanMode) -> Self {
        self.config.data_scan = mode;
        self
    }

    /// [`Services::file_name`] answers `name` (either kind), parsed as
    /// `FltParseFileNameInformation` does with the volume's device name `\Device\X` when it
    /// starts so.
    pub fn named(mut self, name: &str) -> Self {
        let units: Vec<u16> = name.encode_utf16().collect();
        self.config.name = Ok(Vec::leak(units));
        self
    }

    /// [`Services::file_name`] answers `error`.
    pub fn refusing_names(mut self, error: Error) -> Self {
        self.config.name = Err(error);
        self
    }

    /// Runs `hook` in each [`Services::file_name`] call before it answers: what another
    /// processor does meanwhile (the query may send a request down and wait).
    pub fn on_name_query(mut self, hook: &'h dyn Fn()) -> Self {
        self.config.before_name = Some(hook);
        self
    }

    /// [`Services::create_scan_section`] answers a section over `data` (the file's size is its
    /// length).
    pub fn section(mut self, data: &[u8]) -> Self {
        self.config.section = Ok(Vec::leak(data.to_vec()));
        self
    }

    /// [`Services::create_scan_section`] answers `error` (`STATUS_END_OF_FILE` for an empty
    /// file, say).
    pub fn refusing_sections(mut self, error: Error) -> Self {
        self.config.section = Err(error);
        self
    }

    /// [`Services::cancel_file_open`] answers `error` (the call is still recorded).
    pub fn refusing_cancel(mut self, error: Error) -> Self {
        self.config.cancel = Err(error);
        self
    }

    /// [`Services::wait`] answers `error` (the call is still recorded).
    pub fn refusing_wait(mut self, error: Error) -> Self {
        self.config.wait = Err(error);
        self
    }

    /// What [`Services::requestor_process`] answers.
    pub fn requestor(mut self, process: Option<ProcessId>) -> Self {
        self.config.requestor = process;
        self
    }

    /// [`Services::client_process`] answers `process` for `client` (and `None` for clients not
    /// given).
    pub fn client(mut self, client: ClientId, process: ProcessId) -> Self {
        self.config.clients.retain(|(c, _)| *c != client);
        self.config.clients.push((client, process));
        self
    }

    /// [`Services::replace_file_name`] answers `error` (and records nothing).
    pub fn refusing_replace(mut self, error: Error) -> Self {
        self.config.replace = Err(error);
        self
    }

    /// [`Services::stream_context`] answers from `contexts`, for the operation's stream
    /// `stream`.
    pub fn stream_contexts(mut self, contexts: &'static StreamContexts, stream: usize) -> Self {
        self.config.contexts = Some((contexts, stream));
        self
    }

    /// [`Services::stream_context`]'s handle requests ([`ContextRequest::HandleGet`],
    /// [`ContextRequest::HandleGetOrCreate`]) answer from `contexts`, for the operation's file
    /// object `file` (rule 29; [`StreamContexts::for_filter_handles`]).
    pub fn handle_contexts(mut self, contexts: &'static StreamContexts, file: usize) -> Self {
        self.config.handle_contexts = Some((contexts, file));
        self
    }

    /// [`Services::stream_context`] answers `error` instead, when given (a file system that
    /// keeps no filter contexts, a teardown under way).
    pub fn refusing_stream_contexts(mut self, error: Option<Error>) -> Self {
        self.config.context_refusal = error;
        self
    }

    /// [`Services::send_message`] delivers each message, and the client replies `reply` (cut to
    /// the reply buffer).
    pub fn replying(mut self, reply: &[u8]) -> Self {
        self.config.reply = Ok(Some(reply.to_vec()));
        self
    }

    /// [`Services::send_message`] answers [`MessageSent::TimedOut`].
    pub fn timing_out(mut self) -> Self {
        self.config.reply = Ok(None);
        self
    }

    /// [`Services::send_message`] answers `error` (`STATUS_PORT_DISCONNECTED`, say).
    pub fn refusing_send(mut self, error: Error) -> Self {
        self.config.reply = Err(error);
        self
    }

    /// The notes so far, in order.
    pub fn notes(&self) -> Vec<String> {
        self.records.notes.borrow().clone()
    }

    /// The notes so far, in order, forgotten.
    pub fn take_notes(&self) -> Vec<String> {
        self.records.notes.take()
    }

    /// The kinds of every [`Services::file_name`] call, in order.
    pub fn names_asked(&self) -> Vec<NameKind> {
        self.records.names_asked.borrow().clone()
    }

    /// The names handed out and not yet released (dropped).
    pub fn names_held(&self) -> usize {
        let names = lock(&NAMES.0);
        let held = self.records.names.borrow();
        held.iter().filter(|id| names.get(id.0).is_some_and(|s| !s.released)).count()
    }

    /// How many [`Services::create_scan_section`] calls there were, refused ones included.
    pub fn sections_asked(&self) -> usize {
        self.records.sections_asked.get()
    }

    /// The sections handed out and not yet closed (dropped).
    pub fn sections_open(&self) -> usize {
        let sections = lock(&SECTIONS.0);
        let open = self.records.sections.borrow();
        open.iter().filter(|id| sections.get(id.0).is_some_and(|s| !s.closed)).count()
    }

    /// Conflicting I/O asks for every section handed out so far to be closed
    /// ([`ScanSection::conflicted`] then answers true).
    pub fn conflict_sections(&self) {
        let mut sections = lock(&SECTIONS.0);
        for id in self.records.sections.borrow().iter() {
            if let Some(s) = sections.get_mut(id.0) {
                s.conflicted = true;
            }
        }
    }

    /// The status of every [`Services::cancel_file_open`] call, in order.
    pub fn cancels(&self) -> Vec<Status> {
        self.records.cancels.borrow().clone()
    }

    /// The status of the last [`Services::cancel_file_open`] call.
    pub fn cancelled(&self) -> Option<Status> {
        self.records.cancels.borrow().last().copied()
    }

    /// The milliseconds of every [`Services::wait`] call, in order.
    pub fn waits(&self) -> Vec<u32> {
        self.records.waits.borrow().clone()
    }

    /// The last name [`Services::replace_file_name`] replaced the file object's with.
    pub fn replaced(&self) -> Option<String> {
        self.records.replaced.borrow().last().cloned()
    }

    /// Every [`Services::send_message`] call, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.records.sent.borrow().clone()
    }

    /// Every [`Services::stream_context`] call's request, in order.
    pub fn contexts_asked(&self) -> Vec<ContextRequest> {
        self.records.contexts_asked.borrow().clone()
    }

    /// `STATUS_INVALID_DEVICE_STATE` above `max` when the IRQL is checked.
    fn check_irql(&self, max: Irql) -> Result<(), Error> {
        if self.config.strict_irql && self.config.irql > max {
            Err(Error::INVALID_DEVICE_STATE)
        } else {
            Ok(())
        }
    }
}

impl Services for FakeServices<'_> {
    fn irql(&self) -> Irql {
        self.config.irql
    }

    fn note(&self, message: &str) {
        self.records.notes.borrow_mut().push(message.into());
    }

    fn create_scan_section(&self) -> Result<ScanSection, Error> {
        let asked = &self.records.sections_asked;
        asked.set(asked.get() + 1);
        self.check_irql(Irql::PASSIVE)?;
        let data = self.config.section?;
        let id = {
            let mut sections = lock(&SECTIONS.0);
            sections.push(SectionSlot { data, conflicted: false, closed: false });
            SectionId(sections.len() - 1)
        };
        self.records.sections.borrow_mut().push(id);
        Ok(ScanSection::new(id, &SECTIONS, data.len() as u64))
    }

    fn data_scan_mode(&self) -> DataScanMode {
        self.config.data_scan
    }

    fn cancel_file_open(&self, status: Status) -> Result<(), Error> {
        self.records.cancels.borrow_mut().push(status);
        self.check_irql(Irql::PASSIVE)?;
        self.config.cancel
    }

    fn wait(&self, ms: u32) -> Result<(), Error> {
        self.records.waits.borrow_mut().push(ms);
        self.check_irql(Irql::PASSIVE)?;
        self.config.wait
    }

    fn file_name(&self, kind: NameKind) -> Result<FileNameInformation, Error> {
        self.records.names_asked.borrow_mut().push(kind);
        if let Some(hook) = self.config.before_name {
            hook();
        }
        self.check_irql(Irql::PASSIVE)?;
        let units = self.config.name?;
        let id = {
            let mut names = lock(&NAMES.0);
            names.push(NameSlot { units, released: false });
            NameId(names.len() - 1)
        };
        self.records.names.borrow_mut().push(id);
        Ok(FileNameInformation::new(id, &NAMES, kind))
    }

    fn requestor_process(&self) -> Option<ProcessId> {
        self.config.requestor
    }

    fn client_process(&self, client: ClientId) -> Option<ProcessId> {
        self.config.clients.iter().find(|(c, _)| *c == client).map(|(_, p)| *p)
    }

    fn replace_file_name(&self, name: &[u16]) -> Result<(), Error> {
        self.check_irql(Irql::PASSIVE)?;
        self.config.replace?;
        self.records.replaced.borrow_mut().push(String::from_utf16_lossy(name));
        Ok(())
    }

    fn stream_context(&self, request: ContextRequest) -> Result<StreamContext, Error> {
        self.records.contexts_asked.borrow_mut().push(request);
        if let Some(e) = self.config.context_refusal {
            return Err(e);
        }
        self.check_irql(Irql::APC)?;
        let which =
            if request.is_handle() { self.config.handle_contexts } else { self.config.contexts };
        let (contexts, key) = which.ok_or(Error::NOT_SUPPORTED)?;
        contexts.request(key, request)
    }

    fn send_message(
        &self,
        client: ClientId,
        message: &[u8],
        reply: Option<&mut [u8]>,
        timeout_ms: Option<u32>,
    ) -> Result<MessageSent, Error> {
        let sent = Sent { client, message: message.to_vec(), timeout_ms };
        self.records.sent.borrow_mut().push(sent);
        self.check_irql(Irql::APC)?;
        match &self.config.reply {
            Err(e) => Err(*e),
            Ok(None) => Ok(MessageSent::TimedOut),
            Ok(Some(answer)) => {
                let Some(out) = reply else { return Ok(MessageSent::Delivered(0)) };
                let n = answer.len().min(out.len());
                for (o, a) in out.iter_mut().zip(answer) {
                    *o = *a;
                }
                Ok(MessageSent::Delivered(n))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// Service parameters from a list, whose `allocate` gives leaked zeroed memory or refuses
/// (`ParameterList` itself allocates nothing).
pub struct FakeParameters<'a> {
    list: ParameterList<'a>,
    refusal: Option<Error>,
    asked: Cell<usize>,
}

impl<'a> FakeParameters<'a> {
    /// The parameters `values` of service `service`.
    pub fn new(
        service: &'a str,
        values: &'a [(&'a str, ParameterValue<'a>)],
    ) -> FakeParameters<'a> {
        FakeParameters {
            list: ParameterList { service, values },
            refusal: None,
            asked: Cell::new(0),
        }
    }

    /// `allocate` answers `error`.
    pub fn refusing(mut self, error: Error) -> Self {
        self.refusal = Some(error);
        self
    }

    /// The length the last `allocate` asked for; 0 before any.
    pub fn asked(&self) -> usize {
        self.asked.get()
    }
}

impl ServiceParameters for FakeParameters<'_> {
    fn service_name(&self) -> &str {
        self.list.service_name()
    }

    fn string<'b>(&self, name: &str, buffer: &'b mut [u8]) -> Option<&'b str> {
        self.list.string(name, buffer)
    }

    fn dword(&self, name: &str) -> Option<u32> {
        self.list.dword(name)
    }

    fn allocate(&self, len: usize) -> crate::Result<LoadBuffer> {
        self.asked.set(len);
        match self.refusal {
            Some(e) => Err(e),
            None => Ok(LoadBuffer::new(Vec::leak(std::vec![0u8; len]))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Instances and operations

/// The volume of [`instance`] and [`instance_setup`]: an NTFS disk volume.
pub const VOLUME: VolumeInfo =
    VolumeInfo { device_type: VolumeDeviceType::DiskFileSystem, filesystem: FilesystemType::Ntfs };

/// An instance on [`VOLUME`] without data scanning, id 1, with no context; change a field with
/// struct update syntax (`Instance { data_scan: .., ..instance() }`).
pub fn instance() -> Instance<'static, ()> {
    instance_of(&())
}

/// [`instance`] with the filter's instance context `context`.
pub fn instance_of<I>(context: &I) -> Instance<'_, I> {
    Instance { context, volume: VOLUME, data_scan: DataScanMode::NotRequested, id: InstanceId(1) }
}

/// The setup of [`instance`] with `data_scan`, attached automatically, with `services`.
pub fn instance_setup(services: &dyn Services, data_scan: DataScanMode) -> InstanceSetup<'_> {
    InstanceSetup {
        flags: InstanceSetupFlags::AUTOMATIC_ATTACHMENT,
        volume: VOLUME,
        data_scan,
        id: InstanceId(1),
        services,
    }
}

/// A synchronous user-mode IRP of `major` at `PASSIVE_LEVEL` (`IRP_SYNCHRONOUS_API`), with no
/// name and no parameters, on file object 0x5000 (stream 0), id 0x100; change a field with
/// struct update syntax.
pub fn irp(major: MajorFunction) -> OperationHeader<'static> {
    OperationHeader {
        major,
        minor: 0,
        kind: OperationKind::Irp,
        irp_flags: IrpFlags::SYNCHRONOUS_API,
        data_flags: CallbackDataFlags::IRP_OPERATION,
        requestor_mode: RequestorMode::User,
        file_name: None,
        volume_open: false,
        file: 0x5000,
        stream: 0,
        parameters: Parameters::None,
        irql: Irql::PASSIVE,
        synchronous: true,
        id: 0x100,
    }
}

/// [`irp`]'s operation as fast I/O: no IRP flags, `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`.
pub fn fast_io(major: MajorFunction) -> OperationHeader<'static> {
    OperationHeader {
        kind: OperationKind::FastIo,
        irp_flags: IrpFlags::empty(),
        data_flags: CallbackDataFlags::FAST_IO_OPERATION,
        ..irp(major)
    }
}

/// `filter`'s pre callback of the operation `header` with `services`, on `instance` (no buffer;
/// the operation cannot be pended).
pub fn pre<F: Filter>(
    filter: &F,
    instance: &Instance<'_, F::InstanceContext>,
    header: OperationHeader<'_>,
    services: &dyn Services,
) -> PreOutcome<F::CompletionContext> {
    let lazy = LazyHeader::ready(header);
    let mut op = PreOperation::new(&lazy, OperationBuffer::ready(Buffer::None), services, None);
    filter.pre_operation(instance, &mut op)
}

/// The post view of the operation `header`, which completed with `result`, with `services`
/// (no buffer; the completion cannot be deferred), handed to `call`.
fn with_post<R>(
    header: OperationHeader<'_>,
    result: IoStatus,
    services: &dyn Services,
    call: impl FnOnce(&mut PostOperation<'_>) -> R,
) -> R {
    let lazy = LazyHeader::ready(header);
    let buffer = OperationBuffer::ready(Buffer::None);
    call(&mut PostOperation::new(&lazy, result, buffer, services, None))
}

/// `filter`'s post callback of the operation `header`, which completed with `result`, with
/// `services`, on `instance`, with the pre callback's `context` and `flags` (no buffer; the
/// completion cannot be deferred).
pub fn post<F: Filter>(
    filter: &F,
    instance: &Instance<'_, F::InstanceContext>,
    (header, result): (OperationHeader<'_>, IoStatus),
    services: &dyn Services,
    context: F::CompletionContext,
    flags: PostFlags,
) -> PostOutcome<F::CompletionContext> {
    with_post(header, result, services, |op| filter.post_operation(instance, op, context, flags))
}

/// `filter`'s [`Filter::post_operation_when_safe`] of what [`post`] answered
/// [`PostOutcome::WhenSafe`] with `context` for, with `services` (those of the worker).
pub fn post_when_safe<F: Filter>(
    filter: &F,
    instance: &Instance<'_, F::InstanceContext>,
    (header, result): (OperationHeader<'_>, IoStatus),
    services: &dyn Services,
    context: F::CompletionContext,
) -> PostOutcome<F::CompletionContext> {
    with_post(header, result, services, |op| filter.post_operation_when_safe(instance, op, context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        PostFlags, ReadWriteParameters, Registration, Result as FltResult, ServiceParameters,
    };
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::format;

    fn text(name: crate::FileName<'_>) -> String {
        format!("{name}")
    }

    #[test]
    fn the_defaults_answer_as_a_filter_that_declares_nothing() {
        let f = FakeServices::new();
        assert_eq!(f.irql(), Irql::PASSIVE);
        assert_eq!(f.data_scan_mode(), DataScanMode::NotRequested);
        assert_eq!(f.create_scan_section().err(), Some(Error::INVALID_PARAMETER));
        assert_eq!(f.file_name(NameKind::Opened).err(), Some(Error::NOT_SUPPORTED));
        assert_eq!(f.stream_context(ContextRequest::Get).err(), Some(Error::NOT_SUPPORTED));
        assert_eq!(f.send_message(ClientId(1), b"q", None, None), Err(Error::NOT_SUPPORTED));
        assert_eq!((f.requestor_process(), f.client_process(ClientId(1))), (None, None));
        assert_eq!(f.cancel_file_open(Status::ACCESS_DENIED), Ok(()));
        assert_eq!(f.wait(5), Ok(()));
        assert_eq!(f.replace_file_name(&[u16::from(b'x')]), Ok(()));
        f.note("one");
        f.note("two");
        // Every call recorded.
        assert_eq!(f.sections_asked(), 1);
        assert_eq!(f.names_asked(), [NameKind::Opened]);
        assert_eq!(f.contexts_asked(), [ContextRequest::Get]);
        assert_eq!(f.sent().len(), 1);
        assert_eq!(
            (f.cancels(), f.cancelled()),
            (std::vec![Status::ACCESS_DENIED], Some(Status::ACCESS_DENIED))
        );
        assert_eq!(f.waits(), [5]);
        assert_eq!(f.replaced().as_deref(), Some("x"));
        assert_eq!(f.notes(), ["one", "two"]);
        assert_eq!(f.take_notes(), ["one", "two"]);
        assert!(f.notes().is_empty(), "taken");
    }

    #[test]
    fn a_name_is_parsed_counted_and_released() {
        let f = FakeServices::new().named(r"\Device\HarddiskVolume1\dir\Report.TXT:s");
        let name = f.file_name(NameKind::Normalized).unwrap();
        assert_eq!(name.kind(), NameKind::Normalized);
        let p = name.parts();
        assert_eq!(text(p.name), r"\Device\HarddiskVolume1\dir\Report.TXT:s");
        assert_eq!(text(p.volume), r"\Device\HarddiskVolume1");
        assert_eq!(text(p.parent_dir), r"\dir");
        assert_eq!(text(p.final_component), "Report.TXT:s");
        assert_eq!((text(p.extension), text(p.stream)), ("TXT".into(), ":s".into()));
        let second = f.file_name(NameKind::Opened).unwrap();
        assert_eq!(f.names_held(), 2);
        drop(name);
        assert_eq!(f.names_held(), 1);
        drop(second);
        assert_eq!(f.names_held(), 0);
        assert_eq!(f.names_asked(), [NameKind::Normalized, NameKind::Opened]);
        // A name without a device prefix has no volume.
        let g = FakeServices::new().named(r"\a\b.c");
        let n = g.file_name(NameKind::Opened).unwrap();
        assert_eq!((text(n.volume()), text(n.final_component())), ("".into(), "b.c".into()));
        let refused =
            FakeServices::new().named("x").refusing_names(Error::FLT_INVALID_NAME_REQUEST);
        assert_eq!(
            refused.file_name(NameKind::Opened).err(),
            Some(Error::FLT_INVALID_NAME_REQUEST)
        );
        assert_eq!(refused.names_held(), 0);
    }

    #[test]
    fn the_name_hook_runs_before_each_answer() {
        let calls = Cell::new(0);
        let hook = || calls.set(calls.get() + 1);
        let f = FakeServices::new().on_name_query(&hook).refusing_names(Error::NOT_FOUND);
        assert!(f.file_name(NameKind::Opened).is_err());
        assert!(f.file_name(NameKind::Opened).is_err());
        assert_eq!(calls.get(), 2);
        assert_eq!(f.irql(), Irql::PASSIVE, "no other answer changed");
    }

    #[test]
    fn a_section_holds_its_data_reports_conflicts_and_closes_when_dropped() {
        let f = FakeServices::new().data_scan(DataScanMode::FsRtlFallback).section(b"X5O!P%");
        assert_eq!(f.data_scan_mode(), DataScanMode::FsRtlFallback);
        let s = f.create_scan_section().unwrap();
        assert_eq!((s.data(), s.file_size()), (&b"X5O!P%"[..], 6));
        assert!(!s.conflicted());
        let other = FakeServices::new().section(b"other");
        let t = other.create_scan_section().unwrap();
        assert_eq!((s.data(), t.data()), (&b"X5O!P%"[..], &b"other"[..]), "each its own");
        f.conflict_sections();
        assert!(s.conflicted());
        assert!(!t.conflicted(), "only this fake's sections");
        assert_eq!((f.sections_asked(), f.sections_open()), (1, 1));
        drop(s);
        assert_eq!(f.sections_open(), 0);
        assert_eq!(other.sections_open(), 1);
        let empty = FakeServices::new().refusing_sections(Error::new(Status::END_OF_FILE).unwrap());
        assert_eq!(empty.create_scan_section().err().map(Error::status), Some(Status::END_OF_FILE));
        assert_eq!((empty.sections_asked(), empty.sections_open()), (1, 0));
    }

    #[test]
    fn strict_irql_refuses_above_each_documented_level_and_the_default_does_not() {
        let contexts = StreamContexts::new(1, |_| {});
        let at = |irql| {
            FakeServices::new()
                .at_irql(irql)
                .named(r"\Device\V\a")
                .section(b"a")
                .stream_contexts(contexts, 0x10)
                .replying(b"")
        };
        let refused = Some(Error::INVALID_DEVICE_STATE);
        let apc = at(Irql::APC).strict_irql();
        assert_eq!(apc.file_name(NameKind::Opened).err(), refused);
        assert_eq!(apc.create_scan_section().err(), refused);
        assert_eq!(apc.wait(1).err(), refused);
        assert_eq!(apc.cancel_file_open(Status::ACCESS_DENIED).err(), refused);
        assert_eq!(apc.replace_file_name(&[1]).err(), refused);
        assert_eq!(apc.replaced(), None, "a refused replacement is not recorded");
        assert!(apc.stream_context(ContextRequest::GetOrCreate).is_ok());
        assert_eq!(
            apc.send_message(ClientId(1), b"q", None, Some(1)),
            Ok(MessageSent::Delivered(0))
        );
        let dispatch = at(Irql::DISPATCH).strict_irql();
        assert_eq!(dispatch.stream_context(ContextRequest::Get).err(), refused);
        assert_eq!(dispatch.send_message(ClientId(1), b"q", None, None).err(), refused);
        // Not strict: everything answers at DISPATCH_LEVEL.
        let lax = at(Irql::DISPATCH);
        assert!(lax.file_name(NameKind::Opened).is_ok());
        assert!(lax.create_scan_section().is_ok());
        assert!(lax.stream_context(ContextRequest::Get).is_ok());
        assert_eq!(contexts.live_references(), 0);
    }

    #[test]
    fn messages_are_recorded_and_answered_as_configured() {
        let f = FakeServices::new().replying(b"abcdef");
        let mut reply = [0u8; 4];
        let sent = f.send_message(ClientId(7), b"question", Some(&mut reply), Some(30));
        assert_eq!(sent, Ok(MessageSent::Delivered(4)));
        assert_eq!(&reply, b"abcd", "cut to the reply buffer");
        let mut long = [0u8; 8];
        assert_eq!(
            f.send_message(ClientId(7), b"q", Some(&mut long), None),
            Ok(MessageSent::Delivered(6))
        );
        assert_eq!(
            f.sent(),
            [
                Sent { client: ClientId(7), message: b"question".to_vec(), timeout_ms: Some(30) },
                Sent { client: ClientId(7), message: b"q".to_vec(), timeout_ms: None },
            ]
        );
        let late = FakeServices::new().timing_out();
        assert_eq!(
            late.send_message(ClientId(1), b"q", Some(&mut reply), None),
            Ok(MessageSent::TimedOut)
        );
        let gone = FakeServices::new().refusing_send(Error::PORT_DISCONNECTED);
        assert_eq!(gone.send_message(ClientId(1), b"q", None, None), Err(Error::PORT_DISCONNECTED));
    }

    #[test]
    fn processes_are_answered_per_client() {
        let f = FakeServices::new()
            .requestor(Some(ProcessId(0x1000)))
            .client(ClientId(0x77), ProcessId(0x1004))
            .client(ClientId(0x78), ProcessId(0x2000))
            .client(ClientId(0x78), ProcessId(0x3000));
        assert_eq!(f.requestor_process(), Some(ProcessId(0x1000)));
        assert_eq!(f.client_process(ClientId(0x77)), Some(ProcessId(0x1004)));
        assert_eq!(f.client_process(ClientId(0x78)), Some(ProcessId(0x3000)), "the last given");
        assert_eq!(f.client_process(ClientId(0x79)), None);
    }

    #[test]
    fn handle_requests_answer_from_the_handle_contexts_keyed_by_file_object() {
        // Rule 29: a handle request never reaches the stream contexts, and two file objects of
        // one stream have their own handle contexts.
        let streams = StreamContexts::new(1, |_| {});
        let handles = StreamContexts::new(2, |_| {});
        let f1 = FakeServices::new().stream_contexts(streams, 0xA).handle_contexts(handles, 0x1);
        let f2 = FakeServices::new().stream_contexts(streams, 0xA).handle_contexts(handles, 0x2);
        assert_eq!(f1.stream_context(ContextRequest::HandleGet).err(), Some(Error::NOT_FOUND));
        let h1 = f1.stream_context(ContextRequest::HandleGetOrCreate).unwrap();
        let h2 = f2.stream_context(ContextRequest::HandleGetOrCreate).unwrap();
        assert!(h1.created() && h2.created());
        assert_eq!(h1.words().len(), 2);
        assert_ne!(h1.id(), h2.id());
        assert!(streams.words_of(0xA).is_none());
        assert!(ContextRequest::HandleGet.is_handle() && !ContextRequest::Get.is_handle());
        assert!(
            ContextRequest::HandleGetOrCreate.creates() && !ContextRequest::HandleGet.creates()
        );
        let none = FakeServices::new().stream_contexts(streams, 0xA);
        assert_eq!(
            none.stream_context(ContextRequest::HandleGet).err(),
            Some(Error::NOT_SUPPORTED)
        );
    }

    #[test]
    fn stream_contexts_are_found_deleted_torn_down_and_freed_once() {
        static FREED: AtomicUsize = AtomicUsize::new(0);
        let contexts = StreamContexts::new(3, |words| {
            FREED.fetch_add(1 + words.len() * 100, Ordering::Relaxed);
        });
        let f = FakeServices::new().stream_contexts(contexts, 0xA);
        assert_eq!(f.stream_context(ContextRequest::Get).err(), Some(Error::NOT_FOUND));
        let a = f.stream_context(ContextRequest::GetOrCreate).unwrap();
        assert!(a.created());
        assert_eq!(a.words().len(), 3);
        a.word(1).unwrap().store(42, Ordering::Relaxed);
        let again = f.stream_context(ContextRequest::Get).unwrap();
        assert!(!again.created());
        assert_eq!(again.word(1).unwrap().load(Ordering::Relaxed), 42);
        assert_eq!(contexts.words_of(0xA).map(<[AtomicU64]>::len), Some(3));
        assert_eq!(contexts.live_references(), 2);
        // Deleted while another guard holds it: detached now, freed at the last release.
        a.delete();
        assert!(contexts.words_of(0xA).is_none());
        assert_eq!(FREED.load(Ordering::Relaxed), 0);
        drop(again);
        assert_eq!(FREED.load(Ordering::Relaxed), 301);
        // A new one on the same stream, one on another; the stream's teardown frees the first,
        // the instance's the rest; a second teardown finds nothing.
        let b = FakeServices::new().stream_contexts(contexts, 0xB);
        drop(f.stream_context(ContextRequest::GetOrCreate).unwrap());
        drop(b.stream_context(ContextRequest::GetOrCreate).unwrap());
        contexts.tear_down(Some(0xA));
        assert_eq!(FREED.load(Ordering::Relaxed), 602);
        assert!(contexts.words_of(0xB).is_some());
        contexts.tear_down(None);
        contexts.tear_down(None);
        assert_eq!(FREED.load(Ordering::Relaxed), 903);
        assert_eq!(contexts.created_and_freed(), (3, 3));
        assert_eq!(contexts.live_references(), 0);
        let refused =
            b.again_at(Irql::PASSIVE).refusing_stream_contexts(Some(Error::FLT_DELETING_OBJECT));
        assert_eq!(
            refused.stream_context(ContextRequest::GetOrCreate).err(),
            Some(Error::FLT_DELETING_OBJECT)
        );
    }

    #[test]
    fn again_at_keeps_the_answers_and_forgets_the_records() {
        let f = FakeServices::new().named(r"\Device\V\a").requestor(Some(ProcessId::SYSTEM));
        f.note("before");
        let g = f.again_at(Irql::APC);
        assert_eq!(g.irql(), Irql::APC);
        assert_eq!(g.requestor_process(), Some(ProcessId::SYSTEM));
        assert!(g.file_name(NameKind::Opened).is_ok());
        assert!(g.notes().is_empty());
        assert_eq!((f.irql(), f.notes().len(), f.names_asked().len()), (Irql::PASSIVE, 1, 0));
    }

    #[test]
    fn parameters_allocate_zeroed_memory_or_refuse() {
        let values = [("Max", ParameterValue::Dword(3)), ("Name", ParameterValue::String("x"))];
        let p = FakeParameters::new("Svc", &values);
        assert_eq!((p.service_name(), p.dword("max"), p.asked()), ("Svc", Some(3), 0));
        let mut buf = [0u8; 4];
        assert_eq!(p.string("Name", &mut buf), Some("x"));
        let buffer = p.allocate(16).unwrap();
        assert_eq!(buffer.len(), 16);
        assert!(buffer.iter().all(|b| *b == 0));
        assert_eq!(p.asked(), 16);
        let refused = FakeParameters::new("Svc", &values).refusing(Error::INSUFFICIENT_RESOURCES);
        assert_eq!(refused.allocate(8).err(), Some(Error::INSUFFICIENT_RESOURCES));
        assert_eq!(refused.asked(), 8);
    }

    /// A filter that notes what its callbacks were given.
    struct Echo;

    impl Filter for Echo {
        const REGISTRATION: Registration = Registration::new();
        type InstanceContext = u32;
        type CompletionContext = u8;

        fn load(_: &dyn ServiceParameters) -> FltResult<Self> {
            Ok(Echo)
        }

        fn instance_setup(&self, setup: &InstanceSetup<'_>) -> FltResult<u32> {
            setup.services.note(&format!("{:?} {:?}", setup.data_scan, setup.volume.filesystem));
            Ok(7)
        }

        fn pre_operation(
            &self,
            instance: &Instance<'_, u32>,
            op: &mut PreOperation<'_, u8>,
        ) -> PreOutcome<u8> {
            let h = op.header();
            op.services().note(&format!("pre {:?} {} {:#x}", h.major, instance.context, h.id));
            assert!(op.pend().is_none(), "cannot be pended");
            PreOutcome::WithPost(9)
        }

        fn post_operation(
            &self,
            _: &Instance<'_, u32>,
            op: &mut PostOperation<'_>,
            context: u8,
            flags: PostFlags,
        ) -> PostOutcome<u8> {
            let note = format!("post {:?} {} {context} {flags:?}", op.major(), op.result().status);
            op.services().note(&note);
            assert!(op.defer().is_none(), "cannot be deferred");
            PostOutcome::WhenSafe(context + 1)
        }

        fn post_operation_when_safe(
            &self,
            _: &Instance<'_, u32>,
            op: &mut PostOperation<'_>,
            context: u8,
        ) -> PostOutcome<u8> {
            op.services().note(&format!("safe {} {context}", op.services().irql().0));
            PostOutcome::Finished
        }
    }

    #[test]
    fn the_operation_helpers_hand_the_filter_what_they_were_given() {
        let f = FakeServices::new();
        assert_eq!(Echo.instance_setup(&instance_setup(&f, DataScanMode::FilterManager)), Ok(7));
        let i = instance_of(&7u32);
        let read = Parameters::Read(ReadWriteParameters { offset: 0, length: 1, key: 0 });
        let h = OperationHeader { id: 0x42, parameters: read, ..fast_io(MajorFunction::Read) };
        assert!(matches!(pre(&Echo, &i, h, &f), PreOutcome::WithPost(9)));
        let ok = IoStatus::new(Status::SUCCESS);
        let outcome = post(&Echo, &i, (h, ok), &f, 9, PostFlags::DRAINING);
        assert!(matches!(outcome, PostOutcome::WhenSafe(10)));
        let worker = f.again_at(Irql::APC);
        assert!(matches!(post_when_safe(&Echo, &i, (h, ok), &worker, 10), PostOutcome::Finished));
        assert_eq!(
            f.take_notes(),
            [
                "FilterManager FLT_FSTYPE_NTFS",
                "pre IRP_MJ_READ 7 0x42",
                &format!("post IRP_MJ_READ {} 9 {:?}", Status::SUCCESS, PostFlags::DRAINING),
            ]
        );
        assert_eq!(worker.notes(), ["safe 1 10"]);
        // The builders' defaults.
        let h = irp(MajorFunction::Create);
        assert_eq!(
            (h.kind, h.irp_flags, h.data_flags),
            (OperationKind::Irp, IrpFlags::SYNCHRONOUS_API, CallbackDataFlags::IRP_OPERATION)
        );
        assert_eq!(
            (h.file, h.stream, h.id, h.irql, h.synchronous),
            (0x5000, 0, 0x100, Irql::PASSIVE, true)
        );
        let h = fast_io(MajorFunction::Write);
        assert_eq!(
            (h.kind, h.irp_flags, h.data_flags),
            (OperationKind::FastIo, IrpFlags::empty(), CallbackDataFlags::FAST_IO_OPERATION)
        );
        assert_eq!(
            (instance().volume, instance().data_scan, instance().id),
            (VOLUME, DataScanMode::NotRequested, InstanceId(1))
        );
    }
}
