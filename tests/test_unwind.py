"""kernel/unwind.py against the real /usr/bin/redis-server's .eh_frame, and analyze/oncpu.py's reading of
folded stacks (no BPF: a stack snapshot is built from the binary's own call frame rules)."""
from __future__ import annotations

import functools
import os
import struct

import pytest

from tracer.analyze.oncpu import cpu_facts, hot_paths
from tracer.kernel.elfsyms import find_function
from tracer.kernel.unwind import RSP, CfiTable, Module, unwind

REDIS = "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="needs Debian's redis-server")
BIAS = 0x5555_5555_4000         # where a PIE is loaded


@functools.lru_cache(maxsize=1)
def table() -> CfiTable:
    return CfiTable(REDIS)


@functools.lru_cache(maxsize=None)
def sym(name: str):
    return find_function(REDIS, name)


class OneModule:
    """An address space holding redis-server's executable mapping at BIAS."""

    def __init__(self):
        vaddr, offset, size = next((v, o, s) for v, o, s in table().loads if v <= sym("call").value < v + s)
        self.mod = Module(REDIS, BIAS + vaddr, BIAS + vaddr + size, offset, REDIS)

    def module(self, pc):
        return self.mod if self.mod.start <= pc < self.mod.end else None


def pc_in(name: str, rsp_based=True) -> int:
    """A pc past the prologue of function `name` whose frame rule is rsp-based (loaded at BIAS)."""
    fn = sym(name)
    for off in range(fn.size // 2, fn.size):
        rule = table().rule(fn.value + off - 1)
        if rule is not None and (rule[0] == RSP) == rsp_based and rule[1] > 8:
            return BIAS + fn.value + off
    raise AssertionError(f"no rsp-based pc in {name}")


def snapshot(chain: list[int], space) -> tuple[int, int, int, bytes]:
    """(ip, sp, bp, stack bytes) of a thread whose calls are `chain` (leaf first), laid out by the CFI."""
    sp0 = sp = 0x7FFD_0000_0000
    mem: dict[int, int] = {}
    for i, pc in enumerate(chain):
        mod = space.module(pc)
        cfa_reg, cfa_off, ra_off, bp_off = mod.cfi.rule(pc - mod.bias - (0 if i == 0 else 1))
        assert cfa_reg == RSP
        cfa = sp + cfa_off
        mem[cfa + ra_off] = chain[i + 1] if i + 1 < len(chain) else 0
        if bp_off is not None:
            mem[cfa + bp_off] = 0x1234
        sp = cfa
    stack = bytearray(sp - sp0 + 64)
    for addr, value in mem.items():
        struct.pack_into("<Q", stack, addr - sp0, value)
    return chain[0], sp0, 0, bytes(stack)


def test_the_frame_rule_at_a_function_entry():
    entry = sym("call").value
    assert table().rule(entry) == (RSP, 8, -8, None)   # return address on top of the stack


def test_unwinds_a_stack_laid_out_by_redis_servers_own_cfi_and_names_the_frames():
    space = OneModule()
    names = ["_dictClear", "dictRelease", "freeHashObject", "decrRefCount", "activeExpireCycle", "databasesCron"]
    chain = [pc_in(n) for n in names]
    ip, sp, bp, stack = snapshot(chain, space)
    pcs = unwind(ip, sp, bp, stack, space)
    assert pcs == chain
    assert [space.module(pc).symbol(pc) for pc in pcs] == names
    # a snapshot that ends early stops the walk there, without inventing frames
    short = unwind(ip, sp, bp, stack[:len(stack) // 3], space)
    assert short == chain[:len(short)] and len(short) < len(chain)


def test_a_pc_in_no_sized_function_is_named_by_file_offset():
    space = OneModule()
    syms = space.mod._syms
    addr = next(a + n for (a, n, _), (b, _, _) in zip(syms, syms[1:]) if a + n < b)     # padding after a function
    assert space.mod.symbol(BIAS + addr) == f"redis-server+0x{addr:x}"
    assert space.mod.symbol(BIAS + sym("call").value + 3) == "call"


def test_hot_paths_and_what_the_samples_say():
    loop = "_start;main;aeMain;aeProcessEvents;processTimeEvents;serverCron;databasesCron"
    folded = {f"{loop};activeExpireCycle;deleteExpiredKeyAndPropagate;dictFreeUnlinkedEntry;decrRefCount;"
              f"dictRelease;_dictClear": 80,
              f"{loop};activeExpireCycle;deleteExpiredKeyAndPropagate;dictFreeUnlinkedEntry;decrRefCount;"
              f"dictRelease;_dictClear;free": 12,
              "_start;main;aeMain;aeProcessEvents;readQueryFromClient;processCommand;call;getCommand": 8}
    paths = hot_paths(folded)
    assert paths[0].frames[0] == "activeExpireCycle" and paths[0].frames[-1] == "_dictClear"
    assert paths[0].share == 0.92 and paths[0].samples == 92
    assert paths[0].describe() == "activeExpireCycle → … → dictRelease → _dictClear 92 %"
    assert paths[1].frames == ["getCommand"]
    facts = cpu_facts(folded, 100)
    assert facts.cls == "expiry" and not facts.commands_ran_it
    assert facts.call_share == pytest.approx(0.08)
    assert len(facts.folded) == 3 and facts.folded[0].endswith(" 80")
