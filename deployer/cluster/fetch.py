"""Fetch engine artifacts with Maven, verify them, and assemble a runnable install in the cache.

Layout under the cache directory (`$DAC_CACHE_DIR`, default `~/.cache/dac`):

    downloads/<engine>-<version>/   distribution zip as copied out of the local Maven repository
    build/<engine>-<version>/       generated poms and Maven's copies (removed once assembled)
    dist/<engine>-<version>/        the assembled, read-only-by-convention install (ES/OS home)
    dist/<engine>-<version>/.dac-install.json   what was assembled; its presence means "ready"
    instances/<engine>-<name>/      per-instance config, data, logs, pid and state (manager.py)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from deployer.cluster.errors import FetchError, PluginInstallError
from deployer.cluster.java import JavaRuntime, find_java
from deployer.cluster.plugin_dir import PluginZip, install_order, plugin_set_key, read_plugin_dir
from deployer.cluster.versions import (
    MAVEN_DEPENDENCY_PLUGIN,
    Artifact,
    EngineSpec,
    ModuleSpec,
)

Progress = Callable[[str], None]
STAMP = ".dac-install.json"
# Bumped when the assembly itself changes, so old installs are rebuilt rather than trusted.
ASSEMBLY_FORMAT = 1
MAVEN_TIMEOUT = 1800


def _quiet(_: str) -> None:
    return None


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Return the cache root: `$DAC_CACHE_DIR`, or `~/.cache/dac`."""
    env = os.environ if environ is None else environ
    value = env.get("DAC_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dac"


def maven_repository(environ: dict[str, str] | None = None) -> Path:
    """Return Maven's local repository (`$DAC_MAVEN_REPO` overrides `~/.m2/repository`)."""
    env = os.environ if environ is None else environ
    value = env.get("DAC_MAVEN_REPO")
    return Path(value).expanduser() if value else Path.home() / ".m2" / "repository"


# ---------------------------------------------------------------------------------------------
# Pure helpers: command lines, generated files, checksums.


def maven_base_command(repo: Path | None = None) -> list[str]:
    """Return the mvn invocation shared by every fetch: batch, quiet, strict checksums."""
    cmd = ["mvn", "-B", "-q", "--strict-checksums"]
    if repo is not None:
        cmd.append(f"-Dmaven.repo.local={repo}")
    return cmd


def copy_command(artifact: Artifact, output_dir: Path, repo: Path | None = None) -> list[str]:
    """Return the `dependency:copy` command that copies one artifact into `output_dir`."""
    return [
        *maven_base_command(repo),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={artifact.coordinate}",
        f"-DoutputDirectory={output_dir}",
        "-Dmdep.overWriteReleases=true",
    ]


def copy_dependencies_command(pom_dir: Path, repo: Path | None = None) -> list[str]:
    """Return the reactor `dependency:copy-dependencies` command for the generated poms."""
    # --fail-at-end: an optional plugin that the registry lacks must not stop the others.
    return [
        *maven_base_command(repo),
        "--fail-at-end",
        "-f",
        str(pom_dir / "pom.xml"),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
    ]


def _dependency_xml(artifact: Artifact) -> str:
    return (
        "    <dependency>\n"
        f"      <groupId>{escape(artifact.group)}</groupId>\n"
        f"      <artifactId>{escape(artifact.artifact)}</artifactId>\n"
        f"      <version>{escape(artifact.version)}</version>\n"
        f"      <type>{escape(artifact.packaging)}</type>\n"
        "    </dependency>\n"
    )


def project_pom(name: str, artifact: Artifact, transitive: bool) -> str:
    """Return a tiny pom whose copy-dependencies copies `artifact` (and its runtime deps) to ./jars."""
    _, plugin_artifact, plugin_version = MAVEN_DEPENDENCY_PLUGIN.split(":")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>dac.cluster.assembly</groupId>\n"
        f"  <artifactId>{escape(name)}</artifactId>\n"
        "  <version>1</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <dependencies>\n"
        f"{_dependency_xml(artifact)}"
        "  </dependencies>\n"
        "  <build><plugins><plugin>\n"
        "    <groupId>org.apache.maven.plugins</groupId>\n"
        f"    <artifactId>{plugin_artifact}</artifactId>\n"
        f"    <version>{plugin_version}</version>\n"
        "    <configuration>\n"
        "      <outputDirectory>${project.basedir}/jars</outputDirectory>\n"
        "      <includeScope>runtime</includeScope>\n"
        # Repository layout keeps group/artifact/version in the path, which the checksum
        # verification needs to find Maven's stored .sha1 for each file.
        "      <useRepositoryLayout>true</useRepositoryLayout>\n"
        f"      <excludeTransitive>{'false' if transitive else 'true'}</excludeTransitive>\n"
        "      <overWriteReleases>true</overWriteReleases>\n"
        "    </configuration>\n"
        "  </plugin></plugins></build>\n"
        "</project>\n"
    )


