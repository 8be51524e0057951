"""User stacks from a register + stack snapshot, unwound with the ELF files' .eh_frame (x86-64).

Debian's redis-server is built without frame pointers, so the kernel's own user stack walk gives
only the leaf. probes/sample.c copies ip, sp, bp and the bytes above sp instead (as `perf
--call-graph dwarf` does); this module replays the call frame information (CFI) that every x86-64
ELF keeps for exceptions: at each pc, the canonical frame address (CFA) is rsp or rbp plus an
offset, the return address and the saved rbp lie at fixed offsets from it. Only these rules are
followed (what gcc emits for redis-server, libc and jemalloc); a frame described otherwise (a
DWARF expression, a PLT stub) or a read outside the snapshot ends the walk there.

Shared libraries are found through /proc/<pid>/maps, each file's tables parsed once (pyelftools),
lazily, when a pc first falls into it. Symbols: .symtab, else .dynsym (Redis exports its functions);
a pc inside no sized function is shown as `file+0xoffset`.
"""
from __future__ import annotations

import bisect
import os
import struct

from tracer.kernel.elfsyms import ElfError, iter_symbols

RSP, RBP, RA = 7, 6, 16          # DWARF register numbers on x86-64
MAX_FRAMES = 64
_U64 = struct.Struct("<Q")


class CfiTable:
    """One ELF file's .eh_frame: for a pc (file address), how to find its caller's frame."""

    def __init__(self, path: str):
        from elftools.common.exceptions import ELFError
        from elftools.dwarf.callframe import FDE
        from elftools.elf.elffile import ELFFile

        self._fdes = []
        with open(path, "rb") as f:
            try:
                elf = ELFFile(f)
                self.loads = [(s["p_vaddr"], s["p_offset"], s["p_filesz"]) for s in elf.iter_segments()
                              if s["p_type"] == "PT_LOAD"]
                dwarf = elf.get_dwarf_info(follow_links=False)
                entries = dwarf.EH_CFI_entries() if dwarf.has_EH_CFI() else []
            except (ELFError, ValueError, KeyError, struct.error) as err:
                raise ElfError(f"{path}: no usable .eh_frame ({err})") from None
            for entry in entries:
                if isinstance(entry, FDE):
                    self._fdes.append((entry["initial_location"], entry["address_range"], entry))
        self._fdes.sort(key=lambda x: x[0])
        self._starts = [x[0] for x in self._fdes]
        self._rows: dict[int, tuple] = {}   # fde index -> (pcs, rules), decoded on first use

    def rule(self, pc: int):
        """(cfa register, cfa offset, return address offset, saved rbp offset or None), or None."""
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0:
            return None
        start, size, fde = self._fdes[i]
        if pc >= start + size:
            return None
        rows = self._rows.get(i)
        if rows is None:
            rows = self._rows[i] = _decode(fde)
        pcs, rules = rows
        j = bisect.bisect_right(pcs, pc) - 1
        return rules[j] if j >= 0 else None


def _decode(fde) -> tuple[list, list]:
    from elftools.dwarf.callframe import RegisterRule

    pcs, rules = [], []
    try:
        table = fde.get_decoded().table
    except Exception:       # a malformed or unusual FDE: that frame cannot be unwound
        return pcs, rules
    for row in table:
        cfa, ra, bp = row.get("cfa"), row.get(RA), row.get(RBP)
        rule = None
        if cfa is not None and cfa.expr is None and cfa.reg in (RSP, RBP) and ra is not None \
                and ra.type == RegisterRule.OFFSET:
            bp_off = bp.arg if bp is not None and bp.type == RegisterRule.OFFSET else None
            rule = (cfa.reg, cfa.offset, ra.arg, bp_off)
        pcs.append(row["pc"])
        rules.append(rule)
    return pcs, rules


