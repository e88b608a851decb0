//! Audit segments: many audit records in one compact, columnar block.
//!
//! Agent reads are by far the most frequent audit records, and a typical stream repeats the same
//! few workspaces, agents, secrets and details over and over. A row with ten columns per read
//! cost about 170–195 bytes on disk; a segment stores the records of one batch column by column:
//! sequence numbers and times as deltas, every text column as references into one dictionary of
//! the distinct strings, and every column run-length encoded. A stream of the same few reads costs
//! a few bytes per record, and writing it is one row instead of one per record.
//!
//! Layout (integers are LEB128 varints):
//!
//! ```text
//! version (1 byte) | records | dictionary size | dictionary strings (length, UTF-8 bytes)…
//! | 11 columns, each a series of (value, run length) pairs covering every record
//! ```
//!
//! Columns: sequence-number delta (the first is 0: the first number is kept outside the block),
//! time delta (zig-zag; the first against 0), workspace, actor kind, actor id, action, outcome
//! (dictionary indexes), secret, agent, target, detail (dictionary index + 1; 0 is none).
//!
//! Decoding checks every bound: a damaged block is an error, never a panic.

use std::collections::HashMap;

use agentvault_core::audit::{Action, AuditEvent, AuditEventRef, AuditFilter, Outcome};
use agentvault_core::model::Millis;

const VERSION: u8 = 1;
const COLUMNS: usize = 11;
/// More records than a block is ever given (compaction stops far below): a larger count is damage.
const MAX_RECORDS: usize = 1 << 20;

/// Stores one segment (`$7` is the block).
pub const INSERT_SEGMENT: &str = "INSERT INTO audit_segments (first_seq, workspace_id, last_seq, min_at, max_at, records, data) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// Stores one of a segment's index keys.
pub const INSERT_KEY: &str = "INSERT INTO audit_segment_keys (workspace_id, key, first_seq) VALUES ($1, $2, $3)";

/// A block that cannot be read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Damaged(pub &'static str);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damaged audit segment: {}", self.0)
    }
}

/// What the index of a segment knows about it, beside its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: i64,
    /// Offsets of the first and the last record's sequence number from the numbers given to
    /// [`encode`] (the first record's number is the segment's position).
    pub first_seq: i64,
    pub last_seq: i64,
    pub min_at: Millis,
    pub max_at: Millis,
}

