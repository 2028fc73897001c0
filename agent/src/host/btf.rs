//! Minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs have no CO-RE relocations, so the agent looks up the
//! byte offsets of the kernel struct members it reads at load time and hands
//! them to the programs. Only what that needs is parsed: type kinds, names,
//! modifier targets and struct/union members.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_HEADER_LEN: usize = 12;
const MEMBER_LEN: usize = 12;

const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Bounds the walks over modifier chains and anonymous members, so a
/// malformed (cyclic) blob gives an error instead of hanging or overflowing
/// the stack. Real kernels need a handful of levels at most.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading BTF from {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("BTF magic bytes are {0:02x?}: big-endian BTF is not supported")]
    BigEndian([u8; 2]),
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("no struct or union `{0}` in BTF")]
    NoStruct(String),
    #[error("`{ty}` has no member `{member}`")]
    NoMember { ty: String, member: String },
    #[error("`{ty}.{member}` is not a struct or union (pointers are not followed)")]
    NotComposite { ty: String, member: String },
    #[error("`{ty}.{member}` is a bitfield at bit offset {bit_offset}, not on a byte boundary")]
    Bitfield {
        ty: String,
        member: String,
        bit_offset: u64,
    },
}

/// Parsed BTF: the types we care about plus the string section.
pub struct Btf {
    /// Indexed by type id; entry 0 stands for `void`.
    types: Vec<Type>,
    /// Members of all structs and unions; `Type::members` ranges into this.
    members: Vec<Member>,
    strings: Vec<u8>,
    /// Named structs and unions; the first definition of a name wins.
    composites: HashMap<String, u32>,
}

struct Type {
    kind: u8,
    name_off: u32,
    /// The target type id for modifiers; unused for other kinds.
    size_or_type: u32,
    members: Range<usize>,
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

impl fmt::Debug for Btf {
    // The full type table is megabytes; counts are what is useful in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("composites", &self.composites.len())
            .finish_non_exhaustive()
    }
}

