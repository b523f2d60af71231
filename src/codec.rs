//! Streaming gzip, both directions.
//!
//! A snapshot is a standard multi-member gzip file: the image is cut into fixed-size
//! chunks, each compressed as its own member on a worker thread, and written in order.
//! Every gunzip (and `MultiGzDecoder`) reads it as one stream. Two members carry metadata
//! in their FCOMMENT header field, which gunzip ignores:
//! - the first member says `sqlbak <version>`, marking the file as ours;
//! - a final, empty member says `sqlbak-meta v1 size=… sha256=… …`.
//!
//! Each member's header also records the length of its deflate data in an FEXTRA
//! subfield (`SB`, like BGZF's block size), which gunzip skips. With it, restore finds the
//! member boundaries without inflating and decompresses members in parallel; members
//! without it (plain gzip files, or a member written by something else) are inflated
//! as a stream, in order.
//!
//! On the way back, a file marked as ours must end with that trailer, so a snapshot cut
//! off exactly at a member boundary is caught, and the image's size and sha256 are checked
//! against it. Files made by plain `gzip` have neither and are checked by gzip's own CRCs.
//!
//! Members are compressed and inflated whole with libdeflate: at level 6 it is about 1.5x
//! faster than zlib-rs and its output about 3% smaller (0.2% smaller than `gzip -6`'s)
//! on database images; see bench/run.

use libdeflater::{CompressionLvl, Compressor, Decompressor};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

/// Size of the independently compressed chunks; large enough that the per-member
/// overhead (about 30 bytes and one lost 32 KiB window) is noise.
pub const CHUNK_SIZE: usize = 1 << 20;
/// The largest member restore takes in one piece (compressed or not); larger recorded
/// lengths are treated as corruption, which bounds memory.
const MAX_MEMBER: usize = 16 << 20;
/// The longest FNAME/FCOMMENT accepted.
const MAX_HEADER_FIELD: usize = 64 << 10;
const FIRST_COMMENT_PREFIX: &str = "sqlbak ";
const META_PREFIX: &str = "sqlbak-meta v1";
/// FEXTRA subfield id of the deflate length.
const LEN_SUBFIELD: [u8; 2] = *b"SB";
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Offset of the deflate length in a header from [`member_header`].
const LEN_OFFSET: usize = 16;

/// How to compress.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// gzip level, 0–9.
    pub level: u32,
    /// Worker threads compressing chunks in parallel.
    pub jobs: usize,
    /// Bytes per gzip member (at most 16 MiB).
    pub chunk_size: usize,
}

/// What the trailer records about the image, and what restore checks against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageMeta {
    /// Image size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the image.
    pub sha256: String,
    /// SQLite page size, when known.
    pub page_size: Option<u32>,
    /// SQLite page count, when known.
    pub page_count: Option<u32>,
    /// Host the snapshot was taken on.
    pub host: Option<String>,
    /// sqlbak version that wrote it.
    pub version: Option<String>,
}

impl ImageMeta {
    /// The FCOMMENT text of the trailer member.
    pub fn to_comment(&self) -> String {
        let mut s = format!("{META_PREFIX} size={} sha256={}", self.size, self.sha256);
        if let Some(p) = self.page_size {
            s.push_str(&format!(" page_size={p}"));
        }
        if let Some(p) = self.page_count {
            s.push_str(&format!(" page_count={p}"));
        }
        if let Some(h) = &self.host {
            s.push_str(&format!(" host={}", sanitize_token(h)));
        }
        if let Some(v) = &self.version {
            s.push_str(&format!(" version={}", sanitize_token(v)));
        }
        s
    }

    /// Reads a trailer comment; unknown fields are ignored so later versions can add some.
    pub fn parse(comment: &str) -> Option<ImageMeta> {
        let rest = comment.strip_prefix(META_PREFIX)?;
        let mut meta = ImageMeta::default();
        let (mut size, mut sha) = (None, None);
        for field in rest.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            match k {
                "size" => size = v.parse().ok(),
                "sha256" if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    sha = Some(v.to_ascii_lowercase())
                }
                "page_size" => meta.page_size = v.parse().ok(),
                "page_count" => meta.page_count = v.parse().ok(),
                "host" => meta.host = Some(v.to_string()),
                "version" => meta.version = Some(v.to_string()),
                _ => {}
            }
        }
        meta.size = size?;
        meta.sha256 = sha?;
        Some(meta)
    }
}

