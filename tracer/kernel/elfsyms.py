"""A minimal ELF symbol-table reader: is function X in this binary's .symtab or .dynsym?

Used to decide whether redis-server's call() can carry a uprobe. Pure Python so
the check needs neither binutils nor root.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

SHT_SYMTAB, SHT_DYNSYM = 2, 11
STT_FUNC = 2
SHN_UNDEF = 0
TABLE_NAMES = {SHT_SYMTAB: ".symtab", SHT_DYNSYM: ".dynsym"}


class ElfError(ValueError):
    pass


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    type: int       # STT_*
    bind: int       # STB_*
    shndx: int
    table: str      # ".symtab" | ".dynsym"

    @property
    def is_defined_function(self) -> bool:
        return self.type == STT_FUNC and self.shndx != SHN_UNDEF and self.value != 0


@dataclass
class _Layout:
    endian: str
    is64: bool

    @property
    def section(self) -> struct.Struct:
        # name, type, flags, addr, offset, size, link, info, addralign, entsize
        return struct.Struct(self.endian + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII"))

    @property
    def symbol(self) -> struct.Struct:
        return struct.Struct(self.endian + ("IBBHQQ" if self.is64 else "IIIBBH"))

    def unpack_symbol(self, raw: bytes, off: int) -> tuple[int, int, int, int, int]:
        """(st_name, st_info, st_shndx, st_value, st_size) for either class."""
        if self.is64:
            name, info, _other, shndx, value, size = self.symbol.unpack_from(raw, off)
        else:
            name, value, size, info, _other, shndx = self.symbol.unpack_from(raw, off)
        return name, info, shndx, value, size


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ElfError(f"truncated ELF file: wanted {size} bytes at {offset}")
    return data


def _sections(f: BinaryIO) -> tuple[_Layout, list[tuple]]:
    ident = f.read(16)
    if len(ident) < 16 or ident[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise ElfError("unknown ELF class or byte order")
    layout = _Layout(endian="<" if ident[5] == 1 else ">", is64=ident[4] == 2)
    # e_type .. e_shstrndx after e_ident
    head = struct.Struct(layout.endian + ("HHIQQQIHHHHHH" if layout.is64 else "HHIIIIIHHHHHH"))
    fields = head.unpack(_read_at(f, 16, head.size))
    shoff, shentsize, shnum = fields[5], fields[10], fields[11]
    if shoff == 0:
        return layout, []
    sec = layout.section
    if shentsize < sec.size:
        raise ElfError(f"section header entries of {shentsize} bytes are too small")
    if shnum == 0:  # extended numbering: the count lives in section 0's sh_size
        shnum = sec.unpack(_read_at(f, shoff, sec.size))[5]
    if shnum > 65536:
        raise ElfError(f"implausible section count {shnum}")
    raw = _read_at(f, shoff, shentsize * shnum)
    return layout, [sec.unpack_from(raw, i * shentsize) for i in range(shnum)]


def iter_symbols(path: str, tables: tuple[int, ...] = (SHT_SYMTAB, SHT_DYNSYM)) -> Iterator[Symbol]:
    """Every symbol of the given tables (raises ElfError for non-ELF input, OSError if unreadable)."""
    with open(path, "rb") as f:
        layout, sections = _sections(f)
        for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
            if sh_type not in tables or link >= len(sections):
                continue
            strtab_hdr = sections[link]
            strtab = _read_at(f, strtab_hdr[4], strtab_hdr[5])
            entsize = entsize or layout.symbol.size
            raw = _read_at(f, offset, size)
            for off in range(0, size - entsize + 1, entsize):
                st_name, info, shndx, value, sym_size = layout.unpack_symbol(raw, off)
                end = strtab.find(b"\0", st_name)
                name = strtab[st_name:end if end >= 0 else None].decode("utf-8", "replace")
                yield Symbol(name, value, sym_size, info & 0xF, info >> 4, shndx, TABLE_NAMES[sh_type])


def find_function(path: str, name: str) -> Symbol | None:
    """The defined function `name` from .symtab or .dynsym, or None (stripped, static, or absent)."""
    for sym in iter_symbols(path):
        if sym.name == name and sym.is_defined_function:
            return sym
    return None