impl Btf {
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(bytes)
    }

    pub fn parse(bytes: Vec<u8>) -> Result<Self, BtfError> {
        let magic = bytes
            .get(..2)
            .ok_or_else(|| malformed("shorter than the magic number"))?;
        if u16::from_be_bytes([magic[0], magic[1]]) == MAGIC {
            return Err(BtfError::BigEndian([magic[0], magic[1]]));
        }
        if u16::from_le_bytes([magic[0], magic[1]]) != MAGIC {
            return Err(malformed(format!("bad magic {magic:02x?}")));
        }
        if bytes.len() < HEADER_LEN {
            return Err(malformed("truncated header"));
        }
        let version = bytes[2];
        if version != 1 {
            return Err(malformed(format!("unsupported version {version}")));
        }
        let hdr_len = read_u32(&bytes, 4)?;
        let type_section = section(
            &bytes,
            "type",
            hdr_len,
            read_u32(&bytes, 8)?,
            read_u32(&bytes, 12)?,
        )?;
        let str_section = section(
            &bytes,
            "string",
            hdr_len,
            read_u32(&bytes, 16)?,
            read_u32(&bytes, 20)?,
        )?;

        let mut btf = Btf {
            types: vec![Type {
                kind: 0,
                name_off: 0,
                size_or_type: 0,
                members: 0..0,
            }],
            members: Vec::new(),
            strings: bytes[str_section].to_vec(),
            composites: HashMap::new(),
        };
        btf.parse_types(&bytes[type_section])?;
        btf.index_composites()?;
        Ok(btf)
    }

    fn parse_types(&mut self, data: &[u8]) -> Result<(), BtfError> {
        let mut pos = 0;
        while pos < data.len() {
            let id = self.types.len();
            let name_off = read_u32(data, pos)?;
            let info = read_u32(data, pos + 4)?;
            let size_or_type = read_u32(data, pos + 8)?;
            pos += TYPE_HEADER_LEN;

            let vlen = (info & 0xffff) as usize;
            let kind = ((info >> 24) & 0x1f) as u8;
            let kind_flag = info >> 31 == 1;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                _ => return Err(malformed(format!("type id {id} has unknown kind {kind}"))),
            };
            let end = pos
                .checked_add(extra)
                .filter(|&end| end <= data.len())
                .ok_or_else(|| malformed(format!("type id {id} runs past the type section")))?;

            let first_member = self.members.len();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for m in data[pos..end].chunks_exact(MEMBER_LEN) {
                    let offset = read_u32(m, 8)?;
                    // With kind_flag the top byte holds the bitfield size;
                    // only the bit offset matters for locating the member.
                    let bit_offset = if kind_flag {
                        offset & 0x00ff_ffff
                    } else {
                        offset
                    };
                    self.members.push(Member {
                        name_off: read_u32(m, 0)?,
                        type_id: read_u32(m, 4)?,
                        bit_offset,
                    });
                }
            }
            self.types.push(Type {
                kind,
                name_off,
                size_or_type,
                members: first_member..self.members.len(),
            });
            pos = end;
        }
        Ok(())
    }

    fn index_composites(&mut self) -> Result<(), BtfError> {
        let mut composites = HashMap::new();
        for (id, ty) in self.types.iter().enumerate() {
            if ty.kind != KIND_STRUCT && ty.kind != KIND_UNION {
                continue;
            }
            let name = self.name(ty.name_off)?;
            if !name.is_empty() {
                // Type ids fit in u32: the type section length is a u32.
                composites.entry(name.to_owned()).or_insert(id as u32);
            }
        }
        self.composites = composites;
        Ok(())
    }

    /// Byte offset of a (possibly nested, dot-separated) member path inside a struct or union,
    /// e.g. member_offset("sock", "sk_cgrp_data.cgroup"). Members of anonymous struct/union
    /// members are found transparently (sock has several; task_struct
    /// gains one on randstruct kernels). Each path component after the
    /// first is looked up in the type of the previous member (following typedef/const/volatile/
    /// restrict/type_tag modifiers, NOT pointers). Error if the member is a bitfield not on a byte boundary.
    pub fn member_offset(&self, struct_name: &str, member_path: &str) -> Result<u32, BtfError> {
        let mut type_id = *self
            .composites
            .get(struct_name)
            .ok_or_else(|| BtfError::NoStruct(struct_name.to_owned()))?;
        let mut bits: u64 = 0;
        // The path walked so far, for error messages.
        let mut walked = struct_name.to_owned();
        for component in member_path.split('.') {
            // An empty name would match the first anonymous member.
            if component.is_empty() {
                return Err(BtfError::NoMember {
                    ty: walked,
                    member: member_path.to_owned(),
                });
            }
            let id = self.resolve(type_id)?;
            let ty = self.ty(id)?;
            if ty.kind != KIND_STRUCT && ty.kind != KIND_UNION {
                let (ty, member) = walked.rsplit_once('.').unwrap_or(("", &walked));
                return Err(BtfError::NotComposite {
                    ty: ty.to_owned(),
                    member: member.to_owned(),
                });
            }
            let (offset, member_type) =
                self.find_member(id, component, 0)?
                    .ok_or_else(|| BtfError::NoMember {
                        ty: walked.clone(),
                        member: component.to_owned(),
                    })?;
            bits += offset;
            type_id = member_type;
            walked.push('.');
            walked.push_str(component);
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield {
                ty: struct_name.to_owned(),
                member: member_path.to_owned(),
                bit_offset: bits,
            });
        }
        u32::try_from(bits / 8).map_err(|_| malformed(format!("offset of {walked} overflows")))
    }

    /// Finds `name` among the members of composite `id`, descending into
    /// anonymous struct/union members. Returns (bit offset, member type id).
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: usize,
    ) -> Result<Option<(u64, u32)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!(
                "anonymous members nest too deep at type id {id}"
            )));
        }
        let ty = self.ty(id)?;
        let members = self
            .members
            .get(ty.members.clone())
            .ok_or_else(|| malformed(format!("type id {id} has bad member range")))?;
        for m in members {
            let member_name = self.name(m.name_off)?;
            if member_name == name {
                return Ok(Some((u64::from(m.bit_offset), m.type_id)));
            }
            if member_name.is_empty() {
                let inner = self.resolve(m.type_id)?;
                let kind = self.ty(inner)?.kind;
                if kind == KIND_STRUCT || kind == KIND_UNION {
                    if let Some((offset, t)) = self.find_member(inner, name, depth + 1)? {
                        return Ok(Some((u64::from(m.bit_offset) + offset, t)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Follows typedef and qualifier chains to the underlying type id.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(malformed(format!(
            "modifier chain too long at type id {id}"
        )))
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| malformed(format!("reference to missing type id {id}")))
    }

    fn name(&self, off: u32) -> Result<&str, BtfError> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or_else(|| malformed(format!("string offset {off} out of bounds")))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(format!("string at offset {off} is not terminated")))?;
        std::str::from_utf8(&rest[..len])
            .map_err(|_| malformed(format!("string at offset {off} is not UTF-8")))
    }
}

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

fn read_u32(data: &[u8], pos: usize) -> Result<u32, BtfError> {
    pos.checked_add(4)
        .and_then(|end| data.get(pos..end))
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| malformed(format!("truncated at byte {pos}")))
}

