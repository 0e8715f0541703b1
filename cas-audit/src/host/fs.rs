//! Reading the files a user names (set files, published pages, saved
//! records): the one door every such input goes through, so that all of
//! them are read the same way and none can hang or exhaust the agent.
//!
//! - Only regular files are read (and standard input, named `-`, where a
//!   command allows it: [`open_input`]). A FIFO,
//!   a device (`/dev/zero`), a socket or a directory is refused before a
//!   byte is read: the file is opened with `O_NONBLOCK` (a FIFO without a
//!   writer would otherwise block `open(2)` for ever, see fifo(7)) and its
//!   type checked with `fstat(2)` on the open descriptor, so that what is
//!   checked is what is read.
//! - A file read whole ([`read_text`]) is bounded ([`MAX_TEXT`]): a larger
//!   one is refused from its size, before it is read, and a file that grows
//!   while it is read is cut at the bound and refused too.
//! - Nothing here blocks on anything but the disk, so a SIGTERM is never
//!   held up by reading (the agent installs its handlers after its inputs
//!   are read, and `report` keeps the default action).
//!
//! Writing the files the agent creates goes through the other door here:
//!
//! - [`create_output`], for a file a user names (`run --json PATH`, `check
//!   --json PATH`, `sets export --out`, `sets import --out`): a symbolic
//!   link is refused, not followed (`O_NOFOLLOW`: a link planted where the
//!   file goes would otherwise have its target truncated), a new file has
//!   mode 0640 (the log directory's), an existing regular file is
//!   truncated once the open descriptor shows it is one, a FIFO or a
//!   character device (a pipe to a reader, `/dev/null`) is written as it
//!   is, anything else is refused; opening never blocks (a FIFO nobody
//!   reads is refused at once).
//! - [`create_new`], for the files the agent names itself (`--log-dir`):
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0640; whatever is already at
//!   the name, a link included, is never opened.
//!
//! Both ask for `O_CLOEXEC` (as every `std` open does) and are subject to
//! the umask (0640 under the usual 022, 0600 under 077).
//!
//! Errors are [`io::Error`]s whose text says what is wrong
//! (`it is a FIFO, not a regular file`); callers prefix the path.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read},
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, OpenOptionsExt},
    },
    path::Path,
};

use crate::units::size_text;

/// Largest file [`read_text`] reads: 64 MiB. The largest published page
/// is about 100 KiB, and a set file of 100,000 entries about 10 MiB.
pub const MAX_TEXT: u64 = 64 << 20;

/// The name standing for standard input where a command reads it.
pub const STDIN: &str = "-";

/// What kind of file `t` is, for messages.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without blocking on it, and keeps it only if
/// it is a regular file; returns it with its size.
///
/// # Errors
/// The file cannot be opened, or is not a regular file
/// ([`io::ErrorKind::InvalidInput`]).
fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = kind(t);
        let msg = if what == "not a regular file" {
            what.to_string()
        } else {
            format!("it is {what}, not a regular file")
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    }
    // Regular files ignore O_NONBLOCK; clear it all the same, so that the
    // descriptor is an ordinary one.
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let fd = f.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok((f, meta.len()))
}

/// The error of a file larger than `max`.
fn too_large(size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "it is {} bytes ({}); at most {} is read",
            size,
            human_size(size),
            size_text(max)
        ),
    )
}

/// `2.0 GiB`: a size for people.
fn human_size(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (u, f) in units {
        if bytes >= f {
            return format!("{:.1} {u}", bytes as f64 / f as f64);
        }
    }
    format!("{bytes} B")
}

/// The whole text of the regular file at `path`, at most [`MAX_TEXT`]
/// bytes.
///
/// # Errors
/// The file cannot be opened or read; it is not a regular file
/// ([`io::ErrorKind::InvalidInput`]); it is larger than [`MAX_TEXT`]
/// ([`io::ErrorKind::FileTooLarge`], before anything is read); it is not
/// UTF-8 ([`io::ErrorKind::InvalidData`]).
pub fn read_text(path: &Path) -> io::Result<String> {
    read_text_within(path, MAX_TEXT)
}