class Module:
    """An executable mapping of one ELF file: its tables and symbols, and where it is loaded."""

    def __init__(self, path: str, start: int, end: int, offset: int, opened: str, name: str = ""):
        self.path, self.start, self.end = path, start, end
        self.name = name or os.path.basename(path)
        self.cfi = CfiTable(opened)
        self.bias = start - offset
        for vaddr, poff, filesz in self.cfi.loads:     # the PT_LOAD holding this mapping's first byte
            if poff <= offset < poff + max(filesz, 1):
                self.bias = start - (vaddr + offset - poff)
                break
        self._syms = _functions(opened)
        self._sym_starts = [s[0] for s in self._syms]

    def symbol(self, pc: int) -> str:
        addr = pc - self.bias
        i = bisect.bisect_right(self._sym_starts, addr) - 1
        if i >= 0:
            start, size, name = self._syms[i]
            if addr < start + size:
                return name
        return f"{self.name}+0x{addr:x}"


def _functions(path: str) -> list[tuple[int, int, str]]:
    """Sized functions of .symtab and .dynsym, by address (one name per address)."""
    seen: dict[int, tuple[int, int, str]] = {}
    try:
        for sym in iter_symbols(path):
            if sym.is_defined_function and sym.size and (sym.value not in seen or sym.table == ".symtab"):
                seen[sym.value] = (sym.value, sym.size, sym.name)
    except (ElfError, OSError):
        pass
    return sorted(seen.values())


class AddressSpace:
    """A process's executable mappings from /proc/<pid>/maps, each file's Module made on first use.
    Files are opened through /proc/<pid>/root, so a containerised target's own binaries are read."""

    def __init__(self, pid: int, proc: str = "/proc"):
        self.pid, self.proc = pid, proc
        self._maps: list[tuple[int, int, int, str]] = []
        self._starts: list[int] = []
        self._modules: dict[tuple[int, str], Module | None] = {}
        # the executable's unnamed frames read `redis-server+0x…` (its comm), not `redis-check-rdb+0x…`
        # (Debian's redis-server is a link to that file)
        try:
            self.exe = os.readlink(f"{proc}/{pid}/exe").removesuffix(" (deleted)")
            with open(f"{proc}/{pid}/comm") as f:
                self.exe_name = f.read().strip()
        except OSError:
            self.exe, self.exe_name = "", ""
        self.refresh()

    def refresh(self) -> None:
        maps = []
        try:
            with open(f"{self.proc}/{self.pid}/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
                        continue
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    maps.append((lo, hi, int(parts[2], 16), parts[5].rstrip("\n").removesuffix(" (deleted)")))
        except OSError:
            pass
        maps.sort()
        self._maps, self._starts = maps, [m[0] for m in maps]

    def preload(self, wanted) -> None:
        """Parse the tables of the mapped files for which wanted(path) is true now, not at the first stall."""
        for lo, _hi, _offset, path in list(self._maps):
            if wanted(path):
                self.module(lo)

    def module(self, pc: int) -> Module | None:
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0 or pc >= self._maps[i][1]:
            return None
        lo, hi, offset, path = self._maps[i]
        key = (lo, path)
        if key not in self._modules:
            try:
                self._modules[key] = Module(path, lo, hi, offset, f"{self.proc}/{self.pid}/root{path}",
                                            name=self.exe_name if path == self.exe else "")
            except (ElfError, OSError):
                self._modules[key] = None
        return self._modules[key]


def unwind(ip: int, sp: int, bp: int, stack: bytes, space: AddressSpace, max_frames: int = MAX_FRAMES) -> list[int]:
    """The pcs of a user stack, leaf first: ip, then each return address the CFI leads to, as far
    as the snapshot (`stack`, the bytes from sp up) and the tables allow."""
    pcs = [ip]
    base = sp
    size = len(stack)
    unpack = _U64.unpack_from

    def read(addr: int):
        off = addr - base
        return unpack(stack, off)[0] if 0 <= off <= size - 8 else None

    pc = ip
    leaf = True
    while len(pcs) < max_frames:
        mod = space.module(pc)
        if mod is None:
            break
        # a return address points after its call, maybe past the caller's last instruction
        rule = mod.cfi.rule(pc - mod.bias - (0 if leaf else 1))
        if rule is None:
            break
        cfa_reg, cfa_off, ra_off, bp_off = rule
        cfa = (sp if cfa_reg == RSP else bp) + cfa_off
        ra = read(cfa + ra_off)
        if bp_off is not None:
            bp = read(cfa + bp_off)
            if bp is None:
                break
        if not ra or cfa <= sp:
            break
        sp, pc, leaf = cfa, ra, False
        pcs.append(pc)
    return pcs
