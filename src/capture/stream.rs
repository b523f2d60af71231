//! Pages handed from the capture thread to the compressor without ever making the read
//! transaction wait for it.
//!
//! The capture thread pushes buffers of pages into a small in-memory queue. When the
//! compressor falls behind and the queue is full, the capture thread does not block (a read
//! transaction held open for as long as compression and upload take would stall the
//! database's checkpoints, and a replicator's forced checkpoint would then stall its
//! writers); it appends this buffer and every later one to a spill file in a private
//! temporary directory instead, and the compressor moves on to that file once the queue is
//! drained. The read transaction therefore lasts as long as reading the pages does, the
//! compressor starts at once, and temporary disk holds only what the compressor had not
//! reached when the transaction ended: nothing when it keeps up or the database fits the
//! queue, never more than one copy.

use super::CaptureError;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tempfile::TempDir;

/// State shared by both ends.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<SpillState>,
    /// The capture thread wrote more, or finished.
    grown: Condvar,
    /// The compressor read more of the spill file, or left.
    drained: Condvar,
}

#[derive(Debug, Default)]
struct SpillState {
    /// The spill file, once the queue overflowed, and the directory holding it (removed
    /// when both ends are gone).
    file: Option<(Arc<File>, Arc<TempDir>)>,
    /// Bytes written to the spill file so far.
    written: u64,
    /// Bytes of the spill file the compressor has read.
    consumed: u64,
    /// The capture thread will write nothing more.
    done: bool,
    /// The reading end is gone: stop reading pages.
    abandoned: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SpillState> {
        // A poisoned lock only means the other end panicked; the state is still coherent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates both ends: a queue of `queue` buffers, spilling into a new directory under
/// `tmp_dir`, with at most `limit` bytes there not yet read (`None`: no limit; `Some(0)`:
/// never spill, the capture waits for the compressor instead).
pub(super) fn channel(queue: usize, tmp_dir: &Path, limit: Option<u64>) -> (Pump, PageStream) {
    let (tx, rx) = mpsc::sync_channel(queue);
    let shared = Arc::new(Shared::default());
    (
        Pump {
            tx: Some(tx),
            shared: shared.clone(),
            tmp_dir: tmp_dir.to_path_buf(),
            limit,
            spill: None,
        },
        PageStream {
            rx: Some(rx),
            buf: Vec::new(),
            pos: 0,
            shared,
            spill_read: 0,
            worker: None,
        },
    )
}

/// The capture thread's end.
#[derive(Debug)]
pub(super) struct Pump {
    tx: Option<SyncSender<Vec<u8>>>,
    shared: Arc<Shared>,
    tmp_dir: PathBuf,
    limit: Option<u64>,
    spill: Option<Arc<File>>,
}

impl Pump {
    /// Hands over one buffer, waiting for the reader only when the spill limit says so.
    /// `Ok(false)`: the reader is gone, stop reading.
    pub(super) fn push(&mut self, buf: Vec<u8>) -> Result<bool, CaptureError> {
        let buf = match &self.tx {
            // No temporary space at all: the queue, and waiting for the compressor.
            Some(tx) if self.limit == Some(0) => return Ok(tx.send(buf).is_ok()),
            Some(tx) => match tx.try_send(buf) {
                Ok(()) => return Ok(true),
                Err(TrySendError::Disconnected(_)) => return Ok(false),
                Err(TrySendError::Full(buf)) => {
                    self.start_spill()?;
                    buf
                }
            },
            None => buf,
        };
        if !self.wait_for_room(buf.len() as u64) {
            return Ok(false);
        }
        let file = self.spill.as_ref().ok_or_else(|| self.spill_error(None))?;
        (&**file)
            .write_all(&buf)
            .map_err(|e| self.spill_error(Some(e)))?;
        let mut state = self.shared.lock();
        state.written += buf.len() as u64;
        self.shared.grown.notify_all();
        Ok(true)
    }

    /// Waits until `len` more bytes keep the unread part of the spill file within the limit
    /// (or the file is all read: a buffer larger than the limit still goes through).
    /// `false`: the reader is gone.
    fn wait_for_room(&self, len: u64) -> bool {
        let mut state = self.shared.lock();
        if let Some(limit) = self.limit {
            while !state.abandoned
                && state.written > state.consumed
                && state.written - state.consumed + len > limit
            {
                state = self
                    .shared
                    .drained
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        !state.abandoned
    }

    /// Opens the spill file and closes the queue: the reader drains what is queued, then
    /// follows the file.
    fn start_spill(&mut self) -> Result<(), CaptureError> {
        let dir = super::capture_dir(
            &self.tmp_dir,
            " for the pages the compressor has not reached yet",
        )?;
        let path = dir.path().join("pages");
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| CaptureError::Io {
                context: format!("cannot create {}", path.display()),
                source: e,
            })?;
        tracing::debug!(
            "the compressor is behind the read transaction; pages go through {} from here on",
            path.display()
        );
        let file = Arc::new(file);
        self.spill = Some(file.clone());
        self.shared.lock().file = Some((file, Arc::new(dir)));
        // Order matters: the file is announced before the queue closes.
        self.tx = None;
        Ok(())
    }

    fn spill_error(&self, e: Option<io::Error>) -> CaptureError {
        let full = e
            .as_ref()
            .is_some_and(|e| e.kind() == io::ErrorKind::StorageFull);
        CaptureError::Io {
            context: if full {
                format!(
                    "the temporary directory {} is full; free space or set --tmp-dir",
                    self.tmp_dir.display()
                )
            } else {
                format!("cannot write pages to {}", self.tmp_dir.display())
            },
            source: e.unwrap_or_else(|| io::Error::other("no spill file")),
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.done = true;
        self.shared.grown.notify_all();
        if state.file.is_some() {
            tracing::debug!(
                "{} bytes of pages went through the temporary file",
                state.written
            );
        }
        drop(state);
        self.tx = None;
    }
}

/// The compressor's end: the queue, then the spill file, in page order.
#[derive(Debug)]
pub(super) struct PageStream {
    rx: Option<Receiver<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    shared: Arc<Shared>,
    spill_read: u64,
    worker: Option<JoinHandle<Result<(), CaptureError>>>,
}

impl PageStream {
    /// Attaches the capture thread, joined by [`PageStream::join`].
    pub(super) fn set_worker(&mut self, worker: JoinHandle<Result<(), CaptureError>>) {
        self.worker = Some(worker);
    }

    /// Stops reading (the capture thread sees it, ends its transaction and tidies up) and
    /// returns the capture thread's verdict.
    pub(super) fn join(&mut self) -> Result<(), CaptureError> {
        self.rx = None;
        self.shared.lock().abandoned = true;
        self.shared.drained.notify_all();
        match self.worker.take() {
            None => Ok(()),
            Some(worker) => worker.join().unwrap_or_else(|_| {
                Err(CaptureError::Io {
                    context: "the capture thread panicked".into(),
                    source: io::Error::other("panic"),
                })
            }),
        }
    }

    fn read_spill(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let file = {
            let mut state = self.shared.lock();
            while state.written <= self.spill_read && !state.done {
                state = self
                    .shared
                    .grown
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.written <= self.spill_read {
                return Ok(0);
            }
            let available = state.written - self.spill_read;
            let want = out
                .len()
                .min(usize::try_from(available).unwrap_or(usize::MAX));
            match &state.file {
                Some((file, _)) => (file.clone(), want),
                None => return Ok(0),
            }
        };
        let (file, want) = file;
        let n = file.read_at(&mut out[..want], self.spill_read)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spill file is shorter than what was written to it",
            ));
        }
        self.spill_read += n as u64;
        self.shared.lock().consumed = self.spill_read;
        self.shared.drained.notify_all();
        Ok(n)
    }
}

impl Read for PageStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.buf.len() {
            match self.rx.as_ref().map(Receiver::recv) {
                Some(Ok(next)) => {
                    self.buf = next;
                    self.pos = 0;
                }
                // The queue is closed: the capture ended, or it spills from here on.
                _ => {
                    self.rx = None;
                    return self.read_spill(out);
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for PageStream {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u8, len: usize) -> Vec<u8> {
        vec![i; len]
    }

    fn expected(n: u8, len: usize) -> Vec<u8> {
        (0..n).flat_map(|i| chunk(i, len)).collect()
    }

    #[test]
    fn a_reader_that_keeps_up_gets_everything_from_memory() {
        let tmp = TempDir::new().unwrap();
        let (mut pump, mut stream) = channel(64, tmp.path(), None);
        for i in 0..10 {
            assert!(pump.push(chunk(i, 1000)).unwrap());
        }
        drop(pump);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert_eq!(got, expected(10, 1000));
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "no spill"
        );
    }

    #[test]
    fn a_full_queue_spills_in_order_and_never_blocks_the_writer() {
        let tmp = TempDir::new().unwrap();
        let (mut pump, mut stream) = channel(2, tmp.path(), None);
        // Nobody reads yet: every push returns at once; all but two go to the file.
        for i in 0..50 {
            assert!(pump.push(chunk(i, 4096)).unwrap());
        }
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "one spill dir"
        );
        drop(pump);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert_eq!(got, expected(50, 4096));
        drop(stream);
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "the spill dir goes with both ends"
        );
    }

    #[test]
    fn the_reader_follows_a_spill_that_is_still_growing() {
        let tmp = TempDir::new().unwrap();
        let (mut pump, mut stream) = channel(1, tmp.path(), None);
        let writer = std::thread::spawn(move || {
            for i in 0..200 {
                assert!(pump.push(chunk(i, 3000)).unwrap());
                if i % 20 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 7777];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.join().unwrap();
        assert_eq!(got, expected(200, 3000));
    }

    #[test]
    fn a_reader_that_leaves_stops_the_writer() {
        let tmp = TempDir::new().unwrap();
        let (mut pump, stream) = channel(1, tmp.path(), None);
        assert!(pump.push(chunk(0, 10)).unwrap());
        assert!(pump.push(chunk(1, 10)).unwrap()); // spills
        drop(stream);
        assert!(!pump.push(chunk(2, 10)).unwrap());
        let (mut pump, stream) = channel(4, tmp.path(), None);
        drop(stream);
        assert!(!pump.push(chunk(0, 10)).unwrap());
    }

    /// Reads everything from `stream` on another thread after `delay`.
    fn read_later(
        mut stream: PageStream,
        delay: std::time::Duration,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            got
        })
    }

    #[test]
    fn a_limit_of_zero_waits_for_the_reader_and_never_spills() {
        let tmp = TempDir::new().unwrap();
        let (mut pump, stream) = channel(2, tmp.path(), Some(0));
        let reader = read_later(stream, std::time::Duration::from_millis(50));
        let started = std::time::Instant::now();
        for i in 0..20 {
            assert!(pump.push(chunk(i, 5000)).unwrap());
        }
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(40),
            "it waited"
        );
        drop(pump);
        assert_eq!(reader.join().unwrap(), expected(20, 5000));
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "no spill"
        );
    }

    #[test]
    fn a_limit_bounds_what_waits_in_the_spill_file() {
        let tmp = TempDir::new().unwrap();
        let (mut pump, stream) = channel(1, tmp.path(), Some(3000));
        let shared = pump.shared.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..10 {
                assert!(pump.push(chunk(i, 1000)).unwrap());
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Nobody reads: one buffer queued, three in the file, the writer waiting.
        assert_eq!(shared.lock().written, 3000);
        assert!(!writer.is_finished());
        let reader = read_later(stream, std::time::Duration::ZERO);
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), expected(10, 1000));
    }

    #[test]
    fn a_spill_that_cannot_be_created_is_an_error_naming_the_directory() {
        let tmp = TempDir::new().unwrap();
        let not_a_dir = tmp.path().join("file");
        std::fs::write(&not_a_dir, "").unwrap();
        let (mut pump, _stream) = channel(0, &not_a_dir, None);
        let err = pump.push(chunk(0, 10)).unwrap_err();
        assert!(err.to_string().contains("--tmp-dir"), "{err}");
    }
}