/// The index key of a filterable value (`agent:agt_…`, `secret:stripe_api_key`, …).
pub fn key(kind: &str, value: &str) -> String {
    let mut k = String::with_capacity(kind.len() + 1 + value.len());
    k.push_str(kind);
    k.push(':');
    k.push_str(value);
    k
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Run-length encoding of one column into the block's column area.
struct Runs {
    value: u64,
    run: u64,
}

impl Runs {
    fn push(&mut self, out: &mut Vec<u8>, v: u64) {
        if self.run > 0 && v == self.value {
            self.run += 1;
            return;
        }
        self.flush(out);
        self.value = v;
        self.run = 1;
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if self.run > 0 {
            put_varint(out, self.value);
            put_varint(out, self.run);
        }
    }

    /// Encodes one column: the value of every record, in order.
    fn column(out: &mut Vec<u8>, values: impl Iterator<Item = u64>) {
        let mut runs = Runs { value: 0, run: 0 };
        for v in values {
            runs.push(out, v);
        }
        runs.flush(out);
    }
}

/// Whether two strings are equal, without comparing their bytes when they are one slice (the
/// records [`Views`] reads from alike blocks borrow the same strings).
pub(crate) fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

fn same_optional(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// Up to this many distinct strings a block's dictionary is searched in order (a read's own
/// record has about eight); past it, through a hash map.
const DICTIONARY_SCAN: usize = 24;

struct Dictionary<'a> {
    strings: Vec<&'a str>,
    index: Option<HashMap<&'a str, u64>>,
}

impl<'a> Dictionary<'a> {
    fn id(&mut self, s: &'a str) -> u64 {
        match &mut self.index {
            Some(index) => {
                if let Some(&i) = index.get(s) {
                    return i;
                }
                index.insert(s, self.strings.len() as u64);
            }
            None => {
                if let Some(i) = self.strings.iter().position(|d| *d == s) {
                    return i as u64;
                }
                if self.strings.len() == DICTIONARY_SCAN {
                    let mut index: HashMap<&'a str, u64> = self.strings.iter().copied().zip(0..).collect();
                    index.insert(s, self.strings.len() as u64);
                    self.index = Some(index);
                }
            }
        }
        self.strings.push(s);
        self.strings.len() as u64 - 1
    }

    /// The id of `s` in a column whose last string had id `last`: a column repeats itself from
    /// record to record, so that one is compared first.
    fn id_after(&mut self, last: &mut Option<u64>, s: &'a str) -> u64 {
        if let Some(id) = *last
            && same(self.strings[id as usize], s)
        {
            return id;
        }
        let id = self.id(s);
        *last = Some(id);
        id
    }

    /// [`Dictionary::id_after`] in an optional column: 0 for none, else the id + 1.
    fn optional_after(&mut self, last: &mut Option<u64>, s: Option<&'a str>) -> u64 {
        s.map_or(0, |s| self.id_after(last, s) + 1)
    }
}

/// Encodes records (with their sequence numbers, ascending) into one block, appended to `out`.
/// The records are walked once per column, so the iterator must be cheap to clone.
pub fn encode<'a, I>(records: I, out: &mut Vec<u8>) -> Summary
where
    I: IntoIterator<Item = (i64, AuditEventRef<'a>)>,
    I::IntoIter: Clone,
{
    let records = records.into_iter();
    let mut summary = Summary { records: 0, first_seq: 0, last_seq: 0, min_at: Millis::MAX, max_at: Millis::MIN };
    // The columns are written here first: the dictionary they refer to comes before them.
    let mut cols = Vec::with_capacity(64);
    let mut prev_seq = None::<i64>;
    Runs::column(
        &mut cols,
        records.clone().map(|(seq, e)| {
            if prev_seq.is_none() {
                summary.first_seq = seq;
            }
            summary.last_seq = seq;
            summary.records += 1;
            summary.min_at = summary.min_at.min(e.at);
            summary.max_at = summary.max_at.max(e.at);
            let delta = prev_seq.map_or(0, |p| seq.wrapping_sub(p) as u64);
            prev_seq = Some(seq);
            delta
        }),
    );
    let mut prev_at = 0;
    Runs::column(
        &mut cols,
        records.clone().map(|(_, e)| {
            let delta = zigzag(e.at.wrapping_sub(prev_at));
            prev_at = e.at;
            delta
        }),
    );
    let mut dict = Dictionary { strings: Vec::with_capacity(16), index: None };
    // The last id each text column (by its column number; 0 and 1 are not text) referred to.
    let mut last = [None; COLUMNS];
    let l = &mut last;
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.id_after(&mut l[2], e.workspace_id)));
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.id_after(&mut l[3], e.actor_kind)));
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.id_after(&mut l[4], e.actor_id)));
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.id_after(&mut l[5], e.action.as_str())));
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.id_after(&mut l[6], e.outcome.as_str())));
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.optional_after(&mut l[7], e.secret_name)));
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.optional_after(&mut l[8], e.agent_id)));
    Runs::column(&mut cols, records.clone().map(|(_, e)| dict.optional_after(&mut l[9], e.target_id)));
    Runs::column(&mut cols, records.map(|(_, e)| dict.optional_after(&mut l[10], e.detail)));
    if summary.records == 0 {
        summary.min_at = 0;
        summary.max_at = 0;
    }
    out.reserve(16 + dict.strings.iter().map(|s| s.len() + 2).sum::<usize>() + cols.len());
    out.push(VERSION);
    put_varint(out, summary.records as u64);
    put_varint(out, dict.strings.len() as u64);
    for s in &dict.strings {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&cols);
    summary
}

/// At least as many bytes as [`encode_one`] writes for `e` (so that a buffer of this size is
/// never grown while it encodes).
pub fn one_len(e: &AuditEventRef<'_>) -> usize {
    let texts = [e.workspace_id, e.actor_kind, e.actor_id, e.action.as_str(), e.outcome.as_str()];
    let optional = [e.secret_name, e.agent_id, e.target_id, e.detail];
    // Version, counts and the 11 columns' runs (a time takes up to 10 bytes), then each string
    // with its length (3 bytes up to 2 MB; a longer one only makes the buffer grow).
    48 + texts.into_iter().chain(optional.into_iter().flatten()).map(|s| s.len() + 3).sum::<usize>()
}

/// The number of records in a block written by [`encode`], read from its header.
pub fn records_in(bytes: &[u8]) -> Result<usize, Damaged> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != VERSION {
        return Err(Damaged("unknown version"));
    }
    r.len(MAX_RECORDS)
}

