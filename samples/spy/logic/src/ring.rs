//! The log: a fixed ring of records, built once at load, that the pre callbacks fill, the post
//! callbacks complete and `GetLog` empties.
//!
//! A record is opened in the pre callback (its sequence number, the operation, the name) and
//! completed in the post callback (status, information), found again by the operation's identity.
//! `GetLog` takes the completed records from the oldest on, in the order their operations
//! started; a record whose operation is still in progress (a pended request, a directory-change
//! notification that has not fired) stays, and the records after it are taken around it.
//!
//! When the ring is full a new operation is not recorded and counts as dropped, as MiniSpy stops
//! allocating records at its `MaxRecordsToAllocate` and reports the loss: the oldest records are
//! the ones a reader has not seen yet, and the sequence numbers show the gap.

use core::num::NonZeroUsize;

use crate::NAME_UNITS;
use crate::wire::{self, LogHeader, RecordFields};

/// One record as the ring keeps it.
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

/// The ring: `capacity` slots in use at most (the `MaxRecords` parameter, at most `N`).
#[derive(Debug)]
pub(crate) struct Ring<const N: usize> {
    slots: [Slot; N],
    /// Non-zero: a remainder by it has no division-by-zero panic path.
    capacity: NonZeroUsize,
    head: usize,
    len: usize,
    /// Operations not recorded since the last reply.
    dropped: u32,
}

impl<const N: usize> Ring<N> {
    /// An empty ring holding at most `capacity` records (1..=N; clamped).
    pub(crate) const fn new(capacity: usize) -> Ring<N> {
        let capacity = if capacity == 0 {
            1
        } else if capacity > N {
            N
        } else {
            capacity
        };
        let capacity = match NonZeroUsize::new(capacity) {
            Some(c) => c,
            None => NonZeroUsize::MIN,
        };
        Ring { slots: [Slot::EMPTY; N], capacity, head: 0, len: 0, dropped: 0 }
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

    /// Appends `slot`; false (and one more drop) when the ring is full.
    pub(crate) fn push(&mut self, slot: Slot) -> bool {
        if self.len >= self.capacity.get() {
            self.count_drop();
            return false;
        }
        let i = self.index(self.len);
        if let Some(s) = self.slots.get_mut(i) {
            *s = slot;
            self.len += 1;
            true
        } else {
            self.count_drop();
            false
        }
    }

    /// One more operation not recorded.
    pub(crate) fn count_drop(&mut self) {
        self.dropped = self.dropped.saturating_add(1);
    }

    /// Completes the newest in-flight record of operation `op` (major function `major`) with
    /// `f`; false when there is none (it was dropped at pre).
    pub(crate) fn complete(&mut self, op: usize, major: u8, f: impl FnOnce(&mut Slot)) -> bool {
        for k in (0..self.len).rev() {
            let i = self.index(k);
            if let Some(s) = self.slots.get_mut(i) {
                if s.in_flight && s.op == op && s.fields.major == major {
                    s.in_flight = false;
                    f(s);
                    return true;
                }
            }
        }
        false
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
            let Some(slot) = self.slots.get(i).copied() else { continue };
            let mut taken = false;
            if !slot.in_flight && !full {
                let room = out.get_mut(used..);
                match room.and_then(|o| wire::encode_record(&slot.fields, slot.name(), o)) {
                    Some(n) => {
                        used += n;
                        count += 1;
                        taken = true;
                    }
                    None => full = true,
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
                if let Some(dst) = self.slots.get_mut(j) {
                    *dst = slot;
                }
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
        let mut ring = Ring::<4>::new(4);
        let mut out = [0u8; 1024];
        for s in 1..=3 {
            assert!(ring.push(slot(s, s as usize, false)));
        }
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [1, 2, 3]);
        assert_eq!((ring.len(), ring.head()), (0, 3));
        // The head is now at slot 3: the next four wrap around the end of the array.
        for s in 4..=7 {
            assert!(ring.push(slot(s, s as usize, false)));
        }
        assert!(!ring.push(slot(8, 8, false)), "full");
        assert!(!ring.push(slot(9, 9, false)));
        let n = ring.take(&mut out).unwrap();
        let (h, seq) = sequences(&out[..n]);
        assert_eq!(seq, [4, 5, 6, 7]);
        assert_eq!((h.dropped, h.pending), (2, 0));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).0.dropped, 0, "reported once");
    }

