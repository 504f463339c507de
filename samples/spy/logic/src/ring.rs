//! The log: a fixed ring of records in the filter's load buffer (allocated once at load), that
//! the pre callbacks fill, the post callbacks complete and `GetLog` empties. Each record sits in
//! a slot of [`SLOT_SIZE`] bytes, encoded as a reply carries it.
//!
//! A record is opened in the pre callback (its sequence number, the operation, the name) and
//! completed in the post callback (status, information), found again by the operation's identity.
//! `GetLog` takes the completed records from the oldest on, in the order they were recorded (their
//! sequence numbers', given under the lock); a record whose operation is still in progress (a pended request, a directory-change
//! notification that has not fired) stays, and the records after it are taken around it.
//!
//! When the ring is full a new operation is not recorded and counts as dropped, as MiniSpy stops
//! allocating records at its `MaxRecordsToAllocate` and reports the loss: the oldest records are
//! the ones a reader has not seen yet, and the sequence numbers show the gap.

use core::num::NonZeroUsize;

use crate::NAME_UNITS;

/// The bytes of one record's slot in the log's buffer: the operation's identity (8), whether it
/// is in flight (1), 7 reserved, and the longest record (56 bytes and [`NAME_UNITS`] units).
pub(crate) const SLOT_SIZE: usize = 168;
use crate::wire::{self, LogHeader, RecordFields};

/// One record as a pre callback builds it, before the ring encodes it into a slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    /// The fields a reader gets.
    pub(crate) fields: RecordFields,
    /// The operation's identity (callback data or IRP address), to find the slot in post.
    pub(crate) op: usize,
    /// Waiting for its post callback.
    pub(crate) in_flight: bool,
    name_len: u8,
    name: [u16; NAME_UNITS],
}

impl Slot {
    /// An empty slot.
    pub(crate) const EMPTY: Slot = Slot {
        fields: RecordFields {
            sequence: 0,
            major: 0,
            minor: 0,
            kind: 0,
            requestor_mode: 0,
            flags: 0,
            irp_flags: 0,
            data_flags: 0,
            status: 0,
            information: 0,
            file: 0,
            name_status: 0,
            process: 0,
        },
        op: 0,
        in_flight: false,
        name_len: 0,
        name: [0; NAME_UNITS],
    };

    /// A record of `fields` for operation `op`, without a name yet.
    pub(crate) const fn new(fields: RecordFields, op: usize, in_flight: bool) -> Slot {
        Slot { fields, op, in_flight, ..Slot::EMPTY }
    }

    /// Keeps the first [`NAME_UNITS`] units of `name`; true when it was cut.
    pub(crate) fn set_name(&mut self, name: &[u16]) -> bool {
        let kept = name.len().min(NAME_UNITS);
        for (dst, src) in self.name.iter_mut().zip(name) {
            *dst = *src;
        }
        self.name_len = kept as u8;
        kept < name.len()
    }

    /// The name kept.
    pub(crate) fn name(&self) -> &[u16] {
        self.name.get(..usize::from(self.name_len)).unwrap_or(&[])
    }
}

/// Where a slot keeps the operation's identity (`u64`), the in-flight byte, and the record.
const OP_AT: usize = 0;
const IN_FLIGHT_AT: usize = 8;
const RECORD_AT: usize = 16;

const _: () = assert!(
    RECORD_AT + wire::RECORD_FIXED_SIZE + 2 * NAME_UNITS == SLOT_SIZE,
    "a slot holds the longest record"
);