/// Byte range of a section that starts `off` bytes after the header.
fn section(
    bytes: &[u8],
    what: &str,
    hdr_len: u32,
    off: u32,
    len: u32,
) -> Result<Range<usize>, BtfError> {
    let start = u64::from(hdr_len) + u64::from(off);
    let end = start + u64::from(len);
    if end > bytes.len() as u64 {
        return Err(malformed(format!(
            "{what} section {start}..{end} exceeds blob length {}",
            bytes.len()
        )));
    }
    Ok(start as usize..end as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds little BTF blobs for tests; type ids are handed out in order.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn push(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        fn ty(
            &mut self,
            name: &str,
            kind: u8,
            vlen: u32,
            kind_flag: bool,
            size_or_type: u32,
        ) -> u32 {
            let name_off = self.str(name);
            let info = vlen | u32::from(kind) << 24 | u32::from(kind_flag) << 31;
            self.push(&[name_off, info, size_or_type]);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.ty(name, KIND_INT, 0, false, size);
            self.push(&[size * 8]);
            id
        }

        /// Members are (name, type id, offset word as stored).
        fn composite(
            &mut self,
            kind: u8,
            name: &str,
            size: u32,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.ty(name, kind, members.len() as u32, kind_flag, size);
            for &(n, t, off) in members {
                let n = self.str(n);
                self.push(&[n, t, off]);
            }
            id
        }

        fn build(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            let type_len = self.types.len() as u32;
            for w in [
                HEADER_LEN as u32,
                0,
                type_len,
                type_len,
                self.strings.len() as u32,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    /// struct inner { int a; int b; };            typedef struct inner inner_t;
    /// struct outer {
    ///     char first;                             // byte 0
    ///     const inner_t inner;                    // byte 8
    ///     union { int x; struct { int pad; int deep; }; };  // byte 16
    ///     struct outer *next;                     // byte 24
    /// };
    /// struct bits { int a:3; int b:5; int c; };   // kind_flag encoding
    /// typedef struct loop loop;                   // points at itself
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let char_ = b.int("char", 1);
        let inner = b.composite(
            KIND_STRUCT,
            "inner",
            8,
            false,
            &[("a", int, 0), ("b", int, 32)],
        );
        let inner_t = b.ty("inner_t", KIND_TYPEDEF, 0, false, inner);
        let const_inner = b.ty("", KIND_CONST, 0, false, inner_t);
        let anon_struct = b.composite(
            KIND_STRUCT,
            "",
            8,
            false,
            &[("pad", int, 0), ("deep", int, 32)],
        );
        let anon_union = b.composite(
            KIND_UNION,
            "",
            8,
            false,
            &[("x", int, 0), ("", anon_struct, 0)],
        );
        let outer_ptr = b.ty("", KIND_PTR, 0, false, b.next_id + 1);
        b.composite(
            KIND_STRUCT,
            "outer",
            32,
            false,
            &[
                ("first", char_, 0),
                ("inner", const_inner, 64),
                ("", anon_union, 128),
                ("next", outer_ptr, 192),
            ],
        );
        b.composite(
            KIND_STRUCT,
            "bits",
            8,
            true,
            &[("a", int, 3 << 24), ("b", int, 5 << 24 | 3), ("c", int, 32)],
        );
        let loop_id = b.next_id;
        b.ty("loop", KIND_TYPEDEF, 0, false, loop_id);
        b.composite(KIND_STRUCT, "has_loop", 4, false, &[("l", loop_id, 0)]);
        b.build()
    }

    #[test]
    fn offsets() {
        let btf = Btf::parse(sample()).expect("parse");
        let off = |s, m| {
            btf.member_offset(s, m)
                .unwrap_or_else(|e| panic!("{s}.{m}: {e}"))
        };
        assert_eq!(off("outer", "first"), 0);
        assert_eq!(off("outer", "inner"), 8);
        // Through const + typedef into struct inner.
        assert_eq!(off("outer", "inner.b"), 12);
        // Anonymous union, and an anonymous struct inside it.
        assert_eq!(off("outer", "x"), 16);
        assert_eq!(off("outer", "deep"), 20);
        assert_eq!(off("outer", "next"), 24);
        assert_eq!(off("bits", "c"), 4);
        assert_eq!(off("bits", "a"), 0);
    }

    #[test]
    fn lookup_errors() {
        let btf = Btf::parse(sample()).expect("parse");
        let err = |s, m| btf.member_offset(s, m).expect_err("should fail");
        assert!(matches!(err("nope", "a"), BtfError::NoStruct(s) if s == "nope"));
        assert!(matches!(
            err("outer", "inner.zz"),
            BtfError::NoMember { ty, member } if ty == "outer.inner" && member == "zz"
        ));
        // Pointers are not followed.
        assert!(matches!(
            err("outer", "next.first"),
            BtfError::NotComposite { ty, member } if ty == "outer" && member == "next"
        ));
        assert!(matches!(
            err("outer", "first.x"),
            BtfError::NotComposite { .. }
        ));
        assert!(matches!(
            err("bits", "b"),
            BtfError::Bitfield { bit_offset: 3, .. }
        ));
        assert!(matches!(err("has_loop", "l.x"), BtfError::Malformed(_)));
        assert!(matches!(err("outer", ""), BtfError::NoMember { .. }));
    }

    #[test]
    fn malformed_blobs() {
        let blob = sample();
        for len in 0..blob.len() {
            assert!(
                Btf::parse(blob[..len].to_vec()).is_err(),
                "truncated to {len} parsed"
            );
        }
        let mut big_endian = blob.clone();
        big_endian.swap(0, 1);
        assert!(matches!(
            Btf::parse(big_endian),
            Err(BtfError::BigEndian(_))
        ));

        // Corrupting any single byte may or may not be an error, but must not panic.
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0xff;
            if let Ok(btf) = Btf::parse(bad) {
                for (s, m) in [("outer", "inner.b"), ("outer", "deep"), ("bits", "c")] {
                    let _ = btf.member_offset(s, m);
                }
            }
        }
    }

    /// Ground truth from `bpftool btf dump ... format raw`: per type id, its
    /// kind, name, `type_id=` target and members (name, type id, bit offset).
    #[derive(Default)]
    struct RawType {
        kind: String,
        name: String,
        target: u32,
        members: Vec<(String, u32, u64)>,
    }

    fn parse_bpftool_raw(text: &str) -> HashMap<u32, RawType> {
        let field = |line: &str, key: &str| -> Option<u64> {
            let rest = &line[line.find(key)? + key.len()..];
            rest.split_whitespace().next()?.parse().ok()
        };
        let mut types = HashMap::new();
        let mut current = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('[') {
                // [114] STRUCT 'task_struct' size=3264 vlen=248
                let (id, rest) = rest.split_once("] ").expect("type line");
                let id: u32 = id.parse().expect("type id");
                let (kind, rest) = rest.split_once(' ').expect("kind");
                let name = rest.split('\'').nth(1).unwrap_or_default();
                let raw = RawType {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    target: field(rest, "type_id=").unwrap_or(0) as u32,
                    members: Vec::new(),
                };
                types.insert(id, raw);
                current = Some(id);
            } else if let (Some(id), Some(rest)) = (current, line.strip_prefix("\t'")) {
                // 'exit_code' type_id=21 bits_offset=9312
                let (name, rest) = rest.split_once('\'').expect("member name");
                if let (Some(t), Some(off)) = (field(rest, "type_id="), field(rest, "bits_offset="))
                {
                    let ty = types.get_mut(&id).expect("current type");
                    ty.members.push((name.to_owned(), t as u32, off));
                }
            }
        }
        types
    }

    /// Bit offset of a dotted path per bpftool, descending into '(anon)' members.
    fn raw_bits(types: &HashMap<u32, RawType>, struct_id: u32, path: &str) -> Option<u64> {
        fn resolve(types: &HashMap<u32, RawType>, mut id: u32) -> u32 {
            while let Some(t) = types.get(&id) {
                match t.kind.as_str() {
                    "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => id = t.target,
                    _ => break,
                }
            }
            id
        }
        fn find(types: &HashMap<u32, RawType>, id: u32, name: &str) -> Option<(u64, u32)> {
            for (n, t, off) in &types.get(&id)?.members {
                if n == name {
                    return Some((*off, *t));
                }
                if n == "(anon)" {
                    if let Some((inner, t)) = find(types, resolve(types, *t), name) {
                        return Some((off + inner, t));
                    }
                }
            }
            None
        }
        let (mut id, mut bits) = (struct_id, 0);
        for component in path.split('.') {
            let (off, t) = find(types, resolve(types, id), component)?;
            bits += off;
            id = t;
        }
        Some(bits)
    }

    #[test]
    fn vmlinux_matches_bpftool() {
        let path = Path::new(Btf::VMLINUX);
        if !path.exists() {
            println!(
                "skipping: {} does not exist (kernel without BTF)",
                path.display()
            );
            return;
        }
        let start = std::time::Instant::now();
        let btf = Btf::from_file(path).expect("parse vmlinux BTF");
        println!("parsed {btf:?} in {:?}", start.elapsed());

        let output = ["bpftool", "/usr/sbin/bpftool"]
            .iter()
            .find_map(|bin| {
                std::process::Command::new(bin)
                    .args(["btf", "dump", "file", Btf::VMLINUX, "format", "raw"])
                    .output()
                    .ok()
            })
            .expect("bpftool not found: run `cargo xtask setup` to install it");
        assert!(
            output.status.success(),
            "bpftool failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let raw = parse_bpftool_raw(&String::from_utf8_lossy(&output.stdout));

        // First struct/union per name, matching Btf's own rule.
        let mut by_name: HashMap<&str, u32> = HashMap::new();
        let mut ids: Vec<_> = raw.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let t = &raw[&id];
            if (t.kind == "STRUCT" || t.kind == "UNION") && t.name != "(anon)" {
                by_name.entry(&t.name).or_insert(id);
            }
        }

        for (s, m) in [
            ("task_struct", "exit_code"),
            ("task_struct", "tgid"),
            ("task_struct", "signal"),
            ("sock", "sk_cgrp_data.cgroup"),
            // Inside an anonymous union of struct sock.
            ("sock", "sk_wq"),
            ("cgroup", "kn"),
            ("kernfs_node", "id"),
            ("signal_struct", "live"),
        ] {
            let id = by_name[s];
            let want = raw_bits(&raw, id, m).unwrap_or_else(|| panic!("bpftool has no {s}.{m}"));
            assert_eq!(want % 8, 0, "{s}.{m} is a bitfield");
            let got = btf
                .member_offset(s, m)
                .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
            assert_eq!(u64::from(got), want / 8, "{s}.{m}");
        }

        // Broader check: every named member of every named struct/union.
        let mut checked = 0;
        for (name, id) in &by_name {
            for (member, _, bits) in &raw[id].members {
                if member == "(anon)" {
                    continue;
                }
                match btf.member_offset(name, member) {
                    Ok(off) => assert_eq!(u64::from(off) * 8, *bits, "{name}.{member}"),
                    Err(BtfError::Bitfield { bit_offset, .. }) => assert_eq!(bit_offset, *bits),
                    Err(e) => panic!("{name}.{member}: {e}"),
                }
                checked += 1;
            }
        }
        println!("checked {checked} members against bpftool");
    }
}
