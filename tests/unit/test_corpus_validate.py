"""`dac import` + `dac validate` over Elastic's 678 prebuilt EQL rules (../shared/corpora).

Acceptance on real content: the imported files pass the schema; ATT&CK findings are exactly the
mappings MITRE's v18.1 data (read here straight from the STIX bundle, not through the package's
table) says are wrong; no unknown-field finding names a field ECS or Elastic Defend defines; and
a typo planted in a field of every rule is caught. Skipped with a reason when ../shared is absent.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from deployer.cli import main
from deployer.config import Config
from deployer.eql import ast, parser
from deployer.rules.findings import Finding
from deployer.rules.validate import validate
from tests.conftest import SHARED_DIR

CORPUS = SHARED_DIR / "corpora" / "elastic-prebuilt-eql-windows-linux.ndjson"
ATTACK = SHARED_DIR / "attack" / "enterprise-attack-18.1-subset.json.gz"
ECS_FLAT = SHARED_DIR / "ecs" / "ecs_flat.yml"
DEFEND = SHARED_DIR / "fields" / "elastic-defend.tsv"

pytestmark = pytest.mark.skipif(
    not all(p.is_file() for p in (CORPUS, ATTACK, ECS_FLAT, DEFEND)), reason=f"{SHARED_DIR} is absent"
)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rules = tmp_path_factory.mktemp("corpus") / "rules"
    result = CliRunner().invoke(main, ["import", str(CORPUS), "--out", str(rules)])
    assert result.exit_code == 0, result.output
    assert "no metadata.platforms" not in result.output
    return rules


@pytest.fixture(scope="module")
def findings(imported: Path) -> list[Finding]:
    return validate([imported], Config(root=imported.parent))


def test_imported_rules_pass_the_schema(imported: Path, findings: list[Finding]) -> None:
    assert len(list(imported.glob("*.yaml"))) == 678
    assert [f for f in findings if f.code in ("schema", "yaml", "index")] == []


def test_imported_rules_keep_their_kibana_fields(imported: Path) -> None:
    originals = {r["rule_id"]: r for r in map(json.loads, CORPUS.read_text().splitlines())}
    for path in imported.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        original = originals[doc["rule_id"]]
        # `from: now-6m` is Kibana's default and is left out of the file; everything else is kept.
        kept = {k: v for k, v in original.items() if not (k == "from" and v == "now-6m")}
        assert {k: doc.get(k) for k in kept} == kept, path.name
        os_tags = sorted(t[3:].strip().lower() for t in original.get("tags", []) if t.startswith("OS:"))
        assert set(doc["metadata"]["platforms"]) <= set(os_tags), path.name


# ---------------------------------------------------------------- ATT&CK


def _mitre() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """technique ID → STIX object, tactic ID → shortname, straight from MITRE's bundle."""
    objects = json.loads(gzip.decompress(ATTACK.read_bytes()))["objects"]

    def ext(o: dict[str, Any]) -> str:
        return next(
            r["external_id"] for r in o["external_references"] if r.get("source_name") == "mitre-attack"
        )

    techniques = {ext(o): o for o in objects if o["type"] == "attack-pattern"}
    tactics = {ext(o): o["x_mitre_shortname"] for o in objects if o["type"] == "x-mitre-tactic"}
    return techniques, tactics


def _wrong_mappings(rules: Path) -> set[tuple[str, str]]:
    """(file name, ID) of each threat mapping ATT&CK v18.1 says is wrong."""
    techniques, tactics = _mitre()
    wrong: set[tuple[str, str]] = set()
    for path in rules.glob("*.yaml"):
        for entry in yaml.safe_load(path.read_text()).get("threat") or []:
            tactic = entry["tactic"]["id"]
            if tactic not in tactics:
                wrong.add((path.name, tactic))
                continue
            for tech in entry.get("technique") or []:
                for tid, parent in [(tech["id"], None)] + [
                    (s["id"], tech["id"]) for s in tech.get("subtechnique") or []
                ]:
                    obj = techniques.get(tid)
                    phases = {p["phase_name"] for p in (obj or {}).get("kill_chain_phases", [])}
                    if (
                        obj is None
                        or obj.get("revoked")
                        or obj.get("x_mitre_deprecated")
                        or tactics[tactic] not in phases
                        or (parent is not None and not tid.startswith(parent + "."))
                    ):
                        wrong.add((path.name, tid))
    return wrong


def _attack_findings(findings: list[Finding]) -> set[tuple[str, str]]:
    """(file name, ID) of each attack-id finding on ``threat``."""
    out = set()
    for f in findings:
        if f.code == "attack-id" and f.message.startswith("threat["):
            ids = re.findall(r"\b(TA\d{4}|T\d{4}(?:\.\d{3})?)\b", f.message)
            out.add((Path(f.path).name, ids[0]))
    return out


