"""Kernel header resolution against fake /lib/modules and /usr/src trees."""
from __future__ import annotations

import os

import pytest

from tracer.kernel.headers import EXACT, MISSING, SUBSTITUTED, headers_release, resolve_headers

RELEASE = "6.8.0-45-generic"


def make_headers(src, name: str, uts: str | None = None, kernel_release: str | None = None):
    tree = src / name
    (tree / "include" / "generated").mkdir(parents=True)
    (tree / "include" / "config").mkdir(parents=True)
    if uts is not None:
        (tree / "include" / "generated" / "utsrelease.h").write_text(f'#define UTS_RELEASE "{uts}"\n')
    if kernel_release is not None:
        (tree / "include" / "config" / "kernel.release").write_text(kernel_release + "\n")
    return tree


@pytest.fixture
def roots(tmp_path):
    modules, src = tmp_path / "lib" / "modules", tmp_path / "usr" / "src"
    (modules / RELEASE).mkdir(parents=True)
    src.mkdir(parents=True)
    return modules, src


def link_build(modules, target, release=RELEASE):
    os.symlink(target, modules / release / "build")


def test_exact_when_build_is_the_running_kernels_headers(roots):
    modules, src = roots
    tree = make_headers(src, f"linux-headers-{RELEASE}", uts=RELEASE)
    link_build(modules, tree)
    status = resolve_headers(RELEASE, str(modules))
    assert status.status == EXACT and status.usable
    assert status.target == str(tree) and status.headers_release == RELEASE
    assert status.fix == ""


def test_substituted_when_build_links_to_other_headers(roots):
    modules, src = roots
    # Debian: kernel.release holds the upstream version, utsrelease.h the ABI name that uname -r shows.
    tree = make_headers(src, "linux-headers-6.1.0-56-amd64", uts="6.1.0-56-amd64", kernel_release="6.1.192")
    link_build(modules, tree)
    status = resolve_headers(RELEASE, str(modules))
    assert status.status == SUBSTITUTED and status.usable
    assert status.headers_release == "6.1.0-56-amd64"
    assert "6.1.0-56-amd64" in status.detail and RELEASE in status.detail
    assert f"linux-headers-{RELEASE}" in status.fix


def test_missing_when_no_build_link(roots):
    modules, _ = roots
    status = resolve_headers(RELEASE, str(modules))
    assert status.status == MISSING and not status.usable
    assert "does not exist" in status.detail
    assert "scripts/bootstrap" in status.fix and f"linux-headers-{RELEASE}" in status.fix


def test_missing_when_build_link_dangles(roots):
    modules, src = roots
    link_build(modules, src / "linux-headers-gone")
    status = resolve_headers(RELEASE, str(modules))
    assert status.status == MISSING
    assert "dangling link" in status.detail


def test_missing_when_build_has_no_include_dir(roots):
    modules, src = roots
    (src / "empty").mkdir()
    link_build(modules, src / "empty")
    status = resolve_headers(RELEASE, str(modules))
    assert status.status == MISSING and "no include/" in status.detail


def test_missing_when_release_dir_absent(tmp_path):
    status = resolve_headers("9.9.9-none", str(tmp_path))
    assert status.status == MISSING
    assert status.build == str(tmp_path / "9.9.9-none" / "build")


def test_release_falls_back_to_kernel_release_then_dir_name(tmp_path):
    only_config = make_headers(tmp_path, "linux-headers-x", kernel_release="6.5.0-1-cloud")
    assert headers_release(str(only_config)) == "6.5.0-1-cloud"
    bare = make_headers(tmp_path, "linux-headers-6.2.0-9-amd64")
    assert headers_release(str(bare)) == "6.2.0-9-amd64"
    assert headers_release(str(tmp_path / "build")) == ""


def test_real_directory_named_after_release_is_exact(roots):
    # Some distros ship build as a plain directory rather than a link.
    modules, _ = roots
    tree = make_headers(modules / RELEASE, "build", uts=RELEASE)
    status = resolve_headers(RELEASE, str(modules))
    assert status.status == EXACT and status.target == str(tree)
