"""The fingerprint rule: its pinned defaults, and the re-stamping script's proof."""

import json
from pathlib import Path

from nudiff.experiment.fingerprint import FINGERPRINT_VERSION, all_decisive_defaults

ROOT = Path(__file__).resolve().parents[1]
PINNED = Path(__file__).with_name("fingerprint_defaults.json")
RESTAMP = "python scripts/restamp_fingerprints.py"


def test_the_defaults_that_decide_results_are_pinned():
    """A fingerprint hashes only what differs from the defaults, so a changed default would
    change committed cells' numbers without changing their fingerprints. A new field is fine
    when its default keeps the old behaviour: add it to the pinned file. A changed default
    means a new FINGERPRINT_VERSION and `scripts/restamp_fingerprints.py`."""
    pinned = json.loads(PINNED.read_text())
    now = json.loads(json.dumps(all_decisive_defaults(), default=str))
    assert pinned["version"] == FINGERPRINT_VERSION
    for section, defaults in now.items():
        old = pinned["sections"][section]
        changed = {k for k in old if k in defaults and defaults[k] != old[k]}
        assert not changed, (
            f"{section}: default changed for {sorted(changed)}: bump the version, {RESTAMP}"
        )
        new = sorted(set(defaults) - set(old))
        assert not new, (
            f"{section}: new fields {new}: add them to {PINNED.name} if their default keeps old "
            "results"
        )


def test_every_committed_cell_carries_the_current_rule():
    stale = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "benchmarks" / "results").glob("**/cells/*.json")
        if json.loads(p.read_text()).get("fingerprint_version", 1) != FINGERPRINT_VERSION
    ]
    assert not stale, f"stamped under an older rule: {stale[:3]}: {RESTAMP}"
