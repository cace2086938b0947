//! A writer of the "newc" cpio format the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst): per entry a
//! 110-byte ASCII header ("070701" and thirteen 8-digit hex fields), the name
//! with its NUL, padded to 4 bytes, then the data, padded to 4 bytes; the archive
//! ends with an entry named "TRAILER!!!".

use std::io::{self, Write};

/// What an entry is. Modes are the permission bits; the type bits are added here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

/// Writes entries in the order given (a directory before what it holds: the
/// kernel creates no missing parents), owned by root, with mtime 0 so the same
/// inputs give the same bytes.
pub struct Writer<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// One entry; `name` is relative to the root ("usr/bin/connwatch").
    pub fn entry(&mut self, name: &str, kind: &Kind) -> io::Result<()> {
        if name.is_empty() || name.starts_with('/') || name.len() >= u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio names are relative and non-empty: {name:?}"),
            ));
        }
        let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match kind {
            Kind::Dir { mode } => (S_IFDIR | mode, 2, &[], (0, 0)),
            Kind::File { mode, data } => (S_IFREG | mode, 1, data, (0, 0)),
            Kind::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
            Kind::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, &[], (*major, *minor)),
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw(name, ino, mode, nlink, data, rdev)
    }

    /// Ends the archive and returns the writer and the bytes written.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.raw(TRAILER, 0, 0, 1, &[], (0, 0))?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn raw(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: over 4 GiB, too large for newc"),
            )
        })?;
        let name_size = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let fill = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..fill as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, Kind)]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        for (name, kind) in entries {
            w.entry(name, kind).unwrap();
        }
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(n, bytes.len() as u64);
        bytes
    }

    #[test]
    fn a_file_entry_is_header_name_and_data_each_padded_to_four() {
        let bytes = archive(&[(
            "init",
            Kind::File {
                mode: 0o755,
                data: b"hello".to_vec(),
            },
        )]);
        let header = "070701\
            00000001\
            000081ed\
            00000000\
            00000000\
            00000001\
            00000000\
            00000005\
            00000000\
            00000000\
            00000000\
            00000000\
            00000005\
            00000000";
        let mut want = header.as_bytes().to_vec();
        // 110 + "init\0" = 115: one byte of padding to 116.
        want.extend_from_slice(b"init\0\0");
        // 116 + 5 = 121: three bytes to 124.
        want.extend_from_slice(b"hello\0\0\0");
        assert_eq!(&bytes[..want.len()], &want[..]);
        // The trailer: ino 0, mode 0, nlink 1, name "TRAILER!!!\0" (11), padded.
        let trailer = &bytes[want.len()..];
        assert_eq!(
            &trailer[..110],
            b"07070100000000000000000000000000000000000000010000000000000000000000000000000000000000000000000000000b00000000"
        );
        // 124 + 110 + 11 = 245: three bytes to 248.
        assert_eq!(&trailer[110..], b"TRAILER!!!\0\0\0\0");
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn dirs_symlinks_and_devices_have_their_type_bits() {
        let bytes = archive(&[
            ("dev", Kind::Dir { mode: 0o755 }),
            (
                "dev/console",
                Kind::CharDev {
                    mode: 0o600,
                    major: 5,
                    minor: 1,
                },
            ),
            (
                "lib",
                Kind::Symlink {
                    target: "usr/lib".into(),
                },
            ),
        ]);
        let text = String::from_utf8_lossy(&bytes);
        let headers: Vec<&str> = text
            .match_indices("070701")
            .map(|(i, _)| &text[i..i + 110])
            .collect();
        assert_eq!(headers.len(), 4);
        let field = |h: &str, n: usize| u32::from_str_radix(&h[6 + 8 * n..14 + 8 * n], 16).unwrap();
        // mode (field 1), nlink (4), filesize (6), rdevmajor (9), rdevminor (10)
        assert_eq!(field(headers[0], 1), 0o040_755);
        assert_eq!(field(headers[0], 4), 2);
        assert_eq!(field(headers[1], 1), 0o020_600);
        assert_eq!((field(headers[1], 9), field(headers[1], 10)), (5, 1));
        assert_eq!(field(headers[2], 1), 0o120_777);
        assert_eq!(field(headers[2], 6), 7);
        // "lib\0" ends at 114 + its offset: two bytes of padding, then the target
        // (7 bytes) and one more.
        assert!(text.contains("lib\0\0\0usr/lib\0"));
        // Inode numbers are distinct.
        let inos: Vec<u32> = headers[..3].iter().map(|h| field(h, 0)).collect();
        assert_eq!(inos, [1, 2, 3]);
    }

    #[test]
    fn absolute_and_empty_names_are_refused() {
        let mut w = Writer::new(Vec::new());
        assert!(w.entry("/init", &Kind::Dir { mode: 0o755 }).is_err());
        assert!(w.entry("", &Kind::Dir { mode: 0o755 }).is_err());
    }
}