def reactor_pom(modules: list[str]) -> str:
    """Return the aggregator pom that lists the generated per-artifact projects."""
    body = "".join(f"    <module>{escape(m)}</module>\n" for m in modules)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>dac.cluster.assembly</groupId>\n"
        "  <artifactId>reactor</artifactId>\n"
        "  <version>1</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <modules>\n"
        f"{body}"
        "  </modules>\n"
        "</project>\n"
    )


_JAR_VERSION = re.compile(r"^(?P<name>.+?)-\d[^/]*\.jar$")


def jar_artifact_name(filename: str) -> str:
    """Return the artifact name of a jar file name (`lucene-core-9.12.1.jar` -> `lucene-core`)."""
    match = _JAR_VERSION.match(filename)
    return match.group("name") if match else filename.removesuffix(".jar")


def module_jars(candidates: list[Path], lib_names: set[str]) -> list[Path]:
    """Return the jars a module directory needs: its closure minus what the server's lib/ has."""
    # The server classpath already holds these (possibly at another version); a second copy in a
    # module would be "jar hell" at startup.
    return sorted((j for j in candidates if jar_artifact_name(j.name) not in lib_names), key=lambda p: p.name)


def descriptor_text(spec: EngineSpec, module: ModuleSpec, java_version: str = "11") -> str:
    """Return the plugin-descriptor.properties for an assembled module."""
    lines = [
        "# Assembled by dac from the module's published jar; see docs/clusters.md",
        f"description={module.description}",
        f"version={spec.version}",
        f"name={module.name}",
        f"classname={module.classname}",
        f"java.version={java_version}",
        f"{spec.engine}.version={spec.version}",
        "custom.foldername=",
        f"extended.plugins={','.join(module.extended_plugins)}",
        "has.native.controller=false",
    ]
    return "\n".join(lines) + "\n"


def policy_text(permissions: tuple[str, ...]) -> str:
    """Return a plugin-security.policy granting `permissions` to the module's code."""
    body = "".join(f"  {p}\n" for p in permissions)
    return "grant {\n" + body + "};\n"


def sha1_of(path: Path) -> str:
    """Return the hex SHA-1 of a file."""
    digest = hashlib.sha1()  # noqa: S324 - Maven Central publishes SHA-1 sums; this is integrity, not security
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksum_file(path: Path) -> str:
    """Return the hex digest stored in a Maven `.sha1` file (which may carry a trailing file name)."""
    text = path.read_text(errors="replace").strip()
    token = text.split()[0] if text else ""
    if not re.fullmatch(r"[0-9a-fA-F]{40}", token):
        raise FetchError(f"{path} does not hold a SHA-1 sum", hint=f"delete {path.parent} and fetch again")
    return token.lower()


def verify_checksum(path: Path, checksum_file: Path) -> str:
    """Check `path` against Maven's stored `.sha1`; return the digest or raise FetchError."""
    if not checksum_file.is_file():
        raise FetchError(
            f"no checksum for {path.name}: {checksum_file} is missing",
            hint=f"delete {checksum_file.parent} so Maven downloads the artifact and its .sha1 again",
        )
    expected = read_checksum_file(checksum_file)
    actual = sha1_of(path)
    if actual != expected:
        raise FetchError(
            f"checksum mismatch for {path}: sha1 {actual}, Maven Central says {expected}",
            hint=f"delete {path} and {checksum_file.parent}, then run `dac cluster fetch` again",
        )
    return actual


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract a zip keeping Unix permission bits (zipfile drops them, and bin/ must stay executable)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            if not target.resolve().is_relative_to(dest.resolve()):
                raise FetchError(f"{archive} holds an entry outside the archive root: {info.filename}")
            zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(target, mode)