/// [`read_text`] with the bound `max`.
fn read_text_within(path: &Path, max: u64) -> io::Result<String> {
    let (f, size) = open_regular(path)?;
    if size > max {
        return Err(too_large(size, max));
    }
    let mut buf = Vec::with_capacity(size as usize);
    // One byte more than the bound: a file that grew past it is refused.
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_large(buf.len() as u64, max));
    }
    String::from_utf8(buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (byte {} is invalid)",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// An input read as a stream: a regular file, or standard input.
pub enum Input {
    /// A regular file.
    File(File),
    /// Standard input (`-`).
    Stdin(io::Stdin),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::File(f) => f.read(buf),
            Input::Stdin(s) => s.read(buf),
        }
    }
}

/// Opens the input at `path` for reading from the start (saved records
/// are read line by line, of any size): a regular file, or standard input
/// for [`STDIN`] (`-`).
///
/// # Errors
/// The file cannot be opened, or is not a regular file
/// ([`io::ErrorKind::InvalidInput`]).
pub fn open_input(path: &Path) -> io::Result<Input> {
    if path == Path::new(STDIN) {
        return Ok(Input::Stdin(io::stdin()));
    }
    open_regular(path).map(|(f, _)| Input::File(f))
}

/// Mode of every file the agent creates (before the umask): the owner
/// reads and writes, its group reads, others nothing.
pub const FILE_MODE: u32 = 0o640;

/// Opens the output file at `path` (see the [module](self)): created with
/// [`FILE_MODE`], or truncated if it is a regular file, or written as it
/// is if it is a FIFO with a reader or a character device.
///
/// # Errors
/// `path` is a symbolic link ([`io::ErrorKind::InvalidInput`], nothing
/// opened); it is a directory, a socket, a block device, or a FIFO no
/// process reads (`InvalidInput`); it cannot be created or truncated.
pub fn create_output(path: &Path) -> io::Result<File> {
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) => return Err(output_error(path, e)),
    };
    let t = f.metadata()?.file_type();
    if t.is_file() {
        f.set_len(0)?;
    } else if !(t.is_fifo() || t.is_char_device()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}: name a regular file", kind(t)),
        ));
    }
    // A FIFO was opened without blocking; its writes should block (and
    // O_NONBLOCK means nothing to the others).
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let fd = f.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// What `open(2)` failing on `path` for [`create_output`] means.
fn output_error(path: &Path, e: io::Error) -> io::Error {
    let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match e.raw_os_error() {
        Some(libc::ELOOP) if link => io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symbolic link, which is not followed: name the file itself \
             (or - for standard output)",
        ),
        Some(libc::ENXIO) => io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a FIFO no process reads, or a socket: name a regular file",
        ),
        Some(libc::EISDIR) => io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a directory: name a regular file",
        ),
        _ => e,
    }
}

