//! End-of-head detection (rule H1).
//!
//! A head ends at the first LF followed by LF or by CR LF, so CRLF, bare-LF and mixed line
//! endings all work (and LF x LF for other bytes x does not, deviation M3). The scanner is
//! incremental: bytes may arrive in any number of reads, down to one byte each, and every byte is
//! looked at a bounded number of times however the head is split.

/// Finds the end of a head in a growing buffer.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// Bytes before this offset contain no LF that could still start the terminator.
    resume: usize,
}

impl HeadScanner {
    /// A scanner at the start of a head.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `buf`, the whole head buffered so far (earlier bytes unchanged, new bytes appended),
    /// and returns the length of the head including its terminator once it is complete.
    pub fn scan(&mut self, buf: &[u8]) -> Option<usize> {
        let mut from = self.resume.min(buf.len());
        while let Some(offset) = memchr::memchr(b'\n', &buf[from..]) {
            let lf = from + offset;
            match (buf.get(lf + 1), buf.get(lf + 2)) {
                (Some(b'\n'), _) => return Some(lf + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
                // The terminator may still complete with the next read: look here again then.
                (None, _) | (Some(b'\r'), None) => {
                    self.resume = lf;
                    return None;
                }
                _ => from = lf + 1,
            }
        }
        self.resume = buf.len();
        None
    }

    /// Forgets the scanned position, for the next head on the same connection.
    pub fn reset(&mut self) {
        self.resume = 0;
    }
}

/// The length of the head at the start of `buf`, if it is complete.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    HeadScanner::new().scan(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_head() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
    }

    #[test]
    fn bare_lf_and_mixed_heads() {
        assert_eq!(head_len(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(26));
        assert_eq!(head_len(b"GET / HTTP/1.1\nHost: a\r\n\n"), Some(25));
    }

    #[test]
    fn lf_x_lf_is_not_an_end() {
        // Deviation M3: only LF LF and LF CR LF end a head.
        assert_eq!(head_len(b"GET / HTTP/1.1\n \nHost: a\n"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\r\n"), None);
    }

    #[test]
    fn incomplete_heads() {
        assert_eq!(head_len(b""), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r"), None);
    }

    #[test]
    fn every_split_gives_the_same_end() {
        let heads: [&[u8]; 4] = [
            b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\nxyz",
            b"POST /dom HTTP/1.1\nUpgrade: PTTH/1.0\n\nxyz",
            b"POST /dom HTTP/1.1\r\nA: b\n\r\n",
            b"\n\n",
        ];
        for head in heads {
            let whole = head_len(head);
            assert!(whole.is_some());
            // One byte per read.
            let mut scanner = HeadScanner::new();
            let mut found = None;
            for end in 1..=head.len() {
                if let Some(n) = scanner.scan(&head[..end]) {
                    found = Some(n);
                    break;
                }
            }
            assert_eq!(found, whole, "{:?}", String::from_utf8_lossy(head));
            // Two reads, split at every position.
            for split in 0..head.len() {
                let mut scanner = HeadScanner::new();
                let first = scanner.scan(&head[..split]);
                let end = first.or_else(|| scanner.scan(head));
                assert_eq!(end, whole, "split at {split}");
            }
        }
    }
}