# ---------------------------------------------------------------------------------------------
# Steps that run Maven and the plugin CLI.


@dataclass
class Install:
    """An assembled engine install in the cache."""

    spec: EngineSpec
    home: Path
    manifest: dict = field(default_factory=dict)

    @property
    def plugins(self) -> list[str]:
        """Return the plugins installed into this home."""
        return list(self.manifest.get("plugins", []))

    @property
    def missing_plugins(self) -> list[str]:
        """Return optional plugins that could not be fetched."""
        return list(self.manifest.get("missing_plugins", []))


def _run(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: int = MAVEN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise FetchError(
            f"{cmd[0]} is not installed",
            hint="install Maven (apt-get install maven) so dac can fetch from Maven Central",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise FetchError(
            f"{' '.join(cmd[:6])} ... did not finish in {timeout}s",
            hint="check the network to Maven Central and retry",
        ) from exc


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _maven_error_lines(output: str) -> str:
    errors = [
        ln for ln in output.splitlines() if "ERROR" in ln and "Help 1" not in ln and ln.strip() != "[ERROR]"
    ]
    return "\n".join(errors[:12]) or _tail(output)


def fetch_artifact(artifact: Artifact, output_dir: Path, repo: Path) -> tuple[Path, str]:
    """Copy one artifact into `output_dir` with `dependency:copy` and verify it; return (path, sha1)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    proc = _run(copy_command(artifact, output_dir, repo))
    target = output_dir / artifact.filename
    if proc.returncode != 0 or not target.is_file():
        raise FetchError(
            f"Maven could not fetch {artifact.coordinate}:\n{_maven_error_lines(proc.stdout + proc.stderr)}",
            hint="check that Maven Central is reachable (mvn -v; a proxy in ~/.m2/settings.xml) and retry "
            "`dac cluster fetch`",
        )
    digest = verify_checksum(target, repo / (artifact.repository_path + ".sha1"))
    return target, digest


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    # Two processes assembling the same version (CI provisioning and a test run, say) would
    # trample each other's temporary directories.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install_key(spec: EngineSpec, plugin_set: str | None = None) -> str:
    """Return the install's directory name: the base one, or the base plus a set of extra plugins."""
    return spec.cache_key if plugin_set is None else f"{spec.cache_key}-plugins-{plugin_set}"


def load_install(spec: EngineSpec, root: Path | None = None, plugin_set: str | None = None) -> Install | None:
    """Return the assembled install for `spec` (and extra plugin set) when the cache holds a complete one."""
    home = (root or cache_dir()) / "dist" / install_key(spec, plugin_set)
    stamp = home / STAMP
    if not stamp.is_file():
        return None
    try:
        manifest = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != ASSEMBLY_FORMAT or manifest.get("version") != spec.version:
        return None
    if manifest.get("wanted_plugins") != [p.name for p in spec.plugins]:
        return None
    if manifest.get("wanted_modules") != [m.name for m in spec.modules]:
        return None
    if manifest.get("plugin_set") != plugin_set:
        return None
    return Install(spec, home, manifest)


def _reactor_projects(spec: EngineSpec) -> dict[str, tuple[Artifact, bool]]:
    projects: dict[str, tuple[Artifact, bool]] = {}
    for module in spec.modules:
        projects[f"module-{module.name}"] = (module.jar, True)
    for plugin in spec.plugins:
        projects[f"plugin-{plugin.name}"] = (plugin.zip, False)
    return projects


def _copied_files(project_dir: Path, repo: Path, suffix: str) -> list[tuple[Path, str]]:
    jars_dir = project_dir / "jars"
    if not jars_dir.is_dir():
        return []
    verified = []
    for path in sorted(jars_dir.rglob(f"*{suffix}")):
        rel = path.relative_to(jars_dir)
        verified.append((path, verify_checksum(path, repo / (str(rel) + ".sha1"))))
    return verified


def _install_plugin(home: Path, spec: EngineSpec, plugin: str, archive: Path, java: JavaRuntime) -> None:
    env = dict(os.environ)
    env[spec.java_home_env] = str(java.home)
    env["JAVA_HOME"] = str(java.home)
    env.pop(spec.path_conf_env, None)
    cmd = [str(home / spec.plugin_cli), "install", "--batch", archive.resolve().as_uri()]
    proc = _run(cmd, cwd=home, env=env, timeout=600)
    if proc.returncode != 0:
        raise PluginInstallError(
            f"{spec.plugin_cli} could not install {plugin} from {archive.name}:\n"
            f"{_tail(proc.stdout + proc.stderr, 15)}",
            hint="a plugin installs only after the modules and plugins it extends; check the order in "
            "deployer/cluster/versions.py and that its version matches the server's",
        )


def assemble(
    spec: EngineSpec,
    *,
    root: Path | None = None,
    repo: Path | None = None,
    progress: Progress = _quiet,
    refresh: bool = False,
    plugin_dir: Path | None = None,
) -> Install:
    """Fetch, verify and assemble `spec` into the cache (a no-op when it is already there).

    With `plugin_dir`, the zips there are checked first (before any download), then installed into
    a copy of the base install kept beside it, so instances running from the base are untouched.
    """
    root = root or cache_dir()
    zips = read_plugin_dir(plugin_dir, spec) if plugin_dir is not None else []
    base = _assemble_base(spec, root=root, repo=repo, progress=progress, refresh=refresh)
    if plugin_dir is None:
        return base
    return _layer_plugins(base, zips, plugin_dir, root=root, progress=progress, refresh=refresh)


def _layer_plugins(
    base: Install, zips: list[PluginZip], plugin_dir: Path, *, root: Path, progress: Progress, refresh: bool
) -> Install:
    spec = base.spec
    extra = []
    for z in zips:
        if z.name in base.plugins:
            # A registry that carries the zip already installed it from Maven.
            progress(
                f"{spec.engine} {spec.version}: {z.name} is already installed from Maven; skipping {z.path.name}"
            )
        else:
            extra.append(z)
    if not extra:
        return base
    plugin_set = plugin_set_key(extra)
    key = install_key(spec, plugin_set)
    with _lock(root / "locks" / f"{key}.lock"):
        existing = None if refresh else load_install(spec, root, plugin_set)
        if existing is not None and existing.manifest.get("base_assembled_at") == base.manifest.get(
            "assembled_at"
        ):
            return existing
        started = time.monotonic()
        ordered = install_order(extra, [*base.manifest.get("modules", []), *base.plugins])
        java = find_java(spec)
        final = root / "dist" / key
        staging = root / "dist" / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(base.home, staging, symlinks=True)
        (staging / STAMP).unlink(missing_ok=True)
        for z in ordered:
            progress(f"{spec.engine} {spec.version}: installing plugin {z.name} {z.version} from {z.path}")
            _install_plugin(staging, spec, z.name, z.path, java)
        manifest = dict(base.manifest)
        manifest.update(
            plugins=[*base.plugins, *(z.name for z in ordered)],
            missing_plugins=[m for m in base.missing_plugins if m not in {z.name for z in ordered}],
            plugin_set=plugin_set,
            plugin_dir=str(plugin_dir),
            extra_plugins=[z.to_dict() for z in ordered],
            base_assembled_at=base.manifest.get("assembled_at"),
            assembly_seconds=round(time.monotonic() - started, 1),
        )
        (staging / STAMP).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        progress(f"{spec.engine} {spec.version}: with {', '.join(z.name for z in ordered)} ready in {final}")
        return Install(spec, final, manifest)


def _assemble_base(
    spec: EngineSpec, *, root: Path, repo: Path | None, progress: Progress, refresh: bool
) -> Install:
    repo = repo or maven_repository()
    with _lock(root / "locks" / f"{spec.cache_key}.lock"):
        if not refresh:
            existing = load_install(spec, root)
            if existing is not None:
                progress(f"{spec.engine} {spec.version}: already assembled in {existing.home}")
                return existing
        started = time.monotonic()
        java = find_java(spec)

        progress(f"{spec.engine} {spec.version}: fetching {spec.distribution.coordinate}")
        downloads = root / "downloads" / spec.cache_key
        archive, dist_sha1 = fetch_artifact(spec.distribution, downloads, repo)
        checksums: dict[str, str] = {spec.distribution.coordinate: dist_sha1}

        final = root / "dist" / spec.cache_key
        staging = root / "dist" / f".{spec.cache_key}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        progress(f"{spec.engine} {spec.version}: extracting {archive.name}")
        extract_zip(archive, staging)
        home = staging / spec.home_dirname
        if not (home / spec.executable).is_file():
            raise FetchError(
                f"{archive.name} does not contain {spec.home_dirname}/{spec.executable}",
                hint=f"delete {downloads} and fetch again",
            )

        installed: list[str] = []
        missing: list[str] = []
        projects = _reactor_projects(spec)
        if projects:
            build = root / "build" / spec.cache_key
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir(parents=True)
            for name, (artifact, transitive) in projects.items():
                (build / name).mkdir()
                (build / name / "pom.xml").write_text(project_pom(name, artifact, transitive))
            (build / "pom.xml").write_text(reactor_pom(list(projects)))
            progress(
                f"{spec.engine} {spec.version}: fetching {len(spec.modules)} module jars and "
                f"{len(spec.plugins)} plugin zips"
            )
            proc = _run(copy_dependencies_command(build, repo))
            maven_output = proc.stdout + proc.stderr

            lib_names = {jar_artifact_name(p.name) for p in (home / "lib").glob("*.jar")}
            for module in spec.modules:
                files = _copied_files(build / f"module-{module.name}", repo, ".jar")
                if not any(jar_artifact_name(p.name) == module.jar.artifact for p, _ in files):
                    raise FetchError(
                        f"Maven could not fetch module {module.name} ({module.jar.coordinate}):\n"
                        f"{_maven_error_lines(maven_output)}",
                        hint="check that Maven Central is reachable and retry `dac cluster fetch`",
                    )
                target = home / "modules" / module.name
                target.mkdir(parents=True, exist_ok=True)
                for jar in module_jars([p for p, _ in files], lib_names):
                    shutil.copy2(jar, target / jar.name)
                for path, digest in files:
                    checksums[str(path.relative_to(build / f"module-{module.name}" / "jars"))] = digest
                (target / "plugin-descriptor.properties").write_text(descriptor_text(spec, module))
                if module.permissions:
                    (target / "plugin-security.policy").write_text(policy_text(module.permissions))
            progress(
                f"{spec.engine} {spec.version}: assembled modules {', '.join(m.name for m in spec.modules)}"
            )

            for plugin in spec.plugins:
                files = _copied_files(build / f"plugin-{plugin.name}", repo, ".zip")
                zips = [p for p, _ in files if p.name == plugin.zip.filename]
                if not zips:
                    if plugin.required:
                        raise FetchError(
                            f"Maven could not fetch plugin {plugin.name} ({plugin.zip.coordinate}):\n"
                            f"{_maven_error_lines(maven_output)}",
                            hint="check that Maven Central is reachable and retry `dac cluster fetch`",
                        )
                    missing.append(plugin.name)
                    progress(
                        f"{spec.engine} {spec.version}: {plugin.zip.coordinate} is not available "
                        f"from Maven; {plugin.name} is not installed"
                    )
                    continue
                for path, digest in files:
                    checksums[path.name] = digest
                progress(f"{spec.engine} {spec.version}: installing plugin {plugin.name}")
                _install_plugin(home, spec, plugin.name, zips[0], java)
                installed.append(plugin.name)

        manifest = {
            "format": ASSEMBLY_FORMAT,
            "engine": spec.engine,
            "version": spec.version,
            "distribution": spec.distribution.coordinate,
            "wanted_modules": [m.name for m in spec.modules],
            "wanted_plugins": [p.name for p in spec.plugins],
            "modules": sorted(p.name for p in (home / "modules").iterdir() if p.is_dir()),
            "plugins": installed,
            "missing_plugins": missing,
            "sha1": checksums,
            "java_used_for_plugin_install": str(java.home),
            "assembled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "assembly_seconds": round(time.monotonic() - started, 1),
        }
        (home / STAMP).write_text(json.dumps(manifest, indent=2) + "\n")
        # Swap in the finished install only now, so an interrupted fetch never leaves a
        # half-assembled home that later runs would trust.
        if final.exists():
            shutil.rmtree(final)
        home.rename(final)
        shutil.rmtree(staging, ignore_errors=True)
        # The copied jars and zips are now inside the install (and in ~/.m2): no need for a third copy.
        shutil.rmtree(root / "build" / spec.cache_key, ignore_errors=True)
        progress(f"{spec.engine} {spec.version}: ready in {final} ({manifest['assembly_seconds']}s)")
        return Install(spec, final, manifest)