/// Creates the file `path`, which must not exist: `O_CREAT | O_EXCL |
/// O_NOFOLLOW`, [`FILE_MODE`], opened for appending.
///
/// # Errors
/// Something is at `path` already, a symbolic link included
/// ([`io::ErrorKind::AlreadyExists`]); it cannot be created.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        os::unix::fs::PermissionsExt,
        time::{Duration, Instant},
    };

    fn scratch(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("cas-audit-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn regular_files_are_read() {
        let p = scratch("ok");
        std::fs::write(&p, "hello\n").unwrap();
        assert_eq!(read_text(&p).unwrap(), "hello\n");
        let mut s = String::new();
        open_input(&p).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello\n");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_at_once() {
        let fifo = scratch("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = Instant::now();
        for (p, want) in [
            (fifo.as_path(), "it is a FIFO, not a regular file"),
            (
                Path::new("/dev/zero"),
                "it is a character device, not a regular file",
            ),
            (Path::new("/tmp"), "it is a directory, not a regular file"),
        ] {
            let e = read_text(p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p:?}");
            assert_eq!(e.to_string(), want, "{p:?}");
            let e = open_input(p).err().unwrap();
            assert_eq!(e.to_string(), want, "{p:?}");
        }
        // No open(2) or read(2) waited for a writer or for the end of /dev/zero.
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        std::fs::remove_file(&fifo).unwrap();
    }

    #[test]
    fn large_files_are_refused_before_reading() {
        let p = scratch("large");
        let f = File::create(&p).unwrap();
        // Sparse: 2 GiB of size, no blocks.
        f.set_len(2 << 30).unwrap();
        let t = Instant::now();
        let e = read_text(&p).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            e.to_string(),
            "it is 2147483648 bytes (2.0 GiB); at most 64M is read"
        );
        std::fs::write(&p, "0123456789").unwrap();
        let e = read_text_within(&p, 9).unwrap_err();
        assert_eq!(e.to_string(), "it is 10 bytes (10 B); at most 9 is read");
        assert_eq!(read_text_within(&p, 10).unwrap(), "0123456789");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn text_must_be_utf8() {
        let p = scratch("bin");
        std::fs::write(&p, b"ab\xffcd").unwrap();
        let e = read_text(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "not UTF-8 text (byte 2 is invalid)");
        std::fs::remove_file(&p).unwrap();
    }

    /// Mode bits of `p` and the process's umask (from /proc, proc(5)).
    fn mode_and_umask(p: &Path) -> (u32, u32) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
            .unwrap();
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        (mode, umask)
    }

    #[test]
    fn output_files_are_new_0640_or_truncated_never_a_link_target() {
        let dir = scratch("outdir");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let new = dir.join("new.jsonl");
        let mut f = create_output(&new).unwrap();
        io::Write::write_all(&mut f, b"{}\n").unwrap();
        let (mode, umask) = mode_and_umask(&new);
        assert_eq!(mode, FILE_MODE & !umask, "umask {umask:o}");
        // An existing regular file is truncated, its mode kept.
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600)).unwrap();
        drop(create_output(&new).unwrap());
        assert_eq!(std::fs::read(&new).unwrap(), b"");
        assert_eq!(mode_and_umask(&new).0, 0o600);
        // A link to a file the agent may write (it runs as root): refused,
        // the target neither truncated nor changed.
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = create_output(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "it is a symbolic link, which is not followed: name the file itself (or - for standard output)"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
        // A dangling link is not created through either.
        let dangling = dir.join("dangling.jsonl");
        std::os::unix::fs::symlink(dir.join("absent"), &dangling).unwrap();
        assert!(create_output(&dangling).is_err());
        assert!(!dir.join("absent").exists());
        // Nor are the log directory's files.
        let e = create_new(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
        let log = dir.join("log.jsonl");
        drop(create_new(&log).unwrap());
        assert_eq!(mode_and_umask(&log).0, FILE_MODE & !umask);
        assert_eq!(
            create_new(&log).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn output_streams_are_written_other_kinds_refused_at_once() {
        // A character device is written as it is (not truncated).
        drop(create_output(Path::new("/dev/null")).unwrap());
        let t = Instant::now();
        let e = create_output(Path::new("/tmp")).unwrap_err();
        assert_eq!(e.to_string(), "it is a directory: name a regular file");
        // A FIFO nobody reads: refused, without waiting for a reader.
        let fifo = scratch("outfifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = create_output(&fifo).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a FIFO no process reads, or a socket: name a regular file"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // With a reader it is written, and its writes block as usual.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let mut w = create_output(&fifo).unwrap();
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        io::Write::write_all(&mut w, b"x\n").unwrap();
        drop(reader);
        std::fs::remove_file(&fifo).unwrap();
    }
}