/// [`encode`] of one record, byte for byte, without the general encoder's buffers and walks
/// (an agent read appends its record alone): the dictionary is the record's distinct strings in
/// column order, and each column is one run.
pub fn encode_one(e: &AuditEventRef<'_>, out: &mut Vec<u8>) {
    let texts: [Option<&str>; COLUMNS - 2] = [
        Some(e.workspace_id),
        Some(e.actor_kind),
        Some(e.actor_id),
        Some(e.action.as_str()),
        Some(e.outcome.as_str()),
        e.secret_name,
        e.agent_id,
        e.target_id,
        e.detail,
    ];
    let mut dict: [&str; COLUMNS - 2] = [""; COLUMNS - 2];
    let mut distinct = 0;
    let mut ids = [0u64; COLUMNS - 2];
    for (i, text) in texts.iter().enumerate() {
        let Some(text) = text else { continue };
        let id = match dict[..distinct].iter().position(|d| d == text) {
            Some(id) => id,
            None => {
                dict[distinct] = text;
                distinct += 1;
                distinct - 1
            }
        };
        // The first five columns always hold a string; the others hold 0 for none.
        ids[i] = id as u64 + u64::from(i >= 5);
    }
    out.reserve(one_len(e));
    out.push(VERSION);
    put_varint(out, 1);
    put_varint(out, distinct as u64);
    for s in &dict[..distinct] {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    // The sequence column holds offsets from the block's first number: 0 for its only record.
    for v in [0, zigzag(e.at)].into_iter().chain(ids) {
        put_varint(out, v);
        put_varint(out, 1);
    }
}

/// A segment's index keys: every distinct value of `records` the listing filters on (actor,
/// action, outcome, secret, agent), as [`key`]s, sorted. A filtered listing finds the segments
/// it must open through them. Only what is stored as a segment needs them (not journal frames).
pub fn index_keys<'a>(records: impl IntoIterator<Item = AuditEventRef<'a>>) -> Vec<String> {
    let mut distinct: std::collections::BTreeSet<(&str, &str)> = std::collections::BTreeSet::new();
    let mut previous: Option<AuditEventRef<'a>> = None;
    for e in records {
        // A record usually has its neighbour's keys: compared once instead of five inserts.
        if let Some(p) = previous
            && (p.action, p.outcome) == (e.action, e.outcome)
            && same(p.actor_id, e.actor_id)
            && same_optional(p.secret_name, e.secret_name)
            && same_optional(p.agent_id, e.agent_id)
        {
            continue;
        }
        previous = Some(e);
        distinct.insert(("actor", e.actor_id));
        distinct.insert(("action", e.action.as_str()));
        distinct.insert(("outcome", e.outcome.as_str()));
        if let Some(s) = e.secret_name {
            distinct.insert(("secret", s));
        }
        if let Some(a) = e.agent_id {
            distinct.insert(("agent", a));
        }
    }
    let mut keys: Vec<String> = distinct.into_iter().map(|(kind, value)| key(kind, value)).collect();
    keys.sort_unstable();
    keys
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Damaged> {
        let b = *self.bytes.get(self.pos).ok_or(Damaged("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Damaged> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damaged("a number is too long"))
    }

    fn len(&mut self, max: usize) -> Result<usize, Damaged> {
        usize::try_from(self.varint()?).ok().filter(|n| *n <= max).ok_or(Damaged("a length is out of range"))
    }

    /// One column: `n` values from its runs.
    fn column(&mut self, n: usize) -> Result<Vec<u64>, Damaged> {
        let mut values = Vec::with_capacity(n.min(self.bytes.len()));
        while values.len() < n {
            let v = self.varint()?;
            let run = self.len(n - values.len())?;
            if run == 0 {
                return Err(Damaged("an empty run"));
            }
            values.resize(values.len() + run, v);
        }
        Ok(values)
    }
}

/// A parsed block: its dictionary and columns, from which records are read one at a time (a
/// filtered listing builds only the records it returns).
pub struct Block<'a> {
    dict: Vec<&'a str>,
    cols: Vec<Vec<u64>>,
    seqs: Vec<i64>,
    ats: Vec<Millis>,
}

impl<'a> Block<'a> {
    /// Parses a block written by [`encode`]; `first_seq` is the first record's sequence number.
    pub fn parse(first_seq: i64, bytes: &'a [u8]) -> Result<Block<'a>, Damaged> {
        let mut r = Reader { bytes, pos: 0 };
        if r.byte()? != VERSION {
            return Err(Damaged("unknown version"));
        }
        let n = r.len(MAX_RECORDS)?;
        let dict_len = r.len(bytes.len())?;
        let mut dict = Vec::with_capacity(dict_len);
        for _ in 0..dict_len {
            let len = r.len(bytes.len())?;
            let s = bytes.get(r.pos..r.pos + len).ok_or(Damaged("truncated string"))?;
            dict.push(std::str::from_utf8(s).map_err(|_| Damaged("a string is not UTF-8"))?);
            r.pos += len;
        }
        let mut cols: Vec<Vec<u64>> = Vec::with_capacity(COLUMNS);
        for _ in 0..COLUMNS {
            cols.push(r.column(n)?);
        }
        if r.pos != bytes.len() {
            return Err(Damaged("trailing bytes"));
        }
        for (i, c) in cols.iter().enumerate().skip(2) {
            let offset = u64::from(i >= 7);
            if c.iter().any(|v| v.saturating_sub(offset) >= dict.len() as u64 && (*v != 0 || offset == 0)) {
                return Err(Damaged("a dictionary reference is out of range"));
            }
        }
        let (mut seq, mut at) = (first_seq, 0i64);
        let mut seqs = Vec::with_capacity(n);
        let mut ats = Vec::with_capacity(n);
        for (delta_seq, delta_at) in cols[0].iter().zip(&cols[1]) {
            seq = seq.wrapping_add(*delta_seq as i64);
            at = at.wrapping_add(unzigzag(*delta_at));
            seqs.push(seq);
            ats.push(at);
        }
        Ok(Block { dict, cols, seqs, ats })
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn seq(&self, i: usize) -> i64 {
        self.seqs[i]
    }

    fn text(&self, col: usize, i: usize) -> &'a str {
        self.dict.get(self.cols[col][i] as usize).copied().unwrap_or_default()
    }

    fn optional(&self, col: usize, i: usize) -> Option<&'a str> {
        self.cols[col][i].checked_sub(1).and_then(|v| self.dict.get(v as usize).copied())
    }

    /// The `i`-th record.
    pub fn event(&self, i: usize) -> Result<AuditEvent, Damaged> {
        Ok(self.view(i)?.to_event())
    }

    /// The `i`-th record, its strings borrowed from the block's bytes.
    pub fn view(&self, i: usize) -> Result<AuditEventRef<'a>, Damaged> {
        Ok(AuditEventRef {
            at: self.ats[i],
            workspace_id: self.text(2, i),
            actor_kind: self.text(3, i),
            actor_id: self.text(4, i),
            action: Action::parse(self.text(5, i)).ok_or(Damaged("unknown action"))?,
            outcome: Outcome::parse(self.text(6, i)).ok_or(Damaged("unknown outcome"))?,
            secret_name: self.optional(7, i),
            agent_id: self.optional(8, i),
            target_id: self.optional(9, i),
            detail: self.optional(10, i),
        })
    }

    /// Whether the `i`-th record passes every filter (the cursor included), without building it.
    pub fn matches(&self, filter: &AuditFilter, i: usize) -> bool {
        let seq = self.seqs[i];
        let at = self.ats[i];
        filter.action.is_none_or(|a| a.as_str() == self.text(5, i))
            && filter.outcome.is_none_or(|o| o.as_str() == self.text(6, i))
            && match (&filter.secret_name, filter.secret_prefix) {
                (Some(s), true) => self.optional(7, i).is_some_and(|n| n.starts_with(s.as_str())),
                (Some(s), false) => self.optional(7, i) == Some(s.as_str()),
                (None, _) => true,
            }
            && filter.agent_id.as_deref().is_none_or(|a| self.optional(8, i) == Some(a))
            && filter.actor_id.as_deref().is_none_or(|a| self.text(4, i) == a)
            && filter.since.is_none_or(|t| at >= t)
            && filter.until.is_none_or(|t| at < t)
            && filter.before_seq.is_none_or(|c| seq < c)
            && filter.after_seq.is_none_or(|c| seq > c)
    }
}

