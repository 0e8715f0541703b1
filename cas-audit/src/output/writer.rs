//! The writers behind `run`'s local sinks, each on the thread of its
//! [`Bounded`] queue: a stream (JSON lines to standard output or a file,
//! readable lines to standard output) and the log directory. A writer that
//! blocks (a reader that stopped reading, a hung disk) blocks its thread
//! only: the agent drops and counts what its queue cannot hold.

use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use super::{
    bounded::{Bounded, Deliver, SinkStats},
    logdir::LogDir,
};

/// A record's text, shared by the sinks that write it: a JSON line without
/// its newline, or readable text with its own.
pub type Line = Arc<[u8]>;

/// Weight of a queued [`Line`]: its bytes and the bookkeeping around them.
fn weigh(line: &Line) -> usize {
    line.len() + 32
}

/// Bytes written at once, at most (but a longer line goes alone): up to
/// `PIPE_BUF` (4096 on Linux), a write to a pipe is all or nothing, so the
/// count of lines written stays exact even when a stalled reader blocks
/// the write and the agent stops meanwhile.
const CHUNK: usize = 4096;

/// Writes lines to a stream, each followed by a newline if `newline`, in
/// chunks of whole lines, each flushed. The first error ends it (the error
/// is kept for the agent, [`Bounded::take_error`]; what is offered
/// afterwards is dropped).
pub struct Stream {
    out: Box<dyn Write + Send>,
    newline: bool,
    broken: bool,
    chunk: Vec<u8>,
}

impl Stream {
    /// Starts the thread of the sink `name` writing to `out`, with at most
    /// `limit` bytes waiting.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(
        name: &'static str,
        out: Box<dyn Write + Send>,
        newline: bool,
        limit: usize,
    ) -> io::Result<Bounded<Line>> {
        let s = Stream {
            out,
            newline,
            broken: false,
            chunk: Vec::with_capacity(CHUNK),
        };
        Bounded::spawn_weighed(name, limit, weigh, s)
    }

    /// Writes the chunk (`lines` whole lines) and counts them sent.
    fn put(&mut self, lines: &mut u64, stats: &SinkStats) -> io::Result<()> {
        if *lines == 0 {
            return Ok(());
        }
        self.out.write_all(&self.chunk)?;
        self.out.flush()?;
        stats.sent(std::mem::take(lines));
        self.chunk.clear();
        Ok(())
    }

    fn write(&mut self, batch: &[Line], stats: &SinkStats) -> io::Result<()> {
        let mut lines = 0;
        for line in batch {
            let len = line.len() + usize::from(self.newline);
            if self.chunk.len() + len > CHUNK {
                self.put(&mut lines, stats)?;
            }
            self.chunk.extend_from_slice(line);
            if self.newline {
                self.chunk.push(b'\n');
            }
            lines += 1;
        }
        self.put(&mut lines, stats)
    }
}

impl Deliver<Line> for Stream {
    /// Lines are sent chunk by chunk; on an error, those of the failed
    /// chunk and after are dropped (part of that chunk may have gone out
    /// where writes are not atomic: a file, or a pipe for a longer line).
    fn deliver(&mut self, batch: &[Line], stats: &SinkStats) {
        if self.broken {
            stats.dropped(batch.len() as u64);
            return;
        }
        let before = stats.counts().sent;
        if let Err(e) = self.write(batch, stats) {
            let sent = stats.counts().sent - before;
            self.broken = true;
            self.chunk.clear();
            stats.dropped(batch.len() as u64 - sent);
            stats.fail(e);
        }
    }
}

/// Hands lines to a [`LogDir`], which counts its own failures
/// ([`LogDir::records_lost`]): every line handed over counts as sent, and
/// the directory's count is published in `lost` after each batch.
pub struct LogWriter {
    log: LogDir,
    lost: Arc<AtomicU64>,
}

impl LogWriter {
    /// Starts the thread of the `log_dir` sink, with at most `limit` bytes
    /// waiting; `lost` follows [`LogDir::records_lost`].
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(log: LogDir, lost: Arc<AtomicU64>, limit: usize) -> io::Result<Bounded<Line>> {
        Bounded::spawn_weighed("log_dir", limit, weigh, LogWriter { log, lost })
    }
}

impl Deliver<Line> for LogWriter {
    fn deliver(&mut self, batch: &[Line], stats: &SinkStats) {
        for line in batch {
            self.log.write_record(line);
        }
        self.log.flush();
        self.lost.store(self.log.records_lost(), Ordering::Relaxed);
        stats.sent(batch.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::Mutex,
        time::{Duration, Instant},
    };

    /// A writer that takes `room` bytes, then fails with `kind`.
    struct Limited {
        got: Arc<Mutex<Vec<u8>>>,
        room: usize,
        kind: io::ErrorKind,
    }

    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut got = self.got.lock().unwrap();
            let n = buf.len().min(self.room - got.len());
            if n == 0 {
                return Err(self.kind.into());
            }
            got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Records the size of every write.
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Whole lines in writes of at most 4096 bytes (atomic on a pipe), but
    /// a longer line alone.
    #[test]
    fn a_stream_writes_whole_lines_in_pipe_sized_chunks() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let mut sink =
            Stream::spawn("json", Box::new(Writes(writes.clone())), true, 1 << 20).unwrap();
        for n in 0..20 {
            sink.offer(vec![b'a' + n; 999].into());
        }
        sink.offer(vec![b'z'; 5000].into());
        sink.offer(vec![b'y'; 10].into());
        let c = sink.close(Duration::from_secs(5));
        assert_eq!((c.sent, c.dropped), (22, 0));
        // How lines fall into batches depends on the worker's timing; the
        // writes never split a line, nor exceed 4096 bytes but for the
        // long line alone.
        let writes = writes.lock().unwrap();
        let sizes: Vec<usize> = writes.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 20 * 1000 + 5001 + 11);
        assert!(sizes.iter().all(|n| *n <= 4096 || *n == 5001), "{sizes:?}");
        assert!(sizes.contains(&5001), "{sizes:?}");
        assert!(writes.iter().all(|w| w.ends_with(b"\n")));
    }

    fn line(s: &str) -> Line {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn a_stream_writes_lines_then_keeps_its_first_error() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let out = Limited {
            got: got.clone(),
            room: 10,
            kind: io::ErrorKind::BrokenPipe,
        };
        let mut sink = Stream::spawn("json", Box::new(out), true, 1 << 20).unwrap();
        let soon = || Instant::now() + Duration::from_secs(5);
        sink.offer(line("{\"a\":1}"));
        assert!(sink.sync(soon()));
        assert_eq!(&*got.lock().unwrap(), b"{\"a\":1}\n");
        assert!(sink.take_error().is_none());
        // The next line does not fit: it is cut, counted dropped, and the
        // error (EPIPE: the reader left) is the agent's to see.
        sink.offer(line("{\"b\":2}"));
        assert!(sink.sync(soon()));
        let e = sink.take_error().expect("the write error");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        sink.offer(line("{\"c\":3}"));
        let c = sink.close(Duration::from_secs(5));
        assert_eq!((c.sent, c.dropped), (1, 2));
    }
}
