"""Privilege detection from euid and the CapEff mask (injected, so no root needed)."""
from __future__ import annotations

import pytest

from tracer.errors import PrivilegeError
from tracer.kernel.privileges import (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, missing_privileges, read_cap_eff,
                               require_tracing_privileges)

ALL_CAPS = (1 << 41) - 1
BPF_AND_PERFMON = 1 << CAP_BPF | 1 << CAP_PERFMON


def test_read_cap_eff_parses_proc_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython3\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n"
                      "CapEff:\t000000c000000000\nCapBnd:\t000001ffffffffff\n")
    assert read_cap_eff(str(status)) == BPF_AND_PERFMON


def test_read_cap_eff_unreadable_is_no_caps(tmp_path):
    assert read_cap_eff(str(tmp_path / "absent")) == 0


@pytest.mark.parametrize("euid,caps", [(0, ALL_CAPS), (1000, BPF_AND_PERFMON), (1000, 1 << CAP_SYS_ADMIN)])
def test_allowed(euid, caps):
    assert missing_privileges(euid, caps) is None
    require_tracing_privileges(["redis-tracer", "trace"], euid=euid, cap_eff=caps)  # does not raise


def test_unprivileged_user_gets_one_line_with_sudo_fix():
    with pytest.raises(PrivilegeError) as err:
        require_tracing_privileges(["/usr/local/bin/redis-tracer", "trace", "--port", "6379"], euid=1000, cap_eff=0)
    line = err.value.line()
    assert "\n" not in line
    assert "not root (uid 1000)" in line and "CAP_BPF+CAP_PERFMON" in line
    assert err.value.fix == "run as root: sudo redis-tracer trace --port 6379"
    assert err.value.exit_code == 77


def test_only_one_capability_names_the_missing_one():
    missing = missing_privileges(1000, 1 << CAP_BPF)
    assert missing.endswith("lacks CAP_PERFMON")


def test_root_in_a_capability_stripped_container_points_at_the_container():
    with pytest.raises(PrivilegeError) as err:
        require_tracing_privileges(["redis-tracer", "doctor"], euid=0, cap_eff=0xA80425FB)  # docker default set
    assert "running as root" in str(err.value)
    assert "--privileged" in err.value.fix and "sudo redis-tracer doctor" in err.value.fix