/// [`parse_one`]'s record with its sequence number.
#[cfg(test)]
fn view_one(first_seq: i64, bytes: &[u8]) -> Result<Option<(i64, AuditEventRef<'_>)>, Damaged> {
    Ok(parse_one(bytes)?.map(|one| (first_seq.wrapping_add(one.seq_offset), one.event)))
}

/// A one-record block as [`parse_one`] reads it, with where its time is written.
#[derive(Clone, Copy)]
struct One<'a> {
    bytes: &'a [u8],
    /// The bytes of the time's varint.
    at: (usize, usize),
    /// The record's offset from the block's first sequence number.
    seq_offset: i64,
    event: AuditEventRef<'a>,
}

impl<'a> One<'a> {
    /// `bytes` read as this block with another time: they must be this block's bytes before
    /// and after the time's varint, with a varint between (a reader of the whole would take the
    /// same path through it and find the same record, at that time). Consecutive records of a
    /// stream of reads are usually alike but for their time.
    fn with_other_time(&self, bytes: &'a [u8]) -> Option<One<'a>> {
        let (start, end) = self.at;
        if bytes.get(..start)? != &self.bytes[..start] {
            return None;
        }
        let mut r = Reader { bytes, pos: start };
        let at = r.varint().ok()?;
        if bytes[r.pos..] != self.bytes[end..] {
            return None;
        }
        let event = AuditEventRef { at: unzigzag(at), ..self.event };
        Some(One { bytes, at: (start, r.pos), seq_offset: self.seq_offset, event })
    }
}

/// The one record of a block that holds one (as [`encode_one`] writes it), read without the
/// general parser's column buffers: `None` if the block holds another number of records.
fn parse_one(bytes: &[u8]) -> Result<Option<One<'_>>, Damaged> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != VERSION {
        return Err(Damaged("unknown version"));
    }
    if r.len(MAX_RECORDS)? != 1 {
        return Ok(None);
    }
    let dict_len = r.len(bytes.len())?;
    if dict_len > COLUMNS {
        // More strings than one record can use: the general parser decides what it is.
        return Ok(None);
    }
    let mut spans = [(0, 0); COLUMNS];
    let strings_start = r.pos;
    for span in spans.iter_mut().take(dict_len) {
        let len = r.len(bytes.len())?;
        let end = Some(r.pos + len).filter(|end| *end <= bytes.len()).ok_or(Damaged("truncated string"))?;
        *span = (r.pos, end);
        r.pos = end;
    }
    // The strings are checked as one, and each is cut out of the checked whole where its bounds
    // fall on character boundaries (they do when every length is under 128: a one-byte length is
    // ASCII); a string whose bounds do not, or a whole that is not valid, is checked alone.
    let whole = std::str::from_utf8(&bytes[strings_start..r.pos]).ok();
    let mut dict = [""; COLUMNS];
    for (d, (start, end)) in dict.iter_mut().zip(spans).take(dict_len) {
        *d = match whole.and_then(|w| w.get(start - strings_start..end - strings_start)) {
            Some(s) => s,
            None => std::str::from_utf8(&bytes[start..end]).map_err(|_| Damaged("a string is not UTF-8"))?,
        };
    }
    let mut values = [0u64; COLUMNS];
    let mut at = (0, 0);
    for (col, v) in values.iter_mut().enumerate() {
        let start = r.pos;
        *v = r.varint()?;
        if col == 1 {
            at = (start, r.pos);
        }
        if r.varint()? != 1 {
            return Err(Damaged("a run does not cover the record"));
        }
    }
    if r.pos != bytes.len() {
        return Err(Damaged("trailing bytes"));
    }
    let text = |col: usize| -> Result<&str, Damaged> {
        usize::try_from(values[col])
            .ok()
            .filter(|i| *i < dict_len)
            .map(|i| dict[i])
            .ok_or(Damaged("a dictionary reference is out of range"))
    };
    let optional = |col: usize| -> Result<Option<&str>, Damaged> {
        match values[col] {
            0 => Ok(None),
            v => usize::try_from(v - 1)
                .ok()
                .filter(|i| *i < dict_len)
                .map(|i| Some(dict[i]))
                .ok_or(Damaged("a dictionary reference is out of range")),
        }
    };
    let event = AuditEventRef {
        at: unzigzag(values[1]),
        workspace_id: text(2)?,
        actor_kind: text(3)?,
        actor_id: text(4)?,
        action: Action::parse(text(5)?).ok_or(Damaged("unknown action"))?,
        outcome: Outcome::parse(text(6)?).ok_or(Damaged("unknown outcome"))?,
        secret_name: optional(7)?,
        agent_id: optional(8)?,
        target_id: optional(9)?,
        detail: optional(10)?,
    };
    Ok(Some(One { bytes, at, seq_offset: values[0] as i64, event }))
}

