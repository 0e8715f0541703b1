//! Unit tests of the log directory: rotation by size and age, the total
//! bound, names, and full-disk behaviour with an injected file that runs
//! out of space like a disk.

use std::{
    os::unix::fs::PermissionsExt,
    sync::{
        atomic::{AtomicU32, Ordering as AtomicOrdering},
        Arc, Mutex,
    },
};

use super::*;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cas-audit-logdir-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, AtomicOrdering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 2026-11-22T10:00:00Z.
const T0: i64 = 1_795_341_600;

/// A clock the test moves.
#[derive(Clone)]
struct FakeClock(Arc<Mutex<(OffsetDateTime, Duration)>>);

impl FakeClock {
    fn new() -> FakeClock {
        FakeClock(Arc::new(Mutex::new((
            OffsetDateTime::from_unix_timestamp(T0).unwrap(),
            Duration::from_secs(1000),
        ))))
    }
    fn advance(&self, d: Duration) {
        let mut g = self.0.lock().unwrap();
        g.0 += d;
        g.1 += d;
    }
    /// Steps the wall clock back (NTP), monotonic time goes on.
    fn step_wall_back(&self, d: Duration) {
        self.0.lock().unwrap().0 -= d;
    }
}

impl LogClock for FakeClock {
    fn wall(&self) -> OffsetDateTime {
        self.0.lock().unwrap().0
    }
    fn mono(&self) -> Duration {
        self.0.lock().unwrap().1
    }
}

/// A disk shared by the files of one test: `free` bytes left.
#[derive(Default)]
struct Disk {
    free: u64,
    /// Opening a file fails with ENOSPC.
    fail_open: bool,
    /// Truncation fails with EIO.
    fail_truncate: bool,
    opened: u32,
    syncs: u32,
}

#[derive(Clone)]
struct SharedDisk(Arc<Mutex<Disk>>);

impl SharedDisk {
    fn new(free: u64) -> SharedDisk {
        SharedDisk(Arc::new(Mutex::new(Disk {
            free,
            ..Disk::default()
        })))
    }
    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
    fn opener(&self) -> Opener {
        let disk = self.clone();
        let mut real = file_opener();
        Box::new(move |path: &Path| {
            if disk.with(|d| d.fail_open) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let inner = real(path)?;
            disk.with(|d| d.opened += 1);
            Ok(Box::new(DiskFile {
                inner,
                disk: disk.clone(),
                len: 0,
            }) as Box<dyn LogFile>)
        })
    }
}

/// A real file whose writes take space from a [`Disk`]: short writes when
/// little is left, ENOSPC when nothing is.
struct DiskFile {
    inner: Box<dyn LogFile>,
    disk: SharedDisk,
    len: u64,
}

impl Write for DiskFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.disk.with(|d| d.free).min(buf.len() as u64) as usize;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let n = self.inner.write(&buf[..n])?;
        self.disk.with(|d| d.free -= n as u64);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl LogFile for DiskFile {
    fn sync(&mut self) -> io::Result<()> {
        self.disk.with(|d| d.syncs += 1);
        self.inner.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.disk.with(|d| d.fail_truncate) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.truncate(len)?;
        let freed = self.len.saturating_sub(len);
        self.disk.with(|d| d.free += freed);
        self.len = len;
        Ok(())
    }
}

/// Record `i`: exactly 30 bytes with its newline.
fn rec(i: u32) -> Vec<u8> {
    let r = format!("{{\"type\":\"flow\",\"n\":\"{i:04}xxx\"}}");
    assert_eq!(r.len(), 29, "{r}");
    r.into_bytes()
}

fn line(i: u32) -> String {
    format!("{}\n", String::from_utf8(rec(i)).unwrap())
}

fn lines(range: std::ops::Range<u32>) -> String {
    range.map(line).collect()
}

fn opts(dir: &Path, max_size: u64, max_total: u64) -> LogDirOptions {
    LogDirOptions {
        dir: dir.to_path_buf(),
        max_size,
        max_age: DEFAULT_MAX_AGE,
        max_total,
    }
}

/// The files of `dir` in name order: (name, contents).
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort_by(|a, b| compare_names(a, b));
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    files(dir).into_iter().map(|(n, _)| n).collect()
}

