//! The lines of one input, parsed on every core and handed back in their
//! order: a reader thread cuts the input into chunks of whole lines (each
//! line at most [`MAX_LINE`] bytes; a longer one is skipped without being
//! kept), parser threads turn chunks into parsed lines, and the caller's
//! thread folds them in order. At most [`IN_FLIGHT`] chunks exist at once,
//! so memory stays bounded whatever the input.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, Read},
    ops::Range,
    sync::{mpsc, Arc, Mutex},
};

use super::read::MAX_LINE;

/// Bytes of lines per chunk.
const CHUNK: usize = 1 << 20;
/// Chunks read but not yet folded, at most.
const IN_FLIGHT: usize = 8;

/// One line of a chunk.
enum Piece {
    /// Its bytes in the chunk (without the line end).
    Line(Range<usize>),
    /// A line longer than [`MAX_LINE`], skipped.
    TooLong,
}

/// Whole lines, numbered from `first`.
struct Chunk {
    first: usize,
    data: Vec<u8>,
    pieces: Vec<Piece>,
}

/// Reads the next chunk from `reader`; `None` at the end. `lineno` is the
/// number of the last line read so far.
fn next_chunk(reader: &mut impl BufRead, lineno: &mut usize) -> io::Result<Option<Chunk>> {
    let mut c = Chunk {
        first: *lineno + 1,
        data: Vec::with_capacity(CHUNK + CHUNK / 8),
        pieces: Vec::new(),
    };
    while c.data.len() < CHUNK {
        let start = c.data.len();
        let n = (&mut *reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut c.data)?;
        if n == 0 {
            break;
        }
        *lineno += 1;
        if n > MAX_LINE {
            // The rest of the line, without keeping it.
            c.data.truncate(start);
            let mut rest = Vec::new();
            while rest.last() != Some(&b'\n') {
                rest.clear();
                if (&mut *reader).take(1 << 16).read_until(b'\n', &mut rest)? == 0 {
                    break;
                }
            }
            c.pieces.push(Piece::TooLong);
            continue;
        }
        let mut end = c.data.len();
        if c.data[..end].ends_with(b"\n") {
            end -= 1;
        }
        if c.data[start..end].ends_with(b"\r") {
            end -= 1;
        }
        c.pieces.push(Piece::Line(start..end));
    }
    Ok((!c.pieces.is_empty()).then_some(c))
}

/// Parses every line of `reader` with `parse` (on as many threads as
/// there are cores) and hands `fold` each line's number and result, in
/// order.
///
/// # Errors
/// Reading fails; the lines before the failure have been folded.
pub(super) fn for_each_line<T: Send>(
    reader: impl BufRead + Send,
    parse: impl Fn(&[u8]) -> Result<T, String> + Sync,
    mut fold: impl FnMut(usize, Result<T, String>),
) -> io::Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|scope| {
        let (to_parse, parse_rx) = mpsc::sync_channel::<(u64, Chunk)>(IN_FLIGHT);
        let parse_rx = Arc::new(Mutex::new(parse_rx));
        let (to_fold, fold_rx) = mpsc::channel::<(u64, Vec<(usize, Result<T, String>)>)>();
        // One ticket per chunk in flight: taken by the reader, given back
        // once the chunk is folded.
        let (give_ticket, take_ticket) = mpsc::sync_channel::<()>(IN_FLIGHT);
        for _ in 0..IN_FLIGHT {
            give_ticket.send(()).expect("room for every ticket");
        }
        let parse = &parse;
        for _ in 0..workers {
            let (rx, tx) = (parse_rx.clone(), to_fold.clone());
            scope.spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((seq, c)) = job else { break };
                let lines = c
                    .pieces
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let r = match p {
                            Piece::Line(range) => parse(&c.data[range.clone()]),
                            Piece::TooLong => Err(format!("longer than {MAX_LINE} bytes")),
                        };
                        (c.first + i, r)
                    })
                    .collect();
                if tx.send((seq, lines)).is_err() {
                    break;
                }
            });
        }
        drop(to_fold);
        let reading = scope.spawn(move || -> io::Result<()> {
            let mut reader = reader;
            let (mut lineno, mut seq) = (0usize, 0u64);
            while let Some(c) = next_chunk(&mut reader, &mut lineno)? {
                if take_ticket.recv().is_err() || to_parse.send((seq, c)).is_err() {
                    break;
                }
                seq += 1;
            }
            Ok(())
        });
        let mut next = 0u64;
        let mut held = BTreeMap::new();
        for (seq, lines) in fold_rx {
            held.insert(seq, lines);
            while let Some(lines) = held.remove(&next) {
                for (n, r) in lines {
                    fold(n, r);
                }
                next += 1;
                let _ = give_ticket.send(());
            }
        }
        reading.join().expect("the reader thread")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines come back in order, numbered, across chunks and threads;
    /// long lines are skipped; CRLF ends are lines too.
    #[test]
    fn lines_in_order() {
        let mut text = Vec::new();
        for i in 0..200_000u32 {
            text.extend(format!("{i}\r\n").as_bytes());
        }
        text.extend(vec![b'x'; MAX_LINE + 1]);
        text.extend(b"\nlast");
        let mut seen = Vec::new();
        for_each_line(
            &text[..],
            |b| {
                std::str::from_utf8(b)
                    .map(str::to_owned)
                    .map_err(|e| e.to_string())
            },
            |n, r| seen.push((n, r)),
        )
        .unwrap();
        assert_eq!(seen.len(), 200_002);
        for (i, (n, r)) in seen.iter().take(200_000).enumerate() {
            assert_eq!((*n, r.as_deref()), (i + 1, Ok(i.to_string().as_str())));
        }
        assert_eq!(
            seen[200_000],
            (200_001, Err(format!("longer than {MAX_LINE} bytes")))
        );
        assert_eq!(seen[200_001], (200_002, Ok("last".to_string())));
    }
}
