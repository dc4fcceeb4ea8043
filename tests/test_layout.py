"""The layout the README promises: one home per concept, checked on the tree as it is."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("spaces", "search", "workers", "storage")
# Optuna's private names tunefleet uses; storage/optuna_compat.py is their only home.
PRIVATE = re.compile(r"\._(trial_id|storage|study_id|thread_local|get_trials|backend|sample|compute_acquisition_func)\b"
                     r"|optuna\.\w+\._\w+|optuna\.storages\._|from optuna\.\w+\._")


def _sources(*dirs: str) -> dict[Path, str]:
    return {p: p.read_text() for d in dirs for p in sorted((ROOT / d).rglob("*.py"))}


def test_search_imports_workers_only_in_its_entry_points():
    found = [p.name for p, text in _sources("search").items()
             if re.search(r"^\s*(from|import) workers\b", text, re.M)]
    assert set(found) <= {"cli.py", "demo.py"}, found
    assert not [p.name for p, text in _sources("spaces", "storage").items()
                if re.search(r"^\s*(from|import) (search|workers)\b", text, re.M)]


def test_optunas_private_api_is_used_in_one_module():
    users = [str(p.relative_to(ROOT)) for p, text in _sources(*PACKAGES, "tests", "bench").items()
             if PRIVATE.search(text) and p.name not in ("optuna_compat.py", "test_layout.py")]
    assert not users, users


def test_one_place_asks_optuna_for_a_trial():
    askers = [str(p.relative_to(ROOT)) for p, text in _sources(*PACKAGES).items() if re.search(r"\.ask\(", text)]
    assert askers == ["search/claim.py"], askers


def test_no_module_branches_on_a_methods_name():
    name = r"""["'](full|lora|qlora|prefix)["']"""
    branches = re.compile(rf"""(method|\.name)\s*(==|!=|in|not in)\s*[(\[{{]?\s*{name}|{name}\s*(==|!=)\s*\w*method""")
    found = [str(p.relative_to(ROOT)) for p, text in _sources(*PACKAGES).items() if branches.search(text)]
    assert not found, found


def test_the_readme_map_names_every_module_and_only_those():
    readme = (ROOT / "README.md").read_text()
    design = readme.split("## Design: where each concept lives", 1)[1].split("\nDecisions and why:", 1)[0]
    named = set(re.findall(r"`((?:%s)/[\w/]+?(?:\.py|/))`" % "|".join(PACKAGES), design))
    modules = {str(p.relative_to(ROOT)) for p in _sources(*PACKAGES) if p.name != "__init__.py"
               and p.parent.name != "detectors"} | {"workers/detectors/"}
    assert not modules - named, f"modules the README's map does not name: {sorted(modules - named)}"
    assert all((ROOT / n).exists() for n in named), [n for n in named if not (ROOT / n).exists()]