fn total_size(dir: &Path) -> u64 {
    files(dir).iter().map(|(_, t)| t.len() as u64).sum()
}

fn logdir(o: LogDirOptions, clock: &FakeClock, disk: &SharedDisk) -> LogDir {
    LogDir::with_io(o, Box::new(clock.clone()), disk.opener()).unwrap()
}

#[test]
fn names_parse_and_sort_in_write_order() {
    assert_eq!(
        parse_name("cas-audit-20261122T100000Z.jsonl"),
        Some(NameKey {
            stamp: "20261122T100000Z".into(),
            n: 0
        })
    );
    assert_eq!(
        parse_name("cas-audit-20261122T100000Z-12.jsonl"),
        Some(NameKey {
            stamp: "20261122T100000Z".into(),
            n: 12
        })
    );
    for bad in [
        "cas-audit-20261122T100000Z.json",
        "cas-audit-20261122T100000Z-.jsonl",
        "cas-audit-20261122T100000Z-01.jsonl",
        "cas-audit-20261122T100000Z-x.jsonl",
        "cas-audit-20261122100000Z.jsonl",
        "cas-audit-2026112xT100000Z.jsonl",
        "records.jsonl",
    ] {
        assert_eq!(parse_name(bad), None, "{bad}");
    }
    let mut v = vec![
        "cas-audit-20261122T100001Z.jsonl",
        "cas-audit-20261122T100000Z-10.jsonl",
        "cas-audit-20261122T100000Z-2.jsonl",
        "cas-audit-20261122T100000Z.jsonl",
        "cas-audit-20261122T100000Z-1.jsonl",
    ];
    v.sort_by(|a, b| compare_names(a, b));
    assert_eq!(
        v,
        [
            "cas-audit-20261122T100000Z.jsonl",
            "cas-audit-20261122T100000Z-1.jsonl",
            "cas-audit-20261122T100000Z-2.jsonl",
            "cas-audit-20261122T100000Z-10.jsonl",
            "cas-audit-20261122T100001Z.jsonl",
        ]
    );
    assert_eq!(
        file_name(&NameKey {
            stamp: "20261122T100000Z".into(),
            n: 3
        }),
        "cas-audit-20261122T100000Z-3.jsonl"
    );
}

#[test]
fn bounds_are_checked() {
    let e = opts(Path::new("/nonexistent"), 2 << 20, 1 << 20)
        .validate()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--log-max-total (1M) must be at least --log-max-size (2M)"
    );
    assert!(opts(Path::new("/x"), 1 << 20, 1 << 20).validate().is_ok());
}

#[test]
fn directory_is_created_with_mode_0750_and_files_0640() {
    let tmp = TempDir::new();
    let dir = tmp.0.join("a/evidence");
    let mut log = LogDir::open(LogDirOptions::new(&dir)).unwrap();
    log.write_record(&rec(1));
    log.close();
    // The umask may only take bits away.
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o750, 0, "{mode:o}");
    assert_eq!(mode & 0o700, 0o700, "{mode:o}");
    let f = files(&dir);
    assert_eq!(f.len(), 1);
    assert!(parse_name(&f[0].0).is_some(), "{}", f[0].0);
    assert_eq!(f[0].1, line(1));
    let fmode = std::fs::metadata(dir.join(&f[0].0))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(fmode & !0o640, 0, "{fmode:o}");
}

#[test]
fn not_a_directory_is_an_error() {
    let tmp = TempDir::new();
    std::fs::create_dir_all(&tmp.0).unwrap();
    let file = tmp.0.join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = LogDir::open(LogDirOptions::new(&file)).err().unwrap();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot create log directory {}: ", file.display())),
        "{e}"
    );
}

