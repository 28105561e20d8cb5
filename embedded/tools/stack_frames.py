#!/usr/bin/python3
"""The largest stack frames of an ARM (Thumb) firmware image, read from its disassembly.

    stack_frames.py ELF [--top 10]

A function's frame is what its prologue takes from `sp`: the registers it pushes (`push` /
`push.w` / `stmdb sp!`, 4 bytes each), `vpush` (4 or 8 bytes per register) and the
immediate it subtracts (`sub sp, #N`, `sub.w sp, sp, #N`, `subw sp, sp, #N`, or a constant
loaded into a register first and then subtracted from or, negative, added to `sp` —
`movw`/`movt` on Thumb-2, `ldr rN, [pc, ...]` / `add sp, rN` on Thumb-1). Only each
function's first adjustment run (its prologue) is counted, so a frame that a function grows
later (a dynamic `alloca`, which this firmware has none of) would be missed. The numbers are
per function, not per call chain: the deepest chain is at least the largest frame.

Uses `llvm-objdump` (the Debian llvm package, or the one rustup's llvm-tools ship).
"""

import argparse
import re
import shutil
import subprocess
import sys

FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
INSN = re.compile(r"^\s*[0-9a-f]+:\s+(\S+)\s*(.*)$")
REGS = re.compile(r"\{([^}]*)\}")


def reg_count(text):
    m = REGS.search(text)
    if not m:
        return 0
    count = 0
    for part in m.group(1).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            count += int(hi.strip()[1:]) - int(lo.strip()[1:]) + 1
        elif part:
            count += 1
    return count


def imm(text):
    m = re.search(r"#(-?(?:0x[0-9a-f]+|\d+))", text)
    return int(m.group(1), 0) if m else None


def frames(elf):
    tool = shutil.which("llvm-objdump")
    if tool is None:
        sys.exit("llvm-objdump not found (apt-get install llvm)")
    out = subprocess.run([tool, "-d", "-C", "--no-show-raw-insn", elf], check=True,
                         capture_output=True, text=True).stdout
    # Literal pool words, by address, for Thumb-1's `ldr rN, [pc, #..]` constants.
    words = {
        int(m.group(1), 16): int(m.group(2), 16)
        for m in re.finditer(r"^\s*([0-9a-f]+):.*\.word\s+0x([0-9a-f]+)", out, re.M)
    }
    result = {}
    name, size, consts, done, seen = None, 0, {}, False, 0
    for line in out.splitlines():
        m = FUNC.match(line)
        if m:
            if name is not None:
                result[name] = max(result.get(name, 0), size)
            name, size, consts, done, seen = m.group(1), 0, {}, False, 0
            continue
        m = INSN.match(line)
        if not m or name is None or done:
            continue
        op, args = m.group(1), m.group(2)
        seen += 1
        if seen > 24:
            done = True
            continue
        args_nc = args.split("@")[0]
        if op in ("push", "push.w") or (op.startswith("stmdb") and args_nc.startswith("sp!")):
            size += 4 * reg_count(args_nc)
        elif op.startswith("vpush"):
            regs = reg_count(args_nc)
            size += (8 if "d" in REGS.search(args_nc).group(1) else 4) * regs
        elif op.startswith(("sub", "subw")) and args_nc.replace(" ", "").startswith("sp,"):
            operands = [o.strip() for o in args_nc.split(",")]
            value = imm(args_nc)
            if value is not None:
                size += value
            elif operands[-1] in consts:
                size += consts[operands[-1]]
        elif op.startswith("add") and args_nc.replace(" ", "").startswith("sp,"):
            operands = [o.strip() for o in args_nc.split(",")]
            if operands[-1] in consts and consts[operands[-1]] < 0:
                size += -consts[operands[-1]]
        elif op.startswith("movw"):
            reg = args_nc.split(",")[0].strip()
            value = imm(args_nc)
            if value is not None:
                consts[reg] = value
        elif op.startswith("movt"):
            reg = args_nc.split(",")[0].strip()
            value = imm(args_nc)
            if value is not None and reg in consts:
                consts[reg] = ((value << 16) | (consts[reg] & 0xFFFF)) - (
                    1 << 32 if value & 0x8000 else 0)
        elif op.startswith("ldr") and "[pc" in args_nc:
            reg = args_nc.split(",")[0].strip()
            # llvm-objdump names the literal's address in a comment: `@ 0x10019c04 <$d>`.
            at = re.search(r"@\s*0x([0-9a-f]+)", args)
            if at is not None and int(at.group(1), 16) in words:
                value = words[int(at.group(1), 16)]
                consts[reg] = value - (1 << 32) if value & 0x80000000 else value
    if name is not None:
        result[name] = max(result.get(name, 0), size)
    return result


LEGACY = {"$LT$": "<", "$GT$": ">", "$u20$": " ", "$u7b$": "{", "$u7d$": "}", "$RF$": "&",
          "$BP$": "*", "$C$": ",", "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$LP$": "(",
          "$RP$": ")"}


def readable(name):
    """Rust's legacy mangling, as llvm-objdump 14 leaves it, made readable."""
    for code, text in LEGACY.items():
        name = name.replace(code, text)
    return re.sub(r"::h[0-9a-f]{16}$", "", name.replace("..", "::")).lstrip("_")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("elf")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    ranked = sorted(frames(args.elf).items(), key=lambda kv: kv[1], reverse=True)
    for name, size in ranked[: args.top]:
        print(f"{size:8d}  {readable(name)[:160]}")


if __name__ == "__main__":
    main()