/// The ring: `capacity` fixed-size slots of [`SLOT_SIZE`] bytes in `buffer` (the filter's load
/// buffer; an array in tests), each an operation's identity, whether it waits for its post
/// callback, and the record encoded as a reply carries it ([`wire::encode_record`]), so that
/// `GetLog` copies records out as they are.
#[derive(Debug)]
pub(crate) struct Ring<B> {
    buffer: B,
    /// Non-zero: a remainder by it has no division-by-zero panic path.
    capacity: NonZeroUsize,
    head: usize,
    len: usize,
    /// Operations not recorded since the last reply.
    dropped: u32,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Ring<B> {
    /// An empty ring of at most `capacity` records in `buffer`: clamped to the slots that fit
    /// (and at least 1; a buffer without room for one slot records nothing).
    pub(crate) fn new(buffer: B, capacity: usize) -> Ring<B> {
        let fit = buffer.as_ref().len() / SLOT_SIZE;
        let capacity = NonZeroUsize::new(capacity.min(fit)).unwrap_or(NonZeroUsize::MIN);
        Ring { buffer, capacity, head: 0, len: 0, dropped: 0 }
    }

    /// Records held (complete or in flight).
    #[cfg(test)]
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// The most records held at once.
    pub(crate) const fn capacity(&self) -> usize {
        self.capacity.get()
    }

    fn index(&self, k: usize) -> usize {
        (self.head + k) % self.capacity
    }

    fn slot(&self, i: usize) -> Option<&[u8; SLOT_SIZE]> {
        let at = i.checked_mul(SLOT_SIZE)?;
        self.buffer.as_ref().get(at..)?.first_chunk()
    }

    fn slot_mut(&mut self, i: usize) -> Option<&mut [u8; SLOT_SIZE]> {
        let at = i.checked_mul(SLOT_SIZE)?;
        self.buffer.as_mut().get_mut(at..)?.first_chunk_mut()
    }

    /// Appends `slot`; false (and one more drop) when the ring is full.
    pub(crate) fn push(&mut self, slot: &Slot) -> bool {
        if self.len >= self.capacity.get() {
            self.count_drop();
            return false;
        }
        let i = self.index(self.len);
        let stored = self.slot_mut(i).and_then(|s| {
            wire::set(s, OP_AT, (slot.op as u64).to_le_bytes());
            wire::set(s, IN_FLIGHT_AT, [u8::from(slot.in_flight)]);
            wire::encode_record(&slot.fields, slot.name(), s.get_mut(RECORD_AT..)?)
        });
        if stored.is_some() {
            self.len += 1;
            true
        } else {
            self.count_drop();
            false
        }
    }

    /// One more operation not recorded.
    pub(crate) fn count_drop(&mut self) {
        self.count_drops(1);
    }

    /// `n` more operations not recorded (saturating: no loop, whatever `n`).
    pub(crate) fn count_drops(&mut self, n: u32) {
        self.dropped = self.dropped.saturating_add(n);
    }

    /// Completes the newest in-flight record of operation `op` (of major function `major`, or
    /// any when `None`): adds `flags` to its flags and sets its status and information; false
    /// when there is none (it was dropped at pre).
    pub(crate) fn complete(
        &mut self,
        op: usize,
        major: Option<u8>,
        flags: u16,
        status: i32,
        information: u64,
    ) -> bool {
        for k in (0..self.len).rev() {
            let i = self.index(k);
            let Some(s) = self.slot_mut(i) else { continue };
            let ours = wire::get(s, IN_FLIGHT_AT) == Some([1])
                && wire::get(s, OP_AT) == Some((op as u64).to_le_bytes())
                && major.is_none_or(|m| wire::get(s, RECORD_AT + 6) == Some([m]));
            if !ours {
                continue;
            }
            let old = wire::get(s, RECORD_AT + 4).map_or(0, u16::from_le_bytes);
            wire::set(s, RECORD_AT + 4, (old | flags).to_le_bytes());
            wire::set(s, RECORD_AT + 28, status.to_le_bytes());
            wire::set(s, RECORD_AT + 32, information.to_le_bytes());
            wire::set(s, IN_FLIGHT_AT, [0]);
            return true;
        }
        false
    }

    /// Copies slot `from` over slot `to` (two different slots).
    fn move_slot(&mut self, from: usize, to: usize) {
        let (Some(a), Some(b)) = (from.checked_mul(SLOT_SIZE), to.checked_mul(SLOT_SIZE)) else {
            return;
        };
        let buffer = self.buffer.as_mut();
        // The later of the two slots starts `high`, the earlier is in `low`: disjoint.
        let Some((low, high)) = buffer.split_at_mut_checked(a.max(b)) else { return };
        let (src, dst): (&[u8], &mut [u8]) = if a < b {
            (low.get(a..).unwrap_or(&[]), high)
        } else {
            (high, low.get_mut(b..).unwrap_or(&mut []))
        };
        for (d, x) in dst.iter_mut().zip(src).take(SLOT_SIZE) {
            *d = *x;
        }
    }

    /// Writes a `GetLog` reply into `out`: the header and as many whole completed records as fit,
    /// oldest first, each taken out of the ring; the reply's length. The records that stay (in
    /// flight, or after the first that did not fit) keep their order: the head moves past the
    /// records taken before the first that stays, and those after it close up behind it.
    pub(crate) fn take(&mut self, out: &mut [u8]) -> Option<usize> {
        if out.len() < wire::LOG_HEADER_SIZE {
            return None;
        }
        let mut used = wire::LOG_HEADER_SIZE;
        let mut count = 0u32;
        let mut full = false;
        // Taken before the first record that stays, and records that stay.
        let (mut skipped, mut kept) = (0, 0);
        for k in 0..self.len {
            let i = self.index(k);
            let mut taken = false;
            if !full {
                if let Some(s) = self.slot(i) {
                    if wire::get(s, IN_FLIGHT_AT) == Some([0]) {
                        let size = wire::get(s, RECORD_AT).map_or(0, u16::from_le_bytes);
                        let size = usize::from(size);
                        let record = s.get(RECORD_AT..).and_then(|r| r.get(..size));
                        let room = out.get_mut(used..).and_then(|o| o.get_mut(..size));
                        match (record, room) {
                            (Some(record), Some(room)) => {
                                for (d, x) in room.iter_mut().zip(record) {
                                    *d = *x;
                                }
                                used += size;
                                count += 1;
                                taken = true;
                            }
                            _ => full = true,
                        }
                    }
                }
            }
            if taken {
                if kept == 0 {
                    skipped += 1;
                }
                continue;
            }
            // Stays: after the records that stay before it (never ahead of where it is).
            let j = self.index(skipped + kept);
            if j != i {
                self.move_slot(i, j);
            }
            kept += 1;
        }
        self.head = self.index(skipped);
        self.len = kept;
        let header = LogHeader {
            version: wire::VERSION_MAJOR,
            record_count: count,
            dropped: self.dropped,
            pending: kept as u32,
        };
        self.dropped = 0;
        header.encode(out);
        Some(used)
    }

    /// Where the oldest record is.
    #[cfg(test)]
    pub(crate) const fn head(&self) -> usize {
        self.head
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::wire::{LogReply, record_flags};
    use std::vec::Vec;

    fn slot(sequence: u64, op: usize, in_flight: bool) -> Slot {
        let fields = RecordFields { sequence, major: 3, ..RecordFields::default() };
        Slot::new(fields, op, in_flight)
    }

    fn sequences(reply: &[u8]) -> (LogHeader, Vec<u64>) {
        let r = LogReply::parse(reply).unwrap();
        (r.header, r.records().map(|x| x.unwrap().fields.sequence).collect())
    }

    #[test]
    fn the_ring_wraps_and_counts_what_it_drops() {
        let mut ring = Ring::new([0u8; 4 * SLOT_SIZE], 4);
        let mut out = [0u8; 1024];
        for s in 1..=3 {
            assert!(ring.push(&slot(s, s as usize, false)));
        }
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [1, 2, 3]);
        assert_eq!((ring.len(), ring.head()), (0, 3));
        // The head is now at slot 3: the next four wrap around the end of the array.
        for s in 4..=7 {
            assert!(ring.push(&slot(s, s as usize, false)));
        }
        assert!(!ring.push(&slot(8, 8, false)), "full");
        assert!(!ring.push(&slot(9, 9, false)));
        let n = ring.take(&mut out).unwrap();
        let (h, seq) = sequences(&out[..n]);
        assert_eq!(seq, [4, 5, 6, 7]);
        assert_eq!((h.dropped, h.pending), (2, 0));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).0.dropped, 0, "reported once");
    }

    #[test]
    fn a_record_in_flight_stays_and_the_others_pass_it() {
        let mut ring = Ring::new([0u8; 8 * SLOT_SIZE], 8);
        ring.push(&slot(1, 10, true));
        ring.push(&slot(2, 20, false));
        ring.push(&slot(3, 30, true));
        let mut out = [0u8; 512];
        let n = ring.take(&mut out).unwrap();
        let (h, seq) = sequences(&out[..n]);
        assert_eq!((seq, h.pending), (std::vec![2], 2));
        assert!(ring.complete(30, Some(3), record_flags::POST, 0, 0));
        assert!(!ring.complete(30, Some(3), 0, 0, 0), "completed once");
        assert!(!ring.complete(10, Some(4), 0, 0, 0), "another major function");
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [3]);
        assert!(ring.complete(10, Some(3), 0, 0, 0));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(
            sequences(&out[..n]),
            (LogHeader { version: 1, record_count: 1, dropped: 0, pending: 0 }, std::vec![1])
        );
    }

    #[test]
    fn records_that_stay_close_up_across_the_end_of_the_array() {
        let mut ring = Ring::new([0u8; 4 * SLOT_SIZE], 4);
        let mut out = [0u8; 1024];
        for s in 1..=3 {
            ring.push(&slot(s, 0, false));
        }
        ring.take(&mut out).unwrap();
        // Slots 3, 0, 1, 2: two in flight, two complete.
        ring.push(&slot(4, 40, true));
        ring.push(&slot(5, 0, false));
        ring.push(&slot(6, 60, true));
        ring.push(&slot(7, 0, false));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [5, 7]);
        assert_eq!((ring.len(), ring.head()), (2, 3), "4 stays at the head, 6 closes up");
        assert!(ring.push(&slot(8, 0, false)) && ring.push(&slot(9, 0, false)));
        assert!(!ring.push(&slot(10, 0, false)), "full again");
        assert!(ring.complete(60, Some(3), 0, 0, 0));
        let n = ring.take(&mut out).unwrap();
        let (h, seq) = sequences(&out[..n]);
        assert_eq!((seq, h.dropped, h.pending), (std::vec![6, 8, 9], 1, 1));
        assert_eq!((ring.len(), ring.head()), (1, 3), "4 still at the head");
        assert!(ring.complete(40, Some(3), 0, 0, 0));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [4]);
        assert_eq!((ring.len(), ring.head()), (0, 0));
    }

    #[test]
    fn a_reply_holds_whole_records_only() {
        let mut ring = Ring::new([0u8; 8 * SLOT_SIZE], 8);
        for s in 1..=3 {
            let mut x = slot(s, 0, false);
            x.set_name(&[b'x' as u16; 10]);
            ring.push(&x);
        }
        let record = wire::RECORD_FIXED_SIZE + 20;
        // Room for two records and most of a third.
        let mut out = [0u8; wire::LOG_HEADER_SIZE + 3 * wire::RECORD_FIXED_SIZE + 40 + 19];
        let n = ring.take(&mut out).unwrap();
        assert_eq!(n, wire::LOG_HEADER_SIZE + 2 * record);
        let (h, seq) = sequences(&out[..n]);
        assert_eq!((seq, h.pending), (std::vec![1, 2], 1));
        // A buffer without room for the header takes nothing.
        assert_eq!(ring.take(&mut out[..15]), None);
        assert_eq!(ring.len(), 1);
        // Room for the header only: nothing taken, the record waits.
        let n = ring.take(&mut out[..wire::LOG_HEADER_SIZE]).unwrap();
        assert_eq!(
            sequences(&out[..n]),
            (LogHeader { version: 1, record_count: 0, dropped: 0, pending: 1 }, std::vec![])
        );
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [3]);
    }

    #[test]
    fn capacity_is_clamped_and_names_are_cut() {
        assert_eq!(Ring::new([0u8; 4 * SLOT_SIZE], 0).capacity(), 1);
        assert_eq!(Ring::new([0u8; 4 * SLOT_SIZE], 9).capacity(), 4);
        let mut ring = Ring::new([0u8; 4 * SLOT_SIZE], 2);
        assert!(ring.push(&slot(1, 0, false)) && ring.push(&slot(2, 0, false)));
        assert!(!ring.push(&slot(3, 0, false)));
        let mut s = Slot::EMPTY;
        let long: Vec<u16> = (0..NAME_UNITS as u16 + 5).collect();
        assert!(s.set_name(&long));
        assert_eq!(s.name(), &long[..NAME_UNITS]);
        assert!(!s.set_name(&long[..3]));
        assert_eq!(s.name(), &[0, 1, 2]);
        // The slots that fit in the buffer bound the capacity; without room for one, nothing
        // is recorded.
        assert_eq!(Ring::new([0u8; 4 * SLOT_SIZE + SLOT_SIZE / 2], 9).capacity(), 4);
        let mut none = Ring::new([0u8; SLOT_SIZE - 1], 5);
        assert_eq!(none.capacity(), 1);
        assert!(!none.push(&slot(1, 0, false)));
        let mut out = [0u8; 64];
        let n = none.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).0.dropped, 1);
    }

    #[test]
    fn records_keep_their_names_and_results_when_they_move() {
        let long: Vec<u16> = (0..NAME_UNITS as u16).map(|u| u + 0x41).collect();
        // With the head at 1, the record that moves goes from slot 0 to slot 2; at 2, from
        // slot 1 to slot 0: both directions of the copy.
        for (head, from, to) in [(1, 0, 2), (2, 1, 0)] {
            let mut ring = Ring::new(std::vec![0u8; 3 * SLOT_SIZE], 3);
            let mut out = [0u8; 4096];
            for s in 0..head {
                ring.push(&slot(s, 0, false));
            }
            ring.take(&mut out).unwrap();
            assert_eq!(ring.head(), head as usize);
            let mut a = slot(10, 30, true);
            a.set_name(&long);
            let mut b = slot(12, 40, true);
            b.set_name(&long[..5]);
            ring.push(&a);
            ring.push(&slot(11, 0, false));
            ring.push(&b);
            assert_eq!(ring.index(2), from);
            let n = ring.take(&mut out).unwrap();
            assert_eq!(sequences(&out[..n]).1, [11]);
            assert_eq!(ring.index(1), to, "12 closed up behind 10");
            assert!(ring.complete(
                40,
                Some(3),
                record_flags::POST | record_flags::DRAINING,
                -5,
                77
            ));
            assert!(ring.complete(30, Some(3), record_flags::POST, 0x103, u64::MAX));
            let n = ring.take(&mut out).unwrap();
            let reply = LogReply::parse(&out[..n]).unwrap();
            let records: Vec<_> = reply.records().map(Result::unwrap).collect();
            assert_eq!(records.len(), 2);
            let (r, s) = (records[0].fields, records[1].fields);
            assert_eq!(r.sequence, 10);
            assert_eq!(records[0].name_units().collect::<Vec<_>>(), long);
            assert_eq!((r.status, r.information, r.flags), (0x103, u64::MAX, record_flags::POST));
            assert_eq!(s.sequence, 12);
            assert_eq!(records[1].name_units().collect::<Vec<_>>(), &long[..5]);
            let both = record_flags::POST | record_flags::DRAINING;
            assert_eq!((s.status, s.information, s.flags), (-5, 77, both));
        }
    }

    #[test]
    fn the_ring_agrees_with_a_model_whatever_the_order_of_completions() {
        // Pushes (some in flight, names of any length), completions in any order (of records
        // held, of records never held), takes into replies of any size, against a list: the
        // records taken, `dropped` and `pending` agree, and nothing panics.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let long: Vec<u16> = (0..80).collect();
        for round in 0..300 {
            let capacity = 1 + next(9) as usize;
            // Sometimes a buffer with fewer slots than asked for.
            let slots = if round % 7 == 0 { capacity / 2 } else { capacity };
            let mut ring = Ring::new(std::vec![0u8; slots * SLOT_SIZE], capacity);
            // A buffer without room for one slot records nothing (capacity stays 1).
            let held = if slots == 0 { 0 } else { ring.capacity() };
            // (sequence, op, in flight, name units)
            let mut model: Vec<(u64, usize, bool, usize)> = Vec::new();
            let mut dropped = 0u32;
            for sequence in 1..200u64 {
                match next(4) {
                    0 | 1 => {
                        let op = 1 + next(12) as usize;
                        let in_flight = next(2) == 0;
                        let mut s = slot(sequence, op, in_flight);
                        let units = next(70) as usize;
                        s.set_name(long.get(..units).unwrap());
                        let kept = units.min(NAME_UNITS);
                        if ring.push(&s) {
                            model.push((sequence, op, in_flight, kept));
                        } else {
                            assert_eq!(model.len(), held, "only a full ring refuses");
                            dropped += 1;
                        }
                    }
                    2 => {
                        let op = 1 + next(14) as usize;
                        let expected = model.iter_mut().rev().find(|r| r.2 && r.1 == op);
                        let found = expected.is_some();
                        if let Some(r) = expected {
                            r.2 = false;
                        }
                        assert_eq!(ring.complete(op, Some(3), record_flags::POST, 1, 2), found);
                    }
                    _ => {
                        let size = wire::LOG_HEADER_SIZE + next(600) as usize;
                        let mut out = std::vec![0u8; size];
                        let n = ring.take(&mut out).unwrap();
                        let (h, seq) = sequences(&out[..n]);
                        let mut used = wire::LOG_HEADER_SIZE;
                        let mut full = false;
                        let mut want = Vec::new();
                        model.retain(|r| {
                            let bytes = wire::RECORD_FIXED_SIZE + 2 * r.3;
                            if full || r.2 {
                                return true;
                            }
                            if used + bytes > size {
                                full = true;
                                return true;
                            }
                            used += bytes;
                            want.push(r.0);
                            false
                        });
                        assert_eq!(seq, want);
                        assert_eq!((n, h.dropped), (used, dropped));
                        assert_eq!(h.pending as usize, model.len());
                        assert_eq!(ring.len(), model.len());
                        dropped = 0;
                    }
                }
            }
        }
    }
}
