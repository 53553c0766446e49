"""The one place where local cluster versions, artifacts, modules and plugins are pinned.

Everything here was checked against the Maven Central this project can reach (see
docs/clusters.md for what exists there and what does not).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Pinned versions. OpenSearch 2.19.4 is the newest 2.x for which the integ-test zip, the
# job-scheduler plugin zip and every module jar below are all present with matching versions;
# 2.x runs on the machine's JDK 17 (3.x would need 21+ and its plugin zips are not there either).
OPENSEARCH_VERSION = "2.19.4"
# Elasticsearch 8.x still runs on JDK 17; 8.19 is the last 8.x line.
ELASTICSEARCH_VERSION = "8.19.4"

# The maven-dependency-plugin version used for every fetch, pinned so that a cold cache resolves
# the same goals and flags everywhere (Maven 3.8 defaults to 2.8, which lacks some options).
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"


@dataclass(frozen=True)
class Artifact:
    """A Maven artifact (group, artifact, version, packaging)."""

    group: str
    artifact: str
    version: str
    packaging: str = "jar"

    @property
    def coordinate(self) -> str:
        """Return the `group:artifact:version:packaging` form Maven's CLI takes."""
        return f"{self.group}:{self.artifact}:{self.version}:{self.packaging}"

    @property
    def filename(self) -> str:
        """Return the file name Maven stores the artifact under."""
        return f"{self.artifact}-{self.version}.{self.packaging}"

    @property
    def repository_path(self) -> str:
        """Return the artifact's path relative to a Maven repository root."""
        return "/".join([*self.group.split("."), self.artifact, self.version, self.filename])


@dataclass(frozen=True)
class ModuleSpec:
    """A server module assembled from a published jar and its runtime dependencies."""

    name: str
    jar: Artifact
    classname: str
    description: str
    extended_plugins: tuple[str, ...] = ()
    # Java security policy grants (body lines of a `grant { ... };` block), when the module needs any.
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginSpec:
    """A plugin zip installed with the engine's plugin CLI."""

    name: str
    zip: Artifact
    # Optional plugins are installed when Maven can fetch them and reported as missing otherwise.
    required: bool = True


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to fetch, assemble and run one engine locally."""

    engine: str
    version: str
    distribution: Artifact
    home_dirname: str
    executable: str
    plugin_cli: str
    config_file: str
    java_home_env: str
    java_opts_env: str
    path_conf_env: str
    # Inclusive range of Java feature versions the server starts on.
    java_min: int
    java_max: int
    default_http_port: int
    default_transport_port: int
    # Lower upper bound when running as root (see manager.jvm_options), or None for java_max.
    java_max_as_root: int | None = None
    settings: dict[str, str] = field(default_factory=dict)
    modules: tuple[ModuleSpec, ...] = ()
    plugins: tuple[PluginSpec, ...] = ()

    @property
    def cache_key(self) -> str:
        """Return the directory name of this engine's assembled install in the cache."""
        return f"{self.engine}-{self.version}"


def _os_module(
    name: str, artifact: str, classname: str, description: str, **kw: tuple[str, ...]
) -> ModuleSpec:
    return ModuleSpec(
        name=name,
        jar=Artifact("org.opensearch.plugin", artifact, OPENSEARCH_VERSION),
        classname=classname,
        description=description,
        **kw,
    )


def _os_plugin(name: str, artifact: str, required: bool) -> PluginSpec:
    return PluginSpec(
        name=name,
        zip=Artifact("org.opensearch.plugin", artifact, f"{OPENSEARCH_VERSION}.0", "zip"),
        required=required,
    )


OPENSEARCH_MODULES: tuple[ModuleSpec, ...] = (
    _os_module(
        "lang-painless",
        "lang-painless",
        "org.opensearch.painless.PainlessPlugin",
        "Painless scripting language (Alerting extends it; bucket-level triggers run in it)",
        # Painless compiles scripts to classes at run time and looks up allowlisted classes.
        permissions=(
            'permission java.lang.RuntimePermission "createClassLoader";',
            'permission java.lang.RuntimePermission "getClassLoader";',
        ),
    ),
    _os_module(
        "percolator",
        "percolator-client",
        "org.opensearch.percolator.PercolatorPlugin",
        "Percolator queries (doc-level monitors)",
    ),
    _os_module(
        "parent-join",
        "parent-join-client",
        "org.opensearch.join.ParentJoinPlugin",
        "Parent/child join field",
    ),
    _os_module(
        "lang-mustache",
        "lang-mustache-client",
        "org.opensearch.script.mustache.MustachePlugin",
        "Mustache templates (monitor queries and action messages)",
        # mustache.java reflects over the objects it renders.
        permissions=(
            'permission java.lang.reflect.ReflectPermission "suppressAccessChecks";',
            'permission java.lang.RuntimePermission "accessDeclaredMembers";',
        ),
    ),
    _os_module(
        "reindex",
        "reindex-client",
        "org.opensearch.index.reindex.ReindexPlugin",
        "Reindex, update-by-query and delete-by-query",
        # Reindex from a remote cluster opens sockets.
        permissions=('permission java.net.SocketPermission "*", "connect";',),
    ),
    _os_module(
        "aggs-matrix-stats",
        "aggs-matrix-stats-client",
        "org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin",
        "Matrix stats aggregation",
    ),
    _os_module(
        "analysis-common",
        "analysis-common",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "Common analyzers, tokenizers and token filters (lowercase normalizers)",
        # It registers a Painless extension, so it must load with Painless as its parent.
        extended_plugins=("lang-painless",),
    ),
    _os_module(
        "mapper-extras",
        "mapper-extras-client",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "scaled_float, token_count, rank_feature and search_as_you_type fields",
    ),
)