def test_attack_findings_are_exactly_the_wrong_mappings(imported: Path, findings: list[Finding]) -> None:
    assert _attack_findings(findings) == _wrong_mappings(imported)
    assert [f for f in findings if f.code == "attack-id"] == []  # implements (from threat) agrees too


def test_each_wrong_mapping_planted_in_the_corpus_is_reported(imported: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(imported, rules)
    files = sorted(rules.glob("*.yaml"))
    plants = [
        ("id: T1053.005", "id: T1053.001"),  # revoked (At (Linux) → T1053.002)
        ("id: TA0002", "id: TA0099"),  # no such tactic
        ("id: T1059.001", "id: T1059.099"),  # no such sub-technique
    ]
    planted = 0
    for old, new in plants:
        for path in files:
            text = path.read_text()
            if old in text:
                path.write_text(text.replace(old, new, 1))
                planted += 1
                break
    # A technique under a tactic it does not belong to: T1204 (Execution) under Impact.
    text = files[0].read_text()
    doc = yaml.safe_load(text)
    doc["threat"].append(
        {
            "framework": "MITRE ATT&CK",
            "tactic": {
                "id": "TA0040",
                "name": "Impact",
                "reference": "https://attack.mitre.org/tactics/TA0040/",
            },
            "technique": [
                {
                    "id": "T1204",
                    "name": "User Execution",
                    "reference": "https://attack.mitre.org/techniques/T1204/",
                }
            ],
        }
    )
    files[0].write_text(yaml.safe_dump(doc, sort_keys=False))
    assert planted == len(plants)
    found = validate([rules], Config(root=tmp_path))
    wrong = _wrong_mappings(rules)
    assert len(wrong) == len(plants) + 1
    assert _attack_findings(found) == wrong


# ---------------------------------------------------------------- fields


def _ecs() -> set[str]:
    flat = yaml.load(ECS_FLAT.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    names = set(flat)
    for spec in flat.values():
        names.update(m["flat_name"] for m in spec.get("multi_fields") or [])
    return names


def _defend() -> set[str]:
    return {line.split("\t")[0] for line in DEFEND.read_text().splitlines()[1:] if line.strip()}


def _ecs_and_defend() -> set[str]:
    return _ecs() | _defend()


def test_no_unknown_field_finding_for_an_ecs_or_defend_field(findings: list[Finding]) -> None:
    defined = _ecs_and_defend()
    named = [re.search(r"unknown field '([^']+)'", f.message) for f in findings if f.code == "unknown-field"]
    assert [m.group(1) for m in named if m and m.group(1) in defined] == []


def _swap(name: str) -> str:
    """``process.name`` → ``process.nmae``: swap two adjacent letters of the last segment."""
    head, _, leaf = name.rpartition(".")
    for i in range(len(leaf) - 2, 0, -1):
        if leaf[i] != leaf[i + 1]:
            leaf = leaf[:i] + leaf[i + 1] + leaf[i] + leaf[i + 2 :]
            break
    return f"{head}.{leaf}" if head else leaf


def test_a_typo_planted_in_every_rule_is_caught(
    imported: Path, findings: list[Finding], tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(imported, rules)
    ecs, defined = _ecs(), _ecs_and_defend()
    unknown_before = {f.path for f in findings if f.code == "unknown-field"}
    planted: dict[str, str] = {}
    for path in sorted(rules.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        index = doc.get("index") or []
        endpoint = any(p.startswith("logs-endpoint.") for p in index)
        names = [r.name for r in ast.field_refs(parser.parse(doc["query"]))]
        # A field the rule's own sources define: ECS, or Defend's when it reads Defend's indices.
        candidates = [
            n for n in names if (n in ecs or (endpoint and n in defined)) and _swap(n) not in defined
        ]
        if not candidates:
            continue
        field = candidates[0]
        typo = _swap(field)
        doc["query"] = re.sub(rf"(?<![\w.]){re.escape(field)}(?![\w.])", typo, doc["query"], count=1)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        planted[path.name] = typo
    assert len(planted) >= 670
    after = validate([rules], Config(root=tmp_path))
    caught = {
        Path(f.path).name
        for f in after
        if f.code == "unknown-field" and any(f"'{planted.get(Path(f.path).name)}'" in f.message for _ in [0])
    }
    missed = sorted(set(planted) - caught)
    assert missed == [], [(m, planted[m]) for m in missed[:10]]
    assert not unknown_before


def test_finding_counts(findings: list[Finding]) -> None:
    """The whole picture, for the record: only findings worth reading remain."""
    counts = Counter(f.code for f in findings)
    assert counts["schema"] == counts["attack-id"] == counts["unknown-field"] == 0
    # Rules whose other index patterns (winlogbeat-*, ...) have no field pack: one warning each.
    assert all(f.severity == "warning" for f in findings if f.code == "field-pack")