/// 30-byte records, 100-byte files: three records a file, never split,
/// whether the records come one batch at a time or all in one batch.
#[test]
fn rotation_by_size_keeps_records_whole() {
    for flush_each in [true, false] {
        let tmp = TempDir::new();
        let clock = FakeClock::new();
        let disk = SharedDisk::new(u64::MAX / 2);
        let mut log = logdir(opts(&tmp.0, 100, 1 << 20), &clock, &disk);
        for i in 0..10 {
            log.write_record(&rec(i));
            if flush_each {
                log.flush();
            }
        }
        log.close();
        let f = files(&tmp.0);
        let want = [
            ("cas-audit-20261122T100000Z.jsonl", lines(0..3)),
            ("cas-audit-20261122T100000Z-1.jsonl", lines(3..6)),
            ("cas-audit-20261122T100000Z-2.jsonl", lines(6..9)),
            ("cas-audit-20261122T100000Z-3.jsonl", lines(9..10)),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        assert_eq!(f, want, "flush_each {flush_each}");
        assert_eq!(log.records_lost(), 0);
        // Every file was fsync'd when it was closed.
        assert_eq!(disk.with(|d| (d.opened, d.syncs)), (4, 4));
    }
}

/// A record larger than the size bound gets a file of its own.
#[test]
fn a_record_larger_than_the_bound_gets_its_own_file() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let mut log = logdir(opts(&tmp.0, 100, 1 << 20), &clock, &disk);
    let big = format!("{{\"type\":\"flow\",\"pad\":\"{}\"}}", "y".repeat(150));
    log.write_record(&rec(0));
    log.write_record(big.as_bytes());
    log.write_record(&rec(1));
    log.close();
    let f: Vec<String> = files(&tmp.0).into_iter().map(|(_, t)| t).collect();
    assert_eq!(f, vec![line(0), format!("{big}\n"), line(1)]);
}

#[test]
fn rotation_by_age() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let mut o = opts(&tmp.0, 1 << 20, 1 << 30);
    o.max_age = Duration::from_secs(3600);
    let mut log = logdir(o, &clock, &disk);
    log.write_record(&rec(0));
    clock.advance(Duration::from_secs(3599));
    log.write_record(&rec(1));
    log.flush();
    clock.advance(Duration::from_secs(1));
    // An hour old: the next record starts a file named after the new time.
    log.write_record(&rec(2));
    log.flush();
    // Age counts from the file's opening, not from its last record.
    clock.advance(Duration::from_secs(1800));
    log.write_record(&rec(3));
    clock.advance(Duration::from_secs(1800));
    log.write_record(&rec(4));
    log.close();
    let want: Vec<(String, String)> = [
        ("cas-audit-20261122T100000Z.jsonl", lines(0..2)),
        ("cas-audit-20261122T110000Z.jsonl", lines(2..4)),
        ("cas-audit-20261122T120000Z.jsonl", lines(4..5)),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.clone()))
    .collect();
    assert_eq!(files(&tmp.0), want);
}

/// An empty file is not rotated for its age: no trail of empty files on
/// an idle gateway.
#[test]
fn idle_files_are_not_rotated() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let mut o = opts(&tmp.0, 1 << 20, 1 << 30);
    o.max_age = Duration::from_secs(60);
    let mut log = logdir(o, &clock, &disk);
    clock.advance(Duration::from_secs(600));
    log.write_record(&rec(0));
    log.close();
    assert_eq!(
        files(&tmp.0),
        vec![("cas-audit-20261122T100000Z.jsonl".to_string(), line(0))]
    );
}

/// 90-byte files, 300 bytes in all: at each rotation the oldest files go
/// until the others (at most 200 bytes) and a full current file fit. Files
/// that are not log files are never touched; old runs' files go first.
#[test]
fn total_bound_deletes_the_oldest() {
    let tmp = TempDir::new();
    std::fs::create_dir_all(&tmp.0).unwrap();
    std::fs::write(tmp.0.join("notes.txt"), "x".repeat(500)).unwrap();
    std::fs::write(tmp.0.join("records.jsonl"), "y".repeat(500)).unwrap();
    std::fs::write(
        tmp.0.join("cas-audit-20261121T000000Z.jsonl"),
        lines(100..103),
    )
    .unwrap();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let mut log = logdir(opts(&tmp.0, 100, 300), &clock, &disk);
    for i in 0..20 {
        log.write_record(&rec(i));
        log.flush();
        let logs: u64 = files(&tmp.0)
            .iter()
            .filter(|(n, _)| parse_name(n).is_some())
            .map(|(_, t)| t.len() as u64)
            .sum();
        assert!(logs <= 300, "after record {i}: {logs} bytes");
        if i == 2 {
            // Old run's file (90) + current (90): nothing deleted yet.
            assert_eq!(names(&tmp.0).len(), 4, "{:?}", names(&tmp.0));
        }
    }
    log.close();
    let want: Vec<(String, String)> = [
        ("cas-audit-20261122T100000Z-4.jsonl", lines(12..15)),
        ("cas-audit-20261122T100000Z-5.jsonl", lines(15..18)),
        ("cas-audit-20261122T100000Z-6.jsonl", lines(18..20)),
        ("notes.txt", "x".repeat(500)),
        ("records.jsonl", "y".repeat(500)),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.clone()))
    .collect();
    assert_eq!(files(&tmp.0), want);
    assert_eq!(total_size(&tmp.0), 3 * 90 - 30 + 1000);
}

