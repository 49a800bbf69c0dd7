//! Splits PTX text into tokens with line numbers and byte offsets.

use crate::EmuError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Identifiers, directives, opcodes and registers: `.reg`, `%r1`, `mma.sync.aligned…`,
    /// `$L__BB0_1`, `ld.shared::cta.b32`.
    Ident(String),
    /// A numeric literal as written (`16`, `0x1f`, `0f3F800000`, `1.5`).
    Num(String),
    /// A string literal (only in `.pragma`/`.file`).
    Str,
    /// One punctuation character.
    Punct(char),
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub start: usize,
    pub end: usize,
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

/// Tokenizes, dropping `//` and `/* */` comments.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, EmuError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let open = line;
            i += 2;
            loop {
                if i + 1 >= b.len() {
                    return Err(EmuError::Parse {
                        line: open,
                        message: "unterminated block comment".into(),
                    });
                }
                if b[i] == b'*' && b[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\n' {
                    return Err(EmuError::Parse {
                        line,
                        message: "unterminated string".into(),
                    });
                }
                i += 1;
            }
            i += 1;
            out.push(Token {
                tok: Tok::Str,
                line,
                start,
                end: i,
            });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                // Exponent signs inside decimal floats: 1e-3.
                i += 1;
                if i < b.len()
                    && matches!(b[i], b'+' | b'-')
                    && matches!(b[i - 1], b'e' | b'E')
                    && !src[start..i].starts_with("0x")
                    && !src[start..i].starts_with("0f")
                    && !src[start..i].starts_with("0d")
                {
                    i += 1;
                }
            }
            out.push(Token {
                tok: Tok::Num(src[start..i].to_string()),
                line,
                start,
                end: i,
            });
        } else if ident_start(c) {
            let start = i;
            loop {
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                // `.shared::cta`, `.shared::cluster`: the `::` belongs to the name.
                if i + 2 < b.len() && b[i] == b':' && b[i + 1] == b':' && ident_char(b[i + 2]) {
                    i += 2;
                    continue;
                }
                break;
            }
            out.push(Token {
                tok: Tok::Ident(src[start..i].to_string()),
                line,
                start,
                end: i,
            });
        } else if b",;:[]{}()<>+-@!|=".contains(&c) {
            out.push(Token {
                tok: Tok::Punct(c as char),
                line,
                start: i,
                end: i + 1,
            });
            i += 1;
        } else {
            return Err(EmuError::Parse {
                line,
                message: format!(
                    "unexpected character `{}`",
                    src[i..].chars().next().unwrap_or('?')
                ),
            });
        }
    }
    Ok(out)
}

/// Parses an integer literal: decimal, `0x` hex, `0` octal-free decimal, `0b` binary, with an
/// optional `U` suffix.
pub(crate) fn parse_int(s: &str) -> Option<u64> {
    let t = s.trim_end_matches(['U', 'u']);
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(bin) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        u64::from_str_radix(bin, 2).ok()
    } else {
        t.parse::<u64>().ok()
    }
}

/// A float literal's bits: `0fXXXXXXXX` (f32 bits), `0dXXXXXXXXXXXXXXXX` (f64 bits), or a
/// decimal float. Returns `(bits, is_f64_literal)`.
pub(crate) fn parse_float(s: &str) -> Option<(u64, bool)> {
    if let Some(h) = s.strip_prefix("0f").or_else(|| s.strip_prefix("0F")) {
        if h.len() == 8 {
            return u32::from_str_radix(h, 16).ok().map(|v| (v as u64, false));
        }
        return None;
    }
    if let Some(h) = s.strip_prefix("0d").or_else(|| s.strip_prefix("0D")) {
        if h.len() == 16 {
            return u64::from_str_radix(h, 16).ok().map(|v| (v, true));
        }
        return None;
    }
    if s.contains(['.', 'e', 'E']) {
        return s.parse::<f64>().ok().map(|v| (v.to_bits(), true));
    }
    None
}
