"""Write tests/durations.json (seconds per test file) from a pytest JUnit XML report.

    pytest --junitxml=report.xml ...   # a full serial run
    python scripts/test_durations.py report.xml

``tests/conftest.py`` reads the file to send the longest groups of tests to the parallel
workers first. Each test's time counts its setup, call and teardown (pytest's default).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "durations.json"


def file_of(case: ET.Element) -> str:
    """``tests/api/test_x.py`` of a testcase (its ``file`` attribute, else its classname)."""
    if case.get("file"):
        return str(case.get("file"))
    parts = str(case.get("classname", "")).split(".")
    while parts and not parts[-1].startswith("test_"):
        parts.pop()  # a test class
    return "/".join(parts) + ".py"


def main(report: str) -> None:
    seconds: Counter[str] = Counter()
    for case in ET.parse(report).getroot().iter("testcase"):
        seconds[file_of(case)] += float(case.get("time", 0.0))
    ordered = {k: round(v, 1) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
    OUT.write_text(json.dumps(ordered, indent=1) + "\n")
    print(f"{OUT}: {len(ordered)} files, {sum(ordered.values()):.0f} s")


if __name__ == "__main__":
    main(sys.argv[1])
