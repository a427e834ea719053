//! cgroup v2 device allowlist: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built from the same
//! [`DeviceRule`]s v1 writes to `devices.allow`, loaded with bpf(2) and attached to the
//! container's cgroup directory.
//!
//! The program is a flat list of rule blocks. Each block compares the request against one rule
//! and returns 1 (allow) when every comparison holds; a failed comparison jumps to the next
//! block. After the last block the program returns 0: everything not listed is denied.
//!
//! Attached programs stay attached after their fd is closed (the cgroup holds a reference), so
//! nothing needs to be kept open; the program goes away with the cgroup.

use super::DeviceRule;
use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`, 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes of the subset the generator emits.
/// `dst = *(u32 *)(src + off)`
pub const LDX_MEM_W: u8 = 0x61;
/// `w_dst = w_src`
pub const ALU32_MOV_X: u8 = 0xbc;
/// `w_dst &= imm`
pub const ALU32_AND_K: u8 = 0x54;
/// `w_dst >>= imm`
pub const ALU32_RSH_K: u8 = 0x74;
/// `dst = imm` (64 bit)
pub const ALU64_MOV_K: u8 = 0xb7;
/// `if w_dst != imm goto +off`
pub const JMP32_JNE_K: u8 = 0x56;
/// `if w_dst & imm goto +off`
pub const JMP32_JSET_K: u8 = 0x46;
/// `return r0`
pub const EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

/// Device types and access bits as the kernel passes them (BPF_DEVCG_*).
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;

// Registers: r1 = ctx on entry; the fields are unpacked once into r2..r5.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

/// The access bits a rule grants (an empty access string means rwm, as for v1).
fn access_bits(access: &str) -> u32 {
    if access.is_empty() {
        return ACC_MKNOD | ACC_READ | ACC_WRITE;
    }
    access.chars().fold(0, |acc, c| {
        acc | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

/// The program allowing exactly `rules` (type `a` matches block and char devices; its major,
/// minor and access are still honoured; `*` skips that comparison).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, R_TYPE, R1, CTX_ACCESS_TYPE, 0),
        insn(ALU32_MOV_X, R_ACCESS, R_TYPE, 0, 0),
        insn(ALU32_AND_K, R_TYPE, 0, 0, 0xffff),
        insn(ALU32_RSH_K, R_ACCESS, 0, 0, 16),
        insn(LDX_MEM_W, R_MAJOR, R1, CTX_MAJOR, 0),
        insn(LDX_MEM_W, R_MINOR, R1, CTX_MINOR, 0),
    ];
    for r in rules {
        // Checks jump to the next block; their offsets are filled in once its length is known.
        let mut checks: Vec<Insn> = Vec::new();
        match r.kind {
            'c' => checks.push(insn(JMP32_JNE_K, R_TYPE, 0, 0, DEV_CHAR as i32)),
            'b' => checks.push(insn(JMP32_JNE_K, R_TYPE, 0, 0, DEV_BLOCK as i32)),
            _ => {}
        }
        let denied = !access_bits(&r.access) & (ACC_MKNOD | ACC_READ | ACC_WRITE);
        if denied != 0 {
            // Any requested bit outside the rule's access fails it.
            checks.push(insn(JMP32_JSET_K, R_ACCESS, 0, 0, denied as i32));
        }
        if let Some(major) = r.major {
            checks.push(insn(JMP32_JNE_K, R_MAJOR, 0, 0, major as i32));
        }
        if let Some(minor) = r.minor {
            checks.push(insn(JMP32_JNE_K, R_MINOR, 0, 0, minor as i32));
        }
        let n = checks.len();
        for (i, c) in checks.iter_mut().enumerate() {
            // From the instruction after this one to the end of the block (2 for allow+exit).
            c.off = (n - i - 1 + 2) as i16;
        }
        p.extend(checks);
        p.push(insn(ALU64_MOV_K, R0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands, program/attach types and flags from <linux/bpf.h>.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The bpf(2) syscall with one command's attribute struct.
fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] struct laid out like the
    // command's part of `union bpf_attr`, and its size is passed with it; the kernel only reads
    // it and writes back into it (and into buffers its fields point to, which the callers keep
    // alive for the call).
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as libc::c_uint) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf(2) as a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Load `insns` as a cgroup device program; the verifier's log is part of the error.
pub fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    attr.prog_name[..10].copy_from_slice(b"ferry_devs");
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned_fd(fd)),
        Err(e) => {
            // Load again with the verifier's log to say why.
            let mut log = vec![0u8; 1 << 16];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = sys_bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
            Err(Error::Cgroup(format!(
                "load the device program ({} instructions): {e}{}; the kernel needs CONFIG_CGROUP_BPF and the caller CAP_SYS_ADMIN (or CAP_BPF)",
                insns.len(),
                if tail.is_empty() { String::new() } else { format!(" (verifier: {})", tail.join(" / ")) }
            )))
        }
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let f = std::fs::File::open(dir).map_err(|e| Error::Cgroup(format!("open {}: {e}", dir.display())))?;
    Ok(OwnedFd::from(f))
}

/// Ids of the device programs attached directly to the cgroup at `dir` (not inherited ones).
pub fn attached(dir: &Path) -> Result<Vec<u32>> {
    let cg = open_dir(dir)?;
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_QUERY, &mut attr).map_err(|e| Error::Cgroup(format!("query device programs of {}: {e}", dir.display())))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

fn detach(cg: &OwnedFd, prog_id: u32, dir: &Path) -> Result<()> {
    let mut get = GetFdByIdAttr { prog_id, ..Default::default() };
    let prog = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut get)
        .map(owned_fd)
        .map_err(|e| Error::Cgroup(format!("open device program {prog_id} of {}: {e}", dir.display())))?;
    let mut attr =
        AttachAttr { target_fd: cg.as_raw_fd() as u32, attach_bpf_fd: prog.as_raw_fd() as u32, attach_type: BPF_CGROUP_DEVICE, ..Default::default() };
    sys_bpf(BPF_PROG_DETACH, &mut attr).map_err(|e| Error::Cgroup(format!("detach device program {prog_id} from {}: {e}", dir.display())))?;
    Ok(())
}

/// Make `rules` the device policy of the cgroup2 directory `dir`: the new program is attached
/// (BPF_F_ALLOW_MULTI) before the device programs attached there earlier are detached, so the
/// cgroup is never without a policy. Inherited programs of ancestors keep applying too.
pub fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let old = attached(dir)?;
    let prog = load(&program(rules))?;
    let cg = open_dir(dir)?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        Error::Cgroup(format!(
            "attach the device program to {}: {e}; a program attached there without BPF_F_ALLOW_MULTI blocks it (see `bpftool cgroup show {}`)",
            dir.display(),
            dir.display()
        ))
    })?;
    for id in old {
        detach(&cg, id, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the instruction subset [`program`] emits against one request.
    fn run(p: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | dev_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from ctx");
                    r[dst] = ctx[(i.off / 4) as usize] as u64;
                }
                ALU32_MOV_X => r[dst] = r[src] & 0xffff_ffff,
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP32_JNE_K | JMP32_JSET_K => {
                    let v = r[dst] as u32;
                    let taken = if i.code == JMP32_JNE_K { v != i.imm as u32 } else { v & i.imm as u32 != 0 };
                    if taken {
                        pc = (pc as isize + i.off as isize) as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("opcode {c:#x} not in the emitted subset"),
            }
            assert!(pc < p.len(), "fell off the end");
        }
        panic!("no exit");
    }

    fn rules(s: &[&str]) -> Vec<DeviceRule> {
        s.iter().map(|r| DeviceRule::parse(r).unwrap()).collect()
    }

    const RWM: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

    #[test]
    fn empty_rule_set_denies_everything() {
        let p = program(&[]);
        assert_eq!(p.len(), 8);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 7, 0), 0);
    }

    #[test]
    fn known_rule_set_encoding() {
        let p = program(&rules(&["c:1:3:rwm", "b:8:*:r"]));
        // 6 prologue + (3 checks + 2) + (3 checks + 2) + 2 epilogue.
        assert_eq!(p.len(), 6 + 5 + 5 + 2);
        let raw: Vec<[u8; 8]> = p
            .iter()
            .map(|i| {
                let mut b = [0u8; 8];
                b[0] = i.code;
                b[1] = i.regs;
                b[2..4].copy_from_slice(&i.off.to_le_bytes());
                b[4..8].copy_from_slice(&i.imm.to_le_bytes());
                b
            })
            .collect();
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(raw[0], [0x61, 0x12, 0, 0, 0, 0, 0, 0]); // r2 = *(u32 *)(r1 + 0)
        assert_eq!(raw[4], [0x61, 0x14, 4, 0, 0, 0, 0, 0]); // r4 = *(u32 *)(r1 + 4)
                                                            // c:1:3:rwm: type, major, minor; then allow.
        assert_eq!(raw[6], [0x56, 0x02, 4, 0, 2, 0, 0, 0]); // if w2 != 2 goto +4
        assert_eq!(raw[7], [0x56, 0x04, 3, 0, 1, 0, 0, 0]); // if w4 != 1 goto +3
        assert_eq!(raw[8], [0x56, 0x05, 2, 0, 3, 0, 0, 0]); // if w5 != 3 goto +2
        assert_eq!(raw[9], [0xb7, 0x00, 0, 0, 1, 0, 0, 0]); // r0 = 1
        assert_eq!(raw[10], [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // b:8:*:r: type, access (m|w = 5 denied), major.
        assert_eq!(raw[11], [0x56, 0x02, 4, 0, 1, 0, 0, 0]);
        assert_eq!(raw[12], [0x46, 0x03, 3, 0, 5, 0, 0, 0]); // if w3 & 5 goto +3
        assert_eq!(raw[13], [0x56, 0x04, 2, 0, 8, 0, 0, 0]);
        assert_eq!(raw[16], [0xb7, 0x00, 0, 0, 0, 0, 0, 0]); // r0 = 0
                                                             // Every jump lands inside the program.
        for (i, insn) in p.iter().enumerate() {
            if insn.code & 0x07 == 0x06 {
                assert!(i + 1 + (insn.off as usize) < p.len());
            }
        }
    }

    #[test]
    fn decisions_follow_the_rules() {
        let p = program(&rules(&["c:1:3:rwm", "c:136:*:rw", "b:8:*:r", "c:10:200"]));
        // Exact char device, any access.
        assert_eq!(run(&p, DEV_CHAR, RWM, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        // Same numbers as a block device, or a neighbour: denied.
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 1, 3), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 8), 0);
        // Wildcard minor, access limited to rw: mknod refused.
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 42), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 136, 42), 0);
        // Block read only.
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 16), 1);
        assert_eq!(run(&p, DEV_BLOCK, ACC_WRITE, 8, 16), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 7, 0), 0);
        // No access letters given: rwm.
        assert_eq!(run(&p, DEV_CHAR, RWM, 10, 200), 1);
    }

    #[test]
    fn type_a_matches_both_types() {
        let p = program(&rules(&["a:*:*:rwm"]));
        assert_eq!(p.len(), 6 + 2 + 2, "no comparison at all");
        assert_eq!(run(&p, DEV_BLOCK, RWM, 7, 0), 1);
        assert_eq!(run(&p, DEV_CHAR, RWM, 4000, 1 << 19), 1);
        let p = program(&rules(&["a:5:*:r"]));
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 5, 9), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 5, 1), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 5, 1), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 6, 1), 0);
    }

    #[test]
    fn default_rules_allow_container_dev_nodes_only() {
        let p = program(&super::super::devices::default_rules());
        for (maj, min) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, 0), (136, 7)] {
            assert_eq!(run(&p, DEV_CHAR, RWM, maj, min), 1, "c {maj}:{min}");
        }
        for (t, maj, min) in [(DEV_CHAR, 1, 1), (DEV_CHAR, 4, 0), (DEV_CHAR, 10, 200), (DEV_BLOCK, 8, 0), (DEV_BLOCK, 1, 3)] {
            assert_eq!(run(&p, t, ACC_READ, maj, min), 0, "{t} {maj}:{min}");
        }
    }
}