    #[test]
    fn a_record_in_flight_stays_and_the_others_pass_it() {
        let mut ring = Ring::<8>::new(8);
        ring.push(slot(1, 10, true));
        ring.push(slot(2, 20, false));
        ring.push(slot(3, 30, true));
        let mut out = [0u8; 512];
        let n = ring.take(&mut out).unwrap();
        let (h, seq) = sequences(&out[..n]);
        assert_eq!((seq, h.pending), (std::vec![2], 2));
        assert!(ring.complete(30, 3, |s| s.fields.flags |= record_flags::POST));
        assert!(!ring.complete(30, 3, |_| ()), "completed once");
        assert!(!ring.complete(10, 4, |_| ()), "another major function");
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [3]);
        assert!(ring.complete(10, 3, |_| ()));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(
            sequences(&out[..n]),
            (LogHeader { version: 1, record_count: 1, dropped: 0, pending: 0 }, std::vec![1])
        );
    }

    #[test]
    fn records_that_stay_close_up_across_the_end_of_the_array() {
        let mut ring = Ring::<4>::new(4);
        let mut out = [0u8; 1024];
        for s in 1..=3 {
            ring.push(slot(s, 0, false));
        }
        ring.take(&mut out).unwrap();
        // Slots 3, 0, 1, 2: two in flight, two complete.
        ring.push(slot(4, 40, true));
        ring.push(slot(5, 0, false));
        ring.push(slot(6, 60, true));
        ring.push(slot(7, 0, false));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [5, 7]);
        assert_eq!((ring.len(), ring.head()), (2, 3), "4 stays at the head, 6 closes up");
        assert!(ring.push(slot(8, 0, false)) && ring.push(slot(9, 0, false)));
        assert!(!ring.push(slot(10, 0, false)), "full again");
        assert!(ring.complete(60, 3, |_| ()));
        let n = ring.take(&mut out).unwrap();
        let (h, seq) = sequences(&out[..n]);
        assert_eq!((seq, h.dropped, h.pending), (std::vec![6, 8, 9], 1, 1));
        assert_eq!((ring.len(), ring.head()), (1, 3), "4 still at the head");
        assert!(ring.complete(40, 3, |_| ()));
        let n = ring.take(&mut out).unwrap();
        assert_eq!(sequences(&out[..n]).1, [4]);
        assert_eq!((ring.len(), ring.head()), (0, 0));
    }

    #[test]
    fn a_reply_holds_whole_records_only() {
        let mut ring = Ring::<8>::new(8);
        for s in 1..=3 {
            let mut x = slot(s, 0, false);
            x.set_name(&[b'x' as u16; 10]);
            ring.push(x);
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
        assert_eq!(Ring::<4>::new(0).capacity(), 1);
        assert_eq!(Ring::<4>::new(9).capacity(), 4);
        let mut ring = Ring::<4>::new(2);
        assert!(ring.push(slot(1, 0, false)) && ring.push(slot(2, 0, false)));
        assert!(!ring.push(slot(3, 0, false)));
        let mut s = Slot::EMPTY;
        let long: Vec<u16> = (0..NAME_UNITS as u16 + 5).collect();
        assert!(s.set_name(&long));
        assert_eq!(s.name(), &long[..NAME_UNITS]);
        assert!(!s.set_name(&long[..3]));
        assert_eq!(s.name(), &[0, 1, 2]);
    }
}