/// Every record of a block written by [`encode`] or [`encode_one`], appended to `out` with its
/// sequence number, its strings borrowed from `bytes`.
pub fn views<'a>(first_seq: i64, bytes: &'a [u8], out: &mut Vec<(i64, AuditEventRef<'a>)>) -> Result<(), Damaged> {
    Views::default().push(first_seq, bytes, out)
}

/// Reads consecutive blocks, as [`views`] does, remembering the last block of one record: the
/// next one that differs from it only in its time (the usual case in a stream of reads: the same
/// key reading the same secret) is read by comparing their bytes, not parsed again.
#[derive(Default)]
pub struct Views<'a> {
    last: Option<One<'a>>,
}

impl<'a> Views<'a> {
    /// Every record of the block, appended to `out` (see [`views`]); a record read by comparing
    /// bytes borrows its strings from the earlier block it matched, which lives as long.
    pub fn push(
        &mut self,
        first_seq: i64,
        bytes: &'a [u8],
        out: &mut Vec<(i64, AuditEventRef<'a>)>,
    ) -> Result<(), Damaged> {
        let one = match self.last.and_then(|last| last.with_other_time(bytes)) {
            Some(one) => Some(one),
            None => parse_one(bytes)?,
        };
        if let Some(one) = one {
            out.push((first_seq.wrapping_add(one.seq_offset), one.event));
            self.last = Some(one);
            return Ok(());
        }
        views_of_block(first_seq, bytes, out)
    }
}

fn views_of_block<'a>(first_seq: i64, bytes: &'a [u8], out: &mut Vec<(i64, AuditEventRef<'a>)>) -> Result<(), Damaged> {
    let block = Block::parse(first_seq, bytes)?;
    out.reserve(block.len());
    for i in 0..block.len() {
        out.push((block.seq(i), block.view(i)?));
    }
    Ok(())
}

/// Decodes every record of a block written by [`encode`].
pub fn decode(first_seq: i64, bytes: &[u8]) -> Result<Vec<(i64, AuditEvent)>, Damaged> {
    let mut records = Vec::new();
    views(first_seq, bytes, &mut records)?;
    Ok(records.into_iter().map(|(seq, e)| (seq, e.to_event())).collect())
}

/// The index keys a segment must have to hold a record the filter matches (all of them).
pub fn required_keys(filter: &AuditFilter) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(a) = filter.action {
        keys.push(key("action", a.as_str()));
    }
    if let Some(o) = filter.outcome {
        keys.push(key("outcome", o.as_str()));
    }
    if let (Some(s), false) = (&filter.secret_name, filter.secret_prefix) {
        keys.push(key("secret", s));
    }
    if let Some(a) = &filter.agent_id {
        keys.push(key("agent", a));
    }
    if let Some(a) = &filter.actor_id {
        keys.push(key("actor", a));
    }
    keys
}

