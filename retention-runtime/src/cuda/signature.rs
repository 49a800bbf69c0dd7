//! Kernel parameter lists read from PTX `.entry` declarations, so a launch whose arguments
//! disagree with the kernel in number or type is a typed error instead of undefined behaviour.

use std::fmt;

/// The declared type of one `.param` of a kernel entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    /// `.u32`
    U32,
    /// `.s32`
    S32,
    /// `.b32` (any 32-bit value)
    B32,
    /// `.f32`
    F32,
    /// `.u64` (also how pointers are passed)
    U64,
    /// `.s64`
    S64,
    /// `.b64` (any 64-bit value)
    B64,
    /// `.f64`
    F64,
    /// Anything no [`KernelArg`](super::KernelArg) can fill (8/16-bit types, byte arrays,
    /// `.pred`), with its declaration text.
    Other(String),
}

impl ParamType {
    fn from_ptx(token: &str) -> Option<Self> {
        Some(match token {
            ".u32" => Self::U32,
            ".s32" => Self::S32,
            ".b32" => Self::B32,
            ".f32" => Self::F32,
            ".u64" => Self::U64,
            ".s64" => Self::S64,
            ".b64" => Self::B64,
            ".f64" => Self::F64,
            _ => return None,
        })
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::U32 => ".u32",
            Self::S32 => ".s32",
            Self::B32 => ".b32",
            Self::F32 => ".f32",
            Self::U64 => ".u64",
            Self::S64 => ".s64",
            Self::B64 => ".b64",
            Self::F64 => ".f64",
            Self::Other(decl) => decl,
        };
        f.write_str(name)
    }
}

/// One kernel entry: its name and parameter types in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntrySignature {
    pub(super) name: String,
    pub(super) params: Vec<ParamType>,
}

/// Every `.entry` of a PTX module, in order.
///
/// # Errors
/// A message when the text declares no entry, declares one twice, or an entry's parameter
/// list is not closed.
pub(super) fn parse_entries(ptx: &str) -> Result<Vec<EntrySignature>, String> {
    let text = strip_comments(ptx);
    let mut entries: Vec<EntrySignature> = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = find_directive(rest, ".entry") {
        rest = &rest[at + ".entry".len()..];
        let trimmed = rest.trim_start();
        let name_len = trimmed
            .find(|c: char| c == '(' || c == '{' || c.is_whitespace())
            .unwrap_or(trimmed.len());
        let name = trimmed[..name_len].to_string();
        if name.is_empty() {
            return Err("a `.entry` directive has no name".into());
        }
        let after_name = trimmed[name_len..].trim_start();
        let params = if let Some(list) = after_name.strip_prefix('(') {
            let close = list
                .find(')')
                .ok_or_else(|| format!("the parameter list of entry `{name}` is not closed"))?;
            parse_params(&list[..close])
        } else {
            Vec::new()
        };
        if entries.iter().any(|e| e.name == name) {
            return Err(format!("entry `{name}` is declared twice"));
        }
        entries.push(EntrySignature { name, params });
        rest = after_name;
    }
    if entries.is_empty() {
        return Err("the PTX text declares no `.entry`".into());
    }
    Ok(entries)
}

fn parse_params(list: &str) -> Vec<ParamType> {
    list.split(',')
        .map(str::trim)
        .filter(|decl| !decl.is_empty())
        .map(|decl| {
            let is_array = decl.contains('[');
            let declared = decl.split_whitespace().find_map(ParamType::from_ptx);
            match declared {
                Some(ty) if !is_array => ty,
                _ => ParamType::Other(decl.to_string()),
            }
        })
        .collect()
}

/// Position of `directive` as a whole token (so `.entry` does not match `.entryx`).
fn find_directive(text: &str, directive: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(directive) {
        let at = from + found;
        let before_ok = at == 0 || text[..at].ends_with(|c: char| c.is_whitespace());
        let after = &text[at + directive.len()..];
        let after_ok = after.starts_with(|c: char| c.is_whitespace());
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + directive.len();
    }
    None
}

/// PTX comments are C++ style; a commented-out `.entry` must not count.
fn strip_comments(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    let mut rest = ptx;
    while let Some(start) = rest.find('/') {
        let (kept, tail) = rest.split_at(start);
        out.push_str(kept);
        if let Some(comment) = tail.strip_prefix("//") {
            // Keep the newline: it separates tokens.
            rest = comment.find('\n').map_or("", |nl| &comment[nl..]);
        } else if let Some(comment) = tail.strip_prefix("/*") {
            out.push(' ');
            rest = comment.find("*/").map_or("", |end| &comment[end + 2..]);
        } else {
            out.push('/');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_and_param_types_in_order() {
        let ptx = "
.version 8.0
.target sm_80
.address_size 64
// .entry commented_out(.param .u64 x)
/* .entry also_commented(.param .u64 y) */
.visible .entry add_one(
\t.param .u64 .ptr.global .align 4 add_one_param_0,
\t.param .u32 add_one_param_1
)
.maxntid 256, 1, 1
{ ret; }
.visible .entry scale(.param .u64 p, .param .f32 s, .param .s64 n, .param .align 4 .b8 blob[8])
{ ret; }
.entry no_params
{ ret; }
";
        let entries = parse_entries(ptx).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["add_one", "scale", "no_params"]);
        assert_eq!(entries[0].params, [ParamType::U64, ParamType::U32]);
        assert_eq!(entries[1].params.len(), 4);
        assert_eq!(
            entries[1].params[..3],
            [ParamType::U64, ParamType::F32, ParamType::S64]
        );
        assert!(matches!(&entries[1].params[3], ParamType::Other(d) if d.contains("blob[8]")));
        assert!(entries[2].params.is_empty());
    }

    #[test]
    fn rejects_text_without_entries_or_with_duplicates() {
        assert!(parse_entries(".version 8.0\n.target sm_80\n.func f() { ret; }").is_err());
        let twice = ".entry k(.param .u32 a) { ret; }\n.entry k(.param .u32 a) { ret; }";
        assert!(parse_entries(twice).unwrap_err().contains("twice"));
        assert!(parse_entries(".entry k(.param .u32 a { ret; }").is_err());
    }
}