/// A clock stepped back never makes a new file sort before older ones.
#[test]
fn names_stay_in_order_when_the_clock_steps_back() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let mut log = logdir(opts(&tmp.0, 100, 1 << 20), &clock, &disk);
    for i in 0..3 {
        log.write_record(&rec(i));
    }
    clock.step_wall_back(Duration::from_secs(3600));
    log.write_record(&rec(3));
    clock.advance(Duration::from_secs(7200));
    for i in 4..7 {
        log.write_record(&rec(i));
    }
    log.close();
    assert_eq!(
        names(&tmp.0),
        [
            "cas-audit-20261122T100000Z.jsonl",
            "cas-audit-20261122T100000Z-1.jsonl",
            "cas-audit-20261122T110000Z.jsonl",
        ]
    );
}

/// Full disk: records that do not fit are counted, a record cut short is
/// truncated away, one error is logged (then at most one a minute), and
/// writing resumes in the same file once there is space again.
#[test]
fn full_disk_counts_lost_records_and_resumes() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(100);
    let mut log = logdir(opts(&tmp.0, 1 << 20, 1 << 30), &clock, &disk);
    let name = "cas-audit-20261122T100000Z.jsonl".to_string();

    // One batch of five: three fit (90 bytes), the fourth is cut short
    // after 10 bytes and truncated away, the fifth never written.
    for i in 0..5 {
        log.write_record(&rec(i));
    }
    log.flush();
    assert_eq!(log.records_lost(), 2);
    assert_eq!(log.errors_logged(), 1);
    assert_eq!(files(&tmp.0), vec![(name.clone(), lines(0..3))]);
    assert_eq!(disk.with(|d| d.free), 10);

    // Still full, half a minute later: counted, not logged again.
    clock.advance(Duration::from_secs(30));
    for i in 5..7 {
        log.write_record(&rec(i));
        log.flush();
    }
    assert_eq!(log.records_lost(), 4);
    assert_eq!(log.errors_logged(), 1);

    // A minute after the first message: logged again.
    clock.advance(Duration::from_secs(30));
    log.write_record(&rec(7));
    log.flush();
    assert_eq!(log.records_lost(), 5);
    assert_eq!(log.errors_logged(), 2);

    // Space returns: the next records are written, in the same file.
    disk.with(|d| d.free += 1000);
    for i in 8..11 {
        log.write_record(&rec(i));
    }
    log.flush();
    assert_eq!(log.records_lost(), 5);
    let mut want = lines(0..3);
    want.push_str(&lines(8..11));
    assert_eq!(files(&tmp.0), vec![(name.clone(), want.clone())]);

    // A new failure is logged at once.
    disk.with(|d| d.free = 0);
    log.write_record(&rec(11));
    log.flush();
    assert_eq!(log.records_lost(), 6);
    assert_eq!(log.errors_logged(), 3);
    disk.with(|d| d.free = 1000);
    log.close();
    assert_eq!(files(&tmp.0), vec![(name, want)]);
}

