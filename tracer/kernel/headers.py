"""Which kernel headers bcc will compile the probes against.

bcc compiles with /lib/modules/<release>/build. Distros without a headers
package for the running kernel (cloud, CI and container kernels) get the
distro's generic headers linked there by scripts/bootstrap: "substituted".
That is safe for our probes because they read only tracepoint arguments and
user memory, never kernel structs whose layout could differ.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

EXACT, SUBSTITUTED, MISSING = "exact", "substituted", "missing"
BOOTSTRAP_FIX = "run sudo scripts/bootstrap (installs and links kernel headers)"


@dataclass
class HeadersStatus:
    status: str             # exact | substituted | missing
    release: str            # the kernel the headers are for (uname -r)
    build: str              # /lib/modules/<release>/build
    target: str = ""        # where build resolves to ("" when missing)
    headers_release: str = ""  # release the headers were built for ("" when unknown)
    detail: str = ""
    fix: str = ""

    @property
    def usable(self) -> bool:
        return self.status != MISSING


_UTS_RE = re.compile(r'#define\s+UTS_RELEASE\s+"([^"]+)"')


def headers_release(path: str) -> str:
    """The kernel release a headers tree is for: utsrelease.h, then kernel.release, then its name."""
    try:
        with open(os.path.join(path, "include/generated/utsrelease.h"), encoding="ascii", errors="replace") as f:
            match = _UTS_RE.search(f.read())
            if match:
                return match.group(1)
    except OSError:
        pass
    # Debian writes the upstream version (6.1.192) in kernel.release, not the ABI name, so it comes second.
    try:
        with open(os.path.join(path, "include/config/kernel.release"), encoding="ascii", errors="replace") as f:
            value = f.read().strip()
            if value:
                return value
    except OSError:
        pass
    name = os.path.basename(os.path.normpath(path))
    return name[len("linux-headers-"):] if name.startswith("linux-headers-") else ""


def resolve_headers(release: str | None = None, modules_root: str = "/lib/modules") -> HeadersStatus:
    """Classify the headers at <modules_root>/<release>/build as exact, substituted or missing."""
    release = release or os.uname().release
    build = os.path.join(modules_root, release, "build")
    package = f"linux-headers-{release}"
    if not os.path.isdir(build):
        why = "is a dangling link" if os.path.islink(build) else "does not exist"
        return HeadersStatus(MISSING, release, build, detail=f"no kernel headers: {build} {why}",
                             fix=f"{BOOTSTRAP_FIX}, or apt-get install {package}")
    target = os.path.realpath(build)
    if not os.path.isdir(os.path.join(target, "include")):
        return HeadersStatus(MISSING, release, build, target,
                             detail=f"{build} -> {target} has no include/ directory",
                             fix=f"{BOOTSTRAP_FIX}, or reinstall {package}")
    found = headers_release(target)
    if found == release:
        return HeadersStatus(EXACT, release, build, target, found, detail=f"{release} at {target}")
    return HeadersStatus(
        SUBSTITUTED, release, build, target, found,
        detail=f"headers for {found or 'an unknown release'} stand in for {release} ({target})",
        fix=f"fine for these probes; install {package} if your distro ships it")
