//! The lease's file, `lease.lock`: two fixed-size checksummed slots, and which of them holds the
//! current record (a torn write leaves the other one readable).

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// Missing or all zero bytes: never written.
    Empty,
    Valid {
        generation: u64,
        checksum: u64,
        payload: Vec<u8>,
    },
    /// Written but unusable (torn write, corruption). `raw_generation` is the generation field
    /// when the magic matched, so a new write can still number past it.
    Invalid {
        raw_generation: Option<u64>,
        why: &'static str,
    },
}

pub(super) fn slot_checksum(header: &[u8], payload: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&header[..24]);
    h.update(payload);
    h.digest()
}

pub(super) fn encode_slot(generation: u64, payload: &[u8]) -> (Vec<u8>, u64) {
    debug_assert!(payload.len() <= LEASE_PAYLOAD_MAX);
    let mut buf = vec![0u8; LEASE_SLOT_BYTES];
    buf[0..8].copy_from_slice(LEASE_MAGIC);
    buf[8..16].copy_from_slice(&generation.to_le_bytes());
    buf[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    // 20..24 reserved, zero.
    let checksum = slot_checksum(&buf, payload);
    buf[24..32].copy_from_slice(&checksum.to_le_bytes());
    buf[SLOT_HEADER..SLOT_HEADER + payload.len()].copy_from_slice(payload);
    (buf, checksum)
}

pub(super) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

pub(super) fn decode_slot(buf: &[u8]) -> Slot {
    if buf.iter().all(|&b| b == 0) {
        return Slot::Empty;
    }
    if buf.len() < SLOT_HEADER {
        return Slot::Invalid {
            raw_generation: None,
            why: "short slot",
        };
    }
    if &buf[..8] != LEASE_MAGIC {
        return Slot::Invalid {
            raw_generation: None,
            why: "bad magic",
        };
    }
    let generation = le_u64(&buf[8..16]);
    let len = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
    if len > LEASE_PAYLOAD_MAX || SLOT_HEADER + len > buf.len() {
        return Slot::Invalid {
            raw_generation: Some(generation),
            why: "bad length",
        };
    }
    let checksum = le_u64(&buf[24..32]);
    let payload = &buf[SLOT_HEADER..SLOT_HEADER + len];
    if slot_checksum(buf, payload) != checksum {
        return Slot::Invalid {
            raw_generation: Some(generation),
            why: "bad checksum",
        };
    }
    Slot::Valid {
        generation,
        checksum,
        payload: payload.to_vec(),
    }
}

/// Both slots of `lease.lock` as read through one handle.
pub(super) struct LeaseView {
    pub(super) slots: [Slot; 2],
    pub(super) raw: Vec<u8>,
    pub(super) modified: Option<SystemTime>,
}

pub(super) enum Current {
    Absent,
    Valid {
        slot: usize,
        version: Version,
        payload: Vec<u8>,
    },
    Unreadable {
        version: Version,
        reason: String,
    },
}

impl LeaseView {
    pub(super) fn read(file: &File, path: &Path) -> Result<LeaseView, StoreError> {
        let mut raw = vec![0u8; 2 * LEASE_SLOT_BYTES];
        let mut filled = 0;
        while filled < raw.len() {
            match file.read_at(&mut raw[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read", path, e)),
            }
        }
        raw.truncate(filled);
        let slot = |i: usize| {
            let lo = (i * LEASE_SLOT_BYTES).min(raw.len());
            let hi = ((i + 1) * LEASE_SLOT_BYTES).min(raw.len());
            decode_slot(&raw[lo..hi])
        };
        let slots = [slot(0), slot(1)];
        let modified = file.metadata().ok().and_then(|m| m.modified().ok());
        Ok(LeaseView {
            slots,
            raw,
            modified,
        })
    }

    pub(super) fn current(&self) -> Current {
        let mut best: Option<(usize, u64, u64, &Vec<u8>)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            if let Slot::Valid {
                generation,
                checksum,
                payload,
            } = s
                && best.is_none_or(|(_, g, _, _)| *generation > g)
            {
                best = Some((i, *generation, *checksum, payload));
            }
        }
        if let Some((slot, generation, checksum, payload)) = best {
            return Current::Valid {
                slot,
                version: Version(format!("g{generation}-{checksum:016x}")),
                payload: payload.clone(),
            };
        }
        if self.raw.iter().all(|&b| b == 0) {
            return Current::Absent;
        }
        let why = |s: &Slot| match s {
            Slot::Empty => "empty",
            Slot::Valid { .. } => "valid",
            Slot::Invalid { why, .. } => why,
        };
        Current::Unreadable {
            version: Version(format!("x{:016x}", xxh3_64(&self.raw))),
            reason: format!(
                "no valid lease slot (slot 0: {}, slot 1: {})",
                why(&self.slots[0]),
                why(&self.slots[1])
            ),
        }
    }

    /// The generation for the next write: past every generation seen, valid or not, so a
    /// version never repeats even after a corrupted slot is rewritten.
    pub(super) fn next_generation(&self) -> Option<u64> {
        let mut valid = 0u64;
        let mut raw = 0u64;
        for s in &self.slots {
            match s {
                Slot::Valid { generation, .. } => valid = valid.max(*generation),
                Slot::Invalid {
                    raw_generation: Some(g),
                    ..
                } => raw = raw.max(*g),
                _ => {}
            }
        }
        // A garbage generation field near u64::MAX must not make the lease unwritable.
        valid
            .max(raw)
            .checked_add(1)
            .or_else(|| valid.checked_add(1))
    }
}