/// When a record cut short cannot be truncated away, it stays at the end
/// of that file and writing goes on in a new file.
#[test]
fn a_torn_record_that_cannot_be_truncated_ends_its_file() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(45);
    disk.with(|d| d.fail_truncate = true);
    let mut log = logdir(opts(&tmp.0, 1 << 20, 1 << 30), &clock, &disk);
    log.write_record(&rec(0));
    log.write_record(&rec(1));
    log.flush();
    assert_eq!(log.records_lost(), 1);
    disk.with(|d| d.free = 1000);
    log.write_record(&rec(2));
    log.close();
    let f = files(&tmp.0);
    let torn = format!("{}{}", line(0), &line(1)[..15]);
    assert_eq!(
        f,
        vec![
            ("cas-audit-20261122T100000Z.jsonl".to_string(), torn),
            ("cas-audit-20261122T100000Z-1.jsonl".to_string(), line(2)),
        ]
    );
}

/// A file that cannot be opened at rotation: its records are lost until
/// one can be opened again.
#[test]
fn failed_open_counts_records_until_a_file_opens() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let mut log = logdir(opts(&tmp.0, 60, 1 << 20), &clock, &disk);
    log.write_record(&rec(0));
    log.write_record(&rec(1));
    disk.with(|d| d.fail_open = true);
    log.write_record(&rec(2));
    log.write_record(&rec(3));
    assert_eq!(log.records_lost(), 2);
    assert_eq!(log.errors_logged(), 1);
    disk.with(|d| d.fail_open = false);
    log.write_record(&rec(4));
    log.close();
    assert_eq!(
        files(&tmp.0),
        vec![
            ("cas-audit-20261122T100000Z.jsonl".to_string(), lines(0..2)),
            ("cas-audit-20261122T100000Z-1.jsonl".to_string(), line(4)),
        ]
    );
}

/// The directory removed while running is made again.
#[test]
fn a_removed_directory_is_made_again() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let mut log = logdir(opts(&tmp.0, 60, 1 << 20), &clock, &disk);
    log.write_record(&rec(0));
    log.write_record(&rec(1));
    log.flush();
    std::fs::remove_dir_all(&tmp.0).unwrap();
    log.write_record(&rec(2));
    log.close();
    assert_eq!(log.records_lost(), 0);
    assert_eq!(
        files(&tmp.0),
        vec![("cas-audit-20261122T100000Z.jsonl".to_string(), line(2))]
    );
}

/// A log directory closed before its first record leaves no file behind
/// (an agent that failed to start).
#[test]
fn no_empty_files_are_left() {
    let tmp = TempDir::new();
    let clock = FakeClock::new();
    let disk = SharedDisk::new(u64::MAX / 2);
    let log = logdir(opts(&tmp.0, 100, 1 << 20), &clock, &disk);
    assert_eq!(names(&tmp.0), ["cas-audit-20261122T100000Z.jsonl"]);
    drop(log);
    assert_eq!(names(&tmp.0), Vec::<String>::new());
}

#[test]
fn a_reserve_is_held_until_released_and_never_through_a_symlink() {
    use std::os::unix::fs::MetadataExt;
    let tmp = TempDir::new();
    let dir = tmp.0.join("evidence");
    let mut log = LogDir::open(LogDirOptions::new(&dir)).unwrap();
    let path = dir.join(reserve::RESERVE_NAME);
    log.reserve(200_000);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 200_000);
    assert!(meta.blocks() * 512 >= 200_000, "allocated, not sparse");
    assert_eq!(meta.permissions().mode() & 0o777 & !0o640, 0);
    assert_eq!(log.reserved(), 200_000);
    // Not a log file: rotation and `report` leave it alone.
    log.write_record(&rec(1));
    log.close();
    assert!(path.exists());
    log.release_reserve();
    assert!(!path.exists());
    assert_eq!(log.reserved(), 0);
    // A reserve left by an agent that died is taken again; dropping the
    // writer releases it.
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let mut again = LogDir::open(LogDirOptions::new(&dir)).unwrap();
    again.reserve(8192);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    drop(again);
    assert!(!path.exists());
    // A symbolic link in its place is not followed: no reserve, the
    // target untouched.
    let target = tmp.0.join("target");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let mut third = LogDir::open(LogDirOptions::new(&dir)).unwrap();
    third.reserve(8192);
    assert_eq!(third.reserved(), 0);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    drop(third);
}
