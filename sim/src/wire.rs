//! The frames clients and the server exchange over turmoil's TCP: fixed-size, little-endian,
//! a tag byte first. A malformed frame is a typed [`WireError`], never a panic.

use std::fmt;

/// The id a request travels under: its number × 256 + its attempt (1 to 255; the client makes
/// at most 255 attempts, which the scenario checks). A response carries the same id, so the
/// client tells an answer to an old attempt from one to the latest.
pub fn wire_id(request: u64, attempt: u32) -> u64 {
    request << 8 | u64::from(attempt.min(255))
}

/// The request number and attempt packed in a [`wire_id`].
pub fn split_wire_id(id: u64) -> (u64, u32) {
    (id >> 8, (id & 0xff) as u32)
}

/// Bytes of a request frame.
pub const REQUEST_LEN: usize = 34;
/// Bytes of a response frame.
pub const RESPONSE_LEN: usize = 10;

const TAG_REQUEST: u8 = 1;
const TAG_RESPONSE: u8 = 2;

/// A client's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The request's number and its attempt, packed by [`wire_id`].
    pub id: u64,
    /// Class index.
    pub class: u8,
    /// Exact arrival time (ns since the start).
    pub arrival_ns: u64,
    /// Work it takes (ns).
    pub service_ns: u64,
    /// Deadline from arrival (ns); 0 for none.
    pub deadline_ns: u64,
}

/// How the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Handled.
    Handled,
    /// Refused: the class was full (backpressure policy; the front end does not wait).
    RejectedFull,
    /// Refused by the class's reject policy.
    RejectedPolicy,
    /// Refused: closed (restarting or shutting down).
    RejectedClosed,
    /// Accepted, then dead-lettered; the index into `DeadLetterReason::ALL`.
    DeadLettered(u8),
}

impl Outcome {
    fn code(self) -> u8 {
        match self {
            Outcome::Handled => 0,
            Outcome::RejectedFull => 1,
            Outcome::RejectedPolicy => 2,
            Outcome::RejectedClosed => 3,
            Outcome::DeadLettered(r) => 10 + r,
        }
    }

    fn from_code(code: u8) -> Option<Outcome> {
        Some(match code {
            0 => Outcome::Handled,
            1 => Outcome::RejectedFull,
            2 => Outcome::RejectedPolicy,
            3 => Outcome::RejectedClosed,
            c if (10..10 + veltrix_engine::DeadLetterReason::ALL.len() as u8).contains(&c) => {
                Outcome::DeadLettered(c - 10)
            }
            _ => return None,
        })
    }
}

/// The server's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The tag byte names no frame of this direction.
    UnknownTag(u8),
    /// Fewer bytes than the frame needs.
    Truncated {
        /// Needed.
        want: usize,
        /// Given.
        got: usize,
    },
    /// An outcome code that does not exist.
    UnknownOutcome(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::UnknownTag(t) => write!(f, "unknown frame tag {t}"),
            WireError::Truncated { want, got } => write!(f, "truncated frame: {got} of {want} bytes"),
            WireError::UnknownOutcome(c) => write!(f, "unknown outcome code {c}"),
        }
    }
}

impl std::error::Error for WireError {}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Request {
    /// Encodes into a fixed-size frame.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0] = TAG_REQUEST;
        b[1..9].copy_from_slice(&self.id.to_le_bytes());
        b[9] = self.class;
        b[10..18].copy_from_slice(&self.arrival_ns.to_le_bytes());
        b[18..26].copy_from_slice(&self.service_ns.to_le_bytes());
        b[26..34].copy_from_slice(&self.deadline_ns.to_le_bytes());
        b
    }

    /// Decodes a frame.
    ///
    /// # Errors
    ///
    /// [`WireError`] for a wrong tag or a short buffer.
    pub fn decode(b: &[u8]) -> Result<Request, WireError> {
        if b.len() < REQUEST_LEN {
            return Err(WireError::Truncated { want: REQUEST_LEN, got: b.len() });
        }
        if b[0] != TAG_REQUEST {
            return Err(WireError::UnknownTag(b[0]));
        }
        Ok(Request {
            id: u64_at(b, 1),
            class: b[9],
            arrival_ns: u64_at(b, 10),
            service_ns: u64_at(b, 18),
            deadline_ns: u64_at(b, 26),
        })
    }
}

impl Response {
    /// Encodes into a fixed-size frame.
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[0] = TAG_RESPONSE;
        b[1..9].copy_from_slice(&self.id.to_le_bytes());
        b[9] = self.outcome.code();
        b
    }

    /// Decodes a frame.
    ///
    /// # Errors
    ///
    /// [`WireError`] for a wrong tag, a short buffer or an unknown outcome.
    pub fn decode(b: &[u8]) -> Result<Response, WireError> {
        if b.len() < RESPONSE_LEN {
            return Err(WireError::Truncated { want: RESPONSE_LEN, got: b.len() });
        }
        if b[0] != TAG_RESPONSE {
            return Err(WireError::UnknownTag(b[0]));
        }
        let outcome = Outcome::from_code(b[9]).ok_or(WireError::UnknownOutcome(b[9]))?;
        Ok(Response { id: u64_at(b, 1), outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_typed_errors() {
        let r = Request { id: 7 << 8 | 2, class: 3, arrival_ns: 1, service_ns: 2, deadline_ns: 3 };
        assert_eq!(Request::decode(&r.encode()), Ok(r));
        let a = Response { id: 9, outcome: Outcome::DeadLettered(2) };
        assert_eq!(Response::decode(&a.encode()), Ok(a));
        assert_eq!(Request::decode(&[1, 2]), Err(WireError::Truncated { want: REQUEST_LEN, got: 2 }));
        assert_eq!(Request::decode(&a.encode().repeat(4)), Err(WireError::UnknownTag(TAG_RESPONSE)));
        let mut bad = a.encode();
        bad[9] = 99;
        assert_eq!(Response::decode(&bad), Err(WireError::UnknownOutcome(99)));
    }
}
