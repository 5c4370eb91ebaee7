//! Text from a bundle made harmless for the analyst's terminal and
//! spreadsheet.
//!
//! Every byte of a bundle (process names, command lines, file names, tar
//! member names, /proc lines) may have been written by an attacker on the
//! recorded host. Three sinks, three rules:
//!
//! - **Terminal** ([`term`], [`term_bytes`], [`term_path`]): control
//!   characters (C0, DEL, C1), Unicode bidirectional controls, line and
//!   paragraph separators (U+2028/2029), zero-width and other invisible
//!   format characters, tag characters (U+E0000-E007F) and bytes that
//!   are not UTF-8 are shown as visible escapes (`\x1b`, `\u{202e}`),
//!   so no escape sequence can retitle, clear or rewrite the terminal.
//! - **CSV** ([`csv_cell`]): a cell that begins with `=`, `+`, `-`, `@`,
//!   TAB or CR is prefixed with `'` (OWASP's CSV-injection rule: a
//!   spreadsheet would take it for a formula), and control characters are
//!   escaped as on the terminal. `--csv-raw` keeps the bytes as they were,
//!   for pipelines.
//! - **JSON**: values are kept exact; JSON's own string escaping already
//!   makes them inert.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

/// Whether `c` must not reach a terminal or a CSV cell as is: control
/// characters, bidirectional controls, and characters that are invisible
/// or break lines where nothing shows it.
fn dangerous(c: char) -> bool {
    c.is_control() // C0, DEL, C1
        || matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators: a new line to some viewers.
            | '\u{2028}' | '\u{2029}'
            // Zero-width and invisible format characters: soft hyphen,
            // Mongolian vowel separator, zero-width space/non-joiner/
            // joiner, word joiner and invisible operators, BOM,
            // interlinear annotation marks.
            | '\u{00ad}' | '\u{180e}' | '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2065}'
            | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
            // Tag characters: invisible text riding on visible text.
            | '\u{e0000}'..='\u{e007f}'
        )
}

fn escape_char(out: &mut String, c: char) {
    let v = c as u32;
    if v < 0x100 {
        let _ = write!(out, "\\x{v:02x}");
    } else {
        let _ = write!(out, "\\u{{{v:x}}}");
    }
}

/// `s` with every control character and bidirectional override shown as a
/// visible escape (`\x1b`, `\x07`, `\x0d`, `\u{202e}`). Newlines are
/// escaped too: one value stays on one line.
pub fn term(s: &str) -> Cow<'_, str> {
    if !s.chars().any(dangerous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if dangerous(c) {
            escape_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes for the terminal: valid UTF-8 as [`term`], every byte that is not
/// part of valid UTF-8 as `\xNN`.
pub fn term_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&term(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A path for the terminal (file names come from the bundle too).
pub fn term_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    term_bytes(p.as_os_str().as_bytes())
}

/// A path for a report value (JSON, CSV): lossy UTF-8, control characters
/// kept (JSON escapes them; CSV cells go through [`csv_cell`]).
pub fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether a spreadsheet would take a cell beginning like this for a
/// formula (OWASP CSV injection): `=`, `+`, `-`, `@`, TAB, CR.
pub fn formula_start(s: &str) -> bool {
    matches!(
        s.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// One CSV cell: with `raw`, the text as it was; otherwise a cell that
/// begins like a formula is prefixed with `'`, and control characters are
/// shown as visible escapes (`\x1b`).
pub fn csv_cell(s: &str, raw: bool) -> Cow<'_, str> {
    if raw {
        return Cow::Borrowed(s);
    }
    let formula = formula_start(s);
    if !formula && !s.chars().any(dangerous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    if formula {
        out.push('\'');
    }
    out.push_str(&term(s));
    Cow::Owned(out)
}

/// Reads a small bundle file (manifest, `SHA256SUMS`, `tcpdump.log`)
/// whole, refusing what is not a regular file (a FIFO would block, a link
/// to `/dev/zero` never end) and anything larger than `cap` bytes.
pub fn read_small_file(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "not a regular file (a link, FIFO or device); not read",
        ));
    }
    if meta.len() > cap {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!(
                "{} bytes, more than the {cap} such a file may hold",
                meta.len()
            ),
        ));
    }
    let mut v = Vec::new();
    std::fs::File::open(path)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut v)?;
    if v.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("grew past the {cap} bytes such a file may hold while being read"),
        ));
    }
    Ok(v)
}

/// Largest `manifest.json`, `SHA256SUMS` or `tcpdump.log` read (the
/// recorder writes a few KB; tcpdump's log grows by a line per rotation).
pub const SMALL_FILE_CAP: u64 = 16 << 20;