fn sanitize_token(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

/// Totals of one compression run.
#[derive(Debug, Clone)]
pub struct CompressStats {
    /// Uncompressed bytes read.
    pub input_bytes: u64,
    /// Compressed bytes written.
    pub output_bytes: u64,
    /// Lowercase hex sha256 of the input.
    pub sha256: String,
}

/// Compresses `input` into `output` as parallel gzip members, ending with a trailer built
/// by `trailer` from the input's size and sha256. Memory stays at about
/// `2 × jobs × chunk_size` whatever the input size.
pub fn compress(
    mut input: impl Read,
    output: impl Write,
    opts: &CompressOptions,
    trailer: impl FnOnce(u64, &str) -> ImageMeta,
    progress: &dyn Fn(u64),
) -> io::Result<CompressStats> {
    let mut out = CountingWriter {
        inner: output,
        count: 0,
    };
    let jobs = opts.jobs.max(1);
    let chunk_size = opts.chunk_size.clamp(1, MAX_MEMBER);
    let level = CompressionLvl::new(opts.level.min(9) as i32)
        .map_err(|e| io::Error::other(format!("bad compression level: {e:?}")))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;

    thread::scope(|scope| -> io::Result<()> {
        let mut to_workers: Vec<SyncSender<(Vec<u8>, Option<String>)>> = Vec::new();
        let mut from_workers: Vec<Receiver<io::Result<Vec<u8>>>> = Vec::new();
        for _ in 0..jobs {
            let (tx, rx) = sync_channel::<(Vec<u8>, Option<String>)>(1);
            let (rtx, rrx) = sync_channel::<io::Result<Vec<u8>>>(1);
            scope.spawn(move || {
                let mut compressor = Compressor::new(level);
                for (chunk, comment) in rx {
                    let member = gzip_member(&mut compressor, &chunk, comment.as_deref());
                    if rtx.send(member).is_err() {
                        break;
                    }
                }
            });
            to_workers.push(tx);
            from_workers.push(rrx);
        }
        let worker_gone = || io::Error::other("a compression worker stopped unexpectedly");
        let (mut sent, mut written) = (0usize, 0usize);
        let mut eof = false;
        while !eof || written < sent {
            if !eof && sent - written < 2 * jobs {
                let chunk = read_chunk(&mut input, chunk_size)?;
                eof = chunk.len() < chunk_size;
                if chunk.is_empty() && sent > 0 {
                    continue;
                }
                hasher.update(&chunk);
                total += chunk.len() as u64;
                let comment = (sent == 0)
                    .then(|| format!("{FIRST_COMMENT_PREFIX}{}", env!("CARGO_PKG_VERSION")));
                to_workers[sent % jobs]
                    .send((chunk, comment))
                    .map_err(|_| worker_gone())?;
                sent += 1;
                continue;
            }
            let member = from_workers[written % jobs]
                .recv()
                .map_err(|_| worker_gone())??;
            out.write_all(&member)?;
            written += 1;
            progress(total.min((written * chunk_size) as u64));
        }
        Ok(())
    })?;

    let sha256 = hex(&hasher.finalize());
    let meta = trailer(total, &sha256);
    let mut compressor = Compressor::new(level);
    out.write_all(&gzip_member(
        &mut compressor,
        &[],
        Some(&meta.to_comment()),
    )?)?;
    out.flush()?;
    Ok(CompressStats {
        input_bytes: total,
        output_bytes: out.count,
        sha256,
    })
}

/// One complete gzip member: our header (deflate length, optional comment), the deflate
/// data, CRC-32 and length.
fn gzip_member(
    compressor: &mut Compressor,
    data: &[u8],
    comment: Option<&str>,
) -> io::Result<Vec<u8>> {
    let mut member = member_header(0, comment);
    let start = member.len();
    let bound = compressor.deflate_compress_bound(data.len());
    member.resize(start + bound, 0);
    let n = compressor
        .deflate_compress(data, &mut member[start..])
        .map_err(|e| io::Error::other(format!("deflate failed: {e}")))?;
    member.truncate(start + n);
    let len = u32::try_from(n).map_err(|_| io::Error::other("a member is too large"))?;
    member[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
    member.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
    member.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(member)
}

/// A gzip member header (RFC 1952) with an FEXTRA subfield holding the deflate length,
/// and the comment, if any, as FCOMMENT.
fn member_header(deflate_len: u32, comment: Option<&str>) -> Vec<u8> {
    let mut flags = FEXTRA;
    if comment.is_some() {
        flags |= FCOMMENT;
    }
    // magic, deflate, flags, no mtime, no extra flags, OS = Unix
    let mut h = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
    h.extend_from_slice(&8u16.to_le_bytes());
    h.extend_from_slice(&LEN_SUBFIELD);
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&deflate_len.to_le_bytes());
    if let Some(c) = comment {
        h.extend(c.bytes().filter(|&b| b != 0));
        h.push(0);
    }
    h
}

fn read_chunk(input: &mut impl Read, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    input.take(size as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a compressed snapshot could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Zero bytes: an upload that never got data, or a truncated copy.
    #[error("the snapshot is empty (0 bytes)")]
    Empty,
    /// gzip's own checks failed: bad header, corrupt deflate data or a CRC mismatch.
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(String),
    /// The file ends inside a member, or before the trailer a sqlbak file must have.
    #[error("the snapshot is truncated: {0}")]
    Truncated(String),
    /// The image decompressed cleanly but is not the image that was stored.
    #[error("the snapshot's checksum does not match: {0}")]
    Mismatch(String),
    /// Writing the restored image failed (for example a full disk).
    #[error("cannot write the restored image")]
    Write(#[source] io::Error),
    /// The source failed to deliver bytes (an I/O error, a connection that could not be
    /// resumed): this says nothing about the snapshot itself, and a retry may succeed.
    #[error("cannot read the snapshot from storage")]
    Read(#[source] io::Error),
}

/// What reading a snapshot found.
#[derive(Debug, Clone)]
pub struct DecodeReport {
    /// Decompressed bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the decompressed bytes.
    pub sha256: String,
    /// The trailer, when the file was written by sqlbak.
    pub meta: Option<ImageMeta>,
}

/// Decompresses every gzip member of `input` into `output`, checking gzip CRCs and, for
/// files written by sqlbak, the trailer's size and sha256. Members that record their
/// length are inflated on `jobs` threads; memory stays at about `4 × jobs` members.
/// `progress` gets compressed bytes consumed so far.
pub fn decompress(
    input: impl Read,
    output: impl Write,
    jobs: usize,
    progress: &dyn Fn(u64),
) -> Result<DecodeReport, CodecError> {
    let counted = CountingReader {
        inner: input,
        count: 0,
    };
    let mut reader = BufReader::with_capacity(256 * 1024, counted);
    let jobs = jobs.max(1);
    let mut sink = Sink {
        output,
        hasher: Sha256::new(),
        size: 0,
    };
    let mut members = 0u64;
    let mut ours = false;
    let mut meta: Option<ImageMeta> = None;

    thread::scope(|scope| -> Result<(), CodecError> {
        let mut to_workers: Vec<SyncSender<Vec<u8>>> = Vec::new();
        let mut from_workers: Vec<Receiver<Result<Vec<u8>, CodecError>>> = Vec::new();
        for _ in 0..jobs {
            let (tx, rx) = sync_channel::<Vec<u8>>(2);
            let (rtx, rrx) = sync_channel::<Result<Vec<u8>, CodecError>>(2);
            scope.spawn(move || {
                let mut decompressor = Decompressor::new();
                for payload in rx {
                    if rtx
                        .send(inflate_member(&mut decompressor, &payload))
                        .is_err()
                    {
                        break;
                    }
                }
            });
            to_workers.push(tx);
            from_workers.push(rrx);
        }
        let worker_gone = || CodecError::Corrupt("a decompression worker stopped".into());
        // Which worker holds each member in flight, oldest first.
        let mut in_flight: VecDeque<usize> = VecDeque::new();
        let mut next_worker = 0usize;
        let drain_one =
            |in_flight: &mut VecDeque<usize>, sink: &mut Sink<_>| match in_flight.pop_front() {
                Some(w) => sink.write(&from_workers[w].recv().map_err(|_| worker_gone())??),
                None => Ok(()),
            };
        let mut decompressor = Decompressor::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if in_flight.len() >= 2 * jobs {
                drain_one(&mut in_flight, &mut sink)?;
                continue;
            }
            let Some(header) = read_member_header(&mut reader)? else {
                break;
            };
            if meta.is_some() {
                return Err(CodecError::Corrupt(
                    "data follows the sqlbak trailer".into(),
                ));
            }
            let payload = match header.deflate_len {
                Some(len) => Some(read_payload(&mut reader, len)?),
                None => None,
            };
            match (payload, &header.comment) {
                // A plain data member: inflate it on a worker.
                (Some(payload), None) if members > 0 => {
                    to_workers[next_worker]
                        .send(payload)
                        .map_err(|_| worker_gone())?;
                    in_flight.push_back(next_worker);
                    next_worker = (next_worker + 1) % jobs;
                }
                (payload, comment) => {
                    while !in_flight.is_empty() {
                        drain_one(&mut in_flight, &mut sink)?;
                    }
                    let before = sink.size;
                    match payload {
                        Some(p) => sink.write(&inflate_member(&mut decompressor, &p)?)?,
                        None => inflate_stream(&mut reader, &mut buf, &mut sink)?,
                    }
                    let member_bytes = sink.size - before;
                    let comment = comment
                        .as_deref()
                        .map(|c| String::from_utf8_lossy(c).into_owned());
                    match comment.as_deref() {
                        Some(c) if c.starts_with(META_PREFIX) => {
                            let parsed = ImageMeta::parse(c).ok_or_else(|| {
                                CodecError::Corrupt(format!("unreadable trailer {c:?}"))
                            })?;
                            if member_bytes != 0 {
                                return Err(CodecError::Corrupt(
                                    "the trailer member holds data".into(),
                                ));
                            }
                            meta = Some(parsed);
                        }
                        Some(c) if members == 0 && c.starts_with(FIRST_COMMENT_PREFIX) => {
                            ours = true
                        }
                        _ => {}
                    }
                }
            }
            members += 1;
            progress(reader.get_ref().count);
        }
        while !in_flight.is_empty() {
            drain_one(&mut in_flight, &mut sink)?;
        }
        Ok(())
    })?;

    if members == 0 {
        return Err(CodecError::Empty);
    }
    sink.output.flush().map_err(CodecError::Write)?;
    let size = sink.size;
    let sha256 = hex(&sink.hasher.finalize());
    match &meta {
        Some(m) if m.size != size => {
            return Err(CodecError::Mismatch(format!(
                "trailer records {} bytes, got {size}",
                m.size
            )));
        }
        Some(m) if m.sha256 != sha256 => {
            return Err(CodecError::Mismatch(format!(
                "trailer records sha256 {}, got {sha256}",
                m.sha256
            )));
        }
        None if ours => {
            return Err(CodecError::Truncated(
                "it ends before the sqlbak trailer".into(),
            ));
        }
        _ => {}
    }
    Ok(DecodeReport { size, sha256, meta })
}

/// Where decompressed bytes go, in order: hashed, counted and written.
struct Sink<W> {
    output: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Sink<W> {
    fn write(&mut self, data: &[u8]) -> Result<(), CodecError> {
        self.hasher.update(data);
        self.output.write_all(data).map_err(CodecError::Write)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// The parts of a gzip member header that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
struct MemberHeader {
    /// FCOMMENT, without its terminating zero.
    comment: Option<Vec<u8>>,
    /// The length of the deflate data that follows, when the writer recorded it.
    deflate_len: Option<u32>,
}

/// Reads one gzip member header; `None` at the end of the input.
fn read_member_header(r: &mut impl BufRead) -> Result<Option<MemberHeader>, CodecError> {
    if r.fill_buf().map_err(read_error)?.is_empty() {
        return Ok(None);
    }
    let mut fixed = [0u8; 10];
    r.read_exact(&mut fixed).map_err(read_error)?;
    if fixed[..2] != [0x1f, 0x8b] {
        return Err(CodecError::Corrupt(
            "not gzip data (bad magic number)".into(),
        ));
    }
    if fixed[2] != 8 {
        return Err(CodecError::Corrupt(format!(
            "unknown gzip compression method {}",
            fixed[2]
        )));
    }
    let flags = fixed[3];
    if flags & 0xe0 != 0 {
        return Err(CodecError::Corrupt("reserved gzip header flags set".into()));
    }
    let mut header = MemberHeader::default();
    if flags & FEXTRA != 0 {
        let mut xlen = [0u8; 2];
        r.read_exact(&mut xlen).map_err(read_error)?;
        let mut extra = vec![0u8; usize::from(u16::from_le_bytes(xlen))];
        r.read_exact(&mut extra).map_err(read_error)?;
        header.deflate_len = deflate_len_subfield(&extra);
    }
    if flags & FNAME != 0 {
        read_zero_terminated(r)?;
    }
    if flags & FCOMMENT != 0 {
        header.comment = Some(read_zero_terminated(r)?);
    }
    if flags & FHCRC != 0 {
        r.read_exact(&mut [0u8; 2]).map_err(read_error)?;
    }
    Ok(Some(header))
}

/// Finds our deflate-length subfield among FEXTRA subfields.
fn deflate_len_subfield(mut extra: &[u8]) -> Option<u32> {
    while extra.len() >= 4 {
        let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let body = extra.get(4..4 + len)?;
        if extra[..2] == LEN_SUBFIELD && len == 4 {
            return Some(u32::from_le_bytes([body[0], body[1], body[2], body[3]]));
        }
        extra = &extra[4 + len..];
    }
    None
}

fn read_zero_terminated(r: &mut impl BufRead) -> Result<Vec<u8>, CodecError> {
    let mut field = Vec::new();
    r.take(MAX_HEADER_FIELD as u64 + 1)
        .read_until(0, &mut field)
        .map_err(read_error)?;
    match field.pop() {
        Some(0) => Ok(field),
        _ if field.len() >= MAX_HEADER_FIELD => Err(CodecError::Corrupt(
            "a gzip header field is implausibly long".into(),
        )),
        _ => Err(CodecError::Truncated("it ends inside a gzip header".into())),
    }
}

/// Reads a member's deflate data and its 8-byte trailer.
fn read_payload(r: &mut impl Read, deflate_len: u32) -> Result<Vec<u8>, CodecError> {
    let len = deflate_len as usize;
    if len > MAX_MEMBER {
        return Err(CodecError::Corrupt(format!(
            "a member records {len} bytes of deflate data, more than any sqlbak writes"
        )));
    }
    let mut payload = vec![0u8; len + 8];
    r.read_exact(&mut payload).map_err(read_error)?;
    Ok(payload)
}

/// Inflates a whole member body (deflate data, CRC-32, length) and checks both.
fn inflate_member(decompressor: &mut Decompressor, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (deflate, trailer) = payload.split_at(payload.len().saturating_sub(8));
    let [c0, c1, c2, c3, l0, l1, l2, l3] = trailer else {
        return Err(CodecError::Truncated("a member has no trailer".into()));
    };
    let crc = u32::from_le_bytes([*c0, *c1, *c2, *c3]);
    let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
    if len > MAX_MEMBER {
        return Err(CodecError::Corrupt(format!(
            "a member records {len} uncompressed bytes, more than any sqlbak writes"
        )));
    }
    let mut data = vec![0u8; len];
    let n = decompressor
        .deflate_decompress(deflate, &mut data)
        .map_err(|e| CodecError::Corrupt(format!("invalid deflate data: {e}")))?;
    if n != len {
        return Err(CodecError::Corrupt(format!(
            "a member holds {n} bytes but its trailer says {len}"
        )));
    }
    if libdeflater::crc32(&data) != crc {
        return Err(CodecError::Corrupt("CRC-32 mismatch in a member".into()));
    }
    Ok(data)
}

/// Inflates a member of unknown length as a stream, then checks its CRC-32 and length.
fn inflate_stream<R: BufRead, W: Write>(
    reader: &mut R,
    buf: &mut [u8],
    sink: &mut Sink<W>,
) -> Result<(), CodecError> {
    let mut crc = libdeflater::Crc::new();
    let mut len = 0u64;
    {
        let mut inflater = flate2::bufread::DeflateDecoder::new(&mut *reader);
        loop {
            let n = inflater.read(buf).map_err(read_error)?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            sink.write(&buf[..n])?;
            len += n as u64;
        }
    }
    let mut trailer = [0u8; 8];
    reader.read_exact(&mut trailer).map_err(read_error)?;
    if u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) != crc.sum() {
        return Err(CodecError::Corrupt("CRC-32 mismatch in a member".into()));
    }
    if u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]) != len as u32 {
        return Err(CodecError::Corrupt("length mismatch in a member".into()));
    }
    Ok(())
}

/// Sorts out a failed read of the compressed stream. The inflater and the age layer
/// report bad data as `UnexpectedEof` (it ends early) or `InvalidData`/`InvalidInput` (it
/// is not what it claims to be); any other error is the source failing to deliver bytes.
fn read_error(e: io::Error) -> CodecError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => CodecError::Truncated(e.to_string()),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            CodecError::Corrupt(e.to_string())
        }
        _ => CodecError::Read(e),
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use flate2::{Compression, GzBuilder};

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial.
        (0..len)
            .map(|i| ((i * 7919) % 251) as u8 ^ ((i / 1000) as u8))
            .collect()
    }

    fn opts(jobs: usize, chunk: usize) -> CompressOptions {
        CompressOptions {
            level: 6,
            jobs,
            chunk_size: chunk,
        }
    }

    fn compress_vec(data: &[u8], o: &CompressOptions) -> (Vec<u8>, CompressStats) {
        let mut out = Vec::new();
        let stats = compress(
            data,
            &mut out,
            o,
            |size, sha| ImageMeta {
                size,
                sha256: sha.to_string(),
                page_size: Some(4096),
                page_count: Some(3),
                host: Some("h o\tst".into()),
                version: Some("1.0".into()),
            },
            &|_| {},
        )
        .unwrap();
        (out, stats)
    }

    #[test]
    fn round_trip_many_members_and_plain_gunzip_agrees() {
        for (len, jobs, chunk) in [
            (0, 1, 16),
            (1, 2, 16),
            (1000, 3, 64),
            (100_000, 2, 4096),
            (65, 4, 64),
        ] {
            let data = sample(len);
            let (gz, stats) = compress_vec(&data, &opts(jobs, chunk));
            assert_eq!(stats.input_bytes, len as u64);
            assert_eq!(stats.output_bytes, gz.len() as u64);
            let mut plain = Vec::new();
            MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, data);
            let mut ours = Vec::new();
            let report = decompress(&gz[..], &mut ours, 2, &|_| {}).unwrap();
            assert_eq!(ours, data);
            let meta = report.meta.unwrap();
            assert_eq!(meta.size, len as u64);
            assert_eq!(meta.sha256, report.sha256);
            assert_eq!(meta.sha256, stats.sha256);
            assert_eq!(meta.host.as_deref(), Some("h_o_st"));
        }
    }

    #[test]
    fn truncation_anywhere_is_detected() {
        let data = sample(10_000);
        let (gz, _) = compress_vec(&data, &opts(2, 1000));
        for cut in [0, 1, 10, gz.len() / 2, gz.len() - 30, gz.len() - 1] {
            let err = decompress(&gz[..cut], io::sink(), 2, &|_| {}).unwrap_err();
            assert!(
                matches!(
                    err,
                    CodecError::Truncated(_) | CodecError::Empty | CodecError::Corrupt(_)
                ),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn truncation_at_a_member_boundary_is_detected() {
        let data = sample(10_000);
        let one_member = {
            let mut v = Vec::new();
            let mut e = GzBuilder::new()
                .comment(format!("{FIRST_COMMENT_PREFIX}x"))
                .write(&mut v, Compression::default());
            e.write_all(&data).unwrap();
            e.finish().unwrap();
            v
        };
        let err = decompress(&one_member[..], io::sink(), 2, &|_| {}).unwrap_err();
        assert!(matches!(err, CodecError::Truncated(_)), "{err}");
    }

    #[test]
    fn flipped_byte_is_detected() {
        let data = sample(50_000);
        let (gz, _) = compress_vec(&data, &opts(1, 100_000));
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(decompress(&bad[..], io::sink(), 2, &|_| {}).is_err());
    }

    #[test]
    fn wrong_trailer_checksum_is_a_mismatch() {
        let data = sample(5000);
        let mut gz = Vec::new();
        compress(
            &data[..],
            &mut gz,
            &opts(1, 1 << 20),
            |size, _| ImageMeta {
                size,
                sha256: "0".repeat(64),
                ..ImageMeta::default()
            },
            &|_| {},
        )
        .unwrap();
        let err = decompress(&gz[..], io::sink(), 2, &|_| {}).unwrap_err();
        assert!(matches!(err, CodecError::Mismatch(_)), "{err}");
    }

    /// Delivers `data` until `fail_at` bytes have been read, then fails like a disk or a
    /// connection would.
    struct FailingSource<'a> {
        data: &'a [u8],
        fail_at: usize,
        kind: io::ErrorKind,
    }

    impl Read for FailingSource<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at == 0 {
                return Err(io::Error::new(self.kind, "the source failed"));
            }
            let n = buf.len().min(self.fail_at).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.fail_at -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_failing_source_is_a_read_error_not_corruption() {
        let data = sample(50_000);
        let (ours, _) = compress_vec(&data, &opts(2, 4000));
        let mut plain = Vec::new();
        let mut e = flate2::write::GzEncoder::new(&mut plain, Compression::fast());
        e.write_all(&data).unwrap();
        e.finish().unwrap();
        // Parallel members with recorded lengths, and a plain gzip stream.
        for gz in [&ours, &plain] {
            for fail_at in [0, 5, 20, gz.len() / 2, gz.len() - 4] {
                for kind in [
                    io::ErrorKind::Other,
                    io::ErrorKind::IsADirectory,
                    io::ErrorKind::ConnectionReset,
                ] {
                    let source = FailingSource {
                        data: gz,
                        fail_at,
                        kind,
                    };
                    let err = decompress(source, io::sink(), 2, &|_| {}).unwrap_err();
                    assert!(
                        matches!(&err, CodecError::Read(e) if e.kind() == kind),
                        "fail at {fail_at} with {kind:?}: {err:?}"
                    );
                    assert_eq!(err.to_string(), "cannot read the snapshot from storage");
                }
            }
        }
    }

    #[test]
    fn plain_gzip_without_trailer_is_accepted() {
        let data = sample(3000);
        let mut gz = Vec::new();
        let mut e = flate2::write::GzEncoder::new(&mut gz, Compression::fast());
        e.write_all(&data).unwrap();
        e.finish().unwrap();
        let mut out = Vec::new();
        let report = decompress(&gz[..], &mut out, 2, &|_| {}).unwrap();
        assert_eq!(out, data);
        assert!(report.meta.is_none());
    }

    #[test]
    fn garbage_and_empty_inputs() {
        assert!(matches!(
            decompress(&b""[..], io::sink(), 2, &|_| {}),
            Err(CodecError::Empty)
        ));
        assert!(matches!(
            decompress(&b"SQLite format 3\0 not gzip"[..], io::sink(), 2, &|_| {}),
            Err(CodecError::Corrupt(_) | CodecError::Truncated(_))
        ));
    }

    #[test]
    fn members_record_their_deflate_length() {
        let data = sample(5000);
        let (gz, _) = compress_vec(&data, &opts(2, 1000));
        let mut r = &gz[..];
        let mut members = 0;
        while let Some(h) = read_member_header(&mut r).unwrap() {
            let len = h.deflate_len.expect("every member records its length") as usize;
            r = &r[len + 8..];
            members += 1;
        }
        assert_eq!(members, 6, "five data members and the trailer");
    }

    #[test]
    fn header_fields_of_other_writers_are_parsed() {
        let mut gz = Vec::new();
        let mut e = GzBuilder::new()
            .filename("app.db")
            .comment("hello")
            .extra(vec![b'A', b'P', 2, 0, 9, 9])
            .write(&mut gz, Compression::fast());
        e.write_all(b"payload").unwrap();
        e.finish().unwrap();
        let h = read_member_header(&mut &gz[..]).unwrap().unwrap();
        assert_eq!(h.comment.as_deref(), Some(&b"hello"[..]));
        assert_eq!(h.deflate_len, None);

        assert_eq!(
            deflate_len_subfield(&[b'A', b'P', 1, 0, 7, b'S', b'B', 4, 0, 5, 0, 0, 0]),
            Some(5)
        );
        assert_eq!(deflate_len_subfield(&[b'S', b'B', 4, 0, 5, 0]), None);
        assert_eq!(deflate_len_subfield(&[b'S', b'B', 2, 0, 5, 0]), None);
        assert_eq!(deflate_len_subfield(&[]), None);

        let ours = member_header(1234, Some("sqlbak 1.0"));
        let h = read_member_header(&mut &ours[..]).unwrap().unwrap();
        assert_eq!(h.deflate_len, Some(1234));
        assert_eq!(h.comment.as_deref(), Some(&b"sqlbak 1.0"[..]));
    }

    #[test]
    fn concatenated_plain_gzip_members_are_streamed() {
        let data = sample(20_000);
        let mut gz = Vec::new();
        for part in data.chunks(7000) {
            let mut e = flate2::write::GzEncoder::new(&mut gz, Compression::default());
            e.write_all(part).unwrap();
            e.finish().unwrap();
        }
        let mut out = Vec::new();
        let report = decompress(&gz[..], &mut out, 2, &|_| {}).unwrap();
        assert_eq!(out, data);
        assert_eq!(report.size, 20_000);
    }

    #[test]
    fn a_wrong_recorded_length_is_corruption() {
        let data = sample(10_000);
        let (gz, _) = compress_vec(&data, &opts(2, 1000));
        // The second member's header starts right after the first member.
        let first = read_member_header(&mut &gz[..]).unwrap().unwrap();
        let first_len = member_header(
            0,
            Some(&format!(
                "{FIRST_COMMENT_PREFIX}{}",
                env!("CARGO_PKG_VERSION")
            )),
        )
        .len()
            + first.deflate_len.unwrap() as usize
            + 8;
        for delta in [-3i64, -1, 1, 2, 1 << 30] {
            let mut bad = gz.clone();
            let at = first_len + LEN_OFFSET;
            let len = u32::from_le_bytes(bad[at..at + 4].try_into().unwrap());
            let wrong = (i64::from(len) + delta) as u32;
            bad[at..at + 4].copy_from_slice(&wrong.to_le_bytes());
            let err = decompress(&bad[..], io::sink(), 2, &|_| {}).unwrap_err();
            assert!(
                matches!(err, CodecError::Corrupt(_) | CodecError::Truncated(_)),
                "delta {delta}: {err}"
            );
        }
    }

    #[test]
    fn level_zero_stores() {
        let data = sample(3000);
        let (gz, _) = compress_vec(
            &data,
            &CompressOptions {
                level: 0,
                jobs: 1,
                chunk_size: 1000,
            },
        );
        assert!(gz.len() > data.len());
        let mut out = Vec::new();
        decompress(&gz[..], &mut out, 1, &|_| {}).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn meta_comment_round_trip() {
        let m = ImageMeta {
            size: 42,
            sha256: "ab".repeat(32),
            page_size: Some(4096),
            page_count: Some(10),
            host: Some("db1".into()),
            version: Some("0.1.0".into()),
        };
        assert_eq!(ImageMeta::parse(&m.to_comment()), Some(m));
        assert_eq!(ImageMeta::parse("sqlbak-meta v1 size=1"), None);
        assert_eq!(ImageMeta::parse("other"), None);
    }
}
