//! The few MessagePack encodings Arc's columnar write body needs, written
//! by hand (every value of every row goes through them): `str`, arrays and
//! maps by length, the most compact integer (what every MessagePack encoder
//! writes) and float64. Shared by the memory rows ([`encode`](super::encode))
//! and the state rows ([`state_encode`](super::state_encode)); tested byte
//! for byte against a general encoder there.

/// A map header for `n` entries.
pub(crate) fn map_header(out: &mut Vec<u8>, n: usize) {
    collection_header(out, n, [0x80, 0xde, 0xdf]);
}

/// An array header for `n` elements.
pub(crate) fn array_header(out: &mut Vec<u8>, n: usize) {
    collection_header(out, n, [0x90, 0xdc, 0xdd]);
}

/// A map or array header: the fix form below 16, then the 16- and 32-bit
/// length forms (`markers`: fix base, 16-bit, 32-bit).
fn collection_header(out: &mut Vec<u8>, n: usize, [fix, m16, m32]: [u8; 3]) {
    match n {
        0..16 => out.push(fix | n as u8),
        16..65_536 => {
            out.push(m16);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(m32);
            out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
        }
    }
}

/// Writes a MessagePack `str` header for `len` bytes.
fn str_header(out: &mut Vec<u8>, len: usize) {
    match len {
        0..32 => out.push(0xa0 | len as u8),
        32..256 => out.extend_from_slice(&[0xd9, len as u8]),
        256..65_536 => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            // a memory is far below 4 GiB (payload limits); saturate anyway
            out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        }
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    str_header(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// The most compact MessagePack integer for `v` (what `rmp` writes).
pub(crate) fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        let u = v as u64;
        match u {
            0..128 => out.push(u as u8),
            128..256 => out.extend_from_slice(&[0xcc, u as u8]),
            256..65_536 => {
                out.push(0xcd);
                out.extend_from_slice(&(u as u16).to_be_bytes());
            }
            65_536..4_294_967_296 => {
                out.push(0xce);
                out.extend_from_slice(&(u as u32).to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend_from_slice(&u.to_be_bytes());
            }
        }
    } else {
        match v {
            -32..0 => out.push(v as i8 as u8),
            -128..-32 => out.extend_from_slice(&[0xd0, v as i8 as u8]),
            -32_768..-128 => {
                out.push(0xd1);
                out.extend_from_slice(&(v as i16).to_be_bytes());
            }
            -2_147_483_648..-32_768 => {
                out.push(0xd2);
                out.extend_from_slice(&(v as i32).to_be_bytes());
            }
            _ => {
                out.push(0xd3);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_be_bytes());
}

/// Encoded length of a `str` of `n` bytes, header included.
pub(crate) fn str_len(n: usize) -> usize {
    n + match n {
        0..32 => 1,
        32..256 => 2,
        256..65_536 => 3,
        _ => 5,
    }
}

/// Encoded length of an integer (as [`write_int`] writes it).
pub(crate) fn int_len(v: i64) -> usize {
    match v {
        -32..128 => 1,
        -128..256 => 2,
        -32_768..65_536 => 3,
        -2_147_483_648..4_294_967_296 => 5,
        _ => 9,
    }
}
