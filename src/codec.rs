//! Streaming gzip, both directions.
//!
//! A snapshot is a standard multi-member gzip file: the image is cut into fixed-size
//! chunks, each compressed as its own member on a worker thread, and written in order.
//! Every gunzip (and `MultiGzDecoder`) reads it as one stream. Two members carry metadata
//! in their FCOMMENT header field, which gunzip ignores:
//! - the first member says `sqlbak <version>`, marking the file as ours;
//! - a final, empty member says `sqlbak-meta v1 size=… sha256=… …`.
//!
//! On the way back, a file marked as ours must end with that trailer, so a snapshot cut
//! off exactly at a member boundary is caught, and the image's size and sha256 are checked
//! against it. Files made by plain `gzip` have neither and are checked by gzip's own CRCs.

use flate2::{Compression, GzBuilder, bufread::GzDecoder};
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

/// Size of the independently compressed chunks; large enough that the per-member
/// overhead (about 18 bytes and one lost 32 KiB window) is noise.
pub const CHUNK_SIZE: usize = 1 << 20;
const FIRST_COMMENT_PREFIX: &str = "sqlbak ";
const META_PREFIX: &str = "sqlbak-meta v1";

/// How to compress.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// gzip level, 0–9.
    pub level: u32,
    /// Worker threads compressing chunks in parallel.
    pub jobs: usize,
    /// Bytes per gzip member.
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
    let chunk_size = opts.chunk_size.max(1);
    let level = Compression::new(opts.level.min(9));
    let mut hasher = Sha256::new();
    let mut total = 0u64;

    thread::scope(|scope| -> io::Result<()> {
        let mut to_workers: Vec<SyncSender<(Vec<u8>, Option<String>)>> = Vec::new();
        let mut from_workers: Vec<Receiver<io::Result<Vec<u8>>>> = Vec::new();
        for _ in 0..jobs {
            let (tx, rx) = sync_channel::<(Vec<u8>, Option<String>)>(1);
            let (rtx, rrx) = sync_channel::<io::Result<Vec<u8>>>(1);
            scope.spawn(move || {
                for (chunk, comment) in rx {
                    if rtx.send(gzip_member(&chunk, level, comment)).is_err() {
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
    out.write_all(&gzip_member(&[], level, Some(meta.to_comment()))?)?;
    out.flush()?;
    Ok(CompressStats {
        input_bytes: total,
        output_bytes: out.count,
        sha256,
    })
}

fn gzip_member(data: &[u8], level: Compression, comment: Option<String>) -> io::Result<Vec<u8>> {
    let mut builder = GzBuilder::new();
    if let Some(c) = comment {
        builder = builder.comment(c);
    }
    let mut enc = builder.write(Vec::with_capacity(data.len() / 2 + 64), level);
    enc.write_all(data)?;
    enc.finish()
}

fn read_chunk(input: &mut impl Read, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    input.take(size as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Lowercase hex sha256 of a file, read in large sequential blocks.
pub fn sha256_file(path: &std::path::Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
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
/// files written by sqlbak, the trailer's size and sha256. `progress` gets compressed
/// bytes consumed so far.
pub fn decompress(
    input: impl Read,
    mut output: impl Write,
    progress: &dyn Fn(u64),
) -> Result<DecodeReport, CodecError> {
    let counted = CountingReader {
        inner: input,
        count: 0,
    };
    let mut reader = BufReader::with_capacity(256 * 1024, counted);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut members = 0u64;
    let mut ours = false;
    let mut meta: Option<ImageMeta> = None;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if reader.fill_buf().map_err(read_error)?.is_empty() {
            break;
        }
        if meta.is_some() {
            return Err(CodecError::Corrupt(
                "data follows the sqlbak trailer".into(),
            ));
        }
        let mut dec = GzDecoder::new(&mut reader);
        let mut member_bytes = 0u64;
        loop {
            let n = dec.read(&mut buf).map_err(read_error)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n]).map_err(CodecError::Write)?;
            member_bytes += n as u64;
        }
        let comment = dec
            .header()
            .and_then(|h| h.comment())
            .map(|c| String::from_utf8_lossy(c).into_owned());
        match comment.as_deref() {
            Some(c) if c.starts_with(META_PREFIX) => {
                let parsed = ImageMeta::parse(c)
                    .ok_or_else(|| CodecError::Corrupt(format!("unreadable trailer {c:?}")))?;
                if member_bytes != 0 {
                    return Err(CodecError::Corrupt("the trailer member holds data".into()));
                }
                meta = Some(parsed);
            }
            Some(c) if members == 0 && c.starts_with(FIRST_COMMENT_PREFIX) => ours = true,
            _ => {}
        }
        size += member_bytes;
        members += 1;
        progress(reader.get_ref().count);
    }
    if members == 0 {
        return Err(CodecError::Empty);
    }
    output.flush().map_err(CodecError::Write)?;
    let sha256 = hex(&hasher.finalize());
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

fn read_error(e: io::Error) -> CodecError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => CodecError::Truncated(e.to_string()),
        _ => CodecError::Corrupt(e.to_string()),
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
            let report = decompress(&gz[..], &mut ours, &|_| {}).unwrap();
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
            let err = decompress(&gz[..cut], io::sink(), &|_| {}).unwrap_err();
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
        let err = decompress(&one_member[..], io::sink(), &|_| {}).unwrap_err();
        assert!(matches!(err, CodecError::Truncated(_)), "{err}");
    }

    #[test]
    fn flipped_byte_is_detected() {
        let data = sample(50_000);
        let (gz, _) = compress_vec(&data, &opts(1, 100_000));
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(decompress(&bad[..], io::sink(), &|_| {}).is_err());
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
        let err = decompress(&gz[..], io::sink(), &|_| {}).unwrap_err();
        assert!(matches!(err, CodecError::Mismatch(_)), "{err}");
    }

    #[test]
    fn plain_gzip_without_trailer_is_accepted() {
        let data = sample(3000);
        let mut gz = Vec::new();
        let mut e = flate2::write::GzEncoder::new(&mut gz, Compression::fast());
        e.write_all(&data).unwrap();
        e.finish().unwrap();
        let mut out = Vec::new();
        let report = decompress(&gz[..], &mut out, &|_| {}).unwrap();
        assert_eq!(out, data);
        assert!(report.meta.is_none());
    }

    #[test]
    fn garbage_and_empty_inputs() {
        assert!(matches!(
            decompress(&b""[..], io::sink(), &|_| {}),
            Err(CodecError::Empty)
        ));
        assert!(matches!(
            decompress(&b"SQLite format 3\0 not gzip"[..], io::sink(), &|_| {}),
            Err(CodecError::Corrupt(_) | CodecError::Truncated(_))
        ));
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