# Install order matters: a plugin can only be installed after the plugins it extends.
OPENSEARCH_PLUGINS: tuple[PluginSpec, ...] = (
    _os_plugin("opensearch-job-scheduler", "opensearch-job-scheduler", required=True),
    # Alerting, Notifications and Security Analytics zips are not on the Maven Central reachable
    # here for any 2.x/3.x version (checked; see docs/clusters.md). They stay listed so that they
    # install automatically where the registry does carry them.
    _os_plugin("opensearch-alerting", "alerting", required=False),
    _os_plugin("opensearch-notifications-core", "opensearch-notifications-core", required=False),
    _os_plugin("opensearch-notifications", "notifications", required=False),
    _os_plugin("opensearch-security-analytics", "opensearch-security-analytics", required=False),
)

OPENSEARCH = EngineSpec(
    engine="opensearch",
    version=OPENSEARCH_VERSION,
    distribution=Artifact(
        "org.opensearch.distribution.integ-test-zip", "opensearch", OPENSEARCH_VERSION, "zip"
    ),
    home_dirname=f"opensearch-{OPENSEARCH_VERSION}",
    executable="bin/opensearch",
    plugin_cli="bin/opensearch-plugin",
    config_file="opensearch.yml",
    java_home_env="OPENSEARCH_JAVA_HOME",
    java_opts_env="OPENSEARCH_JAVA_OPTS",
    path_conf_env="OPENSEARCH_PATH_CONF",
    # 2.19 supports 11, 17 and 21; on 24+ the security manager it relies on cannot be enabled.
    java_min=11,
    java_max=21,
    default_http_port=9200,
    default_transport_port=9300,
    # No security settings: the security plugin is never installed (plain HTTP, no auth), and
    # `plugins.security.disabled` is an unknown setting without it, which the server rejects.
    settings={
        # Alerting renders every monitor's search as a mustache template, compiled once per
        # distinct query (and per composite page). Tests and `dac verify` run dozens of monitors in
        # a few minutes, past the default 75/5m, and a tripped limit fails a monitor run with an
        # empty error. A local test node can afford more.
        "script.context.template.max_compilations_rate": "1000/1m",
    },
    modules=OPENSEARCH_MODULES,
    plugins=OPENSEARCH_PLUGINS,
)

ELASTICSEARCH = EngineSpec(
    engine="elasticsearch",
    version=ELASTICSEARCH_VERSION,
    distribution=Artifact(
        "org.elasticsearch.distribution.integ-test-zip", "elasticsearch", ELASTICSEARCH_VERSION, "zip"
    ),
    home_dirname=f"elasticsearch-{ELASTICSEARCH_VERSION}",
    executable="bin/elasticsearch",
    plugin_cli="bin/elasticsearch-plugin",
    config_file="elasticsearch.yml",
    java_home_env="ES_JAVA_HOME",
    java_opts_env="ES_JAVA_OPTS",
    path_conf_env="ES_PATH_CONF",
    # 8.x starts on 17 and 21 (LTS lines). On 21+ it checks for root through the JDK's own FFI
    # rather than JNA, so as root (CI here) only 17-20 can start it: checked with Temurin 25,
    # "can not run elasticsearch as root".
    java_min=17,
    java_max=21,
    java_max_as_root=20,
    default_http_port=9201,
    default_transport_port=9301,
    settings={
        "xpack.security.enabled": "false",
        "xpack.security.http.ssl.enabled": "false",
        "xpack.security.transport.ssl.enabled": "false",
    },
)

ENGINES: dict[str, EngineSpec] = {spec.engine: spec for spec in (OPENSEARCH, ELASTICSEARCH)}


def get_engine(name: str) -> EngineSpec:
    """Return the pinned spec for an engine name ("opensearch" or "elasticsearch")."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(sorted(ENGINES))}") from None
