//! The lab as a message server (`serve` steps, an extension of scenario.md), and as the gate
//! sample's service: what the server received and answered, with the gate's questions and its
//! `GetStats` reply decoded by the sample's own protocol (`gate::wire`), as `spylog` decodes the
//! spy's log.

use fsfilter::Status;
use gate::wire::{Question, Stats};

use crate::scenario::Model;

/// One message a `serve` step's connection received, or one of its gets that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The `serve` step.
    pub step: u32,
    /// The step during which the message came (the one whose I/O made the filter send).
    pub at_step: Option<u32>,
    /// The virtual time it came, in milliseconds.
    pub at_ms: u64,
    /// The connection.
    pub client: String,
    /// Its driver.
    pub driver: String,
    /// The driver's model.
    pub model: Model,
    /// The get's status: `STATUS_SUCCESS` with a message, else how the get ended
    /// (`STATUS_CANCELLED` when the connection closed, ...).
    pub get_status: Status,
    /// The message's id (its `FILTER_MESSAGE_HEADER.MessageId`).
    pub message_id: u64,
    /// The bytes after the header.
    pub message: Vec<u8>,
    /// The sender's reply buffer (`ReplyLength` less the reply header), `None` for a one-way
    /// message.
    pub reply_capacity: Option<usize>,
    /// The rule that chose the reply (its index), `None` for the step's `reply`.
    pub rule: Option<usize>,
    /// What the server answered; `None` when it did not (a `none` reply, a one-way message).
    pub reply: Option<Vec<u8>>,
    /// The reply call's status (`STATUS_FLT_NO_WAITER_FOR_REPLY` when the sender stopped waiting).
    pub reply_status: Option<Status>,
    /// The virtual time of the reply.
    pub replied_ms: Option<u64>,
    /// The connection's driver is a gate: the message is its question.
    pub gate: bool,
}

/// A gate question, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateQuestion {
    /// The name.
    pub name: String,
    /// `gate::wire::question_flags`.
    pub flags: u16,
    /// The create's desired access.
    pub desired_access: u32,
    /// The create's information.
    pub information: u32,
}

impl Served {
    /// The gate question it carries, or why it does not decode (`None` when not a gate's).
    pub fn question(&self) -> Option<Result<GateQuestion, String>> {
        if !self.gate || self.get_status != Status::SUCCESS {
            return None;
        }
        Some(match Question::parse(&self.message) {
            Ok(q) => Ok(GateQuestion {
                name: q.name_chars().collect(),
                flags: q.fields.flags,
                desired_access: q.fields.desired_access,
                information: q.fields.information,
            }),
            Err(_) => Err("not a gate question of version 1".into()),
        })
    }

    /// The text rules look into: a gate question's name, else the message as text.
    pub fn text(&self) -> String {
        match self.question() {
            Some(Ok(q)) => q.name,
            _ => String::from_utf8_lossy(&self.message).into_owned(),
        }
    }

    /// The reply in words: a gate verdict's name, else its bytes in hex; `none`.
    pub fn reply_words(&self) -> String {
        match &self.reply {
            None => "none".into(),
            Some(r) if self.gate => match gate::wire::Verdict::parse(r) {
                Some(gate::wire::Verdict::Allow) => "allow".into(),
                Some(gate::wire::Verdict::Deny) => "deny".into(),
                None => hex(r),
            },
            Some(r) => hex(r),
        }
    }

    /// One line about it, for the text and HTML reports.
    pub fn line(&self) -> String {
        if self.get_status != Status::SUCCESS {
            return format!(
                "{} ({}): a get of {} ended: {}",
                self.client,
                self.model.name(),
                self.driver,
                crate::text::status_name(self.get_status)
            );
        }
        let what = match self.question() {
            Some(Ok(q)) => format!("asked about {}", q.name),
            Some(Err(e)) => format!("a message that does not decode ({e})"),
            None => format!("message {} ({} byte(s))", self.message_id, self.message.len()),
        };
        let mut line = format!(
            "{} ({}) got from {} at {} ms: {what}; ",
            self.client,
            self.model.name(),
            self.driver,
            self.at_ms
        );
        match (&self.reply, self.reply_status, self.replied_ms) {
            (Some(_), Some(s), Some(ms)) => line.push_str(&format!(
                "replied {} at {ms} ms: {}",
                self.reply_words(),
                crate::text::status_name(s)
            )),
            (Some(_), _, _) => line.push_str(&format!("reply {} not sent", self.reply_words())),
            (None, _, _) if self.reply_capacity.is_none() => line.push_str("one-way, no reply"),
            (None, _, _) => line.push_str("no reply (the sender waits for its timeout)"),
        }
        line
    }
}

/// Bytes in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A gate's `GetStats` reply, decoded.
pub fn stats(reply: &[u8]) -> Result<Stats, String> {
    Stats::decode(reply).map_err(|_| "not a gate GetStats reply of version 1".into())
}

/// A gate's counters in words.
pub fn stats_words(s: &Stats) -> String {
    format!(
        "asked {}, allowed {}, denied {}, timed out {}, failed {}, unasked {}",
        s.asked, s.allowed, s.denied, s.timed_out, s.failed, s.unasked
    )
}
