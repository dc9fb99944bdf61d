"""The files people expect in a project: LICENSE (matching pyproject's license), CHANGELOG.md, project URLs."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile

from tests.live import ROOT

# sha256 of the Apache License 2.0 as apache.org publishes it (https://www.apache.org/licenses/LICENSE-2.0.txt),
# byte for byte: the file GitHub and SPDX tooling recognise.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_the_apache_2_0_text_pyproject_declares():
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256
    decoded = text.decode()
    assert "Apache License\n                           Version 2.0, January 2004" in decoded
    assert "END OF TERMS AND CONDITIONS" in decoded
    license_field = pyproject()["project"]["license"]
    declared = license_field if isinstance(license_field, str) else license_field["text"]
    assert declared == "Apache-2.0"


def test_changelog_keeps_a_changelog_with_an_unreleased_section():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings and headings[0] == "[Unreleased]"  # newest first
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## ", 1)[0]
    sections = re.findall(r"^### (.+)$", unreleased, flags=re.MULTILINE)
    assert sections and set(sections) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    assert unreleased.count("\n- ") >= 5


def test_project_urls_point_at_nothing_invented():
    """Only URLs the project can vouch for: none is listed until the repository has a public home."""
    urls = pyproject()["project"].get("urls", {})
    for name, url in urls.items():
        assert url.startswith("https://"), (name, url)


def test_sdist_and_wheel_carry_the_license(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("driftmon_daemon-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        licenses = [name for name in archive.namelist()
                    if ".dist-info/" in name and name.rsplit("/", 1)[-1] == "LICENSE"]
        assert len(licenses) == 1
        assert archive.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
    # The sdist, as setuptools builds it (no isolated build: the installed setuptools, offline).
    dist = tmp_path / "sdist"
    subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; import sys; "
                    "print(b.build_sdist(sys.argv[1]))", str(dist)],
                   cwd=ROOT, check=True, timeout=300, capture_output=True)
    (sdist,) = dist.glob("driftmon_daemon-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(name.endswith("/LICENSE") and name.count("/") == 1 for name in names), names