/// An executable path made safe like [`visible`] and cut in the middle, not
/// at its end, to at most `max` characters: the file name, the part a
/// reader needs, is kept (`/root/.pyenv/…/bin/python3.11`); a file name
/// longer than that keeps its last characters.
pub fn visible_path(s: &str, max: usize) -> String {
    let t = term(s);
    let chars: Vec<char> = t.chars().collect();
    if chars.len() <= max || max < 2 {
        return cut_end(&t, max);
    }
    let slash = chars.iter().rposition(|&c| c == '/');
    let mut tail_len = match slash {
        // Keep `/name` and at least the first character of the path.
        Some(i) if chars.len() - i + 2 <= max => chars.len() - i,
        _ => max - 1,
    };
    // Also the directories just above it, while they take at most half.
    while let Some(i) = chars[..chars.len() - tail_len]
        .iter()
        .rposition(|&c| c == '/')
        .filter(|&i| i > 0 && chars.len() - i <= max / 2)
    {
        tail_len = chars.len() - i;
    }
    let head_len = max - 1 - tail_len;
    let head: String = chars[..head_len].iter().collect();
    let tail: String = chars[chars.len() - tail_len..].iter().collect();
    format!("{head}…{tail}")
}

/// A command line (words separated by spaces, as a report's
/// `cmdline` quotes them) made safe like [`visible`] and cut in the middle to at most
/// `max` characters, keeping the program and as many of the last arguments
/// as fit: `python3 -m pip … download requests`.
pub fn visible_cmdline(s: &str, max: usize) -> String {
    let t = term(s);
    if t.chars().count() <= max {
        return t.into_owned();
    }
    let words: Vec<&str> = t.split(' ').collect();
    // The program's path gives up its middle first: a third of the room.
    let program = visible_path(words[0], (max / 3).max(12).min(max.saturating_sub(2)));
    let mut room = max.saturating_sub(program.chars().count() + 2);
    let mut tail: Vec<&str> = Vec::new();
    for w in words[1..].iter().rev() {
        let n = w.chars().count() + 1;
        if n > room {
            break;
        }
        room -= n;
        tail.push(w);
    }
    // Fill what is left with the words after the program.
    let mut head: Vec<&str> = Vec::new();
    for w in &words[1..words.len() - tail.len()] {
        let n = w.chars().count() + 1;
        if n > room {
            break;
        }
        room -= n;
        head.push(w);
    }
    tail.reverse();
    let mut out = program;
    for w in head {
        out.push(' ');
        out.push_str(w);
    }
    out.push_str(" …");
    for w in tail {
        out.push(' ');
        out.push_str(w);
    }
    out
}

fn cut_end(t: &str, max: usize) -> String {
    match t.char_indices().nth(max) {
        None => t.to_string(),
        Some((at, _)) => format!("{}…", &t[..at]),
    }
}

/// A string from the bundle made safe and bounded for a terminal or a
/// page: escaped by [`term`] (control and bidirectional
/// characters shown as `\x1b`, `\u{202e}`), then cut to `max` characters
/// with a trailing `…`.
pub fn visible(s: &str, max: usize) -> String {
    let t = term(s);
    match t.char_indices().nth(max) {
        None => t.into_owned(),
        Some((at, _)) => format!("{}…", &t[..at]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_are_visible() {
        let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2Jcurl\r\n";
        assert_eq!(term(evil), r"\x1b]0;pwned\x07\x1b[2Jcurl\x0d\x0a");
        assert_eq!(term("plain name"), "plain name");
        assert!(matches!(term("plain"), Cow::Borrowed(_)));
        assert_eq!(term("a\u{202e}b\u{9b}c\u{7f}"), r"a\u{202e}b\x9bc\x7f");
    }

    #[test]
    fn invalid_utf8_is_shown_as_bytes() {
        assert_eq!(term_bytes(b"ok\xff\xfe\x1bz"), r"ok\xff\xfe\x1bz");
        assert_eq!(term_bytes("é".as_bytes()), "é");
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/x\x1b[2J\xff"));
        assert_eq!(term_path(p), r"/tmp/x\x1b[2J\xff");
    }

    #[test]
    fn small_files_are_bounded() {
        let e = read_small_file(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let p = std::env::temp_dir().join(format!("procflow-small-{}", std::process::id()));
        std::fs::write(&p, b"0123456789ab").unwrap();
        assert!(read_small_file(&p, 10).is_err());
        assert_eq!(read_small_file(&p, 12).unwrap(), b"0123456789ab");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn formula_cells_are_prefixed() {
        for s in ["=1+1", "+cmd", "-x", "@SUM(A1)", "\tx", "\rx"] {
            let c = csv_cell(s, false);
            assert!(c.starts_with('\''), "{s:?} -> {c:?}");
        }
        assert_eq!(csv_cell("=HYPERLINK(\"x\")", false), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_cell("\tx", false), r"'\x09x");
        assert_eq!(csv_cell("curl -s", false), "curl -s");
        assert_eq!(csv_cell("a\u{1b}[31mb", false), r"a\x1b[31mb");
        assert_eq!(csv_cell("=1+1", true), "=1+1");
        assert_eq!(csv_cell("a\u{1b}b", true), "a\u{1b}b");
        assert_eq!(csv_cell("", false), "");
    }
}
