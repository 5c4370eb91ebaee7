//! Tracepoint record layouts: the tracefs `format` file of a tracepoint
//! parsed into field offsets and sizes, and the reading of one field out of
//! a raw record. Shared by the decoders of `events` and `sockuse`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The fields of one tracepoint record, from its tracefs `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpFormat {
    /// Tracepoint id (the `ID:` line), the perf `config`.
    pub id: u64,
    /// (name, offset, size) of each field, common fields included.
    pub fields: Vec<(String, usize, usize)>,
}

impl TpFormat {
    /// Offset and size of a field.
    pub fn field(&self, name: &str) -> Option<(usize, usize)> {
        self.fields
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, o, s)| (*o, *s))
    }

    pub(crate) fn need(&self, name: &str) -> Result<Field, String> {
        self.field(name)
            .map(|(offset, size)| Field { offset, size })
            .ok_or_else(|| format!("format has no field `{name}`"))
    }
}

/// Parses a tracefs `format` file.
pub fn parse_format(text: &str) -> Result<TpFormat, String> {
    let mut id = None;
    let mut fields = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            id = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("line {}: bad ID {:.40}", n + 1, v.trim()))?,
            );
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse::<usize>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse::<usize>().ok();
            } else if !part.is_empty() && decl.is_none() && !part.contains(':') {
                decl = Some(part);
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            return Err(format!(
                "line {}: expected `field:TYPE NAME; offset:N; size:N;`",
                n + 1
            ));
        };
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or(decl);
        let name = name.split('[').next().unwrap_or(name).to_string();
        fields.push((name, offset, size));
    }
    let id = id.ok_or("no `ID:` line")?;
    Ok(TpFormat { id, fields })
}

/// Where a field lies in a raw record.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    offset: usize,
    size: usize,
}

impl Field {
    /// The field as an unsigned integer (native byte order); `None` when the
    /// record is too short or the size is not 1, 2, 4 or 8.
    pub(crate) fn uint(&self, raw: &[u8]) -> Option<u64> {
        let b = raw.get(self.offset..self.offset.checked_add(self.size)?)?;
        Some(match self.size {
            1 => u64::from(b[0]),
            2 => u64::from(u16::from_ne_bytes([b[0], b[1]])),
            4 => u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            8 => u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            _ => return None,
        })
    }

    pub(crate) fn bytes<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        raw.get(self.offset..self.offset.checked_add(self.size)?)
    }

    pub(crate) fn ip(&self, raw: &[u8]) -> Option<IpAddr> {
        let b = self.bytes(raw)?;
        match b.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                let v6 = Ipv6Addr::from(a);
                // A v4-mapped address is an IPv4 flow on a dual-stack socket.
                Some(match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                })
            }
            _ => None,
        }
    }
}