#[cfg(test)]
mod tests {
    use agentvault_core::model::Actor;

    use super::*;

    fn read(i: i64, agent: &str, secret: &str) -> AuditEvent {
        AuditEvent::new(
            1_700_000_000_000 + i / 3,
            "ws_1",
            Actor::ApiKey("key_1".into()),
            Action::SecretRead,
            Outcome::Success,
        )
        .secret(secret)
        .agent(agent)
        .detail("env=live value=default version=3")
    }

    #[test]
    fn records_round_trip_with_every_column() {
        let mut events: Vec<AuditEvent> =
            (0..50).map(|i| read(i, "agt_1", if i % 7 == 0 { "b" } else { "a" })).collect();
        events.push(
            AuditEvent::new(5, "ws_2", Actor::System, Action::FunctionInvoke, Outcome::Failed)
                .target("fn_1")
                .detail("ünïcode ✓"),
        );
        events.push(AuditEvent::new(
            1_700_000_000_500,
            "ws_1",
            Actor::User("usr_1".into()),
            Action::SecretRead,
            Outcome::Denied,
        ));
        let seqs: Vec<i64> = (0..events.len() as i64).map(|i| 1_000 + i * i).collect();
        let mut block = Vec::new();
        let summary = encode(seqs.iter().copied().zip(events.iter().map(AuditEvent::view)), &mut block);
        let keys = index_keys(events.iter().map(AuditEvent::view));
        assert_eq!(summary.records, events.len() as i64);
        assert_eq!(records_in(&block), Ok(events.len()));
        assert_eq!((summary.first_seq, summary.last_seq), (1_000, 1_000 + 51 * 51));
        assert_eq!((summary.min_at, summary.max_at), (5, 1_700_000_000_500));
        let back = decode(1_000, &block).unwrap();
        let expected: Vec<(i64, AuditEvent)> = seqs.into_iter().zip(events).collect();
        assert_eq!(back, expected);
        assert!(keys.contains(&"agent:agt_1".to_owned()));
        assert!(keys.contains(&"secret:b".to_owned()));
        assert!(keys.contains(&"outcome:denied".to_owned()));
        assert!(keys.contains(&"actor:system".to_owned()));
        assert!(keys.contains(&"action:function.invoke".to_owned()));
        assert!(!keys.iter().any(|k| k.starts_with("agent:") && k != "agent:agt_1"));
    }

