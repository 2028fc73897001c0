#!/usr/bin/env python3
"""Generates the syscall and errno tables in this directory from the kernel
UAPI headers installed on the build host.

Rerun after updating linux-libc-dev (Debian/Ubuntu) to pick up new syscalls:

    python3 agent/src/names/generate.py && rustfmt --edition 2021 agent/src/names/*.rs

It writes syscalls.rs and errno.rs next to this script, and fails loudly if a
header is missing or a table would contain a duplicate number or name, so a
header change cannot silently produce wrong labels.
"""

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

X86_64_UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
GENERIC_UNISTD = Path("/usr/include/asm-generic/unistd.h")
ERRNO_HEADERS = [
    Path("/usr/include/asm-generic/errno-base.h"),
    Path("/usr/include/asm-generic/errno.h"),
]

# What arch/arm64/include/uapi/asm/unistd.h defines before it includes the
# generic table; these pick the aarch64 variant of each conditional entry.
AARCH64_DEFINES = {
    "__ARCH_WANT_RENAMEAT": 1,
    "__ARCH_WANT_NEW_STAT": 1,
    "__ARCH_WANT_SET_GET_RLIMIT": 1,
    "__ARCH_WANT_TIME32_SYSCALLS": 1,
    "__ARCH_WANT_SYS_CLONE3": 1,
    "__ARCH_WANT_MEMFD_SECRET": 1,
    "__BITS_PER_LONG": 64,
}

# Kernel-internal codes from include/linux/errno.h. They are not in the UAPI
# headers, but they do show up in syscall exit tracepoints (ERESTARTSYS when
# a signal interrupts a blocking call) and some leak to user space
# (ENOTSUPP), so they need names too.
KERNEL_INTERNAL_ERRNO = [
    (512, "ERESTARTSYS"),
    (513, "ERESTARTNOINTR"),
    (514, "ERESTARTNOHAND"),
    (515, "ENOIOCTLCMD"),
    (516, "ERESTART_RESTARTBLOCK"),
    (517, "EPROBE_DEFER"),
    (518, "EOPENSTALE"),
    (519, "ENOPARAM"),
    (521, "EBADHANDLE"),
    (522, "ENOTSYNC"),
    (523, "EBADCOOKIE"),
    (524, "ENOTSUPP"),
    (525, "ETOOSMALL"),
    (526, "ESERVERFAULT"),
    (527, "EBADTYPE"),
    (528, "EJUKEBOX"),
    (529, "EIOCBQUEUED"),
    (530, "ERECALLCONFLICT"),
    (531, "ENOGRACE"),
]

# Bookkeeping macros in unistd headers that are not syscalls.
NOT_SYSCALLS = {"syscalls", "arch_specific_syscall"}


def read(path):
    try:
        return path.read_text()
    except OSError as err:
        sys.exit(f"generate.py: cannot read {path}: {err}")


def parse_x86_64(text):
    table = []
    for m in re.finditer(r"^#define\s+__NR_(\w+)\s+(\d+)\s*$", text, re.M):
        table.append((int(m.group(2)), m.group(1)))
    return table


def eval_condition(expr, defined):
    """Evaluates the small subset of C preprocessor expressions used by
    asm-generic/unistd.h: defined(X), identifiers, integers, ==, !=, !, &&, ||."""
    expr = re.sub(
        r"defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)",
        lambda m: " 1 " if (m.group(1) or m.group(2)) in defined else " 0 ",
        expr,
    )
    # Undefined identifiers are 0 in #if, as in C.
    expr = re.sub(r"[A-Za-z_]\w*", lambda m: f" {defined.get(m.group(0), 0)} ", expr)
    expr = expr.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    if not re.fullmatch(r"[\s\d()=!<>]*(?:(?:and|or|not)[\s\d()=!<>]*)*", expr):
        sys.exit(f"generate.py: unsupported #if expression: {expr!r}")
    return bool(eval(expr, {"__builtins__": {}}))  # noqa: S307 - checked above


