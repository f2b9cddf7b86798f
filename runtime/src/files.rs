//! Files a person names (a manifest, a grant, an agents file, a token, a
//! key, an input, a trail), read as what they claim to be: a regular file,
//! opened without blocking (a FIFO with no writer would hang the open, and
//! one swapped in after a check would hang the read), and no larger than
//! such a file can be (`/dev/zero`, or a sparse file of terabytes, would
//! take the process's memory).

use std::fs::FileType;
use std::io::{self, Read as _};
use std::path::Path;

/// The most a configuration file (a manifest, a grant, an agents file, a
/// policy file) may be: each is pages of text; a larger file, or
/// `/dev/zero`, is refused before it is read.
pub const MAX_CONFIG: u64 = 4 << 20;

/// What a file type is, for a person; `None` for a regular file or a
/// directory.
pub fn special(ft: FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_file() || ft.is_dir() {
        None
    } else if ft.is_fifo() {
        Some("a named pipe")
    } else if ft.is_socket() {
        Some("a socket")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_symlink() {
        Some("a symlink")
    } else {
        Some("not a file or directory")
    }
}

/// Opens `path` for reading as a regular file, without blocking on a FIFO.
/// A missing file keeps [`io::ErrorKind::NotFound`]; anything but a regular
/// file is [`io::ErrorKind::InvalidInput`], naming what it is.
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    // Not made the controlling terminal if it is one (a daemon that leads
    // its session would take it).
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = opts.open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = special(kind).unwrap_or("a directory");
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ));
    }
    Ok(file)
}

/// Reads a regular file of at most `max` bytes (see [`open_regular`]); a
/// larger one is [`io::ErrorKind::InvalidData`], with its size and the
/// bound.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let too_big = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is {len} bytes, more than the {max} bytes expected"),
        )
    };
    let len = file.metadata()?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // The file may grow after the check.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text ([`io::ErrorKind::InvalidData`] if not).
pub fn read_regular_text(path: &Path, max: u64) -> io::Result<String> {
    text(read_regular(path, max)?)
}

/// A file named on a command line, as text: a regular file as
/// [`read_regular_text`], or a pipe (`<(…)`, `/dev/stdin` fed by a pipe),
/// which the person who typed the command feeds: read to its end, within
/// the same bound.
pub fn read_named_text(path: &Path, max: u64) -> io::Result<String> {
    use std::os::unix::fs::FileTypeExt as _;
    if !std::fs::metadata(path)?.file_type().is_fifo() {
        return read_regular_text(path, max);
    }
    read_bounded(std::fs::File::open(path)?, max).and_then(text)
}

/// Everything `from` gives, refused past `max` bytes (standard input).
pub fn read_bounded(from: impl io::Read, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    from.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is more than the {max} bytes expected"),
        ));
    }
    Ok(bytes)
}

fn text(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_within_its_bound_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        // No writer: a blocking open would hang the test.
        let e = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "it is a named pipe, not a regular file");
        let e = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a character device, not a regular file"
        );
        assert_eq!(
            read_regular(dir.path(), 10).unwrap_err().to_string(),
            "it is a directory, not a regular file"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "0123456789x").unwrap();
        let e = read_regular(&file, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            "it is 11 bytes, more than the 10 bytes expected"
        );
        assert_eq!(read_regular(&file, 11).unwrap(), b"0123456789x");
        let e = read_regular(&dir.path().join("missing"), 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::write(&file, [0xff]).unwrap();
        assert_eq!(
            read_regular_text(&file, 10).unwrap_err().to_string(),
            "it is not UTF-8 text"
        );
        // Named on a command line, a pipe is read to its end, bounded.
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, "{\"a\":1}").unwrap())
        };
        assert_eq!(read_named_text(&fifo, 10).unwrap(), "{\"a\":1}");
        writer.join().unwrap();
        let e = read_bounded(&b"0123456789x"[..], 10).unwrap_err();
        assert_eq!(e.to_string(), "it is more than the 10 bytes expected");
        assert_eq!(
            read_named_text(Path::new("/dev/zero"), 10)
                .unwrap_err()
                .to_string(),
            "it is a character device, not a regular file"
        );
    }
}