    #[test]
    fn one_record_encodes_as_a_block_of_one_does() {
        let long = "x".repeat(300);
        let events = [
            AuditEvent::new(
                1_700_000_000_000,
                "ws_1",
                Actor::ApiKey("key_1".into()),
                Action::SecretRead,
                Outcome::Success,
            )
            .secret("stripe_api_key")
            .agent("agt_1")
            .detail("version=3 env=none value=default"),
            // The actor is the agent: one dictionary string for both.
            AuditEvent::new(5, "ws_2", Actor::Agent("agt_2".into()), Action::SecretRead, Outcome::Denied)
                .agent("agt_2")
                .target("inv_1")
                .detail(long.clone()),
            AuditEvent::new(-3, "ws_3", Actor::ApiKey("ws_3".into()), Action::SecretRead, Outcome::NotFound),
            AuditEvent::new(0, "", Actor::ApiKey(String::new()), Action::SecretRead, Outcome::Invalid).detail(""),
        ];
        for (i, e) in events.iter().enumerate() {
            let (mut general, mut one) = (Vec::new(), Vec::new());
            encode([(40 + i as i64, e.view())], &mut general);
            encode_one(&e.view(), &mut one);
            assert_eq!(one, general, "record {i}");
            assert!(one.len() <= one_len(&e.view()), "record {i}: {} bytes", one.len());
            assert_eq!(records_in(&one), Ok(1));
            assert_eq!(decode(40, &one).unwrap(), vec![(40, e.clone())]);
        }
    }