def parse_generic(text, defines):
    """Runs the conditionals of asm-generic/unistd.h for one architecture and
    resolves the __NR3264_* indirections to the 64-bit names."""
    defined = dict(defines)
    # Each entry: (this branch active, some branch of this #if already taken).
    stack = []
    nr3264 = {}
    table = []

    def active():
        return all(branch for branch, _ in stack)

    for raw in text.splitlines():
        line = raw.split("/*")[0].strip()
        if m := re.match(r"#\s*ifdef\s+(\w+)", line):
            cond = m.group(1) in defined
            stack.append((cond, cond))
        elif m := re.match(r"#\s*ifndef\s+(\w+)", line):
            cond = m.group(1) not in defined
            stack.append((cond, cond))
        elif m := re.match(r"#\s*if\s+(.*)", line):
            cond = eval_condition(m.group(1), defined)
            stack.append((cond, cond))
        elif m := re.match(r"#\s*elif\s+(.*)", line):
            _, taken = stack.pop()
            cond = not taken and eval_condition(m.group(1), defined)
            stack.append((cond, taken or cond))
        elif re.match(r"#\s*else\b", line):
            _, taken = stack.pop()
            stack.append((not taken, True))
        elif re.match(r"#\s*endif\b", line):
            stack.pop()
        elif not active():
            continue
        elif m := re.match(r"#\s*undef\s+(\w+)", line):
            defined.pop(m.group(1), None)
        elif m := re.match(r"#\s*define\s+(\w+)(\S*)\s*(.*)", line):
            name, params, value = m.group(1), m.group(2), m.group(3).strip()
            defined[name] = int(value) if value.isdigit() else 1
            if params:  # function-like macro such as __SYSCALL(x, y)
                continue
            if name.startswith("__NR3264_"):
                nr3264[name] = int(value)
            elif name.startswith("__NR_") and name[5:] not in NOT_SYSCALLS:
                if value.isdigit():
                    table.append((int(value), name[5:]))
                elif value in nr3264:
                    table.append((nr3264[value], name[5:]))
                else:
                    sys.exit(f"generate.py: cannot resolve {name} = {value!r}")
    if stack:
        sys.exit("generate.py: unbalanced #if in asm-generic/unistd.h")
    return table


def parse_errno(texts):
    table = []
    for text in texts:
        # Aliases (EWOULDBLOCK -> EAGAIN, EDEADLOCK -> EDEADLK) have a name as
        # their value and are skipped, so each number keeps its canonical name.
        for m in re.finditer(r"^#define\s+(E\w+)\s+(\d+)\b", text, re.M):
            table.append((int(m.group(2)), m.group(1)))
    return table + KERNEL_INTERNAL_ERRNO


def checked(table, what):
    table = sorted(table)
    numbers = [nr for nr, _ in table]
    names = [name for _, name in table]
    if not table:
        sys.exit(f"generate.py: no entries found for {what}")
    if len(set(numbers)) != len(numbers) or len(set(names)) != len(names):
        sys.exit(f"generate.py: duplicate number or name in {what}")
    return table


def rust_table(name, table, cfg):
    rows = "".join(f'    ({nr}, "{sym}"),\n' for nr, sym in table)
    return f"{cfg}pub(super) static {name}: &[(u32, &str)] = &[\n{rows}];\n"


def main():
    x86_64 = checked(parse_x86_64(read(X86_64_UNISTD)), X86_64_UNISTD)
    aarch64 = checked(parse_generic(read(GENERIC_UNISTD), AARCH64_DEFINES), GENERIC_UNISTD)
    errno = checked(parse_errno([read(p) for p in ERRNO_HEADERS]), "errno headers")

    sources = f"{X86_64_UNISTD} and {GENERIC_UNISTD}"
    syscalls = (
        f"// @generated by names/generate.py from {sources}\n"
        "// Do not edit by hand; rerun the script instead.\n"
        "\n"
        "//! Syscall number to name tables, sorted by number.\n"
        "//!\n"
        "//! Each table is compiled for its own architecture, and for tests on\n"
        "//! any host so both can be checked everywhere.\n"
        "\n"
        + rust_table("X86_64", x86_64, '#[cfg(any(target_arch = "x86_64", test))]\n')
        + "\n"
        "/// aarch64 uses the asm-generic numbering, with the 64-bit names for the\n"
        "/// `__NR3264_*` entries (`fcntl`, `lseek`, `mmap`, `newfstatat`, ...).\n"
        + rust_table("AARCH64", aarch64, '#[cfg(any(target_arch = "aarch64", test))]\n')
    )
    errno_rs = (
        "// @generated by names/generate.py from "
        + " and ".join(str(p) for p in ERRNO_HEADERS)
        + " plus the kernel-internal codes of include/linux/errno.h\n"
        "// Do not edit by hand; rerun the script instead.\n"
        "\n"
        "//! Errno number to name table, sorted by number. Aliases are left out so\n"
        "//! each number has its canonical name (EAGAIN, not EWOULDBLOCK).\n"
        "\n" + rust_table("ERRNO", errno, "")
    )
    (HERE / "syscalls.rs").write_text(syscalls)
    (HERE / "errno.rs").write_text(errno_rs)
    print(
        f"wrote {len(x86_64)} x86_64 syscalls, {len(aarch64)} aarch64 syscalls, "
        f"{len(errno)} errno names"
    )


if __name__ == "__main__":
    main()