    #[test]
    fn a_dictionary_past_its_scanned_size_keeps_every_string_once() {
        // Far more distinct strings than the dictionary scans in order, repeated out of order.
        let events: Vec<AuditEvent> =
            (0..600).map(|i| read(i, &format!("agt_{}", (i * 7) % 90), &format!("s{}", i % 45))).collect();
        let mut block = Vec::new();
        encode((1..).zip(events.iter().map(AuditEvent::view)), &mut block);
        let back = decode(1, &block).unwrap();
        assert_eq!(back, (1..).zip(events).collect::<Vec<_>>());
        let parsed = Block::parse(1, &block).unwrap();
        let mut distinct = parsed.dict.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), parsed.dict.len(), "no string is stored twice");
        assert!(parsed.dict.len() > DICTIONARY_SCAN + 100);
    }

    #[test]
    fn a_stream_of_the_same_reads_costs_a_few_bytes_per_record() {
        let events: Vec<AuditEvent> = (0..4096).map(|i| read(i, "agt_1", if i % 2 == 0 { "a" } else { "b" })).collect();
        let mut block = Vec::new();
        encode((1..).zip(events.iter().map(AuditEvent::view)), &mut block);
        let per_record = block.len() as f64 / events.len() as f64;
        assert!(per_record < 8.0, "{per_record} bytes per record");
        assert_eq!(decode(1, &block).unwrap().len(), 4096);
    }

    /// Calls `check` with every copy of `block` that has one bit flipped, and the flipped byte.
    fn each_bit_flipped(block: &[u8], mut check: impl FnMut(usize, &[u8])) {
        for at in 0..block.len() {
            for bit in 0..8 {
                let mut bad = block.to_vec();
                bad[at] ^= 1 << bit;
                check(at, &bad);
            }
        }
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_panic() {
        let events: Vec<AuditEvent> = (0..20).map(|i| read(i, "agt_1", "a")).collect();
        let mut block = Vec::new();
        encode((1..).zip(events.iter().map(AuditEvent::view)), &mut block);
        for cut in 0..block.len() {
            assert!(decode(1, &block[..cut]).is_err(), "cut at {cut}");
        }
        // Either an error or some records; never a panic or a huge allocation.
        each_bit_flipped(&block, |_, bad| {
            let _ = decode(1, bad);
        });
        let mut longer = block.clone();
        longer.push(0);
        assert_eq!(decode(1, &longer), Err(Damaged("trailing bytes")));
        assert!(decode(1, &[]).is_err());
        assert!(decode(1, &[9, 0, 0]).is_err());
    }

    #[test]
    fn a_block_of_one_reads_as_the_general_parser_reads_it_and_damage_is_an_error() {
        let events = [
            read(7, "agt_1", "stripe_api_key"),
            AuditEvent::new(-3, "ws_3", Actor::Agent("agt_2".into()), Action::SecretRead, Outcome::Denied)
                .agent("agt_2")
                .target("inv_1")
                .detail("ünïcode ✓"),
            AuditEvent::new(0, "", Actor::System, Action::FunctionInvoke, Outcome::Failed).detail("x".repeat(200)),
        ];
        for (i, e) in events.iter().enumerate() {
            let mut block = Vec::new();
            encode_one(&e.view(), &mut block);
            let parsed = Block::parse(90, &block).unwrap();
            let general = (parsed.seq(0), parsed.view(0).unwrap());
            assert_eq!(view_one(90, &block), Ok(Some(general)), "record {i}");
            assert_eq!(general, (90, e.view()));
            for cut in 0..block.len() {
                assert!(view_one(90, &block[..cut]).is_err(), "record {i} cut at {cut}");
            }
            // An error, another block's answer, or the general parser's: never a panic.
            each_bit_flipped(&block, |at, bad| {
                if let Ok(Some(one)) = view_one(90, bad) {
                    let parsed = Block::parse(90, bad).unwrap();
                    assert_eq!(Ok(one), parsed.view(0).map(|v| (parsed.seq(0), v)), "record {i} byte {at}");
                }
            });
            let mut longer = block.clone();
            longer.push(0);
            assert_eq!(view_one(90, &longer), Err(Damaged("trailing bytes")));
        }
        // A block of several records is left to the general parser.
        let mut block = Vec::new();
        encode((5..).zip(events.iter().map(AuditEvent::view)), &mut block);
        assert_eq!(view_one(5, &block), Ok(None));
        let mut all = Vec::new();
        views(5, &block, &mut all).unwrap();
        assert_eq!(all, (5..).zip(events.iter().map(AuditEvent::view)).collect::<Vec<_>>());
    }

    #[test]
    fn blocks_alike_but_for_their_time_read_as_each_block_alone() {
        let at = |t: Millis| read(t, "agt_1", "stripe_api_key");
        let one = |e: &AuditEvent| {
            let mut block = Vec::new();
            encode_one(&e.view(), &mut block);
            block
        };
        // Each block's records and result, read after the ones before it and read alone.
        let check = |blocks: &[Vec<u8>]| {
            let mut stream = Views::default();
            for (i, b) in blocks.iter().enumerate() {
                let (mut after, mut alone) = (Vec::new(), Vec::new());
                let got = stream.push(40 + i as i64, b, &mut after);
                assert_eq!(got, views(40 + i as i64, b, &mut alone), "block {i}");
                assert_eq!(after, alone, "block {i}");
            }
        };
        let several = {
            let mut block = Vec::new();
            encode((0..).zip([at(1), at(2)].iter().map(AuditEvent::view)), &mut block);
            block
        };
        let base = one(&at(7));
        check(&[
            base.clone(),
            one(&at(8)),
            one(&at(1 << 40)),
            one(&at(-5)),
            one(&at(Millis::MIN)),
            one(&at(9).detail("x")),
            one(&read(10, "agt_1", "other_secret")),
            one(&read(10, "agt_2", "stripe_api_key")),
            one(&at(11)),
            several,
            one(&at(12)),
            base[..base.len() - 1].to_vec(),
            one(&at(13)),
        ]);
        // A damaged block after an intact one reads as it does alone: an error, or its record.
        each_bit_flipped(&base, |_, bad| check(&[base.clone(), bad.to_vec()]));
        for cut in 0..base.len() {
            check(&[base.clone(), base[..cut].to_vec()]);
        }
        // Alike blocks borrow the first one's strings.
        let (first, second) = (one(&at(1)), one(&at(2)));
        let (mut stream, mut out) = (Views::default(), Vec::new());
        stream.push(1, &first, &mut out).unwrap();
        stream.push(2, &second, &mut out).unwrap();
        assert!(std::ptr::eq(out[0].1.secret_name.unwrap(), out[1].1.secret_name.unwrap()));
        assert_eq!(out[1], (2, at(2).view()));
    }

    #[test]
    fn filters_match_as_the_table_query_does() {
        let e = read(0, "agt_1", "stripe_api_key");
        let mut bytes = Vec::new();
        encode([(10, e.view())], &mut bytes);
        let block = Block::parse(10, &bytes).unwrap();
        let f = |f: AuditFilter| block.matches(&f, 0);
        assert!(f(AuditFilter::default()));
        assert!(f(AuditFilter { secret_name: Some("stripe".into()), secret_prefix: true, ..Default::default() }));
        assert!(!f(AuditFilter { secret_name: Some("stripe".into()), ..Default::default() }));
        assert!(!f(AuditFilter { agent_id: Some("agt_2".into()), ..Default::default() }));
        assert!(f(AuditFilter { actor_id: Some("key_1".into()), ..Default::default() }));
        assert!(!f(AuditFilter { outcome: Some(Outcome::Denied), ..Default::default() }));
        assert!(!f(AuditFilter { before_seq: Some(10), ..Default::default() }));
        assert!(f(AuditFilter { after_seq: Some(9), ..Default::default() }));
        assert!(!f(AuditFilter { until: Some(e.at), ..Default::default() }));
        assert!(f(AuditFilter { since: Some(e.at), ..Default::default() }));
        assert_eq!(
            required_keys(&AuditFilter {
                agent_id: Some("agt_1".into()),
                secret_name: Some("s".into()),
                secret_prefix: true,
                ..Default::default()
            }),
            vec!["agent:agt_1".to_owned()]
        );
    }
}
